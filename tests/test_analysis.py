"""`sidrec analyze` / `sidrec compare`: every pattern, rate and lift checked against hand-computed values.

The fixture (6 items, top_k = 2, 3 predictions per row); item: train-target count, category (level 1), SID:

    0: 0 A (0,0,0)   1: 3 A (0,0,1)   2: 1 B (1,0,0)   3: 2 B (1,1,0)   4: 5 C (2,0,0)   5: 4 - (0,0,0)

Thresholds: cold_start_max_count 1 -> cold {0, 2}; long_tail_percent 34 -> ceil(6 * .34) = 3rd smallest count is 2,
tail {0, 2, 3}; short_history_max_len 2. Test rows (history -> target, predictions, rank):

    row 0 [0, 1]       -> 2, [2, 0, 1] rank 1 hit   cold tail short mismatch(A vs B)  recency F (0 vs 0)
    row 1 [2, 3, 2, 0] -> 4, [0, 1, 4] rank 3 FAIL  -    -    -     mismatch(B vs C)  recency F (old 0 < recent 3)
    row 2 [4]          -> 0, [5, 4, 3] absent FAIL  cold tail short mismatch(C vs A)  recency None (one item)
    row 3 [1, 0, 4]    -> 1, [1, 2, 3] rank 1 hit   -    -    -     no (A vs A)       recency T (old 3 > recent 0)
    row 4 [3, 5, 1, 1] -> 3, [4, 3, 0] rank 2 hit   -    tail -     mismatch(A vs B)  recency F (0 vs 0)
"""

import json
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import sidrec.cli.analysis  # noqa: F401  (registers analyze / compare)
from sidrec.analysis.badcase import (AnalysisConfig, category_mismatch, check_identity, dataset_identity,
                                     dominant_category, long_tail_items, old_part, pattern_stats, recency_bias,
                                     run_analysis, sid_prefix_overlap)
from sidrec.analysis.compare import run_compare
from sidrec.analysis.plots import rank_buckets
from sidrec.cli.app import app
from sidrec.data import Dataset
from sidrec.errors import SidrecError
from sidrec.evaluate.harness import write_evaluation

PNG = b"\x89PNG\r\n\x1a\n"
CATS = [["Root", "A"], ["Root", "A"], ["Root", "B"], ["Root", "B"], ["Root", "C"], ["Root"]]
CODES = [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 1, 0], [2, 0, 0], [0, 0, 0]]
TEST = [  # user, history, target, predictions
    (10, [0, 1], 2, [2, 0, 1]),
    (11, [2, 3, 2, 0], 4, [0, 1, 4]),
    (12, [4], 0, [5, 4, 3]),
    (13, [1, 0, 4], 1, [1, 2, 3]),
    (14, [3, 5, 1, 1], 3, [4, 3, 0]),
]
SETS = ["analysis.top_k=2", "analysis.cold_start_max_count=1", "analysis.long_tail_percent=34",
        "analysis.short_history_max_len=2"]
CFG = AnalysisConfig(top_k=2, cold_start_max_count=1, long_tail_percent=34, short_history_max_len=2)


def make_dataset(folder, categories=CATS, name="tiny"):
    train_targets = [1, 1, 1, 2, 3, 3, 4, 4, 4, 4, 4, 5, 5, 5, 5]  # counts 0, 3, 1, 2, 5, 4
    items = pd.DataFrame({"item_id": range(6), "title": [f"item {i}" for i in range(6)],
                          "categories": [list(c) for c in categories]})
    splits = {
        "train": pd.DataFrame({"user": [0] * 15, "history": [[0]] * 15, "target": train_targets}),
        "valid": pd.DataFrame({"user": [0], "history": [[0, 1]], "target": [2]}),
        "test": pd.DataFrame({"user": [u for u, *_ in TEST], "history": [h for _, h, _, _ in TEST],
                              "target": [t for _, _, t, _ in TEST]}),
    }
    Dataset.from_frames(items, splits, meta={"name": name}).save(folder)
    return folder


def make_sids(folder, codes=CODES):
    folder.mkdir(parents=True, exist_ok=True)
    index = {str(i): [f"<{'abc'[lv]}_{c}>" for lv, c in enumerate(row)] for i, row in enumerate(codes)}
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def make_eval(folder, preds=None, targets=None):
    write_evaluation(folder, "test", targets or [t for *_, t, _ in TEST], preds or [p for *_, p in TEST],
                     users=[u for u, *_ in TEST], num_items=6, info={"model": folder.name})
    return folder


@pytest.fixture
def no_plots(monkeypatch):
    """Skip the matplotlib figures where a test checks numbers only (they cost ~1 s per analysis)."""
    monkeypatch.setattr("sidrec.analysis.plots.write_plots", lambda report, folder: [])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    data = make_dataset(root / "data")
    sids = make_sids(root / "sids")
    ev = make_eval(root / "eval")
    report = run_analysis(ev, data, root / "out", CFG, sids=sids)
    return {"root": root, "data": data, "sids": sids, "eval": ev, "out": root / "out", "report": report}


# ---------------------------------------------------------------------------------------------------- pieces
def test_pattern_helpers():
    tail, thr = long_tail_items(np.array([5, 1, 1, 1, 9]), 20)  # ceil(5 * .2) = 1st smallest is 1; ties all in
    assert thr == 1 and tail.tolist() == [False, True, True, True, False]
    tail, thr = long_tail_items(np.array([0, 3, 1, 2, 5, 4]), 34)
    assert thr == 2 and np.flatnonzero(tail).tolist() == [0, 2, 3]
    cats = ["A", "A", "B", "B", "C", None]
    assert dominant_category([0, 2], cats) == "B"  # tie 1-1: the most recent wins
    assert dominant_category([2, 0, 2, 0], cats) == "A"
    assert dominant_category([3, 5, 1, 1], cats) == "A"  # None is skipped
    assert dominant_category([5], cats) is None
    assert category_mismatch([5], 0, cats) is None and category_mismatch([0], 5, cats) is None
    assert category_mismatch([0, 1], 2, cats) is True and category_mismatch([2, 0, 0], 1, cats) is False
    assert sid_prefix_overlap([1, 2, 3], [1, 2, 4]) == 2 and sid_prefix_overlap([0, 5], [1, 5]) == 0
    assert sid_prefix_overlap([1, -1], [1, -1]) == 1 and sid_prefix_overlap([1, 2], [1, 2]) == 2
    assert [old_part(n, 0.5) for n in (1, 2, 3, 4, 5, 10)] == [0, 1, 1, 2, 2, 5]
    assert old_part(2, 0.9) == 1 and old_part(10, 0.95) == 9
    same = lambda a, b: int(a == b)  # noqa: E731
    assert recency_bias([7], 7, same, 0.5) is None and recency_bias([1, 2], None, same, 0.5) is None
    assert recency_bias([7, 8, 9, 1], 8, same, 0.5) is True  # old = [7, 8]
    assert recency_bias([7, 8, 9, 8], 8, same, 0.5) is False  # equal similarity is not a bias
    assert recency_bias([7, 8, 9, 1], 9, same, 0.5) is False  # 9 is in the middle, not the old half


def test_pattern_stats_rates_and_lift():
    failed = np.array([True, True, False, False, False, True])
    st = pattern_stats([True, False, True, None, False, None], failed)
    assert st["applicable_rows"] == 4 and st["rows_with_pattern"] == 2
    assert st["failures"] == {"rows": 2, "with_pattern": 1, "rate": 0.5}
    assert st["successes"] == {"rows": 2, "with_pattern": 1, "rate": 0.5}
    assert st["lift"] == pytest.approx(1.0)
    assert st["failure_rate_with"] == 0.5 and st["failure_rate_without"] == 0.5
    st = pattern_stats([True, False, False], np.array([True, False, False]))
    assert st["successes"]["rate"] == 0 and st["lift"] is None  # no success has it: lift undefined, not inf
    assert pattern_stats([None, None], np.array([True, False]))["applicable_rows"] == 0


# ---------------------------------------------------------------------------------------------------- analyze
def test_analyze_hand_computed(world):
    rep = world["report"]
    assert (rep["num_rows"], rep["failures"], rep["successes"], rep["top_k"]) == (5, 2, 3, 2)
    assert rep["failure_rate"] == pytest.approx(0.4)
    rows = [json.loads(x) for x in (world["out"] / "eval_results.jsonl").read_text().splitlines()]
    assert [r["rank"] for r in rows] == [1, 3, None, 1, 2]
    assert [r["hit"] for r in rows] == [True, False, False, True, True]
    assert [r["history_len"] for r in rows] == [2, 4, 1, 3, 4]
    assert [r["target_train_count"] for r in rows] == [1, 5, 0, 3, 2]
    assert rows[2]["predictions"] == [5, 4, 3] and rows[0]["user"] == 10
    expect = {
        "cold_start": [True, False, True, False, False],
        "long_tail": [True, False, True, False, True],
        "short_history": [True, False, True, False, False],
        "category_mismatch": [True, True, True, False, True],
        "recency_bias": [False, False, None, True, False],
    }
    for name, flags in expect.items():
        assert [r["patterns"][name] for r in rows] == flags, name
    p = rep["patterns"]
    # (rate among failures, rate among successes, lift, P(fail | pattern), P(fail | no pattern))
    hand = {"cold_start": (1 / 2, 1 / 3, 1.5, 1 / 2, 1 / 3),
            "long_tail": (1 / 2, 2 / 3, 0.75, 1 / 3, 1 / 2),
            "short_history": (1 / 2, 1 / 3, 1.5, 1 / 2, 1 / 3),
            "category_mismatch": (1.0, 2 / 3, 1.5, 1 / 2, 0.0),
            "recency_bias": (0.0, 1 / 3, 0.0, 0.0, 1 / 3)}
    for name, (rf, rs, lift, fw, fwo) in hand.items():
        got = p[name]
        assert got["available"], name
        assert (got["failures"]["rate"], got["successes"]["rate"], got["lift"],
                got["failure_rate_with"], got["failure_rate_without"]) == pytest.approx((rf, rs, lift, fw, fwo)), name
    assert p["recency_bias"]["applicable_rows"] == 4 and p["recency_bias"]["similarity"] == "sid_prefix_overlap"
    assert p["long_tail"]["threshold_count"] == 2 and p["long_tail"]["tail_items_share"] == 0.5
    assert p["category_mismatch"]["category_source"] == "items"

    rd = rep["rank_distribution"]
    assert rd == {"list_length": 3, "by_rank": {"1": 2, "2": 1, "3": 1}, "not_in_list": 1, "rows": 5}
    assert rank_buckets(rd, 2) == [("1", 2, True), ("2", 1, True), ("3", 1, False), ("not in list\n(> 3)", 1, False)]

    q = rep["sid_quality"]  # items 0 and 5 share (0,0,0)
    assert (q["unique_sids"], q["collided_items"], q["collision_rate"]) == (5, 2, round(1 / 6, 6))
    assert q["items_per_sid"] == {"1": 4, "2": 1}
    assert [c["prefixes"] for c in q["items_per_code"]] == [3, 4, 5]
    assert [c["max"] for c in q["items_per_code"]] == [3, 3, 2]
    assert q["target_collided"] == {"rows": 1, "failure_rate_collided": 1.0, "failure_rate_unique": 0.25}

    ident = rep["dataset"]
    assert (ident["name"], ident["num_items"], ident["split"], ident["num_rows"]) == ("tiny", 6, "test", 5)
    # lift interval (Katz): cold_start has 1 of 2 failures, 1 of 3 successes
    se = np.sqrt(1 / 1 - 1 / 2 + 1 / 1 - 1 / 3)
    assert p["cold_start"]["lift_ci95"] == pytest.approx([1.5 * np.exp(-1.959964 * se), 1.5 * np.exp(1.959964 * se)],
                                                         rel=1e-5)
    assert p["category_mismatch"]["category_level"] == 1  # 5 of 6 items have a second level
    assert ident == dataset_identity(Dataset.load(world["data"]), "test")
    assert rep["metrics"]["HR@1"] == pytest.approx(0.4)

    vis = world["out"] / "visualizations"
    for name in ("failure_patterns", "failure_rate", "sid_quality", "rank_distribution"):
        data = (vis / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    text = (vis / "summary_report.txt").read_text()
    assert "failure rate 40.0%" in text and "cold_start" in text and "SID quality" in text
    manifest = json.loads((world["out"] / "manifest.json").read_text())
    assert manifest["stage"] == "analyze" and manifest["dataset"] == ident
    assert not list(world["out"].glob(".*.tmp"))


def test_identity_detects_another_dataset(world, tmp_path):
    rep = world["report"]
    check_identity(rep, Dataset.load(world["data"]))
    other = make_dataset(tmp_path / "other", name="other")
    with pytest.raises(SidrecError, match="another dataset.*name: report 'tiny' vs dataset 'other'"):
        check_identity(rep, Dataset.load(other))
    # `sidrec optimize --data` refuses a report computed on another dataset, before writing anything
    from sidrec.optimize.strategies import optimize

    base = tmp_path / "base.yaml"
    base.write_text("sft: {epochs: 2}\n")
    optimize(world["out"], tmp_path / "ok.yaml", auto=True, data=world["data"], base=base)
    with pytest.raises(SidrecError, match="another dataset"):
        optimize(world["out"], tmp_path / "bad.yaml", auto=True, data=other, base=base)
    assert not (tmp_path / "bad.yaml").exists()


def test_category_falls_back_to_sid_then_unavailable(world, tmp_path, monkeypatch):
    import sidrec.analysis.plots as plots

    data = make_dataset(tmp_path / "nocat", categories=[[]] * 6)
    with monkeypatch.context() as m:
        m.setattr(plots, "write_plots", lambda report, folder: [])
        rep = run_analysis(world["eval"], data, tmp_path / "sidcat", CFG, sids=world["sids"])
    mm = rep["patterns"]["category_mismatch"]
    assert mm["category_source"] == "sid"  # level-0 codes 0 0 1 1 2 0
    rows = [json.loads(x) for x in (tmp_path / "sidcat" / "eval_results.jsonl").read_text().splitlines()]
    assert [r["patterns"]["category_mismatch"] for r in rows] == [True, True, True, False, True]

    rep = run_analysis(world["eval"], data, tmp_path / "none", CFG)  # no categories, no SIDs
    for name in ("category_mismatch", "recency_bias"):
        p = rep["patterns"][name]
        assert p["available"] is False and "--sids" in p["reason"]
        assert p["applicable_rows"] == 0 and p["lift"] is None
    assert "sid_quality" not in rep
    assert (tmp_path / "none" / "visualizations" / "sid_quality.png").read_bytes().startswith(PNG)
    assert "unavailable" in (tmp_path / "none" / "visualizations" / "summary_report.txt").read_text()


def test_single_level_categories_are_used(world, tmp_path, no_plots):
    # the fixture's level-1 categories as the only level: the same flags (True, True, True, False, True) -> lift
    # (2/2) / (2/3) = 1.5, computed on items.categories level 0 (not the SID fallback)
    single = make_dataset(tmp_path / "single", categories=[["A"], ["A"], ["B"], ["B"], ["C"], []])
    rep = run_analysis(world["eval"], single, tmp_path / "o", CFG)
    mm = rep["patterns"]["category_mismatch"]
    assert (mm["category_source"], mm["category_level"]) == ("items", 0)
    assert (mm["failures"]["with_pattern"], mm["successes"]["with_pattern"]) == (2, 2)
    assert mm["lift"] == pytest.approx(1.5)
    text = (tmp_path / "o" / "visualizations" / "summary_report.txt")
    assert not text.exists() or "items.categories level 0" in text.read_text()
    from sidrec.analysis.plots import summary_text

    assert "category source: items.categories level 0" in summary_text(rep)
    # a level the items do not have is an error, not a silent switch to SID categories
    with pytest.raises(SidrecError, match=r"analysis.category_level=1: items.categories has at most 1 level"):
        run_analysis(world["eval"], single, tmp_path / "o2", CFG.model_copy(update={"category_level": 1}),
                     sids=world["sids"])
    # one category for every item says nothing: the SID codes are used, and the report says so
    flat = make_dataset(tmp_path / "flat", categories=[["Root"]] * 6)
    rep = run_analysis(world["eval"], flat, tmp_path / "o3", CFG, sids=world["sids"])
    mm = rep["patterns"]["category_mismatch"]
    assert (mm["category_source"], mm["category_level"], mm["sid_category_levels"]) == ("sid", None, 1)


def test_items_categories_only_without_sids_use_category_similarity(world, tmp_path, no_plots):
    rep = run_analysis(world["eval"], world["data"], tmp_path / "o", CFG.model_copy(update={"category_source": "items"}))
    rb = rep["patterns"]["recency_bias"]
    assert rb["similarity"] == "same_category"
    assert (rb["applicable_rows"], rb["rows_with_pattern"]) == (4, 1)  # row 3: top 1 is A like old 1, recent 4 is C


# ---------------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_are_clear_errors(world, tmp_path):
    empty = tmp_path / "empty_eval"
    empty.mkdir()
    (empty / "results.json").write_text(json.dumps({"split": "test", "metrics": {}}))
    with pytest.raises(SidrecError, match=r"empty_eval: no predictions\.jsonl.*results\.json and predictions"):
        run_analysis(empty, world["data"], tmp_path / "o")

    wrong = make_eval(tmp_path / "wrong", targets=[2, 4, 0, 1, 5])  # row 4's target is 3 in the dataset
    with pytest.raises(SidrecError, match=r"predictions\.jsonl: 1 of 5 rows do not match split 'test'.*row 4 has "
                                          r"target 5, user 14; the dataset has target 3, user 14"):
        run_analysis(wrong, world["data"], tmp_path / "o")

    extra = tmp_path / "extra"
    make_eval(extra)
    lines = (extra / "predictions.jsonl").read_text().splitlines()
    bad = json.loads(lines[0]) | {"row": 7}
    (extra / "predictions.jsonl").write_text("\n".join([json.dumps(bad)] + lines[1:]) + "\n")
    with pytest.raises(SidrecError, match=r"predictions\.jsonl:1: row 7 is not a row of split 'test' \(0\.\.4\)"):
        run_analysis(extra, world["data"], tmp_path / "o")

    with pytest.raises(SidrecError, match=r"SIDs for 5 items but the dataset has 6"):
        run_analysis(world["eval"], world["data"], tmp_path / "o", CFG, sids=make_sids(tmp_path / "s5", CODES[:5]))
    with pytest.raises(SidrecError, match=r"top_k 4 is more than the 3 predictions"):
        run_analysis(world["eval"], world["data"], tmp_path / "o", AnalysisConfig(top_k=4))
    assert not (tmp_path / "o").exists()


def test_cli_bad_config_key_is_one_line_exit_2(world, tmp_path, monkeypatch, capsys):
    from sidrec.cli import main

    monkeypatch.setattr(sys, "argv", ["sidrec", "analyze", "--eval", str(world["eval"]), "--data", str(world["data"]),
                                      "--out", str(tmp_path / "o"), "--set", "analysis.cold_start=3"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "analysis.cold_start" in err and "valid keys: top_k, cold_start_max_count" in err


def test_cli_analyze_with_overrides(world, tmp_path, no_plots):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("analysis:\n  short_history_max_len: 0\n")
    r = CliRunner().invoke(app, ["analyze", "--eval", str(world["eval"]), "--data", str(world["data"]),
                                 "--out", str(tmp_path / "o"), "--config", str(cfg), "--top-k", "1"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "o" / "badcase_report.json").read_text())
    assert rep["top_k"] == 1 and rep["failures"] == 3  # rank 1 only: rows 0 and 3 hit
    assert rep["config"]["short_history_max_len"] == 0 and rep["patterns"]["short_history"]["rows_with_pattern"] == 0
    assert rep["patterns"]["recency_bias"]["similarity"] == "same_category"  # no --sids: item categories
    assert "bad cases" in r.output


# ---------------------------------------------------------------------------------------------------- compare
def test_compare_deltas_and_outputs(world, tmp_path):
    # model B: row 1 hit at rank 1 too, row 3 moves to rank 3 -> HR@5 stays 4/5 vs A's 4/5, HR@1 differs
    run_b = tmp_path / "runB"
    preds_b = [[2, 0, 1], [4, 1, 0], [5, 4, 3], [2, 3, 1], [4, 3, 0]]
    make_eval(run_b / "eval", preds=preds_b)
    with pytest.MonkeyPatch.context() as m:
        m.setattr("sidrec.analysis.plots.write_plots", lambda report, folder: [])
        run_analysis(run_b / "eval", world["data"], run_b / "eval" / "analysis", CFG, sids=world["sids"])
    out = tmp_path / "cmp"
    cmp = run_compare([world["out"], run_b], out, names=["a", "b"])
    # A: ranks 1,3,-,1,2 -> HR@5 = 4/5, NDCG@5 = (1 + 1/2 + 1 + 1/log2 3) / 5; B: ranks 1,1,-,3,2 -> same set
    ndcg = (1 + 0.5 + 1 + 1 / np.log2(3)) / 5
    assert cmp["metrics"]["a"]["HR@5"] == pytest.approx(0.8) and cmp["metrics"]["b"]["HR@5"] == pytest.approx(0.8)
    assert cmp["metrics"]["a"]["NDCG@5"] == pytest.approx(ndcg) and cmp["metrics"]["b"]["NDCG@5"] == pytest.approx(ndcg)
    # same hit rows at 10: the paired bootstrap interval is exactly [0, 0]
    assert cmp["deltas"]["b"]["HR@10"] == {"abs": pytest.approx(0.0), "rel": pytest.approx(0.0),
                                           "ci95": [0.0, 0.0], "rel_ci95": [0.0, 0.0]}
    # NDCG@5: per-row differences 0, +1/2, 0, -1/2, 0 -> a draw's mean is a multiple of 0.1 in [-0.5, 0.5];
    # the 95% interval straddles 0
    lo, hi = cmp["deltas"]["b"]["NDCG@5"]["ci95"]
    assert -0.5 <= lo < 0 < hi <= 0.5 and 10 * lo == pytest.approx(round(10 * lo))
    assert cmp["bootstrap"]["resamples"] == 2000 and cmp == run_compare([world["out"], run_b], names=["a", "b"])
    # failure rate at top_k 2: A fails rows 1, 2 (0.4); B fails rows 2, 3 (0.4)
    assert cmp["patterns"]["a"]["failure_rate"] == pytest.approx(0.4)
    assert cmp["patterns"]["b"]["failure_rate"] == pytest.approx(0.4)
    # cold_start rows {0, 2}: A fails 1/2, B fails 1/2; category_mismatch rows {0,1,2,4}: A 2/4, B 1/4
    d = cmp["pattern_deltas"]["b"]
    assert d["cold_start"]["failure_rate_with"]["abs"] == pytest.approx(0.0)
    assert cmp["patterns"]["b"]["category_mismatch"]["failure_rate_with"] == pytest.approx(0.25)
    assert d["category_mismatch"]["failure_rate_with"] == {"abs": pytest.approx(-0.25), "rel": pytest.approx(-0.5)}
    assert cmp["warnings"] == []
    saved = json.loads((out / "compare.json").read_text())
    assert saved["reference"] == "a" and [r["name"] for r in saved["runs"]] == ["a", "b"]
    md = (out / "compare.md").read_text()
    assert "| b | 5 |" in md and "(-25.0 pt)" in md and "Reference: **a**" in md
    assert "0.8000 (+0.0000 [+0.0000, +0.0000], +0.0%)" in md and "95% paired bootstrap interval" in md
    assert (out / "compare.png").read_bytes().startswith(PNG)
    assert json.loads((out / "manifest.json").read_text())["stage"] == "compare"


def test_compare_relative_delta_and_inputs(world, tmp_path):
    worse = make_eval(tmp_path / "worse" / "eval", preds=[[0, 1, 2], [0, 1, 4], [5, 4, 3], [1, 2, 3], [4, 3, 0]])
    cmp = run_compare([world["eval"] / "results.json", tmp_path / "worse"])  # a results.json file, a run folder
    ref, name = list(cmp["metrics"])
    assert name == "worse" and ref == world["root"].name  # "eval" folders are named after their parent
    # reference ranks 1,3,-,1,2; worse 3,3,-,1,2: HR@5 equal, NDCG@5 loses row 0's 1 - 1/2
    assert cmp["metrics"]["worse"]["HR@10"] == pytest.approx(0.8)
    assert cmp["deltas"]["worse"]["HR@5"] == {"abs": pytest.approx(0.0), "rel": pytest.approx(0.0),
                                              "ci95": [0.0, 0.0], "rel_ci95": [0.0, 0.0]}
    a, b = (1 + 0.5 + 1 + 1 / np.log2(3)) / 5, (0.5 + 0.5 + 1 + 1 / np.log2(3)) / 5
    d = cmp["deltas"]["worse"]["NDCG@5"]
    assert (d["abs"], d["rel"]) == (pytest.approx(b - a), pytest.approx((b - a) / a))
    # only row 0 differs (-1/2): a draw's difference is -1/2 x (row 0's draws) / 5, never above 0
    lo, hi = d["ci95"]
    assert lo < 0 and hi == 0.0 and lo >= -0.5
    assert "patterns" not in cmp  # no analysis beside either input
    bare = tmp_path / "bare"  # a results.json without its predictions: figures, no interval, a warning
    bare.mkdir()
    (bare / "results.json").write_text((worse / "results.json").read_text())
    cmp = run_compare([world["eval"], bare])
    assert cmp["deltas"]["bare"]["NDCG@5"]["ci95"] is None and cmp["deltas"]["bare"]["NDCG@5"]["abs"] is not None
    assert any("no predictions.jsonl for bare" in w for w in cmp["warnings"])
    short = tmp_path / "short"  # other rows: not paired
    write_evaluation(short, "test", [2, 4], [[2, 0, 1], [0, 1, 4]], num_items=6)
    cmp = run_compare([world["eval"], short])
    assert cmp["deltas"]["short"]["HR@10"]["ci95"] is None
    assert any("different rows (5 vs 2)" in w for w in cmp["warnings"])
    r = run_compare([worse, worse])["deltas"]
    assert list(r) == ["worse#2"]
    with pytest.raises(SidrecError, match="--names has 1 name"):
        run_compare([worse, worse], names=["x"])
    with pytest.raises(SidrecError, match="no results.json, eval/results.json or badcase_report.json"):
        run_compare([tmp_path])


def test_compare_cli_prints_table_and_warns_on_other_dataset(world, tmp_path, no_plots, monkeypatch):
    monkeypatch.setattr("sidrec.analysis.compare.plot_compare", lambda cmp, path: None)
    other = make_dataset(tmp_path / "other", name="other")
    run_analysis(world["eval"], other, tmp_path / "oa", CFG)
    r = CliRunner().invoke(app, ["compare", str(world["out"]), str(tmp_path / "oa"), "--names", "x,y",
                                 "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert "HR@10" in r.output and "x" in r.output and "warning" in r.output and "different datasets" in r.output
    assert (tmp_path / "c" / "compare.md").exists()
