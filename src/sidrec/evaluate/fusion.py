"""Hybrid ranking: re-rank a generative model's top beams with a collaborative scorer (SASRec, or an ensemble).

For each row, the first `group` beams (all by default) are re-ordered by

    fused = beam log-likelihood + λ · z,   z = the scorer's logit of the beam's item, z-scored within the row's group

(the KL-regularised optimum of GRPO with the collaborative reward, `lab/rl_fusion_bound.py`); beams below the group
keep their order, λ = 0 is the model's own ranking. λ is picked on the VALID split (`pick_weights`), never on test.

Cold rows (`cold_rows`: the user has no training row, or a history of at most `SHORT_HISTORY` items) may get their own
λ and a recency prior, `+ μ · log(1 + count of the beam's item among the last labelled interactions before the
split)` (`recency_prior`), with (λ, μ) picked on valid separately for the cold rows and the others (`pick_weights`);
`lab/cold_rerank.py` measured it (docs/benchmarks.md, "Cold and short-history users").

Every row may also get a transition prior, `+ τ · log(1 + count of (the row's last history item -> the beam's item)
among the labelled rows before the split)` (`transition_counts`, `transition_prior`): the item-to-item signal a
beam-level SASRec logit, z-scored within the row, flattens. τ is picked on valid with λ (and μ), from its own grid;
`lab/rerank_signals.py` measured it and the other signals tried (docs/benchmarks.md, "Transition prior
(re-ranking)").

- `fuse` / `rerank_beams`: the pure re-ranking (what a serving layer calls with its `BeamResult`);
- `pick_weights`: λ (and the priors' weights) with the best valid metric on a grid, every point scored on arrays
  (`beam_hits`, `ordered_ranks`);
- `row_groups` / `group_gains`: the gain per row group.
Reading folders and the scorer is `sidrec.rerank`'s (the scorer is a baseline, which sits above evaluation).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from sidrec.data.canonical import history_chunks, history_lengths
from sidrec.errors import SidrecError

GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
METRIC = "NDCG@10"
HISTORY_BUCKETS = ((1, 2), (3, 5), (6, 10), (11, 20), (21, None))  # history length, inclusive
POPULARITY_BUCKETS = ((0, 0), (1, 9), (10, 99), (100, None))  # target's count among train targets, inclusive
PRIOR_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)  # μ of the recency prior (cold re-ranking)
TRANSITION_GRID = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0)  # τ of the transition prior
SHORT_HISTORY = 2  # a history of at most this many items makes a row cold
COLD = f"user without a train row or history 1-{SHORT_HISTORY}"


# ---------------------------------------------------------------------------------------------------- pure fusion
def check_weight(weight) -> float:
    """λ as a float; a SidrecError unless it is a finite number >= 0."""
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise SidrecError(f"re-rank weight {weight!r} is not a number; give λ >= 0 or 'auto'") from None
    if not math.isfinite(w) or w < 0:
        raise SidrecError(f"re-rank weight {weight!r} is out of range; λ must be a finite number >= 0 (0 keeps the "
                          f"model's order) or 'auto' (picked on valid)")
    return w


def zscores(logits: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Each row of (n, B) `logits` z-scored over its `valid` beams (population std); others and constant rows 0."""
    return group_zscores(np.asarray(logits, dtype=np.float64), valid)


def group_zscores(logits: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Each row of (groups, G) `logits` z-scored; with a bool `keep`, over the kept entries only, the others 0 (also
    the RL `collaborative` reward's advantage scale)."""
    if keep is None:
        keep = np.ones(logits.shape, dtype=bool)
    n = np.maximum(keep.sum(axis=1, keepdims=True), 1)
    mean = np.where(keep, logits, 0.0).sum(axis=1, keepdims=True) / n
    std = np.sqrt(np.where(keep, (logits - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / n)
    return np.where(keep & (std > 1e-8), (logits - mean) / np.maximum(std, 1e-8), 0.0)


def row_weights(weight, rows: int) -> np.ndarray:
    """(rows, 1) weights from one λ or one per row, each checked by `check_weight`."""
    w = np.asarray(weight, dtype=object)
    if w.ndim == 0:
        return np.full((rows, 1), check_weight(weight))
    if w.shape != (rows,):
        raise SidrecError(f"{w.shape[0] if w.ndim == 1 else w.shape} per-row re-rank weights for {rows} rows")
    return np.array([check_weight(x) for x in w.tolist()], dtype=np.float64)[:, None]


def fused_scores(scores: np.ndarray, logits: np.ndarray, weight, group: int | None = None,
                 priors: Sequence[tuple[np.ndarray, object]] = ()) -> np.ndarray:
    """(n, B) beam log-likelihood + λ · z(logits) + Σ weight · prior over the first `group` beams; beams past the
    group keep their score and missing beams (score -inf) stay -inf. λ and each prior's weight: one number, or one per
    row; `priors`: (an (n, B) per-beam prior, its weight) pairs (`recency_prior`, `transition_prior`)."""
    scores = np.asarray(scores, dtype=np.float64)
    g = scores.shape[1] if group is None else min(int(group), scores.shape[1])
    head = scores[:, :g]
    valid = np.isfinite(head)
    z = zscores(np.where(valid, np.asarray(logits, dtype=np.float64)[:, :g], 0.0), valid)
    fused = head + row_weights(weight, len(scores)) * z
    for prior, prior_weight in priors:
        fused = fused + row_weights(prior_weight, len(scores)) * np.asarray(prior, dtype=np.float64)[:, :g]
    return np.concatenate([np.where(valid, fused, -np.inf), scores[:, g:]], axis=1)


def fuse(scores: np.ndarray, logits: np.ndarray, weight, group: int | None = None,
         priors: Sequence[tuple[np.ndarray, object]] = ()) -> np.ndarray:
    """(n, B) beam positions in fused order: the first `group` beams sorted by `fused_scores` (ties keep the beam
    order), then the rest as they were."""
    scores = np.asarray(scores, dtype=np.float64)
    g = scores.shape[1] if group is None else min(int(group), scores.shape[1])
    head = np.argsort(-fused_scores(scores, logits, weight, g, priors)[:, :g], axis=1, kind="stable")
    tail = np.broadcast_to(np.arange(g, scores.shape[1]), (len(scores), scores.shape[1] - g))
    return np.concatenate([head, tail], axis=1)


def beam_logits(scorer, histories: Sequence[Sequence[int]], beam_items: np.ndarray, users=None,
                chunk: int = 512) -> np.ndarray:
    """(n, B) the scorer's logit of each beam's item given its row's history; -1 (no beam) gets 0."""
    beam_items = np.asarray(beam_items, dtype=np.int64)
    cands = np.where(beam_items >= 0, beam_items, 0)
    needs_users = getattr(scorer, "needs_users", False)
    if needs_users and users is None:
        raise SidrecError("a cross-fitted scorer needs each row's user id")
    parts = []
    for i in range(0, len(cands), chunk):
        hist, cand = [list(h) for h in histories[i:i + chunk]], cands[i:i + chunk].tolist()
        parts.append(scorer.score(hist, cand, users=users[i:i + chunk]) if needs_users else scorer.score(hist, cand))
    out = np.concatenate(parts).astype(np.float64) if parts else np.zeros(cands.shape)
    return np.where(beam_items >= 0, out, 0.0)


def rerank_beams(histories: Sequence[Sequence[int]], sid_index: np.ndarray, scores: np.ndarray, scorer,
                 weight: float, first_item: np.ndarray, users=None, group: int | None = None,
                 transitions: tuple[np.ndarray, np.ndarray, int] | None = None, transition_weight: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank beam-search output (`Recommender.rank`: sid_index, scores) with `scorer` and, given `transitions`
    (`transition_counts`), the transition prior weighted τ = `transition_weight`; `first_item` maps a SID index to
    the item it stands for (`SidTrie.first_items()`). Returns (sid_index, fused scores), both in the new order."""
    sid_index = np.asarray(sid_index, dtype=np.int64)
    items = np.where(sid_index >= 0, np.asarray(first_item)[np.maximum(sid_index, 0)], -1)
    logits = beam_logits(scorer, histories, items, users)
    priors = []
    if transitions is not None and check_weight(transition_weight) > 0:
        priors.append((transition_prior(transitions, last_items(histories), items), transition_weight))
    fused = fused_scores(scores, logits, weight, group, priors)
    order = fuse(scores, logits, weight, group, priors)
    return np.take_along_axis(sid_index, order, 1), np.take_along_axis(fused, order, 1)


def ranked_items(order: np.ndarray, beam_items: Sequence[Sequence[Sequence[int]]], limit: int = 50) -> list[list[int]]:
    """Item ids per row, beams in `order`, each beam's items (a SID's colliding items) in turn, at most `limit`."""
    out = []
    for row, items in zip(np.asarray(order).tolist(), beam_items):
        ranked = [it for b in row if b < len(items) for it in items[b]]
        out.append(ranked[:limit])
    return out


def pick_weights(scores: np.ndarray, logits: np.ndarray, beam_items, targets: Sequence[int],
                 grid: Sequence[float] = GRID, metric: str = METRIC, group: int | None = None,
                 priors: Sequence[tuple[np.ndarray, Sequence[float]]] = ()
                 ) -> tuple[tuple[float, ...], dict[tuple[float, ...], dict]]:
    """The λ of `grid` and each prior's weight in its own grid (`priors`: (an (n, B) prior, its grid) pairs; every
    combination is scored) whose fused ranking has the best `metric` (exact items, as the harness scores them) on
    these rows: the best (λ, prior weights...), on ties the smallest weights, the last prior's first and λ last; and
    every grid point's metrics."""
    import itertools

    from sidrec.evaluate.metrics import hr_ndcg

    grids = [sorted(check_weight(w) for w in grid)] + [sorted(check_weight(w) for w in g) for _, g in priors]
    if not all(grids):
        raise SidrecError("the re-rank weight grid is empty")
    counts, offsets = beam_hits(beam_items, targets, np.shape(scores)[1])
    table = {}
    for point in itertools.product(*grids):
        order = fuse(scores, logits, point[0], group, [(p, w) for (p, _), w in zip(priors, point[1:])])
        table[point] = hr_ndcg(ordered_ranks(order, counts, offsets))
    if metric not in next(iter(table.values())):
        raise SidrecError(f"unknown metric {metric!r}; choose from {', '.join(next(iter(table.values())))}")
    best = max(table, key=lambda k: (table[k][metric], *(-w for w in reversed(k))))
    return best, table


def beam_hits(beam_items, targets: Sequence[int], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row and beam (n, width): how many items the beam stands for (its SID's colliding items; 0 for no beam), and
    the target's position among them (-1 where the beam does not hold it). With `ordered_ranks`, the target's rank in
    any beam order without building the item lists."""
    counts = np.zeros((len(targets), width), dtype=np.int64)
    offsets = np.full((len(targets), width), -1, dtype=np.int64)
    for r, (items, target) in enumerate(zip(beam_items, targets)):
        for b, its in enumerate(items[:width]):
            counts[r, b] = len(its)
            if target in its:
                offsets[r, b] = list(its).index(target)
    return counts, offsets


def ordered_ranks(order: np.ndarray, counts: np.ndarray, offsets: np.ndarray, limit: int = 50) -> np.ndarray:
    """0-based rank of each row's target in the item list of `ranked_items(order, ..., limit)`, -1 where absent:
    `target_ranks(ranked_items(order, beam_items, limit), targets)` computed on arrays (`beam_hits`)."""
    c, o = np.take_along_axis(counts, order, 1), np.take_along_axis(offsets, order, 1)
    start = np.cumsum(c, axis=1) - c
    rank = np.where(o >= 0, start + o, np.iinfo(np.int64).max).min(axis=1)
    return np.where(rank < limit, rank, -1)


def recency_prior(ds, split: str, window: int | None = None) -> np.ndarray:
    """Per item, log(1 + its count among the last `window` labelled interactions before `split`): the end of train
    for valid, train then valid for test (rows are in time order); `window` defaults to the valid split's rows."""
    order = ("train", "valid", "test")
    if split not in order:
        raise SidrecError(f"no recency prior for split {split!r}; choose valid or test")
    before = [ds.splits[s]["target"].to_numpy() for s in order[:order.index(split)]]
    window = len(ds.splits["valid"]) if window is None else int(window)
    recent = np.concatenate(before)[-window:] if before and window > 0 else np.zeros(0, dtype=np.int64)
    return np.log1p(np.bincount(recent, minlength=ds.num_items)).astype(np.float64)


def last_items(histories: Sequence[Sequence[int]]) -> np.ndarray:
    """Each history's last (most recent) item, -1 for an empty history; lists or a split's Arrow column, read from
    the flat arrays (`history_chunks`)."""
    parts = [np.where(lengths > 0, flat[np.maximum(np.cumsum(lengths) - 1, 0)] if len(flat) else -1, -1)
             for lengths, flat in history_chunks(histories)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def transition_counts(ds, split: str | None) -> tuple[np.ndarray, np.ndarray, int]:
    """The (last history item a -> target b) pairs among the labelled rows before `split` (train for valid, train and
    valid for test; every split for None, what a serving layer knows): their sorted keys a · num_items + b,
    log(1 + each pair's count), and num_items."""
    order = ("train", "valid", "test")
    if split is not None and split not in order:
        raise SidrecError(f"no transition prior for split {split!r}; choose valid or test")
    keys = []
    for s in order if split is None else order[:order.index(split)]:
        df = ds.splits[s]
        last = last_items(df["history"])
        keep = last >= 0
        keys.append(last[keep] * ds.num_items + df["target"].to_numpy(dtype=np.int64)[keep])
    keys, counts = np.unique(np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64), return_counts=True)
    return keys, np.log1p(counts).astype(np.float64), int(ds.num_items)


def transition_prior(table: tuple[np.ndarray, np.ndarray, int], last_items: np.ndarray,
                     beam_items: np.ndarray) -> np.ndarray:
    """(n, B) log(1 + count of (the row's last history item -> the beam's item)) from `transition_counts`; 0 where
    the row has no history (last item -1), the beam no item (-1) or the pair was never seen."""
    keys, values, num_items = table
    last, items = np.asarray(last_items, dtype=np.int64)[:, None], np.asarray(beam_items, dtype=np.int64)
    if not len(keys):
        return np.zeros(items.shape)
    query = np.maximum(last, 0) * num_items + np.maximum(items, 0)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where((last >= 0) & (items >= 0) & (keys[at] == query), values[at], 0.0)


def cold_rows(ds, split: str, num_rows: int) -> np.ndarray:
    """Rows whose user has no training row or whose history has at most `SHORT_HISTORY` items."""
    return row_groups(ds, split, num_rows)[COLD]


def row_groups(ds, split: str, num_rows: int) -> dict[str, np.ndarray]:
    """Boolean masks over a split's first `num_rows` rows: all; users with / without a training row; cold rows (no
    training row or a short history, `cold_rows`); history length buckets; the target's popularity (count among
    train targets) buckets."""
    df = ds.splits[split].iloc[:num_rows]
    train_users = set(ds.splits["train"]["user"].tolist())
    has_train = df["user"].isin(train_users).to_numpy()
    length = history_lengths(df["history"])
    groups = {"all": np.ones(len(df), bool), "user with a train row": has_train, "user without a train row": ~has_train,
              COLD: ~has_train | (length <= SHORT_HISTORY)}
    pop = ds.train_target_counts()[df["target"].to_numpy()]
    for prefix, values, buckets in (("history", length, HISTORY_BUCKETS), ("target popularity", pop,
                                                                            POPULARITY_BUCKETS)):
        for lo, hi in buckets:
            name = f"{prefix} {lo}+" if hi is None else f"{prefix} {lo}" if lo == hi else f"{prefix} {lo}-{hi}"
            groups[name] = (values >= lo) & (values <= (np.inf if hi is None else hi))
    return groups


def group_gains(base_ranks: np.ndarray, new_ranks: np.ndarray, groups: dict[str, np.ndarray],
                ks: Sequence[int] = (10,)) -> dict[str, dict]:
    """Per group: rows, the model's and the re-ranked HR/NDCG@K, the relative NDCG gain and its paired-bootstrap 95 %
    interval (`evaluate.stats`); empty groups are left out."""
    from sidrec.evaluate.metrics import hr_ndcg
    from sidrec.evaluate.stats import compare_ranks

    out = {}
    key = f"NDCG@{ks[0]}"
    for name, mask in groups.items():
        if not mask.any():
            continue
        boot = compare_ranks(base_ranks[mask], new_ranks[mask], [key])[key]
        out[name] = {"rows": int(mask.sum()), "model": hr_ndcg(base_ranks[mask], ks),
                     "reranked": hr_ndcg(new_ranks[mask], ks), "gain": boot["rel"], "gain_ci95": boot["rel_ci"]}
    return out
