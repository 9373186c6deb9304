"""The group rollout TRL calls (`rollout_func`) and the rewards that score its groups.

For each prompt the rollout returns G completions: the top-G catalogue SIDs of the constrained beam search, in beam
order (unique, valid items), or G constrained samples (`rl.rollout`). Rewards (`sidrec.train.rewards`) are computed
from the row the prompt came from, never looked up by prompt text.
"""

from __future__ import annotations

import numpy as np
import torch

from sidrec.decode import SidTrie, constrained_beam_search, constrained_sample, left_pad
from sidrec.errors import SidrecError
from sidrec.tasks.template import encode_prompt
from sidrec.train.config import RlConfig
from sidrec.train.rewards import REWARD_FUNCTIONS, Groups


class GroupRollout:
    """The `rollout_func` for TRL: G constrained-beam (or sampled) SIDs per prompt, optional target injection.

    Besides TRL's keys, its output holds `sid` (each completion's SID index, for the rewards) and, for beam groups
    without an injected target, `sid_logp`: each completion's SID log-likelihood under the policy that drew it (the
    beam score), which `loss: tilted` reads instead of running the policy over the batch once more. TRL copies both
    into the batch's rows. TRL hands the rollout only the prompt texts: the rows themselves (their targets, for
    `add_target` and the rl/target_in_group metric) are `trainer.rollout_rows`, set by `GroupRolloutTrainer`.
    """

    def __init__(self, cfg: RlConfig, tokenizer, trie: SidTrie, sid_of_item: np.ndarray):
        self.cfg, self.tokenizer, self.trie, self.sid_of_item = cfg, tokenizer, trie, sid_of_item
        self.completions = trie.completion_tokens(tokenizer.eos_token_id)  # (num_sids, L + 1)
        self.generator = torch.Generator()  # reseeded at each sampled rollout (see `__call__`)

    def __call__(self, prompts: list[str], trainer) -> dict:
        g = self.cfg.num_generations
        rows = trainer.rollout_rows[::g]
        heads = prompts[::g]
        encoded = [encode_prompt(self.tokenizer, p) for p in heads]
        model = trainer.accelerator.unwrap_model(trainer.model)
        ids, mask = left_pad(encoded, self.tokenizer.pad_token_id, next(model.parameters()).device)
        was_training = model.training
        model.eval()
        sid_logp = None
        try:
            if self.cfg.rollout == "beam":
                beams = constrained_beam_search(model, ids, mask, self.trie, g)
                sid_index = beams.sid_index
                if not self.cfg.add_target:
                    sid_logp = torch.as_tensor(beams.scores.reshape(-1), dtype=torch.float32).tolist()
            else:
                # reseeded from torch's global RNG, which each checkpoint saves and a resume restores: a resumed
                # run draws the same samples as one never stopped (a generator of its own would restart at the seed)
                self.generator.manual_seed(int(torch.randint(2**62, (1,))))
                sid_index = constrained_sample(model, ids, mask, self.trie, g, self.generator)
        finally:
            model.train(was_training)
        if (sid_index < 0).any():
            raise SidrecError(f"beam search returned fewer than {g} SIDs for a prompt; lower num_generations")
        if self.cfg.prompts == "rows":
            target_sid = self.sid_of_item[[r["target"] for r in rows]]
            in_group = (sid_index == target_sid[:, None]).any(axis=1)
            trainer._metrics["train"]["rl/target_in_group"].append(float(in_group.mean()))
        if self.cfg.add_target:
            sid_index = sid_index.copy()
            sid_index[~in_group, -1] = target_sid[~in_group]
        flat = sid_index.reshape(-1)
        out = {"prompt_ids": [e for e in encoded for _ in range(g)], "completion_ids": self.completions[flat].tolist(),
               "logprobs": None, "sid": flat.tolist()}
        if sid_logp is not None:
            out["sid_logp"] = sid_logp
        return out


def make_reward_funcs(cfg: RlConfig, trie: SidTrie, codes: np.ndarray, scorer=None,
                      item_prior: np.ndarray | None = None) -> tuple[list, list[float]]:
    """TRL reward functions for the weighted rewards of `cfg.rewards`, and their weights."""
    first_item = trie.first_items()
    sid_of_item = trie.sid_of_item(len(codes))
    no_target = np.full(codes.shape[1], -1, dtype=codes.dtype)  # after_train prompts: matches no SID

    def make(name):
        def reward(prompts, completions, completion_ids, sid, target, history, user=None, **_):
            target = np.asarray(target)
            target_codes = np.where((target >= 0)[:, None], codes[np.maximum(target, 0)], no_target)
            groups = Groups(trie.sids[np.asarray(sid)], target_codes, first_item[np.asarray(sid)],
                            [list(h) for h in history], cfg.num_generations,
                            None if user is None else np.asarray(user))
            return REWARD_FUNCTIONS[name](groups, scorer=scorer, sid_of_item=sid_of_item,
                                          item_prior=item_prior).tolist()

        reward.__name__ = name  # TRL logs rewards/<name>/mean and /std
        return reward

    names = [n for n, w in cfg.rewards.items() if w]
    return [make(n) for n in names], [cfg.rewards[n] for n in names]
