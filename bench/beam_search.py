"""Constrained beam search: sidrec's tree-attention search vs the MiniOneRec approach, same model and prompts.

The MiniOneRec approach is HF `generate` (beam search) with a logits processor that, at every step, loops in Python
over every (prompt, beam) row and looks the allowed next tokens up in a dict keyed by the generated prefix.

    .venv/bin/python bench/beam_search.py --model runs/demo/sft/model --data runs/demo/dataset \
        --sids runs/demo/sid --rows 200 --beams 50
    .venv/bin/python bench/beam_search.py --quick      # the benchmark fixture's model, 40 rows

Prints rows/second for both, the speed ratio, and the share of rows whose top-10 items agree.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from _common import OUT, machine, model_args
from sidrec.data import Dataset
from sidrec.evaluate.generative import build_trie, load_model_for_inference, rank_histories
from sidrec.sid.io import load_sids
from sidrec.tasks.builders import fit_history


class PrefixDictProcessor(LogitsProcessor):
    """MiniOneRec's ConstrainedLogitsProcessor, in spirit: a Python loop over rows, a dict keyed by the prefix."""

    def __init__(self, allowed: dict[str, list[int]], prompt_len: int):
        self.allowed, self.prompt_len = allowed, prompt_len

    def __call__(self, input_ids, scores):
        scores = torch.log_softmax(scores, dim=-1)
        mask = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            key = "-".join(map(str, input_ids[row, self.prompt_len:].tolist()))
            mask[row, self.allowed.get(key, [])] = 0.0
        return scores + mask


def prefix_dict(trie) -> dict[str, list[int]]:
    table: dict[str, set[int]] = {}
    for sid in trie.sids.tolist():
        toks = [int(trie.level_token_ids[l][c]) for l, c in enumerate(sid)]
        for t in range(len(toks)):
            table.setdefault("-".join(map(str, toks[:t])), set()).add(toks[t])
    return {k: sorted(v) for k, v in table.items()}


def hf_generate(model, tokenizer, trie, codes, histories, beams):
    allowed = prefix_dict(trie)
    token_to_code = [{int(t): c for c, t in enumerate(level.tolist())} for level in trie.level_token_ids]
    sid_of = {tuple(s): i for i, s in enumerate(trie.sids.tolist())}
    results = []
    for h in histories:  # one prompt per call, as MiniOneRec's per-GPU loop effectively does for beams
        prompt = fit_history("seqrec", h, codes, tokenizer, 256)[0]
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, num_beams=beams, num_return_sequences=beams, max_new_tokens=trie.levels,
                             min_new_tokens=trie.levels, do_sample=False, length_penalty=0.0, early_stopping=False,
                             logits_processor=LogitsProcessorList([PrefixDictProcessor(allowed, ids["input_ids"].shape[1])]),
                             top_k=None, top_p=None, temperature=None, repetition_penalty=1.0,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
        gen = out[:, ids["input_ids"].shape[1]:].tolist()
        results.append([sid_of[tuple(token_to_code[l][t] for l, t in enumerate(g))] for g in gen])
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder (default: the benchmark fixture's SFT model)")
    ap.add_argument("--data", default=None, help="canonical dataset (default: the fixture's)")
    ap.add_argument("--sids", default=None, help="SIDs of the model (default: the fixture's)")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--beams", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="40 rows")
    ap.add_argument("--out", default=str(OUT / "beam_search.json"))
    args = ap.parse_args()
    if args.quick:
        args.rows = 40
    model_args(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ds = Dataset.load(args.data)
    codes, _ = load_sids(args.sids)
    tokenizer, model = load_model_for_inference(args.model)
    trie = build_trie(tokenizer, codes)
    histories = [list(h) for h in ds.splits["test"]["history"][: args.rows]]

    t0 = time.time()
    ours, _ = rank_histories(model, tokenizer, trie, codes, histories, args.beams, batch_size=32, progress=False)
    t_ours = time.time() - t0
    t0 = time.time()
    theirs = hf_generate(model, tokenizer, trie, codes, histories, args.beams)
    t_hf = time.time() - t0
    same10 = sum(list(a[:10]) == list(b[:10]) for a, b in zip(ours.tolist(), theirs)) / len(histories)
    same10_set = sum(set(a[:10]) == set(b[:10]) for a, b in zip(ours.tolist(), theirs)) / len(histories)
    res = {"rows": len(histories), "beams": args.beams, "sidrec_rows_per_s": len(histories) / t_ours,
           "hf_dict_processor_rows_per_s": len(histories) / t_hf, "speed_ratio": t_hf / t_ours,
           "top10_identical_order": same10, "top10_same_set": same10_set, "threads": torch.get_num_threads(),
           "model": args.model, "machine": machine()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
