"""`sidrec sid assign`: new items get SIDs from a build's fitted state; old SIDs never change."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sidrec.errors import SidrecError
from sidrec.sid import METHODS, assign_sids, build_sids, load_estimator, load_sids, sid_quality

FAST = {"rqkmeans-plus": {"epochs": 30, "hidden": [32]}, "rqvae": {"epochs": 60, "hidden": [32], "e_dim": 8}}
N_OLD, DUP, OLD_TWIN = 400, 0, 7  # new row DUP is a copy of old item OLD_TWIN's embedding
SIDECAR = {"model": "toy-encoder", "revision": None, "normalize": True, "fields": ["title"]}


def blobs(n=480, d=16, centers=24, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(centers, d)) * 3
    return (C[rng.integers(0, centers, n)] + rng.normal(size=(n, d))).astype(np.float32)


def save_emb(path, X, **side):
    np.save(path, X)
    path.with_suffix(".json").write_text(json.dumps({**SIDECAR, "dim": int(X.shape[1]), **side}))
    return path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    from sidrec.sid.build import thread_limit

    with thread_limit(1):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One build per method on the first N_OLD items; the other rows (one a twin of an old item, two equal) are new."""
    root = tmp_path_factory.mktemp("assign")
    X = blobs()
    X[N_OLD + DUP] = X[OLD_TWIN]
    X[N_OLD + 2] = X[N_OLD + 1]  # two new items with one embedding: they must not collide with each other
    old, new = save_emb(root / "old.npy", X[:N_OLD]), save_emb(root / "new.npy", X[N_OLD:])
    for method in METHODS:
        build_sids(method, old, None, root / method, codebook=16, seed=1, threads=1, **FAST.get(method, {}))
    return root, X, old, new


@pytest.mark.parametrize("method", list(METHODS))
def test_assign_keeps_old_sids_and_gives_new_ones_unique_at_full_length(world, method):
    root, X, _, new = world
    q = assign_sids(root / method, new, root / f"{method}-a", threads=1)
    before = (root / method / "index.json").read_text()
    after = (root / f"{method}-a" / "index.json").read_text()
    assert after.startswith(before.rstrip()[:-1] + ", ")  # every old entry byte for byte, new ones after them
    assert (root / method / "manifest.json").exists()  # the build folder is not touched

    old_codes, _ = load_sids(root / method)
    codes, _ = load_sids(root / f"{method}-a")
    new_codes = codes[N_OLD:]
    assert codes.shape == (len(X), 3) and (new_codes >= 0).all() and new_codes.max() < 16
    assert sid_quality(codes, 16)["collision_groups"] == 0  # no collision with the old items or among the new
    assert not (new_codes[1] == new_codes[2]).all()
    a = q["assign"]
    assert a["items"] == len(X) - N_OLD and a["kept"] + a["collisions_resolved"] == a["items"]
    assert a["collisions_resolved"] >= 1 and q["after"]["collision_groups"] == 0  # the equal pair: one moves

    # the twin of an old item: a distinct SID that keeps its raw prefix as deep as there is room
    est = load_estimator(root / method)
    raw = est.assign(X[[OLD_TWIN]])[0]
    twin, old_twin = new_codes[DUP], old_codes[OLD_TWIN]
    assert not (twin == old_twin).all() and twin[0] == raw[0]
    assert (twin[:2] == raw[:2]).all() or (codes[:, :2] == raw[:2]).all(1).sum() == 16  # moved up: bucket full
    if method in ("rqkmeans", "rqvae"):  # nearest-code methods: the raw code is the build's raw code of the twin
        np.testing.assert_array_equal(raw, est.encode_raw(X[[OLD_TWIN]])[0])
        assert twin[0] == old_twin[0]

    m = json.loads((root / f"{method}-a" / "manifest.json").read_text())
    parent = json.loads((root / method / "manifest.json").read_text())
    assert m["stage"] == "sid" and m["parent"]["manifest"] == parent and m["config"]["method"] == method
    assert set(m["inputs"]) == {"parent_index", "embeddings"} and m["embedding"]["model"] == "toy-encoder"


@pytest.mark.parametrize("method", list(METHODS))
def test_saved_state_encodes_the_catalogue_as_built_and_assign_is_deterministic(world, method):
    root, X, _, new = world
    est = load_estimator(root / method)
    np.testing.assert_array_equal(est.encode(X[:N_OLD]), load_sids(root / method)[0])
    assign_sids(root / method, new, root / f"{method}-b", threads=1)
    assign_sids(root / method, new, root / f"{method}-c", threads=1)
    assert (root / f"{method}-b/index.json").read_bytes() == (root / f"{method}-c/index.json").read_bytes()
    assign_sids(root / "rqvae", new, root / f"{method}-c", threads=1)  # over another method's output: no stale state
    assert not (root / f"{method}-c/prices.npz").exists() and (root / f"{method}-c/model.safetensors").exists()
    assert load_estimator(root / f"{method}-c").method == "rqvae"
    # the estimator API gives the same SIDs as the command, and can assign again from the new folder
    codes = load_estimator(root / method).assign(X[N_OLD:], taken=load_sids(root / method)[0])
    np.testing.assert_array_equal(codes, load_sids(root / f"{method}-b")[0][N_OLD:])
    more = save_emb(root / f"more-{method}.npy", X[:5] + 0.01)
    q = assign_sids(root / f"{method}-b", more, root / f"{method}-d", threads=1)
    assert q["num_items"] == len(X) + 5 and q["after"]["collision_groups"] == 0


def test_item_ids_file_orders_rows_and_data_folder_takes_the_new_rows(world):
    root, X, old, new = world
    ids = np.arange(N_OLD, len(X))[::-1]
    save_emb(root / "rev.npy", X[N_OLD:][::-1])
    (root / "ids.txt").write_text("\n".join(map(str, ids)) + "\n")
    assign_sids(root / "rqkmeans", root / "rev.npy", root / "by-ids", items=root / "ids.txt", threads=1)
    assign_sids(root / "rqkmeans", new, root / "plain", threads=1)
    assert (root / "by-ids/index.json").read_bytes() == (root / "plain/index.json").read_bytes()

    import pandas as pd

    items = pd.DataFrame({"item_id": np.arange(len(X))})
    save_emb(root / "all.npy", X)  # the whole grown catalogue embedded: the rows beyond the index are new
    assign_sids(root / "rqkmeans", root / "all.npy", root / "by-data", data=items, threads=1)
    assert (root / "by-data/index.json").read_bytes() == (root / "plain/index.json").read_bytes()


def test_dedup_level_build_gets_fixed_length_sids_that_prefix_no_old_one(tmp_path):
    X = blobs(300)
    save_emb(tmp_path / "old.npy", X[:250])
    save_emb(tmp_path / "new.npy", X[250:])
    build_sids("rqkmeans", tmp_path / "old.npy", None, tmp_path / "s", levels=2, codebook=16, collision="dedup-level",
               threads=1)
    old, _ = load_sids(tmp_path / "s")
    assert old.shape[1] == 3 and (old[:, 2] >= 0).any()
    assign_sids(tmp_path / "s", tmp_path / "new.npy", tmp_path / "a", threads=1)
    codes, tokens = load_sids(tmp_path / "a")
    np.testing.assert_array_equal(codes[:250], old)
    assert all(len(t) == 2 for t in tokens[250:])
    assert not {tuple(r) for r in codes[250:, :2].tolist()} & {tuple(r) for r in old[:, :2].tolist()}


def test_bad_inputs_are_one_line_errors(world, tmp_path):
    root, X, old, new = world
    sids = root / "rqkmeans"

    def fails(match, emb=new, src=sids, **kw):
        with pytest.raises(SidrecError, match=match) as e:
            assign_sids(src, emb, tmp_path / "out", **kw)
        assert "\n" not in str(e.value)

    fails("8-dim embeddings but .* built on 16-dim", save_emb(tmp_path / "d8.npy", X[N_OLD:, :8], dim=8))
    fails("model='other-encoder' but .* built on model='toy-encoder'",
          save_emb(tmp_path / "other.npy", X[N_OLD:], model="other-encoder"))
    np.save(tmp_path / "bare.npy", X[N_OLD:])
    fails("no .json sidecar", tmp_path / "bare.npy")
    (tmp_path / "ids.txt").write_text("\n".join(map(str, range(5, 5 + len(X) - N_OLD))))
    fails("item id 5 is already in the index", items=tmp_path / "ids.txt")
    fails("holds no items", save_emb(tmp_path / "empty.npy", np.zeros((0, 16), np.float32)))
    (tmp_path / "none.txt").write_text("")
    fails("no item ids", items=tmp_path / "none.txt")
    with pytest.raises(SidrecError, match="must be a new folder"):
        assign_sids(sids, new, sids)
    for method, state in (("rqkmeans-constrained", "prices.npz"), ("rqvae", "model.safetensors")):
        broken = tmp_path / f"broken-{method}"
        shutil.copytree(root / method, broken)
        (broken / state).unlink()
        fails(f"fitted {method} state is missing .*{state}.* rebuild", src=broken)
    (tmp_path / "bare-index").mkdir()
    shutil.copy(sids / "index.json", tmp_path / "bare-index")
    fails("no `sidrec sid build` manifest", src=tmp_path / "bare-index")
    (tmp_path / "bare-index/manifest.json").write_text(json.dumps({"stage": "sid", "config": {"method": "imported"}}))
    fails("'imported' come without fitted codebooks", src=tmp_path / "bare-index")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_cli_assign_prints_outcomes_and_summary(world, tmp_path):
    from typer.testing import CliRunner

    from sidrec.cli import app

    root, X, _, new = world
    r = CliRunner().invoke(app, ["sid", "assign", "--sids", str(root / "rqkmeans"), "--emb", str(new),
                                 "--out", str(tmp_path / "a"), "--threads", "1"])
    assert r.exit_code == 0, r.output
    q = json.loads((tmp_path / "a/quality.json").read_text())["assign"]
    assert f"{q['items']} new items assigned" in r.output and f"{q['collisions_resolved']} collisions resolved" in r.output
    r = CliRunner().invoke(app, ["sid", "inspect", str(tmp_path / "a")])
    assert r.exit_code == 0 and "collision groups" in r.output
    r = subprocess.run([sys.executable, "-m", "sidrec", "sid", "assign", "--sids", str(root / "rqkmeans"), "--emb",
                        str(new), "--out", str(tmp_path / "b"), "--items", str(tmp_path / "missing.txt")],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "1000"})
    assert r.returncode == 2 and "item id file does not exist" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_full_bucket_sends_the_item_up_a_level_and_a_full_table_is_an_error(tmp_path):
    X = blobs(20, d=4, centers=3)
    save_emb(tmp_path / "old.npy", X[:14])
    build_sids("rqkmeans", tmp_path / "old.npy", None, tmp_path / "s", levels=2, codebook=4, threads=1)
    est = load_estimator(tmp_path / "s")
    a = int(est.assign(X[[0]])[0, 0])
    b = (a + 1) % 4
    every = [(i, j) for i in range(4) for j in range(4)]
    taken = np.array([s for s in every if s not in {(b, 1), (b, 2)}])  # bucket a is full; two holes under b
    codes = est.assign(X[[0, 0]], taken=taken)
    assert {tuple(r) for r in codes.tolist()} == {(b, 1), (b, 2)} and est.assign_stats_["moved_from_existing"] == 2
    with pytest.raises(SidrecError, match="all 4\\^2 SIDs .* are taken"):
        est.assign(X[[1]], taken=np.array(every))
