"""Catalogues beyond the exact balanced method: the sample-fit path, the capacity check and the memory check."""

import numpy as np
import pytest

import sidrec.sid.base as base
from sidrec.errors import SidrecError
from sidrec.sid.base import sid_quality
from sidrec.sid.constrained import ConstrainedRQKMeans, balanced_assign, balanced_assign_chunked
from sidrec.sid.rqkmeans import RQKMeans


def clustered(n, d=16, centres=50, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((centres, d))
    w = rng.pareto(1.0, centres) + 1  # skewed cluster sizes, as item embeddings have
    X = C[rng.choice(centres, n, p=w / w.sum())] + 0.5 * rng.standard_normal((n, d))
    return X.astype(np.float32)


def test_sample_fit_keeps_balance_and_no_collisions():
    X = clustered(20000)
    est = ConstrainedRQKMeans(levels=3, codebook=32, fit_sample=3000, iters=3)
    codes = est.fit(X).encode(X)
    assert len(est.prices_[0]) == 32
    q = sid_quality(est.codes_raw_, 32)
    for level in q["per_level"]:  # every level's clusters within 5% of n/K (the rounding makes them exact)
        assert level["used"] == 32
        assert 0.95 * 20000 / 32 <= level["min_size"] <= level["max_size"] <= 1.05 * 20000 / 32
    assert q["collision_groups"] > 0  # 20k items in 32^3 SIDs collide before resolution ...
    assert sid_quality(codes, 32)["collision_groups"] == 0  # ... and not after
    assert est.params()["fit_sample"] == 3000


def test_chunked_assign_is_exactly_balanced_and_near_cheapest():
    rng = np.random.default_rng(1)
    X = clustered(5003, seed=1)
    C = X[rng.choice(len(X), 40, replace=False)]
    D = base.sq_dists(X, C)
    sample_prices = balanced_assign(D[:800])[1]  # as the sample fit hands them over
    labels, g = balanced_assign_chunked(X, C, sample_prices, candidates=8, chunk=999)
    sizes = np.bincount(labels, minlength=40)
    assert sizes.min() == 5003 // 40 and sizes.max() == 5003 // 40 + 1
    exact = balanced_assign(D)[0]  # the dense method: its items lie about as close to their centroids
    r = np.arange(len(X))
    assert D[r, labels].mean() <= 1.03 * D[r, exact].mean()
    assert D[r, labels].mean() < D[r, rng.permutation(exact)].mean()


def test_small_catalogue_stays_exact():
    X = clustered(400)
    a = ConstrainedRQKMeans(levels=3, codebook=8, iters=2).fit(X).encode(X)
    b = ConstrainedRQKMeans(levels=3, codebook=8, iters=2, fit_sample=None).fit(X).encode(X)
    assert (a == b).all()


def test_fit_sample_below_codebook_is_refused():
    with pytest.raises(SidrecError, match="fit_sample"):
        ConstrainedRQKMeans(codebook=64, fit_sample=10)


def test_catalogue_beyond_capacity_fails_before_work(monkeypatch):
    monkeypatch.setattr(ConstrainedRQKMeans, "_fit", lambda *a: pytest.fail("work started"))
    with pytest.raises(SidrecError, match=r"sid\.levels or sid\.codebook") as e:
        ConstrainedRQKMeans(levels=2, codebook=4).fit(clustered(17))
    assert "\n" not in str(e.value) and "4^2" not in str(e.value) and "16 SIDs for 17 items" in str(e.value)


@pytest.mark.parametrize("cls", [ConstrainedRQKMeans, RQKMeans])
def test_catalogue_beyond_memory_fails_before_work(monkeypatch, cls):
    monkeypatch.setattr(base, "available_memory", lambda: 10 * 2**20)  # 10 MiB free
    monkeypatch.setattr(cls, "_fit", lambda *a: pytest.fail("work started"))
    with pytest.raises(SidrecError, match="need about .* GiB .* only 0.0 GiB is available") as e:
        cls(levels=3, codebook=64).fit(clustered(20000))
    assert "\n" not in str(e.value)
    monkeypatch.setattr(base, "available_memory", lambda: None)  # unknown: no check
    monkeypatch.undo()
    assert cls(levels=2, codebook=8).memory_estimate(10**6, 384) > 10**6 * 384 * 4


def test_sampled_estimate_is_below_exact():
    est = ConstrainedRQKMeans()
    assert est.memory_estimate(10**6, 384) < 8 * 2**30  # the goal: 10^6 x 384 within 8 GiB
    assert ConstrainedRQKMeans(fit_sample=None).memory_estimate(10**6, 384) > est.memory_estimate(10**6, 384)


def test_sid_build_checks_size_before_reading_the_embeddings(tmp_path, monkeypatch):
    import sidrec.sid.build as build

    emb = tmp_path / "emb.npy"
    np.save(emb, clustered(300))
    monkeypatch.setattr(build, "load_npy", lambda *a: pytest.fail("read the whole file before the checks"))
    with pytest.raises(SidrecError, match="sid.levels or sid.codebook"):
        build.build_sids("rqkmeans", emb, None, tmp_path / "out", levels=2, codebook=16)
    monkeypatch.setattr(base, "available_memory", lambda: 100_000)  # below the ~0.4 MB this build needs
    with pytest.raises(SidrecError, match=r"300 items x 16 dims need about"):
        build.build_sids("rqkmeans-constrained", emb, None, tmp_path / "out", levels=3, codebook=16)


def test_amazon_meta_read_in_chunks_keeps_the_last_titled_line(tmp_path, monkeypatch):
    import json

    import sidrec.data.amazon18 as az

    lines = [{"asin": "A", "title": "First"}, {"asin": "B", "title": "Bee"}, {"asin": "C", "title": "Sea"},
             {"asin": "A", "title": "Second"}, {"asin": "A", "title": ""}, {"asin": "D", "title": "Dee"}]
    path = tmp_path / "meta.json"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    monkeypatch.setattr(az, "CHUNK_LINES", 2)  # A's lines fall in different chunks
    items, skipped = az.read_meta(path)
    assert sorted(items["item"].to_list()) == ["A", "B", "C", "D"]
    assert dict(zip(items["item"], items["title"]))["A"] == "Second"
    assert skipped == {"meta_title_length": 1}  # the empty title
