"""Recommendation-oriented RL: GRPO on TRL's `GRPOTrainer`, with groups drawn by our constrained beam search.

For each prompt (a training row's history, or with `prompts: after_train` a user's history at the end of the
training period), the rollout returns G completions: the top-G catalogue SIDs of the
constrained beam search, in beam order (unique, valid items), or G constrained samples. Rewards (`rewards.py`) are
computed from the row the prompt came from; TRL turns them into advantages (centred within each group, and z-scored
with `scale_rewards: group`) and adds the k3 KL to the frozen SFT model (weight `beta`).

With `loss: tilted` the trainer is the same, but each advantage becomes q - p (see `tilted_advantages`): the group's
KL-regularised optimum q = softmax(log pi_ref + A / beta) minus the policy's own distribution over the group. Why not
only TRL's loss: on Industrial, GRPO with the same rewards learned the items' average rewards but ~10% of their
per-history part (bench/rl_fit.py, docs/benchmarks.md "RL", session 6), and its test NDCG@10 gain stayed at +2%; the
tilted loss, whose push fades as each group nears its optimum, gained +3.7% on test with the same rewards and 5x the
prompts (session 7), and more than GRPO on histories it never saw.

Why a small subclass of `GRPOTrainer`: TRL hands `rollout_func` only the prompt texts, and `add_target` needs each
prompt's target. The subclass keeps the batch's rows on the trainer for the rollout; the rest is TRL's.

Valid HR/NDCG@K (beam search over `max_valid_rows` valid rows) is measured at the start and every `eval_step` of
training; with `keep_best` the saved model is the best of those (the SFT model itself if RL never beats it).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sidrec.data.canonical import Dataset, histories_after, latest_rows_per_user
from sidrec.decode import SidTrie, constrained_beam_search, constrained_sample, left_pad
from sidrec.errors import SidrecError
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.io import write_json, write_manifest
from sidrec.tasks.builders import check_sid_coverage, fit_history
from sidrec.tasks.template import encode_prompt
from sidrec.train.rewards import REWARD_FUNCTIONS, Groups, check_rewards, recent_popularity
from sidrec.train.config import RlConfig, check_tracker


class GroupRollout:
    """The `rollout_func` for TRL: G constrained-beam (or sampled) SIDs per prompt, optional target injection."""

    def __init__(self, cfg: RlConfig, tokenizer, trie: SidTrie, sid_of_item: np.ndarray):
        self.cfg, self.tokenizer, self.trie, self.sid_of_item = cfg, tokenizer, trie, sid_of_item
        self.completions = trie.completion_tokens(tokenizer.eos_token_id)  # (num_sids, L + 1)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        # (N,) log-likelihood of each completion's SID under the policy that drew it, from the beam search's scores;
        # None where a completion was not a beam (sampled, or an injected target). `loss: tilted` reads it instead
        # of running the policy over the batch once more (G 32 at 2 threads: 0.83x the step time; docs/benchmarks.md).
        self.sid_logp: torch.Tensor | None = None

    def __call__(self, prompts: list[str], trainer) -> dict:
        g = self.cfg.num_generations
        rows = trainer.rollout_rows[::g]
        heads = prompts[::g]
        encoded = [encode_prompt(self.tokenizer, p) for p in heads]
        model = trainer.accelerator.unwrap_model(trainer.model)
        ids, mask = left_pad(encoded, self.tokenizer.pad_token_id, next(model.parameters()).device)
        was_training = model.training
        model.eval()
        try:
            self.sid_logp = None
            if self.cfg.rollout == "beam":
                beams = constrained_beam_search(model, ids, mask, self.trie, g)
                sid_index = beams.sid_index
                if not self.cfg.add_target:
                    self.sid_logp = torch.as_tensor(beams.scores.reshape(-1), dtype=torch.float32)
            else:
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
        completion_ids = self.completions[flat].tolist()
        return {"prompt_ids": [e for e in encoded for _ in range(g)], "completion_ids": completion_ids,
                "logprobs": None, "sid": flat.tolist()}


def shared_prompt_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                        compute_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropies) of the completions in a GRPO batch, encoding each distinct prompt once.

    TRL's forward runs prompt + completion for every row, so a group of G completions re-encodes its prompt G times;
    a SID completion is 4 tokens against a prompt of ~60, so >90% of that work is repeated. Here the rows sharing a
    prompt become one sequence, prompt + all their completions as branches, with a 4D mask in which each branch
    token sees the prompt, its own earlier tokens and itself (the beam search's tree attention). Same numbers as the
    row-by-row forward (tested); `bench/rl_forward.py` measures the speed-up.

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


def make_reward_funcs(cfg: RlConfig, trie: SidTrie, codes: np.ndarray, scorer=None,
                      item_prior: np.ndarray | None = None) -> list:
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
            return REWARD_FUNCTIONS[name](groups, scorer=scorer, sid_of_item=sid_of_item, item_prior=item_prior,
                                          ignore_repeats=cfg.collaborative_repeats == "ignore").tolist()

        reward.__name__ = name  # TRL logs rewards/<name>/mean and /std
        return reward

    names = [n for n, w in cfg.rewards.items() if w]
    return [make(n) for n in names], [cfg.rewards[n] for n in names]


def extended_histories(model, tokenizer, trie: SidTrie, codes: np.ndarray, prompt_df, k: int, beams: int,
                       max_history: int, cutoff_len: int, seed: int):
    """`k` continuations of each history in `prompt_df`: the history plus one item drawn without replacement from
    the model's top-`beams` constrained beams, with the beams' probabilities renormalised (see `extend_prompts`)."""
    from sidrec.evaluate.generative import rank_histories

    histories = [list(h) for h in prompt_df["history"]]
    sid_index, scores = rank_histories(model, tokenizer, trie, codes, histories, beams, cutoff_len, batch_size=64)
    rng = np.random.default_rng(seed)
    users, extended = [], []
    for h, u, sids, logp in zip(histories, prompt_df["user"], sid_index, scores):
        p = np.exp(logp - logp.max())
        for s in rng.choice(sids, size=min(k, len(sids)), replace=False, p=p / p.sum()):
            items = trie.items_of_sid[s]
            extended.append((h + [int(items[rng.integers(len(items))])])[-max_history:])
            users.append(u)
    return pd.DataFrame({"user": users, "history": extended})


def suffix_histories(extended: pd.DataFrame, k: int, max_len: int, seed: int, depth: int = 1,
                     continue_once=None) -> pd.DataFrame:
    """`k` short histories per user: the last L items (L uniform in 1..`max_len`, at most the history's length) of
    `k` of the user's histories in `extended`, drawn without replacement (see `suffix_prompts`). With `depth` > 1,
    each drawn history is first continued `depth` - 1 times by `continue_once` (a frame of user/history rows in, the
    same rows one item longer out), so its last `depth` items are all drawn (see `suffix_depth`)."""
    if depth > 1 and continue_once is None:
        raise SidrecError("suffix_depth > 1 needs a model to continue the histories with")
    rng = np.random.default_rng(seed)
    histories = extended["history"].tolist()
    users, picked, lengths = [], [], []
    for user, rows in extended.groupby("user", sort=False).indices.items():
        for r in rng.choice(rows, size=min(k, len(rows)), replace=False):
            h = list(histories[r])
            picked.append(h)
            lengths.append(int(rng.integers(1, min(max_len, len(h)) + 1)))
            users.append(user)
    frame = pd.DataFrame({"user": users, "history": picked})
    for _ in range(depth - 1):
        frame = continue_once(frame)
        if len(frame) != len(lengths):
            raise SidrecError(f"continuing the suffix histories returned {len(frame)} rows for {len(lengths)}")
    return frame.assign(history=[h[-n:] for h, n in zip(frame["history"], lengths)])


def training_rows(train_df, cfg: RlConfig) -> np.ndarray:
    """Positions of the training rows (or, for `after_train`, of the users' end-of-training histories) RL prompts
    with: each user's latest `rows_per_user` rows (all when None), then a seeded sample of `sample_size` of them when
    `sample_train`."""
    rows = np.arange(len(train_df))
    if cfg.rows_per_user:
        rows = latest_rows_per_user(train_df, cfg.rows_per_user)
    if cfg.sample_train and cfg.sample_size < len(rows):
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, cfg.sample_size, replace=False))
    return rows


def valid_ranking(model, tokenizer, trie, codes, histories, targets, beams, cutoff_len) -> dict[str, float]:
    from sidrec.evaluate.generative import rank_histories

    was_training = model.training
    model.eval()
    try:
        sid_index, _ = rank_histories(model, tokenizer, trie, codes, histories, beams, cutoff_len, batch_size=64,
                                      progress=False)
    finally:
        model.train(was_training)
    sid_of_item = trie.sid_of_item(len(codes))
    return hr_ndcg(target_ranks(sid_index.tolist(), sid_of_item[targets].tolist()), ks=(5, 10, 20))


def _save_model(model, tokenizer, folder: Path) -> None:
    staging = folder.with_name("." + folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def run_rl(cfg: RlConfig, model_dir: str | Path, data_dir: str | Path, sids: str | Path, out: str | Path) -> Path:
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    from sidrec.evaluate.generative import build_trie, load_model_for_inference
    from sidrec.model.backbone import check_context_length
    from sidrec.sid.io import load_sids

    t0 = time.time()
    out = Path(out)
    (out / "manifest.json").unlink(missing_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

    # every check that can fail runs before any training starts
    check_rewards(cfg.rewards, cfg.scorer, labelled=cfg.prompts == "rows")
    check_tracker(cfg.report_to, "rl.report_to")
    if cfg.extend_prompts and cfg.prompts != "after_train":
        raise SidrecError("extend_prompts continues the after_train histories; set rl.prompts: after_train")
    if cfg.suffix_prompts and not cfg.extend_prompts:
        raise SidrecError("suffix_prompts cuts the continued histories of extend_prompts; set rl.extend_prompts >= 1")
    if cfg.collaborative_repeats == "ignore" and not cfg.rewards.get("collaborative"):
        raise SidrecError("collaborative_repeats: ignore changes the collaborative reward, which has no weight here")
    if cfg.suffix_depth > 1 and not cfg.suffix_prompts:
        raise SidrecError("suffix_depth continues the suffix histories; set rl.suffix_prompts >= 1")
    if cfg.prompts == "after_train" and (cfg.add_target or cfg.rows_per_user):
        raise SidrecError("add_target and rows_per_user apply to prompts: rows; after_train prompts have no target "
                          "and one history per user")
    if cfg.loss == "tilted" and cfg.beta <= 0:
        raise SidrecError("rl.loss: tilted needs beta > 0: the group's target is pi_ref * exp(advantage / beta)")
    if cfg.train_batch_size % cfg.num_generations or cfg.train_batch_size % cfg.micro_batch_size:
        raise SidrecError(f"train_batch_size={cfg.train_batch_size} must be a multiple of num_generations="
                          f"{cfg.num_generations} and of micro_batch_size={cfg.micro_batch_size}")
    scorer = None
    if cfg.rewards.get("collaborative"):
        from sidrec.baselines.sasrec import load_scorer

        scorer = load_scorer(cfg.scorer)
        if cfg.prompts == "rows" and not getattr(scorer, "needs_users", False) and scorer.config.get("folds", 1) == 1:
            print("[rl] note: the collaborative scorer was trained on the training rows it will score, so it mostly "
                  "recalls their targets; cross-fitted scorers (rl.scorer={0: ..., 1: ...}, sasrec.folds) avoid that")
    dataset = Dataset.load(data_dir)
    codes, _ = load_sids(sids)
    check_sid_coverage(dataset, codes)
    if scorer is not None and scorer.num_items != dataset.num_items:
        raise SidrecError(f"{cfg.scorer}: SASRec scores {scorer.num_items} items, the dataset has {dataset.num_items}")
    tokenizer, model = load_model_for_inference(model_dir, dtype="bf16" if cfg.bf16 else "fp32")
    check_context_length(model, cfg.cutoff_len, "rl.cutoff_len")
    trie = build_trie(tokenizer, codes)  # fails if the SFT tokenizer lacks these SID tokens
    if cfg.num_generations > trie.num_sids:
        raise SidrecError(f"num_generations={cfg.num_generations} is larger than the catalogue's {trie.num_sids} SIDs")
    sid_of_item = trie.sid_of_item(dataset.num_items)
    response_len = codes.shape[1] + 1

    train_df = dataset.splits["train"]
    item_prior = recent_popularity(train_df["target"], dataset.num_items, cfg.popularity_window)
    if cfg.prompts == "after_train":
        prompt_df = histories_after(train_df, dataset.max_history)
        if cfg.extend_prompts:
            def continued(frame, k, seed):
                return extended_histories(model, tokenizer, trie, codes, frame, k, cfg.num_generations,
                                          dataset.max_history, cfg.cutoff_len - response_len, seed)

            more = continued(prompt_df, cfg.extend_prompts, cfg.seed)
            short = suffix_histories(more, cfg.suffix_prompts, cfg.suffix_max, cfg.seed, cfg.suffix_depth,
                                     lambda frame: continued(frame, 1, cfg.seed + 1))
            prompt_df = pd.concat([prompt_df, more, short], ignore_index=True)
        prompt_df = prompt_df.assign(target=-1)
    else:
        prompt_df = train_df
    rows = training_rows(prompt_df, cfg)
    from datasets import Dataset as HFDataset

    histories, targets, users = (prompt_df[c].tolist() for c in ("history", "target", "user"))
    train = HFDataset.from_list([
        {"prompt": fit_history("seqrec", list(histories[r]), codes, tokenizer, cfg.cutoff_len - response_len)[0],
         "row": int(r), "target": int(targets[r]), "history": [int(i) for i in histories[r]], "user": int(users[r])}
        for r in rows])
    valid_df = dataset.splits["valid"]
    vpick = np.arange(len(valid_df))
    if cfg.max_valid_rows and len(vpick) > cfg.max_valid_rows:
        vpick = np.sort(np.random.default_rng(cfg.seed).choice(len(vpick), cfg.max_valid_rows, replace=False))
    valid_hist = [list(valid_df["history"].iloc[i]) for i in vpick]
    valid_targets = np.asarray(valid_df["target"].iloc[vpick].tolist())

    world = max(1, int(os.environ.get("WORLD_SIZE", 1)))
    accum = max(1, cfg.train_batch_size // (cfg.micro_batch_size * world))
    prompts_per_step = cfg.train_batch_size // cfg.num_generations
    total_steps = math.ceil(len(train) * cfg.epochs / (prompts_per_step * world))
    eval_every = max(1, int(cfg.eval_step * total_steps) if cfg.eval_step < 1 else int(cfg.eval_step))
    reward_funcs, reward_weights = make_reward_funcs(cfg, trie, codes, scorer, item_prior)
    args = GRPOConfig(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=accum, num_generations=cfg.num_generations,
        max_completion_length=response_len, num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        beta=0.0 if cfg.loss == "tilted" else cfg.beta, loss_type="grpo", scale_rewards=cfg.scale_rewards,
        reward_weights=reward_weights,
        max_grad_norm=cfg.max_grad_norm, warmup_steps=cfg.warmup_ratio, lr_scheduler_type=cfg.lr_scheduler,
        bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing, disable_dropout=True,
        logging_steps=max(1, eval_every // 5), save_strategy="steps", save_steps=eval_every, save_total_limit=2,
        report_to=cfg.report_to, seed=cfg.seed, data_seed=cfg.seed, deepspeed=cfg.deepspeed,
        use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=torch.cuda.is_available(),
        log_completions=False, temperature=1.0, disable_tqdm=False,
    )

    ref_model = None
    if cfg.loss == "tilted":  # TRL runs with beta 0 (no k3 term, no reference of its own): the tilt holds the KL
        ref_model = load_model_for_inference(model_dir, dtype="bf16" if cfg.bf16 else "fp32")[1]
        ref_model.requires_grad_(False)

    def sid_logps(m, batch) -> torch.Tensor:
        """(N,) log-likelihood of each completion's SID tokens (the closing EOS left out, as in the beam scores)."""
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        with torch.no_grad():
            token_logp, _ = shared_prompt_logps(m, ids, mask, batch["completion_ids"].shape[1])
        return token_logp[:, :codes.shape[1]].float().sum(-1)

    class GroupRolloutTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            self.rollout_rows = inputs  # TRL gives rollout_func only the prompt texts
            batch = super()._generate_and_score_completions(inputs)
            if cfg.loss == "tilted":
                g, c = cfg.num_generations, batch["completion_ids"].shape[1]
                ref_model.to(self.accelerator.device)
                policy = rollout.sid_logp
                if policy is None:
                    policy = sid_logps(self.accelerator.unwrap_model(self.model), batch)
                policy = policy.to(batch["advantages"].device)
                adv = tilted_advantages(policy, sid_logps(ref_model, batch), batch["advantages"], cfg.beta, g)
                # TRL's "grpo" loss averages over the C tokens and the G completions of a group: x G*C makes the
                # loss the group cross-entropy itself, summed over the group, averaged over prompts
                batch["advantages"] = adv * (g * c)
                log_p = torch.log_softmax(policy.view(-1, g), -1)
                q = (adv.view(-1, g) + log_p.exp()).clamp(min=1e-12)
                self._metrics["train"]["rl/kl_to_group_optimum"].append(
                    float((q * (q.log() - log_p)).sum(-1).mean()))
            return batch

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                               **multimodal):
            if not cfg.shared_prompt_forward or compute_aux_loss or any(v is not None for v in multimodal.values()):
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                    **multimodal)
            with self.accelerator.autocast():
                logps, entropy = shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep,
                                                     compute_entropy)
            return logps, entropy, None

    best_dir, history_path = out / "best_model", out / "valid_history.json"

    class ValidRanking(TrainerCallback):
        def __init__(self):
            import json

            self.history = json.loads(history_path.read_text()) if history_path.exists() else []
            self.best = max((h["NDCG@10"] for h in self.history), default=-1.0)

        def measure(self, state, model):
            if not trainer.accelerator.is_main_process:  # one process measures and saves under accelerate launch
                return
            m = valid_ranking(model, tokenizer, trie, codes, valid_hist, valid_targets, cfg.eval_beams,
                              cfg.cutoff_len)
            self.history.append({"step": state.global_step, **{k: round(v, 5) for k, v in m.items()}})
            trainer._metrics["train"]["valid/HR@10"].append(m["HR@10"])
            trainer._metrics["train"]["valid/NDCG@10"].append(m["NDCG@10"])
            print(f"[rl] step {state.global_step}: valid HR@10 {m['HR@10']:.4f} NDCG@10 {m['NDCG@10']:.4f}")
            if cfg.keep_best and m["NDCG@10"] > self.best:
                self.best = m["NDCG@10"]
                _save_model(trainer.accelerator.unwrap_model(model), tokenizer, best_dir)
            write_json(history_path, self.history)

        def on_train_begin(self, args, state, control, model=None, **kw):
            if not self.history:
                self.measure(state, model)

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % eval_every == 0 or state.global_step == state.max_steps:
                if not self.history or self.history[-1]["step"] != state.global_step:
                    self.measure(state, model)

    peft_config = None
    if cfg.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    callback = ValidRanking()
    rollout = GroupRollout(cfg, tokenizer, trie, sid_of_item)
    trainer = GroupRolloutTrainer(model=model, args=args, reward_funcs=reward_funcs, train_dataset=train,
                                  processing_class=tokenizer, callbacks=[callback], peft_config=peft_config,
                                  rollout_func=rollout)
    last = get_last_checkpoint(str(out / "checkpoints")) if (out / "checkpoints").is_dir() else None
    trainer.train(resume_from_checkpoint=last)

    final = trainer.accelerator.unwrap_model(trainer.model)
    model_dir_out = out / "model"
    if cfg.lora is not None:  # best_model/ then holds the best adapter: load it, merge, save a plain HF folder
        if cfg.keep_best and best_dir.is_dir():
            from peft import load_peft_weights, set_peft_model_state_dict

            set_peft_model_state_dict(final, load_peft_weights(str(best_dir)))
        _save_model(final.merge_and_unload(), tokenizer, model_dir_out)
    elif cfg.keep_best and best_dir.is_dir():
        shutil.rmtree(model_dir_out, ignore_errors=True)
        best_dir.rename(model_dir_out)
    else:
        _save_model(final, tokenizer, model_dir_out)
    best = max(callback.history, key=lambda h: h["NDCG@10"])
    write_json(out / "train_log.json", list(trainer.state.log_history))
    write_manifest(out, "rl", config=cfg.model_dump(), inputs={"model": model_dir, "data": data_dir, "sids": sids},
                   seconds=time.time() - t0,
                   extra={"resumed_from": last, "global_step": trainer.state.global_step,
                          "num_train_prompts": len(train), "valid_history": callback.history,
                          "saved_model_step": best["step"] if cfg.keep_best else trainer.state.global_step})
    return model_dir_out
