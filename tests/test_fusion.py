"""Hybrid ranking (sidrec.evaluate.fusion): beam log-likelihood + λ · z(SASRec logit), λ picked on valid."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from generative_fixtures import make_toy, train_toy_sft
from sidrec.baselines import SasrecConfig, run_sasrec
from sidrec.baselines.sasrec import SASRec, save_checkpoint
from sidrec.cli import app
from sidrec.errors import SidrecError
from sidrec.evaluate.fusion import check_weight, fuse, fused_scores, pick_weights, rerank_beams, zscores
from sidrec.evaluate.harness import load_predictions
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.rerank import rerank_eval

FAST = dict(hidden=32, blocks=1, heads=1, dropout=0.1, lr=3e-3, batch_size=128, max_epochs=6, patience=3, threads=1)
SCORES = np.array([[-1.0, -1.2, -3.0]])
LOGITS = np.array([[0.0, 3.0, 0.0]])  # mean 1, population std sqrt(2)


# ---------------------------------------------------------------------------------------------------- pure functions
def test_fusion_by_hand_on_three_beams():
    r2 = np.sqrt(2.0)
    np.testing.assert_allclose(zscores(LOGITS), [[-1 / r2, 2 / r2, -1 / r2]])
    np.testing.assert_allclose(fused_scores(SCORES, LOGITS, 1.0), [[-1 - 1 / r2, -1.2 + 2 / r2, -3 - 1 / r2]])
    assert fuse(SCORES, LOGITS, 1.0).tolist() == [[1, 0, 2]]  # -0.786 > -1.707 > -3.707
    # beam 1 overtakes beam 0 once 3/sqrt(2) · λ > 0.2, i.e. λ > 0.0943
    assert fuse(SCORES, LOGITS, 0.09).tolist() == [[0, 1, 2]]
    assert fuse(SCORES, LOGITS, 0.1).tolist() == [[1, 0, 2]]
    # group=2: z over the first two beams only ([-1, 1]), the third stays where it is
    np.testing.assert_allclose(fused_scores(SCORES, LOGITS, 1.0, group=2), [[-2.0, -0.2, -3.0]])
    assert fuse(np.array([[-1.0, -1.2, -1.1]]), LOGITS, 1.0, group=2).tolist() == [[1, 0, 2]]


def test_weight_zero_keeps_the_order_and_missing_beams_stay_last():
    rng = np.random.default_rng(0)
    scores = -np.sort(rng.random((5, 6)), axis=1).cumsum(axis=1)
    scores[2, 4:] = -np.inf  # a row with fewer beams
    scores[3, 1] = scores[3, 2]  # a tie keeps the beam order
    logits = rng.normal(size=(5, 6)) * 10
    assert (fuse(scores, logits, 0.0) == np.arange(6)).all()
    assert fuse(scores, logits, 1e6)[2, 4:].tolist() == [4, 5]


def test_rerank_beams_maps_sids_to_items_for_the_scorer():
    class Scorer:  # likes item 7 most
        num_items = 10

        def score(self, histories, cands):
            return np.array([[10.0 if c == 7 else 0.0 for c in row] for row in cands])

    first_item = np.array([3, 7, 5])  # SID index -> item
    sid_index = np.array([[0, 2, 1], [1, 0, -1]])
    scores = np.array([[-1.0, -1.5, -2.0], [-1.0, -1.1, -np.inf]])
    new_sids, fused = rerank_beams([[1], [2]], sid_index, scores, Scorer(), 1.0, first_item)
    assert new_sids.tolist() == [[1, 0, 2], [1, 0, -1]]
    assert np.isneginf(fused[1, 2]) and (np.diff(fused[0]) <= 0).all()


def test_pick_weights_picks_the_best_valid_grid_point():
    # row A: target in beam 1, which SASRec favours (needs λ > 0.094); row B: target in beam 0, which a strong SASRec
    # preference for beam 2 overturns once λ > 0.707. Only λ = 0.5 ranks both targets first.
    scores = np.array([[-1.0, -1.2, -3.0], [-1.0, -2.0, -2.5]])
    logits = np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 10.0]])
    beam_items = [[[0], [1], [2]], [[3], [4], [5]]]
    (best,), table = pick_weights(scores, logits, beam_items, [1, 3], grid=(1.0, 0.0, 0.5))
    assert best == 0.5 and list(table) == [(0.0,), (0.5,), (1.0,)]
    assert table[0.5,]["NDCG@1"] == 1.0 and table[0.0,]["NDCG@1"] == 0.5 == table[1.0,]["NDCG@1"]
    assert pick_weights(scores, logits, beam_items, [0, 3], grid=(0.0, 0.01))[0] == (0.0,)  # ties: the smaller λ


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "abc"])
def test_bad_weight_is_one_line_error(bad):
    with pytest.raises(SidrecError, match="weight") as e:
        check_weight(bad)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    data, sids, model = train_toy_sft(root, epochs=3)
    run_sasrec(data, root / "sasrec", SasrecConfig(**FAST), progress=False)
    out = root / "eval"
    res = CliRunner().invoke(app, ["eval", "--model", str(model), "--data", str(data), "--sids", str(sids),
                                   "--out", str(out), "--beams", "8", "--rerank", str(root / "sasrec")])
    assert res.exit_code == 0, res.output
    return root, data, sids, out, res.output


def _recomputed(folder):
    rows = load_predictions(folder)
    return hr_ndcg(target_ranks([r["predictions"] for r in rows], [r["target"] for r in rows]))


def test_eval_rerank_writes_a_harness_folder(toy):
    root, data, sids, out, output = toy
    folder = out / "rerank"
    results = json.loads((folder / "results.json").read_text())
    assert results["metrics"] == pytest.approx(_recomputed(folder))
    assert json.loads((folder / "valid" / "results.json").read_text())["metrics"] == pytest.approx(
        _recomputed(folder / "valid"))
    rr = results["rerank"]
    picked = rr["picked_on"]
    assert picked["split"] == "valid" and rr["scorer"]["dataset_checked"]
    grid = {g["weight"]: g["NDCG@10"] for g in picked["grid"]}
    assert grid[rr["weight"]] == max(grid.values())
    assert results["model_metrics"] == pytest.approx(json.loads((out / "results.json").read_text())["metrics"])
    gains = json.loads((folder / "gains.json").read_text())
    assert set(gains["splits"]) == {"valid", "test"}
    groups = gains["splits"]["test"]["groups"]
    assert groups["all"]["reranked"]["NDCG@10"] == pytest.approx(results["metrics"]["NDCG@10"])
    a = groups["all"]
    assert a["gain"] == pytest.approx(a["reranked"]["NDCG@10"] / a["model"]["NDCG@10"] - 1)
    assert a["gain_ci95"][0] <= a["gain"] <= a["gain_ci95"][1]
    assert groups["all"]["rows"] == sum(g["rows"] for n, g in groups.items() if n.startswith("history"))
    assert (folder / "manifest.json").exists() and "re-ranked with λ" in output
    # every row keeps its beams, re-ordered by the fused score
    for row in load_predictions(folder):
        assert row["fused_scores"] == sorted(row["fused_scores"], reverse=True)


def test_rerank_command_from_folders(toy, tmp_path):
    root, data, sids, out, _ = toy
    args = ["rerank", "--eval", str(out), "--data", str(data), "--scorer", str(root / "sasrec"), "--scorer",
            str(root / "sasrec")]
    res = CliRunner().invoke(app, args + ["--out", str(tmp_path / "zero"), "--weight", "0"])
    assert res.exit_code == 0, res.output
    zero = load_predictions(tmp_path / "zero")
    assert [r["predictions"] for r in zero] == [r["predictions"] for r in load_predictions(out)]
    res = CliRunner().invoke(app, args + ["--out", str(tmp_path / "auto"), "--valid-eval", str(out / "valid")])
    assert res.exit_code == 0, res.output
    auto = json.loads((tmp_path / "auto" / "results.json").read_text())
    assert auto["metrics"] == json.loads((out / "rerank" / "results.json").read_text())["metrics"]  # 2 x same run


def test_bad_inputs_are_one_line_errors(toy, tmp_path):
    root, data, sids, out, _ = toy
    other_data, _ = make_toy(tmp_path / "other", seed=1)  # same 12 items, other rows
    run_sasrec(other_data, tmp_path / "other_sasrec", SasrecConfig(**{**FAST, "max_epochs": 1}), progress=False)
    big = SASRec(20, 8, 1, 1, 0.0, 5)
    save_checkpoint(big, tmp_path / "big" / "model")
    big_sids = tmp_path / "big_sids"
    big_sids.mkdir()
    (big_sids / "index.json").write_text(json.dumps({str(i): [f"<a_{i}>", f"<b_{i}>"] for i in range(20)}))
    cases = [
        (dict(scorer_paths=[tmp_path / "other_sasrec"]), "trained on another dataset"),
        (dict(scorer_paths=[tmp_path / "big"]), "does not match the SIDs'"),
        (dict(scorer_paths=[tmp_path / "big"], sids=big_sids), "another item set"),
        (dict(scorer_paths=[root / "sasrec"], weight=-1.0), "out of range"),
        (dict(scorer_paths=[root / "sasrec"], weight="auto"), "picks λ on valid"),
        (dict(scorer_paths=[root / "sasrec"], valid_eval=out), "picked on 'valid'"),
    ]
    for kw, message in cases:
        kw = {"weight": 1.0, **kw}
        with pytest.raises(SidrecError, match=message) as e:
            rerank_eval(out, data, out=tmp_path / "x", **kw)
        assert "\n" not in str(e.value)
    res = CliRunner().invoke(app, ["rerank", "--eval", str(out), "--data", str(data), "--scorer",
                                   str(tmp_path / "other_sasrec"), "--out", str(tmp_path / "y"), "--weight", "1"])
    assert res.exit_code != 0 and not (tmp_path / "y" / "results.json").exists()


def test_eval_refuses_a_bad_weight_before_loading_the_model(toy, tmp_path):
    root, data, sids, out, _ = toy
    res = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "no_model"), "--data", str(data), "--sids",
                                   str(sids), "--out", str(tmp_path / "e"), "--rerank", str(root / "sasrec"),
                                   "--rerank-weight", "-1"])
    assert isinstance(res.exception, SidrecError) and "out of range" in str(res.exception)


def test_a_scorer_without_a_fingerprint_is_checked_by_item_count_only(toy, tmp_path):
    import shutil

    root, data, sids, out, _ = toy
    old = tmp_path / "old_sasrec"
    shutil.copytree(root / "sasrec" / "model", old / "model")
    manifest = json.loads((old / "model" / "manifest.json").read_text())
    del manifest["data_fingerprint"]
    (old / "model" / "manifest.json").write_text(json.dumps(manifest))
    report = rerank_eval(out, data, [old], tmp_path / "r", 0.5)
    assert not report["scorer"]["dataset_checked"] and set(report["splits"]) == {"test"}
