"""Baselines on a tiny synthetic catalogue where item i is always followed by item i+1 (mod N)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sidrec.baselines import SasrecConfig, SasrecScorer, run_pop, run_sasrec
from sidrec.baselines.sasrec import SASRec, save_checkpoint
from sidrec.config import load_config
from sidrec.data.canonical import Dataset
from sidrec.errors import SidrecError

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS = 40
FAST = dict(hidden=32, blocks=1, heads=1, dropout=0.1, lr=3e-3, batch_size=128, max_epochs=12, patience=4, threads=1)


def items_frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": range(n), "title": [f"item {i}" for i in range(n)]})


def rows(samples) -> pd.DataFrame:
    return pd.DataFrame({"user": [u for u, _, _ in samples], "history": [h for _, h, _ in samples],
                         "target": [t for _, _, t in samples]})


def successor_dataset(folder: Path, users: int = 300, seq_len: int = 8, seed: int = 0) -> Path:
    """Each user walks i, i+1, i+2, ...; the last step is test, the one before valid, the rest train."""
    rng = np.random.default_rng(seed)
    splits = {"train": [], "valid": [], "test": []}
    for u in range(users):
        start = int(rng.integers(N_ITEMS))
        seq = [(start + k) % N_ITEMS for k in range(seq_len)]
        for t in range(1, seq_len):
            name = "test" if t == seq_len - 1 else "valid" if t == seq_len - 2 else "train"
            splits[name].append((u, seq[max(0, t - 10):t], seq[t]))
    Dataset.from_frames(items_frame(N_ITEMS), {k: rows(v) for k, v in splits.items()}).save(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return successor_dataset(tmp_path_factory.mktemp("succ") / "ds")


@pytest.fixture(scope="module")
def sasrec_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sasrec") / "run"
    return out, run_sasrec(data, out, SasrecConfig(**FAST), progress=False)


# ------------------------------------------------------------------------------------------------ pop
def test_pop_ranks_by_train_popularity(tmp_path):
    # train targets: item 3 x3, item 1 x2, item 4 x2, item 0 x1 -> ranking 3, 1, 4, 0, then 2 (never a target)
    train = rows([(0, [0], 3), (1, [0], 3), (2, [1], 3), (0, [3], 1), (1, [3], 1), (2, [3], 4), (3, [2], 4),
                  (3, [4], 0)])
    valid = rows([(0, [1], 1)])
    test = rows([(0, [1], 3), (1, [1], 4), (2, [4], 2)])
    ds = tmp_path / "ds"
    Dataset.from_frames(items_frame(5), {"train": train, "valid": valid, "test": test}).save(ds)
    res = run_pop(ds, tmp_path / "pop")
    preds = [json.loads(line) for line in (tmp_path / "pop" / "predictions.jsonl").read_text().splitlines()]
    assert preds[0]["predictions"] == [3, 1, 4, 0, 2]
    m = res["metrics"]
    assert m["HR@1"] == pytest.approx(1 / 3)  # only row 0 (target 3) is a top-1 hit
    assert m["HR@3"] == pytest.approx(2 / 3)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / np.log2(4) + 1 / np.log2(6)) / 3)  # ranks 0, 2, 4
    assert json.loads((tmp_path / "pop" / "valid" / "results.json").read_text())["metrics"]["HR@3"] == 1.0
    assert (tmp_path / "pop" / "manifest.json").exists()


# ------------------------------------------------------------------------------------------------ sasrec
def test_sasrec_learns_successor(sasrec_run):
    out, res = sasrec_run
    assert res["metrics"]["HR@1"] > 0.8  # chance is 1/40
    for f in ("results.json", "predictions.jsonl", "train_log.jsonl", "manifest.json", "valid/results.json",
              "model/model.safetensors", "model/config.json", "model/manifest.json"):
        assert (out / f).exists(), f
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log and {"epoch", "loss", "valid_NDCG@10"} <= set(log[0])
    assert res["best_epoch"] == max(log, key=lambda r: r["valid_NDCG@10"])["epoch"]


def test_sasrec_deterministic(data, sasrec_run, tmp_path):
    _, first = sasrec_run
    second = run_sasrec(data, tmp_path / "again", SasrecConfig(**FAST), progress=False)
    assert second["metrics"] == first["metrics"]
    assert second["best_epoch"] == first["best_epoch"]


def test_scorer_matches_predictions(sasrec_run, data):
    out, _ = sasrec_run
    scorer = SasrecScorer.load(out)  # the run folder or its model/ folder both work
    test = Dataset.load(data).splits["test"]
    preds = [json.loads(line)["predictions"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    hists = test["history"].tolist()
    scores = scorer.score(hists)
    assert scores.shape == (len(test), N_ITEMS)
    assert (scores.argmax(1) == np.array([p[0] for p in preds])).all()
    # single history -> 1-D; shared and per-row candidates pick the same logits
    np.testing.assert_allclose(scorer.score(hists[0], [5, 1, 7]), scores[0, [5, 1, 7]], rtol=1e-5, atol=1e-6)
    per_row = scorer.score(hists[:2], [[1, 2], [3, 4]])
    np.testing.assert_allclose(per_row, [scores[0, [1, 2]], scores[1, [3, 4]]], rtol=1e-5, atol=1e-6)


def test_scorer_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SASRec(25, hidden=16, blocks=2, heads=2, dropout=0.2, max_len=6).eval()
    save_checkpoint(model, tmp_path / "m")
    hists = [[1, 2, 3], [4], list(range(20))]  # short, single and over-long (truncated to the last 6)
    from sidrec.baselines.sasrec import pad_histories
    with torch.no_grad():
        want = model(pad_histories(hists, 6, 25)).numpy()
    got = SasrecScorer.load(tmp_path / "m").score(hists)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(SasrecScorer.load(tmp_path / "m").score(hists), got)


def test_ensemble_scorer_averages_runs(tmp_path):
    from sidrec.baselines.sasrec import SasrecEnsemble, load_scorer

    hists = [[1, 2, 3], [4]]
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(SASRec(25, hidden=16, blocks=1, heads=1, dropout=0.0, max_len=6), tmp_path / f"m{seed}")
    a, b = (SasrecScorer.load(tmp_path / f"m{s}").score(hists, [[3, 7], [9, 1]]) for s in (0, 1))
    assert not np.allclose(a, b)  # two seeds really differ, so the mean is not either of them
    ens = load_scorer([tmp_path / "m0", tmp_path / "m1"])
    assert ens.num_items == 25 and isinstance(load_scorer(tmp_path / "m0"), SasrecScorer)
    np.testing.assert_allclose(ens.score(hists, [[3, 7], [9, 1]]), (a + b) / 2, rtol=1e-6)
    save_checkpoint(SASRec(30, hidden=16, blocks=1, heads=1, dropout=0.0, max_len=6), tmp_path / "other")
    with pytest.raises(SidrecError, match="catalogue size"):
        load_scorer([tmp_path / "m0", tmp_path / "other"])
    with pytest.raises(SidrecError, match="at least one"):
        SasrecEnsemble([])


def test_cross_fitted_scorers_hold_out_their_fold(data, tmp_path):
    from sidrec.baselines.sasrec import CrossFitScorer, load_scorer

    train = Dataset.load(data).splits["train"]
    assert set(train["user"] % 2) == {0, 1}  # the fixture really has users in both folds
    outs = {}
    for fold in (0, 1):
        outs[fold] = tmp_path / f"fold{fold}"
        run_sasrec(data, outs[fold], SasrecConfig(**FAST, folds=2, holdout_fold=fold), progress=False)
        log = (outs[fold] / "manifest.json").read_text()
        assert '"folds": 2' in log and f'"holdout_fold": {fold}' in log
    # each fold's model learnt the successor rule from the other users only; it still scores its own users' rows
    by_fold = load_scorer({0: str(outs[0]), 1: str(outs[1])})
    assert isinstance(by_fold, CrossFitScorer)
    hists, users = [[3, 4], [10, 11], [20, 21]], [0, 1, 2]
    cands = [[5, 6], [12, 13], [22, 23]]
    got = by_fold.score(hists, cands, users=users)
    singles = {f: SasrecScorer.load(outs[f]).score(hists, cands) for f in (0, 1)}
    np.testing.assert_allclose(got, np.stack([singles[0][0], singles[1][1], singles[0][2]]), rtol=1e-6)
    assert (got[:, 0] > got[:, 1]).all()  # the true successor first
    # a model trained on every user (or on the wrong fold) would score rows it has seen: refused
    with pytest.raises(SidrecError, match="has seen the rows"):
        load_scorer({0: str(outs[1]), 1: str(outs[0])})
    full = tmp_path / "full"
    run_sasrec(data, full, SasrecConfig(**{**FAST, "max_epochs": 1}), progress=False)
    with pytest.raises(SidrecError, match=r"\(folds, holdout_fold\)=\(1, 0\)"):
        load_scorer({0: str(full), 1: str(outs[1])})
    with pytest.raises(ValueError, match="holdout_fold=2 must be below folds=2"):
        SasrecConfig(folds=2, holdout_fold=2)


def test_fold_training_uses_only_the_other_users(data, tmp_path, monkeypatch):
    from sidrec.baselines import sasrec as mod

    seen = []
    real = mod._split_tensors
    monkeypatch.setattr(mod, "_split_tensors", lambda ds, name, n: (seen.append((name, ds.splits[name])),
                                                                     real(ds, name, n))[1])
    run_sasrec(data, tmp_path / "f", SasrecConfig(**{**FAST, "max_epochs": 1}, folds=3, holdout_fold=1),
               progress=False)
    parts = dict(seen)
    full = Dataset.load(data).splits
    assert set(parts["train"]["user"] % 3) == {0, 2}
    assert len(parts["train"]) == int((full["train"]["user"] % 3 != 1).sum())
    assert len(parts["valid"]) == len(full["valid"]) and len(parts["test"]) == len(full["test"])


# ------------------------------------------------------------------------------------------------ bad input
def _save_raw(folder: Path, splits: dict, n: int = 5) -> Path:
    """Write a dataset folder without from_frames' validation, as a broken importer might."""
    full = {k: v.assign(timestamp=None) for k, v in splits.items()}
    users = pd.DataFrame({"user": [0], "user_raw": [None]})
    Dataset(items=Dataset.from_frames(items_frame(n), {k: rows([(0, [0], 1)]) for k in full}).items,
            splits=full, users=users).save(folder)
    return folder


def test_unknown_history_item_is_an_error(tmp_path):
    ok = rows([(0, [0], 1)])
    ds = _save_raw(tmp_path / "ds", {"train": rows([(0, [0, 99], 1)]), "valid": ok, "test": ok})
    with pytest.raises(SidrecError, match="history item 99"):
        run_sasrec(ds, tmp_path / "out", SasrecConfig(**FAST), progress=False)
    with pytest.raises(SidrecError, match="history item 99"):
        run_pop(ds, tmp_path / "pop")


def test_empty_split_is_an_error(tmp_path):
    ok = rows([(0, [0], 1)])
    ds = _save_raw(tmp_path / "ds", {"train": ok, "valid": ok, "test": ok.iloc[:0]})
    with pytest.raises(SidrecError, match="'test' is empty"):
        run_sasrec(ds, tmp_path / "out", SasrecConfig(**FAST), progress=False)


def test_scorer_errors(tmp_path, sasrec_run):
    with pytest.raises(SidrecError, match="no SASRec checkpoint"):
        SasrecScorer.load(tmp_path)
    # weights that do not match their config.json
    bad = tmp_path / "bad"
    save_checkpoint(SASRec(10, hidden=16, blocks=1, heads=1, dropout=0.0, max_len=4), bad)
    arch = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**arch, "hidden": 32}))
    with pytest.raises(SidrecError, match="does not match"):
        SasrecScorer.load(bad)
    scorer = SasrecScorer.load(sasrec_run[0] / "model")
    with pytest.raises(SidrecError, match="history item 40"):
        scorer.score([1, 40])
    with pytest.raises(SidrecError, match="candidate item -1"):
        scorer.score([1, 2], [0, -1])


# ------------------------------------------------------------------------------------------------ config + CLI
def test_config_yaml_and_overrides(tmp_path):
    cfg = load_config(SasrecConfig, ROOT / "configs" / "sasrec.yaml", ["dropout=0.5", "sasrec.hidden=32"],
                      section="sasrec")
    assert (cfg.dropout, cfg.hidden) == (0.5, 32)
    with pytest.raises(SidrecError, match="valid keys"):
        load_config(SasrecConfig, None, ["hiddn=3"], section="sasrec")


def test_cli_pop(data, tmp_path):
    import sidrec.cli as cli
    from typer.testing import CliRunner

    res = CliRunner().invoke(cli.app, ["baseline", "pop", "--data", str(data), "--out", str(tmp_path / "pop")])
    assert res.exit_code == 0, res.output
    assert "HR@10" in res.output and (tmp_path / "pop" / "results.json").exists()


def test_cli_sasrec_config_and_set(data, tmp_path):
    import sidrec.cli as cli
    from typer.testing import CliRunner

    cfg = tmp_path / "c.yaml"
    cfg.write_text("sasrec:\n  hidden: 16\n  blocks: 1\n  heads: 1\n  threads: 1\n")
    out = tmp_path / "s"
    res = CliRunner().invoke(cli.app, ["baseline", "sasrec", "--data", str(data), "--out", str(out),
                                       "--config", str(cfg), "--set", "max_epochs=2", "--set", "dropout=0.0"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["hidden"] == 16 and manifest["config"]["max_epochs"] == 2
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2


def test_pad_histories_from_lists_and_the_arrow_column_equal_a_row_by_row_padding():
    import pyarrow as pa

    from sidrec.baselines.sasrec import pad_histories
    from sidrec.data.canonical import HISTORY_TYPE

    rng = np.random.default_rng(3)
    lists = [rng.integers(0, 50, rng.integers(0, 9)).tolist() for _ in range(40)]
    col = pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array(
        [pa.array(lists[:17], HISTORY_TYPE), pa.array(lists[17:], HISTORY_TYPE)])))  # two chunks, empty rows too
    for max_len in (1, 4, 12):
        want = torch.full((len(lists), max_len), 50, dtype=torch.int64)  # row by row: the newest item last
        for i, h in enumerate(lists):
            kept = h[-max_len:]
            if kept:
                want[i, max_len - len(kept):] = torch.tensor(kept)
        assert torch.equal(pad_histories(lists, max_len, 50), want)
        assert torch.equal(pad_histories(col, max_len, 50), want)
        assert torch.equal(pad_histories(col.iloc[5:30], max_len, 50), want[5:30])  # a slice across the chunks
