"""Rewards for GRPO over groups of G completions per prompt (one group = consecutive rows, in beam order).

Each reward is a small function of a `Groups` batch and returns one float per completion; `combine` weights them.
Targets come from the training example itself (its row in the split), never from a lookup by prompt text: MiniOneRec
keys targets by prompt/history string, so two users with equal histories but different next items overwrite each
other.

- `rule`: 1 if the completion's SID is the target's, else 0.
- `ranking`: MiniOneRec's rank-aware penalty. With w_i = (1/log2(i+2)) / sum_j 1/log2(j+2) over the G beam ranks, a
  wrong item at rank i gets -w_i when its group contains the target; the target and every row of a group without it
  get 0. MiniOneRec's paper default "ranking" is `rule` + this, i.e. weights {rule: 1, ranking: 1}.
- `prefix`: the number of leading SID levels shared with the target, over L (the target itself gets 1). Dense: a
  group that misses the target still ranks "right first code" above "wrong first code".
- `collaborative`: a trained SASRec's logit for the completion's item given the history, z-scored within the group.
  On training rows use cross-fitted SASRecs (`CrossFitScorer`): one trained on the same rows recalls their targets.
- `diversity`: 1 - (others in the group with the same first-level code) / (G - 1).
- `novelty`: 1 if the completion's SID is not in the history, else 0. Repeats fall over time in the Amazon splits
  (9.0% of train targets are in their history, 5.2% of valid, 2.8% of test), and SFT learns the train rate.
- `popularity`: log(1 + the item's count among the targets of the latest `popularity_window` training rows): a
  prior that follows what is bought now rather than over the whole training period.

`collaborative`, `novelty`, `popularity` and `diversity` need no target, so they can score prompts that have none
(`rl.prompts: after_train`); `rule`, `ranking` and `prefix` need one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from sidrec.errors import SidrecError
from sidrec.evaluate.fusion import group_zscores

REWARDS = ("rule", "ranking", "prefix", "collaborative", "diversity", "novelty", "popularity")
TARGET_REWARDS = ("rule", "ranking", "prefix")


@dataclass
class Groups:
    pred_codes: np.ndarray  # (N, L) SID of each completion
    target_codes: np.ndarray  # (N, L) SID of the row's target
    pred_items: np.ndarray  # (N,) item id of each completion (first item of its SID)
    histories: list[list[int]]  # (N,) the row's history item ids
    group_size: int
    users: np.ndarray | None = None  # (N,) the row's user id (cross-fitted scorers pick their model by it)

    def __post_init__(self):
        n = len(self.pred_codes)
        if n % self.group_size:
            raise SidrecError(f"{n} completions do not form groups of {self.group_size}")

    def grouped(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(-1, self.group_size)


def rule_reward(g: Groups, **_) -> np.ndarray:
    return (g.pred_codes == g.target_codes).all(axis=1).astype(np.float64)


def rank_weights(group_size: int) -> np.ndarray:
    w = 1.0 / np.log2(np.arange(group_size) + 2.0)
    return w / w.sum()


def ranking_reward(g: Groups, **_) -> np.ndarray:
    hit = g.grouped(rule_reward(g))
    has_target = hit.any(axis=1, keepdims=True)
    penalty = -rank_weights(g.group_size)[None, :]
    return np.where(has_target & (hit == 0), penalty, 0.0).reshape(-1)


def prefix_reward(g: Groups, **_) -> np.ndarray:
    shared = np.cumprod(g.pred_codes == g.target_codes, axis=1).sum(axis=1)
    return shared / g.pred_codes.shape[1]


def collaborative_reward(g: Groups, scorer=None, **_) -> np.ndarray:
    if scorer is None:
        raise SidrecError("the collaborative reward needs a SASRec scorer (rl.scorer: a `sidrec baseline sasrec` run)")
    heads = g.histories[:: g.group_size]
    cands = g.grouped(g.pred_items).tolist()
    if getattr(scorer, "needs_users", False):
        if g.users is None:
            raise SidrecError("a cross-fitted scorer needs each row's user id")
        logits = scorer.score(heads, cands, users=g.users[:: g.group_size])
    else:
        logits = scorer.score(heads, cands)
    logits = np.asarray(logits, dtype=np.float64)  # (groups, G)
    return group_zscores(logits).reshape(-1)


def in_history(sid_index: np.ndarray, histories: list[list[int]], sid_of_item: np.ndarray) -> np.ndarray:
    """(rows, k) bool: whether each listed SID is the SID of an item in its row's history."""
    seen = [set(sid_of_item[h].tolist()) for h in histories]
    return np.array([[sid in s for sid in row] for s, row in zip(seen, np.asarray(sid_index).tolist())], dtype=bool)


def repeats(g: Groups, sid_of_item: np.ndarray | None) -> np.ndarray:
    """(N,) bool: whether each completion's SID is the SID of an item in its row's history."""
    if sid_of_item is None:
        raise SidrecError("telling repeats apart needs each item's SID to compare SID codes with the history")
    return in_history(sid_of_item[g.pred_items][:, None], g.histories, sid_of_item)[:, 0]


def novelty_reward(g: Groups, sid_of_item: np.ndarray | None = None, **_) -> np.ndarray:
    return 1.0 - repeats(g, sid_of_item)


def popularity_reward(g: Groups, item_prior: np.ndarray | None = None, **_) -> np.ndarray:
    if item_prior is None:
        raise SidrecError("the popularity reward needs item counts from the training rows")
    return np.asarray(item_prior, dtype=np.float64)[g.pred_items]


def recent_popularity(train_targets, num_items: int, window: int | None) -> np.ndarray:
    """log(1 + count) of each item among the last `window` training targets (all when None); rows are in time order."""
    targets = np.asarray(train_targets, dtype=np.int64)
    if window:
        targets = targets[-window:]
    return np.log1p(np.bincount(targets, minlength=num_items).astype(np.float64))


def diversity_reward(g: Groups, **_) -> np.ndarray:
    first = g.grouped(g.pred_codes[:, 0])
    same = (first[:, :, None] == first[:, None, :]).sum(axis=2) - 1
    return (1.0 - same / max(g.group_size - 1, 1)).reshape(-1)


REWARD_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "rule": rule_reward, "ranking": ranking_reward, "prefix": prefix_reward,
    "collaborative": collaborative_reward, "diversity": diversity_reward, "novelty": novelty_reward,
    "popularity": popularity_reward,
}


def check_rewards(weights: dict[str, float], scorer_path: str | None, labelled: bool = True) -> None:
    unknown = sorted(set(weights) - set(REWARD_FUNCTIONS))
    if unknown:
        raise SidrecError(f"unknown reward(s) {unknown}; choose from {', '.join(REWARDS)}")
    if not any(w != 0 for w in weights.values()):
        raise SidrecError("every reward weight is 0: nothing to learn from")
    needs_target = sorted(n for n in TARGET_REWARDS if weights.get(n))
    if needs_target and not labelled:
        raise SidrecError(f"reward(s) {needs_target} compare with the target, and prompts `after_train` have none; "
                          f"set their weights to 0 or use prompts: rows")
    if weights.get("collaborative") and not scorer_path:
        raise SidrecError("reward `collaborative` (in the default rl.rewards) needs rl.scorer: a trained SASRec "
                          "(`sidrec baseline sasrec --data DIR --out OUT`, then --set rl.scorer=OUT); or MiniOneRec's "
                          "rewards without one: --config configs/rl-cpu.yaml")


def combine(g: Groups, weights: dict[str, float], **context) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Weighted sum of the configured rewards, and each reward on its own (for logging).

    `context`: what some rewards need besides the groups (`scorer`, `sid_of_item`, `item_prior`)."""
    parts = {name: REWARD_FUNCTIONS[name](g, **context) for name, w in weights.items() if w}
    total = sum(weights[name] * r for name, r in parts.items())
    return total, parts


def zero_advantage_share(total: np.ndarray, group_size: int) -> float:
    """Share of groups whose rewards are all equal: GRPO gives every completion in them zero advantage."""
    grouped = total.reshape(-1, group_size)
    return float((grouped.std(axis=1) < 1e-8).mean())
