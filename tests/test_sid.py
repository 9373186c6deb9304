"""SID builders on small synthetic embeddings: collisions, balance, determinism, training, I/O, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sidrec.errors import SidrecError
from sidrec.sid import (METHODS, ConstrainedRQKMeans, RQKMeans, balanced_assign, build_sids, load_sids,
                        make_estimator, sid_quality, write_index)
from sidrec.sid.base import dedup_level

PAPER_INDEX = Path("/work/shared/data/amazon18/Industrial_and_Scientific/index/Industrial_and_Scientific.index.json")
FAST = {"rqkmeans-plus": {"epochs": 30, "hidden": [32]}, "rqvae": {"epochs": 60, "hidden": [32], "e_dim": 8}}


def blobs(n=600, d=16, centers=24, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(centers, d)) * 3
    X = C[rng.integers(0, centers, n)] + rng.normal(size=(n, d))
    X[5] = X[6]  # exact duplicates: they must still get distinct SIDs
    return X.astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # the machine is shared: OpenMP spin-waits make multi-threaded faiss/BLAS several times slower here
    from sidrec.sid.build import thread_limit

    with thread_limit(1):
        yield


@pytest.fixture(scope="module")
def X():
    return blobs()


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_unique_full_length_sids_deterministically(X, method):
    a = make_estimator(method, levels=3, codebook=16, seed=3, **FAST.get(method, {})).fit_encode(X)
    b = make_estimator(method, levels=3, codebook=16, seed=3, **FAST.get(method, {})).fit_encode(X)
    assert a.shape == (len(X), 3) and a.min() >= 0 and a.max() < 16
    assert sid_quality(a, 16)["collision_groups"] == 0
    np.testing.assert_array_equal(a, b)


def test_constrained_levels_are_balanced(X):
    est = ConstrainedRQKMeans(levels=3, codebook=16, seed=0).fit(X)
    raw = est.encode_raw(X)
    low, high = len(X) // 16, -(-len(X) // 16)
    for level in range(3):
        sizes = np.bincount(raw[:, level], minlength=16)
        assert sizes.min() >= low and sizes.max() <= high
    q = sid_quality(raw, 16)
    assert all(lv["entropy"] > 0.99 for lv in q["per_level"])


def test_balanced_assign_exact_capacities():
    rng = np.random.default_rng(1)
    D = rng.random((103, 10)) + np.linspace(0, 3, 10)[None]  # column 0 is everyone's favourite
    labels, _ = balanced_assign(D)
    assert sorted(np.bincount(labels, minlength=10)) == [10] * 7 + [11] * 3


@pytest.mark.parametrize("method", ["rqkmeans-plus", "rqvae"])
def test_training_reduces_reconstruction(X, method):
    est = make_estimator(method, levels=3, codebook=16, seed=0, **{**FAST[method], "epochs": 80, "lr": 3e-3}).fit(X)
    assert est.history_[-1]["recon"] < est.history_[0]["recon"]


def test_plus_starts_from_constrained_centroids(X):
    est = make_estimator("rqkmeans-plus", levels=3, codebook=16, seed=0, epochs=0, hidden=[8]).fit(X)
    np.testing.assert_allclose(est.codebooks_[0], est.warm_start_.codebooks_[0], atol=1e-6)
    np.testing.assert_allclose(est._latent(X), X, atol=1e-6)  # zero-init residual encoder is the identity


def test_dedup_level_appends_rank_for_colliders():
    codes = np.array([[1, 2], [1, 2], [3, 4], [1, 2]])
    out = dedup_level(codes)
    assert out[:, 2].tolist() == [0, 1, -1, 2]
    assert sid_quality(out, 8)["collision_groups"] == 0


def test_dedup_level_option_is_variable_length(X):
    est = RQKMeans(levels=2, codebook=16, seed=0, collision="dedup-level").fit(X)
    codes = est.encode(X)
    assert codes.shape == (len(X), 3)
    assert sid_quality(codes, 16)["collision_groups"] == 0
    assert sid_quality(est.codes_raw_, 16)["collision_groups"] > 0  # there was something to resolve
    assert codes[5, 2] >= 0 and codes[6, 2] >= 0  # the duplicates carry the extra token


def test_reassign_moves_overflow_to_a_sibling_bucket(X):
    est = RQKMeans(levels=3, codebook=4, seed=0).fit(X[:40])
    codes = est.encode_raw(X[:40])
    codes[:, :2] = [[0, 0]] * 6 + [[0, 1]] * 10 + [[1, 0]] * 24  # bucket (0,0): 6 > 4 codes; (1,0): 24
    codes[:24 + 16, 2] = 0
    with pytest.raises(SidrecError, match="dedup-level"):  # prefix <a_1> holds 24 > 4x4 items
        est.reassign(est._latent(X[:40]), codes)
    codes[16:, 0] = [2] * 12 + [3] * 12
    codes[16:, 1] = ([0] * 6 + [1] * 6) * 2  # four more buckets of 6 > 4 codes
    fixed = est.reassign(est._latent(X[:40]), codes)
    assert sid_quality(fixed, 4)["collision_groups"] == 0
    assert np.bincount(fixed[:, 0] * 4 + fixed[:, 1]).max() <= 4
    np.testing.assert_array_equal(fixed[:, 0], codes[:, 0])  # only level 1 and 2 codes move


def test_bad_inputs_give_clear_errors(X, tmp_path):
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(SidrecError, match="NaN or inf.*item 7"):
        RQKMeans(codebook=16).fit(bad)
    bad[7, 2] = np.inf
    with pytest.raises(SidrecError, match="NaN or inf"):
        RQKMeans(codebook=16).fit(bad)
    with pytest.raises(SidrecError, match="at least as many items as codes"):
        RQKMeans(codebook=256).fit(X[:100])
    with pytest.raises(SidrecError, match="dedup-level"):
        RQKMeans(levels=2, codebook=16).fit(X)  # 256 SIDs for 600 items
    with pytest.raises(SidrecError, match="2-D"):
        RQKMeans(codebook=16).fit(X[0])
    est = RQKMeans(levels=2, codebook=16, collision="dedup-level").fit(X)
    with pytest.raises(SidrecError, match="dimension 8"):
        est.encode(X[:, :8])
    with pytest.raises(SidrecError, match="unknown SID method"):
        make_estimator("pq")
    np.save(tmp_path / "e.npy", X)
    import pandas as pd

    items = pd.DataFrame({"item_id": range(500), "title": ["x"] * 500})
    with pytest.raises(SidrecError, match="600 rows but .* 500 items"):
        build_sids("rqkmeans", tmp_path / "e.npy", items, tmp_path / "out", codebook=16)


@pytest.mark.parametrize("method", list(METHODS))
def test_codebook_need_not_be_a_power_of_two(X, method):
    # none of our methods needs one (MiniOneRec's faiss.ResidualQuantizer does: it takes nbits)
    codes = make_estimator(method, levels=3, codebook=12, seed=0, **FAST.get(method, {})).fit_encode(X)
    assert codes.max() == 11 and sid_quality(codes, 12)["collision_groups"] == 0


def test_build_sids_writes_index_quality_manifest(X, tmp_path):
    np.save(tmp_path / "e.npy", X)
    q = build_sids("rqkmeans-constrained", tmp_path / "e.npy", None, tmp_path / "sids", codebook=16, threads=1)
    files = {p.name for p in (tmp_path / "sids").iterdir()}
    assert {"index.json", "quality.json", "manifest.json", "codebooks.npz", "prices.npz"} <= files
    codes, tokens = load_sids(tmp_path / "sids")
    assert codes.shape == (len(X), 3) and tokens[0][0].startswith("<a_")
    assert q["after"]["collision_groups"] == 0 and q["before"]["per_level"][0]["entropy"] > 0.99
    assert json.loads((tmp_path / "sids/quality.json").read_text())["seconds"] >= 0

    # rebuilt with another method: the old method's own files go, a file no build wrote stays
    (tmp_path / "sids/notes.txt").write_text("mine")
    build_sids("rqkmeans", tmp_path / "e.npy", None, tmp_path / "sids", codebook=16, threads=1)
    files = {p.name for p in (tmp_path / "sids").iterdir()}
    assert "prices.npz" not in files and {"codebooks.npz", "index.json", "notes.txt"} <= files
    assert json.loads((tmp_path / "sids/manifest.json").read_text())["config"]["method"] == "rqkmeans"


def test_index_roundtrip_variable_length_and_bad_tokens(tmp_path):
    codes = np.array([[1, 2, -1], [1, 2, 0], [0, 5, -1]])
    write_index(tmp_path / "index.json", codes)
    back, tokens = load_sids(tmp_path / "index.json")
    np.testing.assert_array_equal(back, codes)
    assert tokens[1] == ["<a_1>", "<b_2>", "<c_0>"]
    (tmp_path / "bad.json").write_text(json.dumps({"0": ["<b_1>", "<a_2>"]}))
    with pytest.raises(SidrecError, match="position 0"):
        load_sids(tmp_path / "bad.json")
    (tmp_path / "gap.json").write_text(json.dumps({"0": ["<a_1>"], "2": ["<a_2>"]}))
    with pytest.raises(SidrecError, match="dense"):
        load_sids(tmp_path / "gap.json")


@pytest.mark.skipif(not PAPER_INDEX.exists(), reason="shared MiniOneRec data not present")
def test_paper_index_loads_with_its_collisions():
    codes, tokens = load_sids(PAPER_INDEX)
    q = sid_quality(codes, 256)
    assert codes.shape == (3686, 3)
    assert q["collision_groups"] == 15 and q["collided_items"] == 31
    assert q["per_level"][0]["used"] == 48


def test_inspect_cli_prints_table(X, tmp_path):
    from typer.testing import CliRunner

    from sidrec.cli import app

    np.save(tmp_path / "e.npy", X)
    r = CliRunner().invoke(app, ["sid", "build", "--method", "rqkmeans", "--emb", str(tmp_path / "e.npy"),
                                 "--out", str(tmp_path / "s"), "--codebook", "16", "--set", "rqkmeans.niter=5"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["sid", "inspect", str(tmp_path / "s")])
    assert r.exit_code == 0 and "collision groups" in r.output
