"""Plain RQ-KMeans on large catalogues: codebooks fitted on a seeded sample, every item coded in chunks."""

import numpy as np
import pytest

from sidrec.errors import SidrecError
from sidrec.sid import build_sids
from sidrec.sid.base import nearest, sid_quality, sq_dists
from sidrec.sid.config import SidConfig
from sidrec.sid.rqkmeans import RQKMeans


def clustered(n, d=16, centres=40, seed=0):
    rng = np.random.default_rng(seed)
    C = 3 * rng.standard_normal((centres, d))
    return (C[rng.integers(0, centres, n)] + rng.standard_normal((n, d))).astype(np.float32)


def test_chunked_nearest_is_the_dense_argmin():
    rng = np.random.default_rng(0)
    R, C = rng.standard_normal((1001, 8)).astype(np.float32), rng.standard_normal((17, 8)).astype(np.float32)
    assert (nearest(R, C, chunk=64) == sq_dists(R, C).argmin(1)).all()


def test_sample_fit_gives_full_length_sids_without_collisions():
    X = clustered(6000)
    est = RQKMeans(levels=3, codebook=32, seed=3, fit_sample=800)
    codes = est.fit(X).encode(X)
    assert codes.shape == (6000, 3) and (codes >= 0).all()
    assert sid_quality(codes, 32)["collision_groups"] == 0
    # the codebooks are those of an exact fit on the seeded sample, and a second fit gives the same SIDs
    sample = X[np.sort(np.random.default_rng(3).choice(6000, 800, replace=False))]
    exact = RQKMeans(levels=3, codebook=32, seed=3, fit_sample=None).fit(sample)
    for a, b in zip(est.codebooks_, exact.codebooks_):
        np.testing.assert_array_equal(a, b)
    assert (RQKMeans(levels=3, codebook=32, seed=3, fit_sample=800).fit(X).encode(X) == codes).all()
    assert not (RQKMeans(levels=3, codebook=32, seed=4, fit_sample=800).fit(X).encode(X) == codes).all()


def test_catalogue_up_to_fit_sample_is_fitted_on_every_item():
    X = clustered(1500, seed=1)
    a = RQKMeans(levels=3, codebook=16, seed=0, fit_sample=1500).fit(X)
    b = RQKMeans(levels=3, codebook=16, seed=0, fit_sample=None).fit(X)
    for ca, cb in zip(a.codebooks_, b.codebooks_):
        np.testing.assert_array_equal(ca, cb)


def test_fit_sample_below_codebook_is_refused():
    with pytest.raises(SidrecError, match="fit_sample must be at least the codebook size 64"):
        RQKMeans(codebook=64, fit_sample=10)


def test_fit_sample_from_config_reaches_the_build(tmp_path):
    assert SidConfig().rqkmeans.fit_sample == 65536
    np.save(tmp_path / "e.npy", clustered(900, seed=2))
    cfg = SidConfig(method="rqkmeans", levels=3, codebook=16, rqkmeans={"fit_sample": 300})
    q = build_sids(cfg.method, tmp_path / "e.npy", None, tmp_path / "out", levels=3, codebook=16, threads=1,
                   **cfg.method_params())
    assert q["params"]["fit_sample"] == 300 and q["after"]["collision_groups"] == 0


def _greedy_reference(D, free):
    """The pair-by-pair greedy: every (row, column) pair in order of (cost, row, column)."""
    cols = np.flatnonzero(free)
    out, used = np.full(len(D), -1), np.zeros(len(cols), dtype=bool)
    for flat in np.argsort(D[:, cols], axis=None, kind="stable"):
        i, j = divmod(int(flat), len(cols))
        if out[i] < 0 and not used[j]:
            out[i], used[j] = cols[j], True
    return out


@pytest.mark.parametrize("seed", range(6))
def test_greedy_match_in_rounds_is_the_pair_by_pair_greedy(seed):
    from sidrec.sid.base import _greedy_match

    rng = np.random.default_rng(seed)
    m, k = int(rng.integers(1, 40)), 48
    D = rng.integers(0, 6, (m, k)).astype(float) if seed % 2 else rng.random((m, k))  # many ties, or none
    free = rng.random(k) < 0.9
    free[:m] = True  # at least m free columns
    got = _greedy_match(D, free)
    assert (got == _greedy_reference(D, free)).all()
    assert len(set(got.tolist())) == m and free[got].all()


def test_memory_error_names_this_methods_fit_sample(monkeypatch):
    import sidrec.sid.base as base

    monkeypatch.setattr(base, "available_memory", lambda: 2**20)
    with pytest.raises(SidrecError, match=r"lower sid\.codebook or sid\.rqkmeans\.fit_sample$"):
        RQKMeans(levels=3, codebook=32).fit(clustered(5000))
