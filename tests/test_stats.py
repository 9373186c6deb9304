"""sidrec.evaluate.stats: the paired bootstrap and the lift interval against hand-computed cases."""

import math
import subprocess
import sys

import numpy as np
import pytest

from sidrec.errors import SidrecError
from sidrec.evaluate.harness import write_evaluation
from sidrec.evaluate.metrics import hr_ndcg
from sidrec.evaluate.stats import compare_ranks, lift_interval, load_ranks, paired_bootstrap, paired_ranks, row_scores


def test_row_scores_average_to_the_harness_metrics():
    ranks = np.array([0, 3, -1, 9, 1, 12])
    hr, ndcg = row_scores(ranks, 10)
    assert hr.tolist() == [1, 1, 0, 1, 1, 0]
    assert ndcg.tolist() == pytest.approx([1, 1 / math.log2(5), 0, 1 / math.log2(11), 1 / math.log2(3), 0])
    m = hr_ndcg(ranks, (10,))
    assert (hr.mean(), ndcg.mean()) == pytest.approx((m["HR@10"], m["NDCG@10"]))


def test_identical_runs_give_zero_interval():
    a = np.random.default_rng(1).random(300)
    r = paired_bootstrap(a, a.copy(), resamples=500)
    assert r["diff"] == 0 and r["ci"] == [0.0, 0.0] and r["rel_ci"] == [0.0, 0.0]


def test_known_shift_is_inside_the_interval():
    rng = np.random.default_rng(2)
    a = rng.random(400)
    r = paired_bootstrap(a, a + 0.05, resamples=500)  # every row 0.05 higher: every draw differs by exactly 0.05
    assert r["diff"] == pytest.approx(0.05) and r["ci"] == pytest.approx([0.05, 0.05])
    # a noisy shift: b = a + 0.05 + noise; the interval holds 0.05 and excludes 0
    b = a + 0.05 + rng.normal(0, 0.1, 400)
    r = paired_bootstrap(a, b, resamples=1000)
    assert r["ci"][0] < 0.05 < r["ci"][1] and r["ci"][0] > 0
    # its width is about 2 x 1.96 x sd / sqrt(n) of the per-row differences
    width = 2 * 1.96 * np.std(b - a) / np.sqrt(400)
    assert r["ci"][1] - r["ci"][0] == pytest.approx(width, rel=0.15)
    assert r["rel"] == pytest.approx(b.mean() / a.mean() - 1)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    a, b = rng.random(200), rng.random(200)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7)["ci"] != paired_bootstrap(a, b, seed=8)["ci"]
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(a, b[:10])


def test_compare_ranks_and_loading(tmp_path):
    write_evaluation(tmp_path / "a", "test", [1, 2, 3], [[1, 0], [0, 2], [0, 1]])
    write_evaluation(tmp_path / "b", "test", [1, 2, 3], [[1, 0], [2, 0], [3, 0]])
    a, b = load_ranks(tmp_path / "a"), load_ranks(tmp_path / "b" / "predictions.jsonl")
    assert a == {0: (1, 0), 1: (2, 1), 2: (3, -1)}
    ra, rb = paired_ranks(a, b)
    out = compare_ranks(ra, rb, ["HR@1", "HR@2"], resamples=300)
    assert out["HR@1"]["diff"] == pytest.approx(2 / 3) and out["HR@2"]["diff"] == pytest.approx(1 / 3)
    assert out["HR@1"]["ci"][1] == pytest.approx(1.0) and out["HR@1"]["ci"][0] >= 0
    write_evaluation(tmp_path / "c", "test", [1, 2, 4], [[1, 0], [2, 0], [3, 0]])
    with pytest.raises(SidrecError, match="1 rows have different targets"):
        paired_ranks(a, load_ranks(tmp_path / "c"))


def test_lift_interval_by_hand():
    # 40 of 100 failures vs 10 of 100 successes: lift 4, se = sqrt(1/40 - 1/100 + 1/10 - 1/100)
    lo, hi = lift_interval(40, 100, 10, 100)
    se = math.sqrt(1 / 40 - 1 / 100 + 1 / 10 - 1 / 100)
    assert (lo, hi) == pytest.approx((4 * math.exp(-1.959964 * se), 4 * math.exp(1.959964 * se)))
    # 5 of 10 vs none of 10: counts + 0.5, totals + 1 -> lift 11, finite bounds that hold 1 (ten rows say little)
    lo, hi = lift_interval(5, 10, 0, 10)
    se = math.sqrt(1 / 5.5 - 1 / 11 + 1 / 0.5 - 1 / 11)
    assert (lo, hi) == pytest.approx((11 * math.exp(-1.959964 * se), 11 * math.exp(1.959964 * se)))
    assert lo < 1 < hi < math.inf
    assert lift_interval(1, 0, 1, 5) is None
    lo, hi = lift_interval(0, 10, 5, 10)  # none among failures: lift 0, the interval starts at 0
    assert lo == 0 and hi == pytest.approx((0.5 / 11) / (5.5 / 11) * math.exp(1.959964 * se))
    big_lo, _ = lift_interval(4000, 10000, 1000, 10000)  # more rows, a tighter interval
    assert 3.7 < big_lo < 4


def test_lab_script_calls_the_library(tmp_path):
    write_evaluation(tmp_path / "a", "test", [1, 2, 3, 4], [[1, 0], [0, 2], [0, 1], [4, 0]])
    write_evaluation(tmp_path / "b", "test", [1, 2, 3, 4], [[1, 0], [2, 0], [3, 0], [4, 0]])
    out = subprocess.run([sys.executable, "lab/paired_bootstrap.py", str(tmp_path / "a" / "predictions.jsonl"),
                          str(tmp_path / "b"), "--k", "1", "--resamples", "200"], capture_output=True, text=True,
                         check=True).stdout
    assert "HR@1: 0.5000 -> 1.0000" in out and "95% paired bootstrap" in out
    for name, sids in (("a", [["s1"], ["s0"], ["s0"], ["s4"]]), ("b", [["s1"], ["s2"], ["s9"], ["s4"]])):
        write_evaluation(tmp_path / name, "test", [1, 2, 3, 4], [[1, 0], [0, 2], [0, 1], [4, 0]],
                         row_extras=[{"target_sid": f"s{t}", "predicted_sids": p} for t, p in zip([1, 2, 3, 4], sids)])
    assert load_ranks(tmp_path / "b", sid_match=True) == {0: ("s1", 0), 1: ("s2", 0), 2: ("s3", -1), 3: ("s4", 0)}
