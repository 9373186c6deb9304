"""`sidrec optimize`: report reading, --auto rules, and that each strategy's overrides change what training does."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import sidrec.cli.optimize  # noqa: F401  (registers the command)
from sidrec.cli.app import app
from sidrec.config import load_config
from sidrec.data import Dataset
from sidrec.errors import SidrecError
from sidrec.optimize.strategies import (
    BadcaseReport,
    PatternStats,
    SidStats,
    auto_select,
    optimize,
    parse_report,
    read_report,
)
from sidrec.sid.build import make_estimator, thread_limit
from sidrec.sid.config import SidConfig
from sidrec.tasks.builders import build_examples
from sidrec.train.rewards import Groups, combine
from sidrec.train.rl import RlConfig
from sidrec.train.sft import SftConfig, train_examples, training_arguments

NUM_ITEMS = 10
CODES = np.array([[i % 5, i // 5, i % 2] for i in range(NUM_ITEMS)])
BASE = {"sft": {"tasks": {"seqrec": 1.0, "title2sid": 1.0, "sid2title": 1.0}, "epochs": 8, "learning_rate": 2.0e-3,
                "seed": 7},
        "rl": {"rewards": {"rule": 1.0, "ranking": 1.0}},
        "sid": {"method": "rqkmeans", "levels": 3, "codebook": 4, "seed": 0}}


def skewed_dataset() -> Dataset:
    """Item 0 is the target of 30 train rows, items 1..9 of one each; histories of 1 to 6 items."""
    rng = np.random.default_rng(0)
    targets = [0] * 30 + list(range(1, NUM_ITEMS))
    rng.shuffle(targets)
    train = pd.DataFrame({
        "user": range(len(targets)),
        "history": [[int(x) for x in rng.integers(0, NUM_ITEMS, 1 + i % 6)] for i in range(len(targets))],
        "target": targets})
    small = lambda t: pd.DataFrame({"user": [0], "history": [[1, 2]], "target": [t]})  # noqa: E731
    items = pd.DataFrame({"item_id": range(NUM_ITEMS), "title": [f"widget {i}" for i in range(NUM_ITEMS)]})
    return Dataset.from_frames(items, {"train": train, "valid": small(3), "test": small(4)}, meta={"name": "skew"})


def pattern(rf, rs, lift, rows=(100, 50), **kw):
    """A pattern as `sidrec analyze` writes it, without lift_ci95 (the interval is computed from the counts)."""
    nf, ns = rows
    return {"failures": {"rows": nf, "with_pattern": round(rf * nf), "rate": rf},
            "successes": {"rows": ns, "with_pattern": round(rs * ns), "rate": rs}, "lift": lift, "available": True,
            **kw}


def report_obj(**patterns):
    base = {name: pattern(0.1, 0.1, 1.0) for name in
            ("cold_start", "long_tail", "short_history", "category_mismatch", "recency_bias")}
    return {"dataset": {"name": "skew", "split": "test", "num_rows": 150}, "num_rows": 150, "top_k": 10,
            "failures": 100, "successes": 50, "failure_rate": 100 / 150,
            "config": {"short_history_max_len": 2, "recency_old_fraction": 0.5},
            "patterns": {**base, **patterns},
            "sid_quality": {"collided_items": 0, "collision_rate": 0.0,
                            "per_level": [{"level": 0, "usage": 1.0, "entropy": 0.98}]}}


@pytest.fixture
def files(tmp_path):
    def write(report=None, base=None):
        r, b = tmp_path / "badcase_report.json", tmp_path / "base.yaml"
        r.write_text(json.dumps(report if report is not None else report_obj()))
        b.write_text(yaml.safe_dump(base if base is not None else BASE))
        return r, b
    return write


def optimized(tmp_path, files, names, report=None, base=None):
    r, b = files(report, base)
    out = tmp_path / "optimized.yaml"
    optimize(r, out, names=names, base=b)
    return out, b


def seqrec_targets(examples):
    return Counter(e["target"] for e in examples if e["task"] == "seqrec")


# ---------------------------------------------------------------------------------------------------- strategies
def test_defaults_leave_training_examples_unchanged():
    ds = skewed_dataset()
    plain = build_examples(ds, CODES, "train", SftConfig().tasks, seed=42)
    assert list(train_examples(SftConfig(), ds, CODES)) == plain
    assert sum(e["task"] == "seqrec" for e in plain) == len(ds.splits["train"])


def test_long_tail_oversamples_rare_targets_and_adds_the_diversity_reward(tmp_path, files):
    out, base = optimized(tmp_path, files, ["long_tail"])
    ds = skewed_dataset()
    before_cfg, after_cfg = (load_config(SftConfig, p, section="sft") for p in (base, out))
    assert after_cfg.sampling.kind == "inverse_frequency"
    before, after = seqrec_targets(list(train_examples(before_cfg, ds, CODES))), seqrec_targets(
        list(train_examples(after_cfg, ds, CODES)))
    assert before[0] == after[0] == 30  # the popular target keeps its rows, no more
    # a rare row weighs 1, a popular one 30^-0.5; rare rows are repeated 1 / mean weight = 2.69 times on average
    expected = 1 / ((30 * 30 ** -0.5 + 9) / 39)
    assert all(before[i] == 1 and after[i] in (2, 3) for i in range(1, NUM_ITEMS))
    assert abs(sum(after[i] for i in range(1, NUM_ITEMS)) / 9 - expected) < 0.5
    share = lambda c: 1 - c[0] / sum(c.values())  # noqa: E731
    assert share(before) == pytest.approx(9 / 39) and share(after) > 0.4
    assert list(train_examples(after_cfg, ds, CODES)) == list(train_examples(after_cfg, ds, CODES))  # seeded
    other_seed = after_cfg.model_copy(update={"seed": 8})
    assert seqrec_targets(list(train_examples(other_seed, ds, CODES)))[0] == 30
    # the alignment tasks are untouched
    count = lambda ex, t: sum(e["task"] == t for e in ex)  # noqa: E731
    assert count(list(train_examples(after_cfg, ds, CODES)), "title2sid") == NUM_ITEMS

    rl_before, rl_after = (load_config(RlConfig, p, section="rl") for p in (base, out))
    assert rl_after.rewards == {"rule": 1.0, "ranking": 1.0, "diversity": 0.1}
    # one group of 4 that misses the target, two completions sharing a first-level code: the base rewards give
    # every completion the same reward (no advantage); the optimized ones favour the distinct codes
    pred = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [2, 0, 0]])
    g = Groups(pred, np.array([[4, 1, 1]] * 4), np.arange(4), [[1]] * 4, group_size=4)
    total_before, _ = combine(g, rl_before.rewards)
    total_after, parts = combine(g, rl_after.rewards)
    assert np.ptp(total_before) == 0
    assert total_after[2] == total_after[3] > total_after[0] == total_after[1]
    assert "diversity" in parts


def test_cold_start_doubles_the_alignment_tasks(tmp_path, files):
    out, base = optimized(tmp_path, files, ["cold_start"])
    ds = skewed_dataset()
    count = lambda cfg, t: sum(e["task"] == t for e in train_examples(cfg, ds, CODES))  # noqa: E731
    before, after = (load_config(SftConfig, p, section="sft") for p in (base, out))
    assert after.tasks == {"seqrec": 1.0, "title2sid": 2.0, "sid2title": 2.0}
    for task in ("title2sid", "sid2title"):
        assert count(before, task) == NUM_ITEMS and count(after, task) == 2 * NUM_ITEMS
    assert count(before, "seqrec") == count(after, "seqrec") == len(ds.splits["train"])


def test_short_history_adds_short_copies_of_long_rows(tmp_path, files):
    out, base = optimized(tmp_path, files, ["short_history"])  # the report's short_history_max_len is 2
    ds = skewed_dataset()
    before_cfg, after_cfg = (load_config(SftConfig, p, section="sft") for p in (base, out))
    assert after_cfg.augment.short_history == 2
    before = [e for e in train_examples(before_cfg, ds, CODES) if e["task"] == "seqrec"]
    after = [e for e in train_examples(after_cfg, ds, CODES) if e["task"] == "seqrec"]
    long_rows = [e for e in before if len(e["history"]) > 2]
    extra = [e for e in after if e.get("augment") == "short_history"]
    assert len(after) == len(before) + len(long_rows) and len(extra) == len(long_rows)
    hist = ds.splits["train"]["history"].tolist()
    assert all(e["history"] == list(hist[e["row"]])[-2:] for e in extra)
    short = lambda ex: sum(len(e["history"]) <= 2 for e in ex)  # noqa: E731
    assert short(after) == short(before) + len(long_rows)
    assert [e for e in after if "augment" not in e] == before  # the original rows stay as they were


def test_recency_bias_adds_recent_only_copies(tmp_path, files):
    out, base = optimized(tmp_path, files, ["recency_bias"])
    ds = skewed_dataset()
    after_cfg = load_config(SftConfig, out, section="sft")
    assert after_cfg.augment.drop_old_fraction == 0.5
    after = [e for e in train_examples(after_cfg, ds, CODES) if e["task"] == "seqrec"]
    extra = [e for e in after if e.get("augment") == "drop_old"]
    hist = ds.splits["train"]["history"].tolist()
    assert len(extra) == sum(len(h) >= 2 for h in hist)
    for e in extra:
        h = list(hist[e["row"]])
        m = len(h) - len(e["history"])
        assert e["history"] == h[m:] and m == min(len(h) - 1, max(1, len(h) // 2))  # the old part is dropped
        assert e["target"] == ds.splits["train"]["target"].iloc[e["row"]]
    badcase = pytest.importorskip("sidrec.analysis.badcase")
    if hasattr(badcase, "old_part"):  # the same old part as the bad-case pattern
        assert all(len(hist[e["row"]]) - len(e["history"]) == badcase.old_part(len(hist[e["row"]]), 0.5)
                   for e in extra)


def test_sid_quality_builds_balanced_codes_with_one_more_level(tmp_path, files):
    rep = report_obj()
    rep["sid_quality"].update(collided_items=12, collision_rate=0.01)
    out, base = optimized(tmp_path, files, ["sid_quality"], report=rep)
    before, after = (load_config(SidConfig, p, section="sid") for p in (base, out))
    assert (before.method, before.levels) == ("rqkmeans", 3)
    assert (after.method, after.levels, after.codebook) == ("rqkmeans-constrained", 4, 4)
    X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    est = make_estimator(after.method, after.levels, after.codebook, after.seed, after.collision,
                         **after.method_params())
    with thread_limit(1):
        codes = est.fit(X).encode(X)
    assert codes.shape == (64, 4)
    assert np.bincount(codes[:, 0], minlength=4).tolist() == [16, 16, 16, 16]  # balanced first level
    # without collisions and from an unbalanced method only the method changes
    out2, _ = optimized(tmp_path, files, ["sid_quality"])
    assert load_config(SidConfig, out2, section="sid").levels == 3


def test_hyperparameter_changes_the_training_arguments(tmp_path, files):
    out, base = optimized(tmp_path, files, ["hyperparameter"])
    before, after = (training_arguments(load_config(SftConfig, p, section="sft"), tmp_path, 1000)
                     for p in (base, out))
    assert (before.learning_rate, before.num_train_epochs) == (2e-3, 8)
    assert (after.learning_rate, after.num_train_epochs) == (1e-3, 12)


def test_strategies_combine(tmp_path, files):
    out, _ = optimized(tmp_path, files, ["long_tail,cold_start", "short_history", "recency_bias", "cold_start"])
    cfg = load_config(SftConfig, out, section="sft")
    assert cfg.sampling.kind == "inverse_frequency" and cfg.tasks["title2sid"] == 2.0  # cold_start applied once
    assert (cfg.augment.short_history, cfg.augment.drop_old_fraction) == (2, 0.5)
    assert cfg.learning_rate == 2e-3 and cfg.seed == 7  # the base's other keys are kept
    ex = list(train_examples(cfg, skewed_dataset(), CODES))
    assert {e.get("augment") for e in ex if e["task"] == "seqrec"} == {None, "short_history", "drop_old"}


# ---------------------------------------------------------------------------------------------------- --auto
def test_auto_rules():
    rep = parse_report(report_obj(long_tail=pattern(0.4, 0.1, 4.0), cold_start=pattern(0.5, 0.6, 0.83),
                                  short_history=pattern(0.3, 0.0, None), recency_bias=pattern(0.2, 0.1, 2.0)))
    picked = {c.name: c.reason for c in auto_select(rep)}
    # cold_start: lift < 1; recency_bias: not over 20 %; short_history: only in failures (lift None, infinite)
    assert list(picked) == ["long_tail", "short_history"]
    assert "40.0% of failures (40 rows)" in picked["long_tail"] and "lift 4.00" in picked["long_tail"]
    # Katz: 40 of 100 vs 5 of 50 -> lift 4, lower bound 4 exp(-1.96 sqrt(1/40 - 1/100 + 1/5 - 1/50)) = 1.68
    assert "95% CI 1.68-9.5" in picked["long_tail"]

    for sid in ({"collided_items": 3}, {"per_level": [{"usage": 1.0, "entropy": 0.6}]},
                {"before": {"collision_rate": 0.02}}):
        obj = report_obj()
        obj["sid_quality"] = sid
        assert [c.name for c in auto_select(parse_report(obj))] == ["sid_quality"]
    unavailable = report_obj(recency_bias={**pattern(0.9, 0.1, 9.0), "available": False})
    choices = auto_select(parse_report(unavailable))
    assert [c.name for c in choices] == ["hyperparameter"] and "fallback" in choices[0].reason


def test_auto_needs_the_lift_to_clear_its_uncertainty():
    def picks(**patterns):
        return [c.name for c in auto_select(parse_report(report_obj(**patterns)))]

    # lift 1.01 (101 of 200 failures vs 100 of 200 successes): the interval holds 1 -> nothing fires
    assert picks(long_tail=pattern(0.505, 0.5, 1.01, rows=(200, 200))) == ["hyperparameter"]
    # lift 1.01 even on 40,000 rows: the lower bound stays under 1.1
    assert picks(long_tail=pattern(0.505, 0.5, 1.01, rows=(20000, 20000))) == ["hyperparameter"]
    # a large lift on too few failing rows (20 < 30) does not fire either
    assert picks(long_tail=pattern(0.5, 0.0, None, rows=(40, 1000))) == ["hyperparameter"]
    # a clear pattern on many rows: 800 of 2000 failures vs 200 of 2000 successes, lift 4,
    # se = sqrt(1/800 - 1/2000 + 1/200 - 1/2000) = 0.07246 -> 95% CI 4 exp(-+1.96 se) = 3.47-4.61
    rep = parse_report(report_obj(long_tail=pattern(0.4, 0.1, 4.0, rows=(2000, 2000))))
    assert rep.patterns["long_tail"].lift_ci == pytest.approx((3.4704, 4.6104), abs=1e-4)
    assert [c.name for c in auto_select(rep)] == ["long_tail"]
    # the report's own lift_ci95 is used when present
    obj = report_obj(long_tail=pattern(0.4, 0.1, 4.0, rows=(2000, 2000)))
    obj["patterns"]["long_tail"]["lift_ci95"] = [0.9, 9.0]
    assert [c.name for c in auto_select(parse_report(obj))] == ["hyperparameter"]


def test_sid_quality_does_not_fire_on_good_sids(tmp_path, files):
    # a category_mismatch that clears the rule, on SIDs whose figures are fine (no collision, usage 1, entropy .98)
    obj = report_obj(category_mismatch=pattern(0.5, 0.1, 5.0))
    choices = auto_select(parse_report(obj))
    assert [c.name for c in choices] == ["hyperparameter"]
    # the same pattern on colliding SIDs: sid_quality, with both figures as its reason
    obj["sid_quality"]["collided_items"] = 4
    (choice,) = auto_select(parse_report(obj))
    assert choice.name == "sid_quality" and "category_mismatch" in choice.reason and "4 collided" in choice.reason
    # chosen by hand on fine SIDs already balanced: the reason says they are fine, and no level is added
    r, b = files(report=report_obj(), base={**BASE, "sid": {**BASE["sid"], "method": "rqkmeans-constrained"}})
    text, applied = optimize(r, tmp_path / "o.yaml", names=["sid_quality"], base=b)
    assert "usage/entropy fine" in applied[0].reason and applied[0].changes == []
    assert load_config(SidConfig, tmp_path / "o.yaml", section="sid").levels == 3


def test_base_defaults_to_the_runs_own_config(tmp_path):
    run_cfg = {**BASE, "sft": {**BASE["sft"], "learning_rate": 1.0e-3}, "rl": {"enabled": False, **BASE["rl"]},
               "eval": {"beams": 20}, "analysis": {"top_k": 10}}
    # a run ledger: the resolved config under "config"
    run = tmp_path / "run"
    (run / "analysis").mkdir(parents=True)
    (run / "pipeline.json").write_text(json.dumps({"stages": {"eval": {"status": "done"}}, "config": run_cfg}))
    (run / "analysis" / "badcase_report.json").write_text(json.dumps(report_obj()))
    text, _ = optimize(run / "analysis", tmp_path / "o.yaml", names=["hyperparameter"])
    assert f"base {run / 'pipeline.json'}" in text.splitlines()[0]
    after = load_config(SftConfig, tmp_path / "o.yaml", section="sft")
    assert (after.learning_rate, after.epochs, after.seed) == (5e-4, 12, 7)  # the run's 1e-3 halved
    assert yaml.safe_load(text)["eval"] == {"beams": 20}
    # a run's config.yaml with pipeline sections (no ledger)
    run2 = tmp_path / "run2"
    (run2 / "analysis").mkdir(parents=True)
    (run2 / "config.yaml").write_text(yaml.safe_dump(run_cfg))
    (run2 / "analysis" / "badcase_report.json").write_text(json.dumps(report_obj()))
    text, _ = optimize(run2 / "analysis" / "badcase_report.json", tmp_path / "o2.yaml", names=["hyperparameter"])
    assert f"base {run2 / 'config.yaml'}" in text and "learning_rate: 0.0005" in text
    # --base may name the ledger or the run folder too
    for base in (run / "pipeline.json", run):
        text, _ = optimize(run2 / "analysis", tmp_path / "o3.yaml", names=["hyperparameter"], base=base)
        assert "learning_rate: 0.0005" in text
    # no base and no run config: an error that says what to give
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "badcase_report.json").write_text(json.dumps(report_obj()))
    with pytest.raises(SidrecError, match="no --base given and no run config found.*give --base CONFIG"):
        optimize(lone, tmp_path / "o4.yaml", auto=True)
    res = CliRunner().invoke(app, ["optimize", "--report", str(run / "analysis"), "--out", str(tmp_path / "o5.yaml"),
                                   "--auto"])
    assert res.exit_code == 0, res.output
    assert "pipeline.json" in res.output


def test_flat_report_form():
    obj = {"failure_rate": 0.8, "sid_quality": None, "dataset": {},
           "patterns": {"long_tail": {"rate_failures": 0.5, "rate_successes": 0.2, "lift": 2.5, "count_failures": 40,
                                      "lift_ci95": [1.5, 4.0]}}}
    rep = parse_report(obj)
    assert rep.patterns["long_tail"] == PatternStats("long_tail", 0.5, 0.2, 2.5, 40, True, (1.5, 4.0))
    assert rep.sid is None and [c.name for c in auto_select(rep)] == ["long_tail"]
    del obj["patterns"]["long_tail"]["lift_ci95"]  # no interval and no counts to compute one: never fires
    assert [c.name for c in auto_select(parse_report(obj))] == ["hyperparameter"]
    assert isinstance(rep, BadcaseReport) and SidStats(0, 0.0, 1.0, 1.0).problems() == []


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("patterns"), "missing key 'patterns'"),
    (lambda r: r.pop("failure_rate"), "missing key 'failure_rate'"),
    (lambda r: r["patterns"]["long_tail"].pop("lift"), "patterns.long_tail: missing key 'lift'"),
    (lambda r: r["patterns"]["cold_start"]["failures"].pop("rate"), "patterns.cold_start.failures: missing key 'rate'"),
    (lambda r: r["patterns"].update(long_tail={"rate_successes": 0.1, "lift": 1}), "missing key 'rate_failures'"),
    (lambda r: r["patterns"]["long_tail"].update(lift="high"), "patterns.long_tail.lift: expected a number"),
    (lambda r: r["patterns"]["long_tail"]["failures"].update(rate=3), "share between 0 and 1"),
    (lambda r: r.update(sid_quality=[1]), "sid_quality: expected an object or null"),
    (lambda r: r["patterns"]["long_tail"].update(lift_ci95=[1]), "patterns.long_tail.lift_ci95: expected [low, high]"),
])
def test_report_missing_or_bad_keys(tmp_path, mutate, message):
    obj = report_obj()
    mutate(obj)
    p = tmp_path / "r.json"
    p.write_text(json.dumps(obj))
    with pytest.raises(SidrecError, match=message.replace("(", r"\(").replace("[", r"\[")):
        read_report(p)


def test_report_not_json_or_missing(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("{nope")
    with pytest.raises(SidrecError, match="not valid JSON"):
        read_report(p)
    with pytest.raises(SidrecError, match="does not exist"):
        read_report(tmp_path / "missing.json")


def test_unknown_strategy_and_bad_base(tmp_path, files):
    r, b = files()
    with pytest.raises(SidrecError, match="unknown strategy 'popularity'; valid: long_tail, cold_start, short_history, "
                                          "recency_bias, sid_quality, hyperparameter"):
        optimize(r, tmp_path / "o.yaml", names=["popularity"], base=b)
    _, bad = files(base={"sft": {"learnign_rate": 1e-3}})
    with pytest.raises(SidrecError, match=r"base.yaml: sft.learnign_rate: Extra inputs.*valid keys: base_model"):
        optimize(r, tmp_path / "o.yaml", auto=True, base=bad)
    _, bad = files(base={"sftt": {}})
    with pytest.raises(SidrecError, match=r"unknown section\(s\) \['sftt'\]"):
        optimize(r, tmp_path / "o.yaml", auto=True, base=bad)
    with pytest.raises(SidrecError, match="either --auto or --strategy"):
        optimize(r, tmp_path / "o.yaml", names=["long_tail"], auto=True)
    assert not (tmp_path / "o.yaml").exists()


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_auto_writes_a_loadable_config_with_a_header(tmp_path, files):
    r, b = files(report=report_obj(long_tail=pattern(0.45, 0.15, 3.0)))
    out = tmp_path / "out" / "optimized.yaml"
    res = CliRunner().invoke(app, ["optimize", "--report", str(r), "--out", str(out), "--auto", "--base", str(b)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    header = [l for l in text.splitlines() if l.startswith("#")]
    assert "Strategies (chosen by --auto): long_tail" in text
    assert any("long_tail in 45.0% of failures (45 rows) vs 15.0% of successes (lift 3.00, 95% CI" in l
               for l in header)
    assert "#   sft.sampling.kind: uniform -> inverse_frequency" in header
    assert "#   rl.rewards.diversity: (unset) -> 0.1" in header
    assert load_config(SftConfig, out, section="sft").sampling.kind == "inverse_frequency"
    expected = {**BASE, "sft": {**BASE["sft"], "sampling": {"kind": "inverse_frequency", "power": 0.5}},
                "rl": {"rewards": {"rule": 1.0, "ranking": 1.0, "diversity": 0.1}}}
    assert yaml.safe_load(text) == expected
    assert load_config(SidConfig, out, section="sid").codebook == 4  # untouched sections are kept
    assert sorted(p.name for p in out.parent.iterdir()) == ["optimized.yaml"]  # atomic: no temp file left


def test_cli_interactive_choice(tmp_path, files):
    r, b = files()
    out = tmp_path / "o.yaml"
    res = CliRunner().invoke(app, ["optimize", "--report", str(r), "--out", str(out), "--base", str(b)],
                             input="bogus\ncold_start, hyperparameter\n")
    assert res.exit_code == 0, res.output
    assert "unknown strategy 'bogus'" in res.output
    cfg = load_config(SftConfig, out, section="sft")
    assert cfg.tasks["sid2title"] == 2.0 and cfg.learning_rate == 1e-3
    assert "Strategies (chosen by hand): cold_start, hyperparameter" in out.read_text()


def test_cli_unknown_strategy(tmp_path, files):
    r, _ = files()
    res = CliRunner().invoke(app, ["optimize", "--report", str(r), "--out", str(tmp_path / "o.yaml"),
                                   "--strategy", "nope"])
    assert isinstance(res.exception, SidrecError) and "valid: long_tail" in str(res.exception)


def test_reading_and_validating_configs_does_not_load_torch():
    # `sidrec optimize` and the pipeline's config check validate every stage's settings; that took ~20 s when the
    # settings classes lived beside the torch code
    import subprocess
    import sys

    code = ("import sys, sidrec.optimize, sidrec.pipeline, sidrec.train.config, sidrec.baselines.config\n"
            "from sidrec.optimize.strategies import section_models; section_models()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
