"""GPU benchmark of the LLM path on a 0.5B-shaped model: SFT tokens/s and peak memory, beam-50 evaluation rows/s,
tilted-RL step time. Random weights from a config with Qwen2.5-0.5B's layout (no hub), a synthetic token stream,
bf16 autocast over fp32 weights, SDPA attention; about 5 minutes on one GPU.

    python bench/gpu.py                      # one CUDA device; exits with a message (code 0) when none is found
    python bench/gpu.py --cpu --tiny         # small shapes on the CPU: checks the script end to end (seconds)

- SFT: AdamW steps on (batch x seq) random token rows, full-vocabulary cross-entropy.
- eval: `constrained_beam_search` with 50 beams over a 3-level trie of 256 codes per level (Industrial's SID
  shape) holding `--items` random SIDs, on prompts of `--prompt-len` tokens.
- RL: the tilted step's compute: `constrained_sample` G completions per prompt, reference log-likelihoods (no grad),
  the policy's `shared_prompt_logps`, `tilted_advantages`, backward, AdamW (TRL's trainer bookkeeping left out).

Writes bench/out/gpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from _common import OUT, machine
from sidrec.decode import SidTrie, constrained_beam_search, constrained_sample
from sidrec.decode.beam import left_pad
from sidrec.io import write_json
from sidrec.train.rl import shared_prompt_logps, tilted_advantages

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True, rope_theta=1e6,
                  rms_norm_eps=1e-6, max_position_embeddings=32768)
TINY = dict(QWEN25_05B, vocab_size=3000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=128)
SID_LEVELS, SID_CODES = 3, 256


def build_model(tiny: bool, device):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**(TINY if tiny else QWEN25_05B), attn_implementation="sdpa")
    return Qwen2ForCausalLM(cfg).to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Mean seconds of `fn()` over `repeats` calls after `warmup` ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def autocast(device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def bench_sft(model, device, batch: int, seq: int, steps: int) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=gen).to(device)

    def step():
        with autocast(device):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sec = timed(step, device, steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    del opt
    return {"batch": batch, "seq": seq, "steps": steps, "seconds_per_step": sec, "tokens_per_s": batch * seq / sec,
            "peak_memory_gib": peak}


def sid_setup(vocab: int, items: int, prompt_len: int, rows: int):
    """A trie of `items` random 3-level SIDs on the vocabulary's last 768 ids, and `rows` random prompts."""
    rng = np.random.default_rng(0)
    first = vocab - SID_LEVELS * SID_CODES
    levels = [list(range(first + l * SID_CODES, first + (l + 1) * SID_CODES)) for l in range(SID_LEVELS)]
    codes = np.unique(rng.integers(0, SID_CODES, (items, SID_LEVELS)), axis=0)
    prompts = [rng.integers(0, first, int(rng.integers(prompt_len // 2, prompt_len + 1))).tolist()
               for _ in range(rows)]
    return SidTrie.build(codes, levels), prompts


def bench_eval(model, device, trie, prompts, beams: int, batch: int) -> dict:
    model.eval()

    def run():
        with autocast(device):
            for i in range(0, len(prompts), batch):
                ids, mask = left_pad(prompts[i:i + batch], 0, device)
                constrained_beam_search(model, ids, mask, trie, num_beams=beams)

    sec = timed(run, device, 1)
    return {"rows": len(prompts), "beams": beams, "batch": batch, "rows_per_s": len(prompts) / sec}


def bench_rl(model, ref, device, trie, prompts, group: int, steps: int, beta: float = 0.1) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    gen = torch.Generator().manual_seed(0)
    completions = torch.as_tensor(trie.completion_tokens(eos_id=1))  # (num_sids, L + 1): SID tokens, then EOS
    c = completions.shape[1]

    def step():
        model.eval()
        ids, mask = left_pad(prompts, 0, device)
        with autocast(device):
            drawn = constrained_sample(model, ids, mask, trie, group, generator=gen)  # (P, G)
        comp = completions[torch.as_tensor(drawn).reshape(-1)].to(device)
        full = torch.cat([ids.repeat_interleave(group, 0), comp], 1)
        fmask = torch.cat([mask.repeat_interleave(group, 0), torch.ones_like(comp)], 1)
        reward = (comp[:, 0] % 2).float()  # any reward: the cost does not depend on it
        adv = (reward.view(-1, group) - reward.view(-1, group).mean(-1, keepdim=True)).reshape(-1)
        model.train()
        with autocast(device):
            with torch.no_grad():
                ref_lp = shared_prompt_logps(ref, full, fmask, c)[0][:, :SID_LEVELS].sum(-1)
            logp = shared_prompt_logps(model, full, fmask, c)[0][:, :SID_LEVELS].sum(-1)
        a = tilted_advantages(logp.detach(), ref_lp, adv, beta, group)
        (-(a * logp).sum() / len(prompts)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sec = timed(step, device, steps)
    return {"prompts_per_step": len(prompts), "group": group, "steps": steps, "seconds_per_step": sec,
            "completions_per_s": len(prompts) * group / sec}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (with --tiny: a check that the script works)")
    ap.add_argument("--tiny", action="store_true", help="small shapes: 2 layers of width 64, vocabulary 3,000")
    ap.add_argument("--out", default=str(OUT / "gpu.json"))
    args = ap.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device found; skipped (pass --cpu --tiny to check the script on the CPU)")
        return 0
    device = torch.device("cpu" if args.cpu else "cuda")
    tiny = args.tiny
    sizes = dict(sft_batch=4 if tiny else 8, sft_seq=64 if tiny else 1024, sft_steps=2 if tiny else 20,
                 items=300 if tiny else 4000, prompt_len=24 if tiny else 96, eval_rows=8 if tiny else 512,
                 eval_batch=4 if tiny else 32, beams=50, rl_prompts=2 if tiny else 16, group=32,
                 rl_steps=2 if tiny else 5)
    model = build_model(tiny, device)
    report = {"bench": "gpu", "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "tiny": tiny, "model": TINY if tiny else QWEN25_05B,
              "parameters": sum(p.numel() for p in model.parameters()), "sizes": sizes,
              "precision": "bf16 autocast, fp32 weights, SDPA attention", "machine": machine()}
    t0 = time.time()
    report["sft"] = bench_sft(model, device, sizes["sft_batch"], sizes["sft_seq"], sizes["sft_steps"])
    trie, prompts = sid_setup(model.config.vocab_size, sizes["items"], sizes["prompt_len"], sizes["eval_rows"])
    report["eval"] = bench_eval(model, device, trie, prompts, sizes["beams"], sizes["eval_batch"])
    ref = build_model(tiny, device).eval()
    report["rl"] = bench_rl(model, ref, device, trie, prompts[:sizes["rl_prompts"]], sizes["group"],
                            sizes["rl_steps"])
    report["wall_s"] = time.time() - t0
    write_json(args.out, report)
    s, e, r = report["sft"], report["eval"], report["rl"]
    peak = "–" if s["peak_memory_gib"] is None else f"{s['peak_memory_gib']:.1f} GiB"
    print(f"| {report['device']} | SFT {s['tokens_per_s']:.0f} tokens/s (batch {s['batch']} x {s['seq']}), "
          f"peak {peak} | eval beam {e['beams']}: {e['rows_per_s']:.1f} rows/s | RL {r['seconds_per_step']:.2f} "
          f"s/step ({r['prompts_per_step']} prompts x G {r['group']}) |")
    print(json.dumps({"wall_s": round(report["wall_s"], 1), "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
