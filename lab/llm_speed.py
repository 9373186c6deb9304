"""SFT step speed of the LLM path on the CPU, what the full-vocabulary head costs, and what sft.loss="sid" saves.

Models: (a) configs/cpu.yaml's sft.small (hidden 128, 4 layers, vocabulary 2,000 + 768 SID tokens); (b) the same
body with Qwen2.5's 151,936-row vocabulary. Each row is a seqrec example's shape: a prompt whose labels are -100 and
a response of 3 SID tokens + EOS. One step = forward, backward and AdamW, SDPA attention, fp32, one thread. For each
model:
- `step`: the HF step (sft.loss="full"): full-vocabulary logits at every position, loss on the response;
- `head`: the output projection + log-softmax cross-entropy alone (forward + backward from fixed hidden states);
- `sid_step`: the same step with sft.loss="sid" (`sidrec.train.sft.sid_restricted_loss`, the product's code): the
  response scored over the 768 SID rows + EOS of the tied head.

    PYTHONPATH=src OMP_NUM_THREADS=1 python lab/llm_speed.py [--batch 8 --seq 96 --steps 5]
"""

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

from sidrec.train.sft import sid_restricted_loss

SID_TOKENS = 3 * 256
RESPONSE = 4  # 3 SID tokens + EOS
BODY = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=384, tie_word_embeddings=True, attn_implementation="sdpa", max_position_embeddings=512)


def median_time(fn, steps):
    fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def measure(vocab, batch, seq, steps):
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, **BODY))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sid_rows = torch.arange(vocab - SID_TOKENS - 1, vocab)  # the SID tokens and one EOS at the vocabulary's end
    ids = torch.randint(0, vocab - SID_TOKENS - 1, (batch, seq))
    ids[:, -RESPONSE:] = sid_rows[torch.randint(0, len(sid_rows), (batch, RESPONSE))]
    labels = torch.full_like(ids, -100)
    labels[:, -RESPONSE:] = ids[:, -RESPONSE:]
    inputs = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
              "sid_target": torch.ones(batch, dtype=torch.bool)}

    def step():
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sid_step():
        total, count = sid_restricted_loss(model, inputs, sid_rows)
        (total / count).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    hidden = torch.randn(batch, seq, BODY["hidden_size"], requires_grad=True)

    def head():
        logits = model.lm_head(hidden)
        F.cross_entropy(logits.view(-1, vocab), ids.view(-1)).backward()

    r = {"vocab": vocab, "parameters": sum(p.numel() for p in model.parameters()), "batch": batch, "seq": seq,
         "step_s": median_time(step, steps), "head_s": median_time(head, steps),
         "sid_step_s": median_time(sid_step, steps), "load_avg": open("/proc/loadavg").read().split()[0]}
    tokens = batch * seq
    r.update(tokens_per_s=tokens / r["step_s"], sid_tokens_per_s=tokens / r["sid_step_s"],
             head_share=r["head_s"] / r["step_s"])
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=96)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for name, vocab in (("a: cpu.yaml sft.small", 2000 + SID_TOKENS), ("b: Qwen2.5 vocabulary", 151936)):
        print(name, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                for k, v in measure(vocab, args.batch, args.seq, args.steps).items()}), flush=True)


if __name__ == "__main__":
    main()
