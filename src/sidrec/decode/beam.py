"""Batched beam search constrained to a SidTrie.

Why our own and not `model.generate` + a logits processor: MiniOneRec's processor loops in Python over every
(prompt, beam) at every step and looks allowed tokens up in a dict keyed by the generated prefix; here the allowed
codes of every beam come from one tensor gather, the prompt's KV cache is computed once per prompt, and each step
scores only the K codes of the current level. `bench/beam_search.py` measures the difference on the same model.

Scores are sums of log-probabilities under a full-vocabulary softmax (no temperature, no sampling, no top-k/top-p,
no repetition penalty, whatever a checkpoint's generation_config.json says), so they equal the sequence
log-likelihood of the SID given the prompt. Every returned SID is a catalogue SID and no SID is returned twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sidrec.decode.trie import SidTrie
from sidrec.errors import SidrecError


@dataclass
class BeamResult:
    sid_index: np.ndarray  # (B, W) index into trie.sids, -1 where fewer than W SIDs exist
    scores: np.ndarray  # (B, W) log-likelihood, -inf where sid_index is -1

    def items(self, trie: SidTrie, limit: int | None = None) -> list[list[int]]:
        """Ranked item ids per prompt; the items sharing a SID follow each other in item-id order."""
        out = []
        for row in self.sid_index.tolist():
            ranked = [it for s in row if s >= 0 for it in trie.items_of_sid[s]]
            out.append(ranked[:limit] if limit else ranked)
        return out


@torch.no_grad()
def constrained_beam_search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: SidTrie,
                            num_beams: int) -> BeamResult:
    """Top-`num_beams` catalogue SIDs for each left-padded prompt in the batch."""
    if num_beams < 1:
        raise SidrecError(f"num_beams must be >= 1, got {num_beams}")
    if num_beams > trie.num_sids:
        raise SidrecError(f"num_beams={num_beams} is larger than the catalogue's {trie.num_sids} distinct SIDs; "
                          f"lower --beams")
    device = input_ids.device
    trie = trie.to(device) if trie.allowed[0].device != device else trie
    batch, width = input_ids.shape[0], num_beams
    neg_inf = torch.tensor(float("-inf"), device=device)

    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1, :]
    next_pos = position_ids[:, -1:] + 1

    # beams start as one live beam per prompt on node 0; the others are -inf placeholders
    beam_scores = torch.full((batch, 1), 0.0, device=device)
    nodes = torch.zeros((batch, 1), dtype=torch.long, device=device)
    for level in range(trie.levels):
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B*w, V)
        code_lp = logprobs[:, trie.level_token_ids[level]].view(batch, -1, len(trie.level_token_ids[level]))
        allowed = trie.allowed[level][nodes]  # (B, w, K)
        cand = torch.where(allowed, beam_scores.unsqueeze(-1) + code_lp, neg_inf)
        k = cand.shape[-1]
        top_scores, flat = cand.view(batch, -1).topk(min(width, cand.shape[1] * k), dim=-1)
        parent, code = flat // k, flat % k
        children = trie.child[level][nodes.gather(1, parent), code]
        live = torch.isfinite(top_scores)
        nodes = torch.where(live, children, torch.zeros_like(children))
        beam_scores = top_scores
        if level == trie.levels - 1:
            break
        w_prev = logits.shape[0] // batch
        reorder = (torch.arange(batch, device=device).unsqueeze(1) * w_prev + parent).view(-1)
        # rows follow their parent beam; this also widens the batch from B prompts to B*width beams after level 0
        cache.reorder_cache(reorder)
        attention_mask, next_pos = attention_mask[reorder], next_pos[reorder]
        tokens = trie.level_token_ids[level][code].view(-1, 1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(tokens)], dim=1)
        out = model(input_ids=tokens, attention_mask=attention_mask, position_ids=next_pos,
                    cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1, :]
        next_pos = next_pos + 1

    sid_index = torch.where(torch.isfinite(beam_scores), nodes, torch.full_like(nodes, -1))
    return BeamResult(sid_index.cpu().numpy(), beam_scores.cpu().numpy())
