"""Cold re-ranking: cold rows (no train row or a short history) and the others get their own λ and recency-prior μ."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sidrec.cli import app
from sidrec.errors import SidrecError
from sidrec.evaluate.fusion import COLD, cold_rows, fuse, fused_scores, pick_weights, recency_prior
from sidrec.evaluate.harness import load_predictions
from sidrec.pipeline import load_pipeline_config
from sidrec.rerank import format_gains, rerank_eval

from test_fusion import toy  # noqa: F401  (the module's fixture: a toy SFT model's beams, a SASRec scorer)

SCORES = np.array([[-1.0, -1.2, -3.0]] * 2)
LOGITS = np.array([[0.0, 3.0, 0.0]] * 2)  # z = [-1, 2, -1] / sqrt(2): beam 1 overtakes beam 0 once λ > 0.0943
PRIOR = np.array([[0.0, 1.0, 0.0]] * 2)  # beam 1 overtakes beam 0 once μ > 0.2


class Toy:
    """What `row_groups` / `recency_prior` read of a dataset: splits in time order, the item count."""
    num_items = 5

    def __init__(self):
        self.splits = {"train": pd.DataFrame({"user": [1, 1, 2], "history": [[0], [0, 1], [3]], "target": [1, 2, 2]}),
                       "valid": pd.DataFrame({"user": [1, 3], "history": [[0, 1, 2], [4]], "target": [3, 3]}),
                       "test": pd.DataFrame({"user": [3, 2, 1], "history": [[4, 3], [3, 2, 1], [0, 1, 2, 3]],
                                             "target": [0, 4, 4]})}

    def train_target_counts(self):
        return np.bincount(self.splits["train"]["target"], minlength=self.num_items)


def test_per_row_weight_and_prior_change_the_ranking_by_hand():
    assert fuse(SCORES, LOGITS, [0.09, 0.1]).tolist() == [[0, 1, 2], [1, 0, 2]]  # only the second row flips
    assert fuse(SCORES, 0 * LOGITS, 0.0, priors=[(PRIOR, [0.1, 0.3])]).tolist() == [[0, 1, 2], [1, 0, 2]]
    r2 = np.sqrt(2.0)
    np.testing.assert_allclose(fused_scores(SCORES, LOGITS, [0.0, 1.0], priors=[(PRIOR, [0.5, 0.0])]),
                               [[-1.0, -0.7, -3.0], [-1 - 1 / r2, -1.2 + 2 / r2, -3 - 1 / r2]])


def test_pick_weights_needs_the_prior_when_the_scorer_cannot_help():
    # row 0: target in beam 1, which only the prior favours (needs μ > 0.2); row 1: target in beam 0, which a prior
    # above 0.5 pushes below beam 2. Only μ = 0.3 ranks both targets first; the scorer is flat (λ has no effect).
    scores = np.array([[-1.0, -1.2, -3.0], [-1.0, -2.0, -1.5]])
    prior = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    (lam, mu), table = pick_weights(scores, np.zeros((2, 3)), [[[0], [1], [2]], [[3], [4], [5]]], [1, 3],
                                    grid=(0.0, 1.0), priors=[(prior, (0.0, 0.3, 1.0))])
    assert (lam, mu) == (0.0, 0.3) and table[0.0, 0.3]["NDCG@1"] == 1.0 == 2 * table[0.0, 0.0]["NDCG@1"]


def test_recency_prior_and_cold_rows_by_hand():
    ds = Toy()
    # window = 2 valid rows: valid sees the last two train targets (2, 2); test sees the two valid targets (3, 3)
    np.testing.assert_allclose(recency_prior(ds, "valid"), np.log1p([0, 0, 2, 0, 0]))
    np.testing.assert_allclose(recency_prior(ds, "test"), np.log1p([0, 0, 0, 2, 0]))
    np.testing.assert_allclose(recency_prior(ds, "test", window=3), np.log1p([0, 0, 1, 2, 0]))
    # user 3 has no train row; user 2's history has 3 items, user 1's 4
    assert cold_rows(ds, "test", 3).tolist() == [True, False, False]
    assert cold_rows(ds, "valid", 2).tolist() == [False, True]  # user 1 with a 3-item history is not cold


@pytest.mark.parametrize("bad", [[0.1, -1.0], [0.1, float("nan")], [0.1]])
def test_bad_per_row_weight_is_one_line_error(bad):
    with pytest.raises(SidrecError) as e:
        fused_scores(SCORES, LOGITS, 1.0, priors=[(PRIOR, bad)])
    assert "\n" not in str(e.value) and ("out of range" in str(e.value) or "2 rows" in str(e.value))
    with pytest.raises(SidrecError, match="out of range"):
        pick_weights(SCORES, LOGITS, [[[0], [1], [2]]] * 2, [1, 1], priors=[(PRIOR, (0.0, -0.5))])


def test_pipeline_config_checks_the_cold_settings():
    assert load_pipeline_config("configs/smoke.yaml", ["rerank.cold=true"]).rerank.cold
    for bad, message in (("rerank.prior_grid=[0, -1]", "rerank.prior_grid.1"), ("rerank.prior_grid=[]",
                                                                                   "rerank.prior_grid"),
                         ("rerank.weight=1", "rerank.weight=auto")):
        with pytest.raises(SidrecError, match=message) as e:
            load_pipeline_config("configs/smoke.yaml", ["rerank.cold=true", bad])
        assert "\n" not in str(e.value)


def test_rerank_cold_end_to_end(toy, tmp_path):  # noqa: F811
    root, data, sids, out, _ = toy
    args = ["rerank", "--eval", str(out), "--data", str(data), "--scorer", str(root / "sasrec"), "--valid-eval",
            str(out / "valid"), "--out", str(tmp_path / "cold"), "--cold"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    gains = json.loads((tmp_path / "cold" / "gains.json").read_text())
    c = gains["cold"]
    assert c["rows"] == COLD and gains["weight"] == c["others"]["weight"] and "cold rows" in res.output
    results = json.loads((tmp_path / "cold" / "results.json").read_text())
    assert results["rerank"]["cold"] == c
    # the written ranking is the fused order of each row's own (λ, μ), and its metrics are recomputed from it
    rows = load_predictions(tmp_path / "cold")
    for row in rows:
        assert row["fused_scores"] == sorted(row["fused_scores"], reverse=True)
    groups = gains["splits"]["test"]["groups"]
    assert groups["all"]["reranked"]["NDCG@10"] == pytest.approx(results["metrics"]["NDCG@10"])
    assert any(line.startswith("cold rows") for line in format_gains(gains))
    with pytest.raises(SidrecError, match="weight auto") as e:
        rerank_eval(out, data, [root / "sasrec"], tmp_path / "x", 1.0, valid_eval=out / "valid", cold=True)
    assert "\n" not in str(e.value)
