"""GRPO loss forward+backward: one sequence per completion (TRL's way) vs one per prompt (`shared_prompt_logps`).

Builds real GRPO batches from the Industrial train split (prompts of the SFT model, G constrained-beam completions
each), then times log-prob computation + backward both ways on the same batches and checks they agree.

    .venv/bin/python lab/rl_forward.py --model runs/exp/e2/model --data runs/industrial \
        --sids bench/out/sid48/rqkmeans-constrained/run0 --prompts 8 --group 16 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from sidrec.data import Dataset
from sidrec.decode import constrained_beam_search, left_pad
from sidrec.evaluate.generative import build_trie, load_model_for_inference
from sidrec.sid.io import load_sids
from sidrec.tasks.builders import fit_history
from sidrec.train.rl import shared_prompt_logps


def row_by_row_logps(model, ids, mask, c):
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=c + 1).logits
    logp = logits[:, :-1].float().log_softmax(-1)
    return logp.gather(-1, ids[:, -c:, None]).squeeze(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--sids", required=True)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dataset = Dataset.load(args.data)
    codes, _ = load_sids(args.sids)
    tokenizer, model = load_model_for_inference(args.model)
    trie = build_trie(tokenizer, codes)
    df = dataset.splits["train"]
    rng = np.random.default_rng(0)
    eos, c = tokenizer.eos_token_id, codes.shape[1] + 1
    batches = []
    for _ in range(args.repeats):
        rows = rng.choice(len(df), args.prompts, replace=False)
        enc = [tokenizer(fit_history("seqrec", list(df["history"].iloc[r]), codes, tokenizer, 124)[0],
                         add_special_tokens=False)["input_ids"] for r in rows]
        ids, mask = left_pad(enc, tokenizer.pad_token_id, "cpu")
        sid_index = constrained_beam_search(model, ids, mask, trie, args.group).sid_index
        comp = torch.tensor([[int(trie.level_token_ids[l][code]) for l, code in enumerate(trie.sids[s])] + [eos]
                             for s in sid_index.reshape(-1)])
        full_ids = torch.cat([ids.repeat_interleave(args.group, 0), comp], 1)
        full_mask = torch.cat([mask.repeat_interleave(args.group, 0), torch.ones_like(comp)], 1)
        perm = torch.from_numpy(rng.permutation(len(full_ids)))  # TRL shuffles rows before the loss
        batches.append((full_ids[perm], full_mask[perm]))

    model.eval()  # dropout off, as TRL's disable_dropout; gradients still flow
    times = {"row_by_row": [], "shared_prompt": []}
    max_diff = 0.0
    for ids, mask in batches:
        for name, fn in (("row_by_row", lambda: row_by_row_logps(model, ids, mask, c)),
                         ("shared_prompt", lambda: shared_prompt_logps(model, ids, mask, c)[0])):
            model.zero_grad()
            t0 = time.perf_counter()
            logp = fn()
            logp.sum().backward()
            times[name].append(time.perf_counter() - t0)
            if name == "row_by_row":
                ref = logp.detach()
            else:
                max_diff = max(max_diff, float((logp.detach() - ref).abs().max()))
    med = {k: float(np.median(v)) for k, v in times.items()}
    report = {"prompts": args.prompts, "group": args.group, "completions": args.prompts * args.group,
              "median_seconds": med, "speedup": med["row_by_row"] / med["shared_prompt"],
              "max_abs_logp_diff": max_diff, "threads": torch.get_num_threads()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
