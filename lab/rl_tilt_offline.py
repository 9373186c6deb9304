"""`rl.loss: tilted` on fixed groups, for quick sweeps: the start model's top-G beams and their rewards computed once.

`sidrec rl --set rl.loss=tilted` re-draws each group from the current policy at every step (TRL's on-policy loop,
~1.2 s/step at 1 thread on Industrial). This script draws every prompt's group once from the SFT model, computes the
target q = softmax(log pi_ref + R / beta) once, and then only trains (0.55 s/step): the same loss, `tilted_advantages`,
on groups that do not follow the policy. Use it to compare reward weights, prompt sets and learning rates; confirm
the winner with `sidrec rl`. One difference since session 8: here p and q are over the whole completion, the closing
EOS included (the session-7 figures were made so); `sidrec rl` takes both over the SID tokens only.

It also splits valid and test rows by whether the row's history is one of the RL prompts ("seen": with
`prompts: after_train`, a user with no newer item has the same history at evaluation time) or not ("fresh"): what RL
learns on seen histories needs no generalisation.

    .venv/bin/python lab/rl_tilt_offline.py --extend 4 --out bench/out/rl_tilt_x4.json   # ~37 min at 1 thread
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import pandas as pd
import torch

from sidrec.baselines.sasrec import load_scorer
from sidrec.data import Dataset
from sidrec.data.canonical import histories_after
from sidrec.decode import left_pad
from sidrec.evaluate.generative import build_trie, load_model_for_inference, rank_histories
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.io import write_json
from sidrec.sid.io import load_sids
from sidrec.tasks.builders import fit_history
from sidrec.train.rewards import Groups, combine, recent_popularity
from sidrec.train.rl import extended_histories, shared_prompt_logps, tilted_advantages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/demo/sft/model")
    ap.add_argument("--data", default="runs/demo/dataset")
    ap.add_argument("--sids", default="runs/demo/sid")
    ap.add_argument("--scorer", default="bench/out/sasrec_run1,bench/out/sasrec_seed2,bench/out/sasrec_seed3")
    ap.add_argument("--rewards", default='{"collaborative": 0.75, "novelty": 0.5, "popularity": 0.2}')
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--extend", type=int, default=0, help="rl.extend_prompts")
    ap.add_argument("--depth", type=int, default=1, help="continue each extended prompt to this many new items")
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--prompts_per_step", type=int, default=16)
    ap.add_argument("--evals", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max_prompts", type=int, default=None, help="first N prompts only (a quick check)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()

    dataset = Dataset.load(args.data)
    codes, _ = load_sids(args.sids)
    tokenizer, ref = load_model_for_inference(args.model)
    model = copy.deepcopy(ref)
    trie = build_trie(tokenizer, codes)
    sid_of_item = trie.sid_of_item(dataset.num_items)
    g, cutoff = args.groups, 128 - codes.shape[1] - 1
    train = dataset.splits["train"]

    prompts = [histories_after(train, dataset.max_history)]
    if args.extend:
        prompts.append(extended_histories(ref, tokenizer, trie, codes, prompts[0], args.extend, g,
                                          dataset.max_history, cutoff, args.seed))
        for d in range(1, args.depth):
            prompts.append(extended_histories(ref, tokenizer, trie, codes, prompts[-1], 1, g, dataset.max_history,
                                              cutoff, args.seed + d))
    histories = [list(h) for h in pd.concat(prompts, ignore_index=True)["history"]][:args.max_prompts]
    n = len(histories)
    sid_index, _ = rank_histories(ref, tokenizer, trie, codes, histories, g, cutoff, batch_size=64)
    flat = sid_index.ravel()
    groups = Groups(trie.sids[flat], np.full((len(flat), codes.shape[1]), -1), trie.first_items()[flat],
                    [h for h in histories for _ in range(g)], g)
    weights = json.loads(args.rewards)
    total, _ = combine(groups, weights, scorer=load_scorer(args.scorer.split(",")) if weights.get("collaborative")
                       else None, sid_of_item=sid_of_item,
                       item_prior=recent_popularity(train["target"], dataset.num_items, 2000))
    rewards = torch.as_tensor(total, dtype=torch.float32)
    encoded = [tokenizer(fit_history("seqrec", h, codes, tokenizer, cutoff)[0], add_special_tokens=False)["input_ids"]
               for h in histories]
    completion = torch.as_tensor(trie.completion_tokens(tokenizer.eos_token_id))

    def group_logps(m, rows) -> torch.Tensor:
        """(len(rows) * G,) log-likelihood of each prompt's group under `m`."""
        ids, mask = left_pad([encoded[r] for r in rows], tokenizer.pad_token_id)
        comp = completion[sid_index[rows].ravel()]
        ids = torch.cat([ids.repeat_interleave(g, 0), comp], 1)
        mask = torch.cat([mask.repeat_interleave(g, 0), torch.ones_like(comp)], 1)
        return shared_prompt_logps(m, ids, mask, comp.shape[1])[0].sum(-1)

    with torch.no_grad():
        ref_logp = torch.cat([group_logps(ref, np.arange(s, min(n, s + 64))) for s in range(0, n, 64)])
    print(f"{n} prompts, groups and rewards ready: {time.time() - t0:.0f} s", flush=True)

    seen = set(map(tuple, histories))
    rows = {}
    for split in ("valid", "test"):
        df = dataset.splits[split]
        hist = [list(h) for h in df["history"]]
        rows[split] = (hist, sid_of_item[np.asarray(df["target"].tolist())],
                       np.array([tuple(h) not in seen for h in hist]))
        print(f"{split}: {1 - rows[split][2].mean():.1%} of rows have an RL prompt's history", flush=True)

    log = []

    def evaluate(step: int) -> float:
        model.eval()
        entry = {"step": step}
        for split, (hist, target_sids, fresh) in rows.items():
            sids, _ = rank_histories(model, tokenizer, trie, codes, hist, 20, 128, batch_size=64, progress=False)
            ranks = np.asarray(target_ranks(sids.tolist(), target_sids.tolist()))
            for part, keep in (("all", slice(None)), ("fresh", fresh), ("seen", ~fresh)):
                m = hr_ndcg(ranks[keep].tolist(), ks=(10,))
                entry[f"{split}/{part}"] = {k: round(v, 5) for k, v in m.items()}
        log.append(entry)
        model.train()
        print(f"step {step}: " + "  ".join(f"{k} {v['HR@10']:.4f}/{v['NDCG@10']:.4f}" for k, v in entry.items()
                                           if k != "step") + f"  ({time.time() - t0:.0f} s)", flush=True)
        return entry["valid/all"]["NDCG@10"]

    b = args.prompts_per_step
    total_steps = int(math.ceil(n / b) * args.epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = max(1, int(0.03 * total_steps))  # the schedule of sidrec rl: 3% warm-up, cosine
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / total_steps)))
    best, best_state = evaluate(0), copy.deepcopy(model.state_dict())
    every, step = max(1, total_steps // args.evals), 0
    rng = np.random.default_rng(args.seed)
    model.train()
    while step < total_steps:
        order = rng.permutation(n)
        for s in range(0, n, b):
            batch = order[s:s + b]
            idx = torch.as_tensor((batch[:, None] * g + np.arange(g)).ravel())
            logp = group_logps(model, batch)
            adv = tilted_advantages(logp.detach(), ref_logp[idx], rewards[idx], args.beta, g)
            loss = -(adv * logp).sum() / len(batch)  # its gradient is the group cross-entropy's
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.3)
            opt.step()
            sched.step()
            step += 1
            if step % every == 0 or step == total_steps:
                ndcg = evaluate(step)
                if ndcg > best:
                    best, best_state = ndcg, copy.deepcopy(model.state_dict())
            if step >= total_steps:
                break
    model.load_state_dict(best_state)
    model.eval()
    hist, target_sids, _ = rows["test"]
    sids, _ = rank_histories(model, tokenizer, trie, codes, hist, 50, 128, batch_size=64, progress=False)
    test = hr_ndcg(target_ranks(sids.tolist(), target_sids.tolist()), ks=(10,))
    print(f"kept valid NDCG@10 {best:.4f}; test (beam 50) HR@10 {test['HR@10']:.4f} NDCG@10 {test['NDCG@10']:.4f}; "
          f"{time.time() - t0:.0f} s", flush=True)
    write_json(args.out, {"args": vars(args), "num_prompts": n, "log": log, "test_beam50": test,
                          "seconds": round(time.time() - t0)})


if __name__ == "__main__":
    main()
