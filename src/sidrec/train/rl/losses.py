"""The two losses of `rl.loss`, on TRL's GRPO batches.

- `grpo`: TRL's GRPO loss itself (advantage-weighted log-likelihood + k3 KL to the SFT model, weight `beta`); see
  `trl_loss_args`.
- `tilted`: TRL's loss run with beta 0 and each advantage replaced by G*C*(q - p) (`tilted_advantages`): q is the
  group's KL-regularised optimum softmax(log pi_ref + A / beta), p the policy's own distribution over the group. The
  push fades as each group nears its optimum, where GRPO balances against a per-sample KL estimate.

`shared_prompt_logps` is the forward both use: each distinct prompt encoded once for its whole group.
"""

from __future__ import annotations

import torch

from sidrec.train.config import RlConfig


def trl_loss_args(cfg: RlConfig) -> dict:
    """GRPOConfig settings of the loss: `tilted` runs TRL with beta 0 (no k3 term, no reference model of TRL's own),
    the tilt holds the KL instead."""
    return {"beta": 0.0 if cfg.loss == "tilted" else cfg.beta, "loss_type": "grpo", "scale_rewards": cfg.scale_rewards}


def shared_prompt_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                        compute_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropies) of the completions in a GRPO batch, encoding each distinct prompt once.

    TRL's forward runs prompt + completion for every row, so a group of G completions re-encodes its prompt G times;
    a SID completion is 4 tokens against a prompt of ~60, so >90% of that work is repeated. Here the rows sharing a
    prompt become one sequence, prompt + all their completions as branches, with a 4D mask in which each branch
    token sees the prompt, its own earlier tokens and itself (the beam search's tree attention). Same numbers as the
    row-by-row forward (tested); `lab/rl_forward.py` measures the speed-up.

    `input_ids`/`attention_mask`: (N, P + C) left-padded prompts followed by C completion tokens. Returns (N, C).
    """
    n, width = input_ids.shape
    p, c = width - completion_len, completion_len
    device = input_ids.device
    prompts, pmask = input_ids[:, :p], attention_mask[:, :p]
    uniq, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    u = len(uniq)
    counts = torch.bincount(inverse, minlength=u)
    order = torch.argsort(inverse, stable=True)
    starts = counts.cumsum(0) - counts
    slot = torch.empty(n, dtype=torch.long, device=device)
    slot[order] = torch.arange(n, device=device) - starts[inverse[order]]
    upmask = pmask[order[starts]].bool()  # (U, P)
    t = p + int(counts.max()) * c
    cols = p + slot[:, None] * c + torch.arange(c, device=device)  # (N, C) columns of each row's branch

    ids = torch.zeros((u, t), dtype=input_ids.dtype, device=device)
    ids[:, :p] = uniq
    ids[inverse[:, None], cols] = input_ids[:, p:]
    pos = torch.zeros((u, t), dtype=torch.long, device=device)
    pos[:, :p] = (upmask.long().cumsum(-1) - 1).clamp(min=0)
    pos[inverse[:, None], cols] = upmask.sum(-1)[inverse][:, None] + torch.arange(c, device=device)

    allowed = torch.eye(t, dtype=torch.bool, device=device).repeat(u, 1, 1)  # unused slots see themselves only
    allowed[:, :p, :p] |= torch.tril(torch.ones((p, p), dtype=torch.bool, device=device)) & upmask[:, None, :]
    allowed[inverse[:, None], cols, :p] = upmask[inverse][:, None, :]
    branch = torch.tril(torch.ones((c, c), dtype=torch.bool, device=device)).expand(n, c, c)
    allowed[inverse[:, None, None], cols[:, :, None], cols[:, None, :]] = branch
    dtype = next(model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)

    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask[:, None], position_ids=pos).last_hidden_state
    # the logit that predicts branch token j sits at the prompt's last column (j = 0) or at branch token j - 1
    pred_cols = torch.cat([torch.full((n, 1), p - 1, device=device), cols[:, :-1]], dim=1)
    logits = model.get_output_embeddings()(hidden[inverse[:, None], pred_cols]).float()
    logp = torch.log_softmax(logits, dim=-1)
    token_logp = logp.gather(-1, input_ids[:, p:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1) if compute_entropy else None
    return token_logp, entropy


def tilted_advantages(policy_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor, beta: float,
                      group_size: int) -> torch.Tensor:
    """(N,) advantages q - p for `rl.loss: tilted`, from (N,) sequence log-likelihoods and GRPO advantages.

    In a group of G completions, the optimum of E[A] - beta * KL(pi || pi_ref) over distributions on the group is
    q = softmax(log pi_ref(y) + A(y) / beta). The cross-entropy from q to the policy's distribution on the group,
    p = softmax(log pi(y)), has gradient -sum_i (q_i - p_i) * grad log pi(y_i): GRPO's policy-gradient loss with
    advantages q - p, which vanish where the policy has reached the optimum.
    """
    shape = (-1, group_size)
    target = torch.softmax(ref_logp.view(shape) + advantages.view(shape) / beta, dim=-1)
    return (target - torch.softmax(policy_logp.view(shape), dim=-1)).reshape(-1)


def sid_logps(model, batch: dict, sid_len: int) -> torch.Tensor:
    """(N,) log-likelihood of each completion's SID tokens in a GRPO batch (the closing EOS left out, as in the beam
    scores), without gradients."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        token_logp, _ = shared_prompt_logps(model, ids, mask, batch["completion_ids"].shape[1])
    return token_logp[:, :sid_len].float().sum(-1)


def tilt_batch(batch: dict, policy_logp: torch.Tensor, ref_logp: torch.Tensor, beta: float,
               group_size: int) -> float:
    """Replace the batch's GRPO advantages by the tilted ones, scaled by G*C; returns the mean KL from each group's
    optimum q to the policy's group distribution (logged as rl/kl_to_group_optimum)."""
    g, c = group_size, batch["completion_ids"].shape[1]
    policy_logp = policy_logp.to(batch["advantages"].device)
    adv = tilted_advantages(policy_logp, ref_logp, batch["advantages"], beta, g)
    # TRL's "grpo" loss averages over the C tokens and the G completions of a group: x G*C makes the loss the group
    # cross-entropy itself, summed over the group, averaged over prompts
    batch["advantages"] = adv * (g * c)
    log_p = torch.log_softmax(policy_logp.view(-1, g), -1)
    q = (adv.view(-1, g) + log_p.exp()).clamp(min=1e-12)
    return float((q * (q.log() - log_p)).sum(-1).mean())
