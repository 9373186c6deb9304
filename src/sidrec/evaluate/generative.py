"""Evaluate a generative SID model: trie-constrained beam search over the closed catalogue, then the harness.

Prompts are built with the same template and history fitting as SFT (`sidrec.tasks`). Rows are sorted by prompt
length before batching (less padding) and restored to split order before writing.

Evaluation ranks through `sidrec.serve.Recommender` (load + `rank`), the object that serves recommendations, so both
run one code path: `rank_histories` -> `constrained_beam_search`, on any backend (torch, int8, onnx).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from sidrec.decode import SidTrie, constrained_beam_search, left_pad
from sidrec.decode.beam import as_step_model
from sidrec.evaluate.harness import MAX_PREDICTIONS, write_evaluation
from sidrec.model.tokenizer import sid_token_ids
from sidrec.tasks.builders import fit_history
from sidrec.tasks.template import encode_prompt, level_tokens, sid_text


def load_model_for_inference(model_dir: str | Path, dtype: str = "fp32", device: str | None = None):
    from sidrec.model.backbone import load_llm

    tokenizer, model = load_llm(str(model_dir), dtype=dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return tokenizer, model.to(device).eval()


def build_trie(tokenizer, codes: np.ndarray) -> SidTrie:
    return SidTrie.build(codes, sid_token_ids(tokenizer, level_tokens(codes)))


def rank_histories(model, tokenizer, trie: SidTrie, codes: np.ndarray, histories: list[list[int]], beams: int,
                   cutoff_len: int = 256, batch_size: int = 32, progress: bool = True):
    """Constrained beam search for each history; returns (sid_index (n, beams), scores (n, beams)).

    `model`: a causal LM (`nn.Module`) or a step model (`HFStepModel`, `OnnxStepModel`, ...)."""
    model = as_step_model(model)
    prompts = [fit_history("seqrec", h, codes, tokenizer, cutoff_len)[0] for h in histories]
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    order = np.argsort([len(e) for e in encoded], kind="stable")
    sid_index = np.full((len(prompts), beams), -1, dtype=np.int64)
    scores = np.full((len(prompts), beams), -np.inf)
    device = model.device
    pad = tokenizer.pad_token_id
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("beam search", total=len(prompts))
        for start in range(0, len(prompts), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = left_pad([encoded[r] for r in rows], pad, device)
            res = constrained_beam_search(model, ids, mask, trie, beams)
            sid_index[rows], scores[rows] = res.sid_index, res.scores
            bar.advance(task, len(rows))
    return sid_index, scores


def evaluate_generative(model_dir: str | Path, data_dir: str | Path, sids: str | Path, out: str | Path,
                        split: str = "test", beams: int = 50, batch_size: int = 32, cutoff_len: int = 256,
                        dtype: str = "fp32", device: str | None = None, max_rows: int | None = None,
                        backend: str = "torch") -> dict:
    from sidrec.serve.recommender import Recommender

    t0 = time.time()
    rec = Recommender.load(model_dir, sids, data_dir, backend=backend, device=device, beams=beams,
                           cutoff_len=cutoff_len, batch_size=batch_size, dtype=dtype)
    dataset, codes, trie = rec.dataset, rec.codes, rec.trie
    df = dataset.splits[split]
    if max_rows:
        df = df.iloc[:max_rows]
    histories = [list(h) for h in df["history"]]
    ranked = rec.rank(histories, progress=True)
    sid_index, scores = ranked.sid_index, ranked.scores
    decode_seconds = time.time() - t0

    sid_strings = [sid_text(c) for c in codes]
    catalogue = set(sid_strings)
    predicted = [[sid_text(trie.sids[s]) for s in row if s >= 0] for row in sid_index]
    returned = sum(len(p) for p in predicted)
    valid = sum(s in catalogue for p in predicted for s in p)
    duplicate_rows = sum(len(set(p)) != len(p) for p in predicted)
    items = ranked.items(trie, limit=MAX_PREDICTIONS)
    extras = [{"target_sid": sid_strings[t], "predicted_sids": p, "scores": [round(float(x), 4) for x in sc[:len(p)]]}
              for t, p, sc in zip(df["target"], predicted, scores)]
    info = {"model": str(model_dir), "sids": str(sids), "beams": beams, "backend": backend,
            "valid_sid_rate": valid / max(returned, 1), "rows_with_duplicate_sids": duplicate_rows, "decode_seconds": round(decode_seconds, 2),
            "rows_per_second": round(len(df) / decode_seconds, 2)}
    return write_evaluation(out, split, df["target"].tolist(), items, users=df["user"].tolist(), row_extras=extras,
                            sid_of_item=sid_strings, num_items=dataset.num_items, info=info,
                            config={"beams": beams, "cutoff_len": cutoff_len, "split": split, "dtype": dtype,
                                    "backend": backend},
                            seconds=time.time() - t0)
