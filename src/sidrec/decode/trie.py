"""A prefix trie over fixed-length SIDs, stored as dense per-level tables so decoding never loops in Python.

Level l has `num_nodes[l]` prefixes (node 0 at level 0 is the empty prefix). For each level:
  - `allowed[l]`: bool (num_nodes[l], K_l) — which codes continue a catalogue SID from that prefix;
  - `child[l]`:   int  (num_nodes[l], K_l) — the node id at level l+1 reached by that code (-1 where not allowed).
At the last level `child` holds the SID's index into `sids` (the catalogue's distinct SIDs), so a finished beam is
read off directly. Several items may share one SID (the paper's SIDs have such collisions): `items_of_sid` keeps them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sidrec.errors import SidrecError


@dataclass
class SidTrie:
    allowed: list[torch.Tensor]
    child: list[torch.Tensor]
    level_token_ids: list[torch.Tensor]  # level l: vocab id of each code, shape (K_l,)
    sids: np.ndarray  # (num_sids, L) distinct SIDs, in order of first item
    items_of_sid: list[list[int]]

    @classmethod
    def build(cls, codes: np.ndarray, level_token_ids: list) -> "SidTrie":
        """`codes`: (num_items, L) int array, row i = item i's SID. `level_token_ids[l][c]`: vocab id of code c."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or len(codes) == 0:
            raise SidrecError(f"SID codes must be a non-empty (items, levels) array, got shape {codes.shape}")
        if (codes < 0).any():
            raise SidrecError("variable-length SIDs (MiniOneRec's extra dedup level) cannot be decoded as fixed-length "
                              "codes; build the SIDs with the default `--collision reassign`")
        levels = codes.shape[1]
        if len(level_token_ids) != levels:
            raise SidrecError(f"{len(level_token_ids)} token tables for {levels} SID levels")
        sizes = [len(t) for t in level_token_ids]
        for l in range(levels):
            if codes[:, l].min() < 0 or codes[:, l].max() >= sizes[l]:
                raise SidrecError(f"SID level {l} has codes outside 0..{sizes[l] - 1}")

        # the distinct SIDs in order of first item, and each item's SID index (numpy throughout: no per-item loop)
        item_sid, first = _first_seen_ids(codes)
        num_sids = len(first)
        sids = codes[first].astype(np.int64).reshape(num_sids, levels)
        items_of_sid = [[i] for i in first.tolist()]
        shared = np.flatnonzero(np.bincount(item_sid, minlength=num_sids)[item_sid] > 1)  # items of collided SIDs
        for i in shared[np.argsort(item_sid[shared], kind="stable")].tolist():
            if items_of_sid[item_sid[i]][0] != i:
                items_of_sid[item_sid[i]].append(i)

        # node ids per level: the distinct prefixes of length l, numbered in order of first appearance over `sids`
        allowed, child = [], []
        node, num_nodes = np.zeros(num_sids, dtype=np.int64), 1
        for l in range(levels):
            a = np.zeros((num_nodes, sizes[l]), dtype=bool)
            c = np.full((num_nodes, sizes[l]), -1, dtype=np.int64)
            a[node, sids[:, l]] = True
            if l == levels - 1:
                c[node, sids[:, l]] = np.arange(num_sids)
            else:
                next_node, heads = _first_seen_ids(sids[:, : l + 1])
                num_nodes = len(heads)
                c[node, sids[:, l]] = next_node
                node = next_node
            allowed.append(torch.from_numpy(a))
            child.append(torch.from_numpy(c))
        token_ids = [torch.as_tensor(np.asarray(t), dtype=torch.long) for t in level_token_ids]
        return cls(allowed, child, token_ids, sids, items_of_sid)

    @property
    def levels(self) -> int:
        return len(self.allowed)

    @property
    def num_sids(self) -> int:
        return len(self.sids)

    def first_items(self) -> np.ndarray:
        """(num_sids,) each SID's first item: the item a generated SID stands for where one item is needed."""
        return np.array([items[0] for items in self.items_of_sid])

    def sid_of_item(self, num_items: int) -> np.ndarray:
        """(num_items,) each item's SID index (-1 for items outside the trie)."""
        out = np.full(num_items, -1, dtype=np.int64)
        for s, items in enumerate(self.items_of_sid):
            out[items] = s
        return out

    def completion_tokens(self, eos_id: int) -> np.ndarray:
        """(num_sids, L + 1) each SID's vocab ids, then `eos_id`: the completion a GRPO rollout writes for it."""
        levels = [self.level_token_ids[lvl].cpu().numpy()[self.sids[:, lvl]] for lvl in range(self.sids.shape[1])]
        return np.column_stack(levels + [np.full(len(self.sids), eos_id)]).astype(np.int64)

    def to(self, device) -> "SidTrie":
        return SidTrie([a.to(device) for a in self.allowed], [c.to(device) for c in self.child],
                       [t.to(device) for t in self.level_token_ids], self.sids, self.items_of_sid)


def _first_seen_ids(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of equal rows, numbered in order of each distinct row's first occurrence; and where each id first occurs
    (ascending)."""
    if rows.size and rows.min() >= 0:
        span = [int(m) + 1 for m in rows.max(0)]
        if math.prod(span) < 2**62:  # one int64 key per row (mixed radix): sorts far faster than rows
            rows = rows @ np.cumprod([1, *span[:0:-1]], dtype=np.int64)[::-1]
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(first), dtype=np.int64)
    rank[order] = np.arange(len(first))
    return rank[inverse.reshape(-1)], first[order]
