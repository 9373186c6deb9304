"""Recommendation-oriented RL: GRPO on TRL's `GRPOTrainer`, with groups drawn by our constrained beam search.

For each prompt (`prompts.py`: a training row's history, or with `prompts: after_train` a user's history at the end
of the training period, its continuations and their short suffixes), the rollout (`rollout.py`) returns G
completions: the top-G catalogue SIDs of the constrained beam search, in beam order, or G constrained samples.
Rewards (`sidrec.train.rewards`) are computed from the row the prompt came from; TRL turns them into advantages
(centred within each group, and z-scored with `scale_rewards: group`). The loss (`losses.py`) is TRL's GRPO loss
with the k3 KL to the frozen SFT model (`loss: grpo`, weight `beta`), or `loss: tilted`: each group moved toward
its KL-regularised optimum pi_ref * exp(advantage / beta), a push that fades as the group nears it.

`trainer.py` holds the `GRPOTrainer` subclass and the valid-ranking callback: valid HR/NDCG@K (beam search over
`max_valid_rows` valid rows) at the start and every `eval_step` of training; with `keep_best` the saved model is the
best of those (the SFT model itself if RL never beats it). `run.py`'s `run_rl` wires them.
"""

from sidrec.train.config import RlConfig
from sidrec.train.rl.losses import shared_prompt_logps, sid_logps, tilted_advantages
from sidrec.train.rl.prompts import extended_histories, prompt_frame, suffix_histories, training_rows
from sidrec.train.rl.rollout import GroupRollout, make_reward_funcs
from sidrec.train.rl.run import check_settings, run_rl

__all__ = ["RlConfig", "GroupRollout", "check_settings", "extended_histories", "make_reward_funcs", "prompt_frame",
           "run_rl", "shared_prompt_logps", "sid_logps", "suffix_histories", "tilted_advantages", "training_rows"]
