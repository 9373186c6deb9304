import json
import math

import numpy as np
import pytest

from sidrec.evaluate import hr_ndcg, target_ranks, write_evaluation
from sidrec.evaluate.harness import load_predictions, load_results


def test_ranks_and_metrics_hand_computed():
    preds = [[5, 1, 2], [1, 3, 2], [1, 2], [0, 4]]
    targets = [5, 2, 9, 4]
    ranks = target_ranks(preds, targets)
    assert ranks.tolist() == [0, 2, -1, 1]
    m = hr_ndcg(ranks, ks=(1, 2, 3, 50))
    assert m["HR@1"] == pytest.approx(0.25)
    assert m["NDCG@1"] == pytest.approx(0.25)
    assert m["HR@2"] == pytest.approx(0.5)
    assert m["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["HR@3"] == pytest.approx(0.75)
    assert m["NDCG@3"] == pytest.approx((1 + 0.5 + 0.6309297535714575) / 4)
    assert m["HR@50"] == m["HR@3"]
    assert list(m) == ["HR@1", "NDCG@1", "HR@2", "NDCG@2", "HR@3", "NDCG@3", "HR@50", "NDCG@50"]


def test_only_first_occurrence_counts_and_empty_rows_miss():
    assert target_ranks([[3, 3], []], [3, 1]).tolist() == [0, -1]
    with pytest.raises(ValueError):
        hr_ndcg(np.array([], dtype=int))
    with pytest.raises(ValueError):
        target_ranks([[1]], [1, 2])


def test_harness_writes_results_and_predictions(tmp_path):
    # items 1 and 5 share a SID: SID matching credits row 0 (target 5, top prediction 1), exact matching does not.
    sid_of_item = ["s0", "sX", "s2", "s3", "s4", "sX"]
    res = write_evaluation(tmp_path, "test", targets=[5, 2], predictions=[[1, 0], [2, 3]], users=[7, 8],
                           sid_of_item=sid_of_item, num_items=6, info={"model": "toy"})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == res == load_results(tmp_path)
    assert saved["split"] == "test" and saved["num_samples"] == 2 and saved["model"] == "toy"
    assert list(saved["metrics"]) == [f"{p}@{k}" for k in (1, 3, 5, 10, 20, 50) for p in ("HR", "NDCG")]
    assert saved["metrics"]["HR@1"] == 0.5
    assert saved["metrics_sid_match"]["HR@1"] == 1.0
    rows = load_predictions(tmp_path)
    assert rows[0] == {"row": 0, "user": 7, "target": 5, "predictions": [1, 0]}
    assert (tmp_path / "manifest.json").exists()
    # anyone can recompute the metrics from predictions.jsonl
    again = hr_ndcg(target_ranks([r["predictions"] for r in rows], [r["target"] for r in rows]))
    assert again == saved["metrics"]


def test_harness_rejects_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        write_evaluation(tmp_path, "test", [1], [[1, 1]])
    with pytest.raises(ValueError, match="at most 50"):
        write_evaluation(tmp_path, "test", [1], [list(range(51))])
    with pytest.raises(ValueError, match="outside the catalogue"):
        write_evaluation(tmp_path, "test", [1], [[7]], num_items=5)
    assert not (tmp_path / "results.json").exists()
