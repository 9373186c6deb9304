"""The transition prior of the hybrid ranking: log(1 + count of (last history item -> beam's item)) among the
labelled rows before the split, its weight τ picked on valid with λ (and μ); and the array ranks `pick_weights`
scores with."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sidrec.cli import app
from sidrec.errors import SidrecError
from sidrec.evaluate.fusion import (beam_hits, fuse, ordered_ranks, pick_weights, ranked_items, transition_counts,
                                    transition_prior)
from sidrec.evaluate.metrics import target_ranks
from sidrec.pipeline import load_pipeline_config

from test_cold_rerank import Toy
from test_fusion import toy  # noqa: F401  (the module's fixture: a toy SFT model's beams, a SASRec scorer)


def test_transition_counts_by_hand():
    ds = Toy()  # train: 0->1, 1->2, 3->2; valid: 2->3, 4->3; test: 3->0, 1->4, 3->4 (last history item -> target)
    keys, values, num_items = transition_counts(ds, "valid")
    assert keys.tolist() == [0 * 5 + 1, 1 * 5 + 2, 3 * 5 + 2] and np.allclose(values, np.log1p(1)) and num_items == 5
    keys, *_ = transition_counts(ds, "test")
    assert keys.tolist() == [1, 7, 13, 17, 23]
    keys, *_ = transition_counts(ds, None)  # what serving knows: every labelled row
    assert keys.tolist() == [1, 7, 9, 13, 15, 17, 19, 23]
    with pytest.raises(SidrecError, match="choose valid or test"):
        transition_counts(ds, "holdout")


def test_transition_prior_counts_repeated_pairs_and_skips_missing():
    ds = Toy()
    ds.splits = {**ds.splits, "train": pd.DataFrame({"user": [1, 2, 3, 4], "history": [[0], [4, 0], [], [2]],
                                                     "target": [1, 1, 3, 0]})}
    table = transition_counts(ds, "valid")  # 0->1 twice, 2->0 once; the empty history counts nothing
    prior = transition_prior(table, np.array([0, 2, -1]), np.array([[1, 0, -1], [0, 1, 3], [1, 0, 3]]))
    np.testing.assert_allclose(prior, [[np.log(3), 0, 0], [np.log(2), 0, 0], [0, 0, 0]])
    assert transition_prior((np.zeros(0, np.int64), np.zeros(0), 5), np.array([0]), np.array([[1]])).tolist() == [[0]]


def test_ordered_ranks_equal_the_item_lists_ranks():
    rng = np.random.default_rng(0)
    n, width = 300, 8
    beam_items = []
    for _ in range(n):  # collisions (1-3 items a beam), an item in two beams, rows with fewer beams
        k = int(rng.integers(1, width + 1))
        beam_items.append([list(rng.choice(20, size=int(rng.integers(1, 4)), replace=False)) for _ in range(k)])
    targets = [int(rng.integers(0, 20)) for _ in range(n)]
    scores = np.where(np.arange(width)[None] < np.array([len(b) for b in beam_items])[:, None],
                      -np.sort(rng.random((n, width)), 1), -np.inf)
    counts, offsets = beam_hits(beam_items, targets, width)
    for group in (None, 5):
        order = fuse(scores, rng.normal(size=(n, width)), 1.0, group)
        for limit in (50, 6):
            expected = target_ranks(ranked_items(order, beam_items, limit), targets)
            assert (ordered_ranks(order, counts, offsets, limit) == expected).all()
            assert (expected >= 0).sum() > 20  # the case is not vacuous


def test_pick_weights_takes_the_transition_prior_when_only_it_helps():
    # row 0: target in beam 2, which only the transition prior lifts (τ > 1.5); the recency prior favours beam 1,
    # whose pick would put row 0's target lower. Row 1: target in beam 0, which τ = 5 would push below beam 1.
    scores = np.array([[-1.0, -1.5, -2.0], [-1.0, -1.1, -3.0]])
    recency = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    transition = np.array([[0.0, 0.0, 1.0], [0.0, 0.04, 0.0]])
    point, table = pick_weights(scores, np.zeros((2, 3)), [[[0], [1], [2]], [[3], [4], [5]]], [2, 3],
                                grid=(0.0, 1.0), priors=[(recency, (0.0, 1.0)), (transition, (0.0, 2.0, 5.0))])
    assert point == (0.0, 0.0, 2.0)
    assert table[point]["NDCG@1"] == 1.0 and table[0.0, 0.0, 0.0]["NDCG@1"] == 0.5
    assert table[0.0, 0.0, 5.0]["NDCG@1"] == 0.5  # τ too large loses row 1


def test_rerank_picks_tau_on_valid_and_can_leave_it_out(toy, tmp_path):  # noqa: F811
    root, data, sids, out, _ = toy
    base = ["rerank", "--eval", str(out), "--data", str(data), "--scorer", str(root / "sasrec"), "--valid-eval",
            str(out / "valid")]
    res = CliRunner().invoke(app, base + ["--out", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    gains = json.loads((tmp_path / "t" / "gains.json").read_text())
    tau = gains["transition"]
    assert tau["weight"] in tau["grid"] and "transition prior τ" in res.output
    picked = json.loads((tmp_path / "t" / "results.json").read_text())["rerank"]["picked_on"]["grid"]
    assert len(picked) == 11 * len(tau["grid"]) and all("transition_weight" in p for p in picked)
    best = max(picked, key=lambda p: p["NDCG@10"])["NDCG@10"]
    assert gains["splits"]["valid"]["groups"]["all"]["reranked"]["NDCG@10"] == pytest.approx(best)

    res = CliRunner().invoke(app, base + ["--out", str(tmp_path / "c"), "--cold"])
    assert res.exit_code == 0, res.output
    cold = json.loads((tmp_path / "c" / "gains.json").read_text())["cold"]
    assert {"weight", "prior_weight", "transition_weight"} <= cold["cold"].keys() <= cold["others"].keys()

    res = CliRunner().invoke(app, base + ["--out", str(tmp_path / "n"), "--cold", "--no-transition"])
    assert res.exit_code == 0, res.output
    gains = json.loads((tmp_path / "n" / "gains.json").read_text())
    assert gains["transition"] is None and "transition_weight" not in gains["cold"]["others"]


def test_pipeline_config_checks_the_transition_grid():
    assert load_pipeline_config("configs/smoke.yaml", ["rerank.transition_grid=[0]"]).rerank.transition_grid == [0]
    for bad, message in (("rerank.transition_grid=[0, -1]", "rerank.transition_grid.1"),
                         ("rerank.transition_grid=[]", "rerank.transition_grid")):
        with pytest.raises(SidrecError, match=message) as e:
            load_pipeline_config("configs/smoke.yaml", [bad])
        assert "\n" not in str(e.value)


def test_last_items_and_lengths_from_the_arrow_column_equal_the_list_path():
    import pyarrow as pa

    from sidrec.data.canonical import HISTORY_TYPE, history_lengths
    from sidrec.evaluate.fusion import last_items

    lists = [[3], [], [4, 5, 6], [7, 8], [], [9]]
    col = pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array(
        [pa.array(lists[:2], HISTORY_TYPE), pa.array(lists[2:], HISTORY_TYPE)])))
    assert last_items(col).tolist() == last_items(lists).tolist() == [3, -1, 6, 8, -1, 9]
    assert last_items(col.iloc[1:5]).tolist() == [-1, 6, 8, -1]
    assert history_lengths(col).tolist() == [1, 0, 3, 2, 0, 1]
