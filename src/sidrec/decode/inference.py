"""Loading a model for inference and ranking histories: the one path evaluation, RL and serving all take.

    bound = load_for_inference("RUN/model", "SIDS", "DATA")          # refuses SIDs the model was not trained with
    sid_index, scores = bound.rank(histories, beams=50)

`load_for_inference` checks the model folder's binding (`sidrec.model.binding`: the SIDs and dataset it was trained
on, and its weights' sha256), loads it (weights checked for NaN/inf), and builds the SID trie from its tokenizer.
Prompts are built with the same template and history fitting as SFT (`sidrec.tasks`); rows are sorted by prompt
length before batching (less padding) and returned in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from rich.progress import Progress

from sidrec.data.canonical import Dataset
from sidrec.decode.backends import check_backend, step_model
from sidrec.decode.beam import as_step_model, constrained_beam_search, left_pad
from sidrec.decode.trie import SidTrie
from sidrec.errors import SidrecError
from sidrec.model.binding import check_binding, weight_files
from sidrec.model.tokenizer import sid_token_ids
from sidrec.tasks.builders import check_sid_coverage, fit_history
from sidrec.tasks.template import encode_prompt, level_tokens


def check_finite(model, model_dir: str | Path) -> None:
    """A SidrecError naming the weights file and tensor if any parameter holds NaN or inf (which ranks by ties of NaN
    scores: every metric 0.0 and no error)."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            files = ", ".join(str(f) for f in weight_files(model_dir)) or str(model_dir)
            raise SidrecError(f"{files}: weight {name} holds NaN or inf values (a diverged or corrupt run); "
                              f"use an earlier checkpoint or re-train")


def load_model_for_inference(model_dir: str | Path, dtype: str = "fp32", device: str | None = None):
    """(tokenizer, model in eval mode on `device`) from an HF model folder, its weights checked for NaN/inf.

    Does not check the binding: `load_for_inference` does, and is what evaluation, RL and serving call."""
    from sidrec.model.backbone import load_llm

    tokenizer, model = load_llm(str(model_dir), dtype=dtype)
    check_finite(model, model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return tokenizer, model.to(device).eval()


def build_trie(tokenizer, codes: np.ndarray) -> SidTrie:
    return SidTrie.build(codes, sid_token_ids(tokenizer, level_tokens(codes)))


def encode_histories(histories, codes: np.ndarray, tokenizer, cutoff_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every history's seqrec prompt, tokenized, packed into one int32 array with offsets (row r is
    flat[offsets[r]:offsets[r + 1]]): a whole split's prompts cost ~4 bytes a token, not a string and a list each."""
    lengths, parts, buf = [], [], []
    for h in histories:
        e = encode_prompt(tokenizer, fit_history("seqrec", h, codes, tokenizer, cutoff_len)[0])
        lengths.append(len(e))
        buf += e
        if len(buf) >= 1 << 20:
            parts.append(np.asarray(buf, dtype=np.int32))
            buf = []
    parts.append(np.asarray(buf, dtype=np.int32))
    return np.concatenate(parts), np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def rank_histories(model, tokenizer, trie: SidTrie, codes: np.ndarray, histories: Sequence[Sequence[int]], beams: int,
                   cutoff_len: int = 256, batch_size: int = 32, progress: bool = True, shard: tuple[int, int] = (0, 1)):
    """Constrained beam search for each history; returns (sid_index (n, beams), scores (n, beams)).

    `model`: a causal LM (`nn.Module`) or a step model (`HFStepModel`, `OnnxStepModel`, ...).
    `shard`: (process index, number of processes): rank only every n-th batch from the index on, leaving the other
    rows at -1 / -inf. The batches are those of one process, so n processes together return exactly its numbers."""
    model = as_step_model(model)
    flat, offsets = encode_histories(histories, codes, tokenizer, cutoff_len)
    order = np.argsort(np.diff(offsets), kind="stable")  # batches of similar prompt length
    sid_index = np.full((len(order), beams), -1, dtype=np.int64)
    scores = np.full((len(order), beams), -np.inf)
    device = model.device
    pad = tokenizer.pad_token_id
    with Progress(disable=not progress, transient=True) as bar:
        index, n = shard
        starts = range(index * batch_size, len(order), n * batch_size)
        task = bar.add_task("beam search", total=sum(len(order[s:s + batch_size]) for s in starts))
        for start in starts:
            rows = order[start:start + batch_size]
            ids, mask = left_pad([flat[offsets[r]:offsets[r + 1]].tolist() for r in rows], pad, device)
            res = constrained_beam_search(model, ids, mask, trie, beams)
            sid_index[rows], scores[rows] = res.sid_index, res.scores
            bar.advance(task, len(rows))
    return sid_index, scores


@dataclass
class InferenceModel:
    """A model bound to its SIDs: the HF model, the step model the search drives (per backend), tokenizer, trie."""
    tokenizer: object
    model: torch.nn.Module
    step_model: object
    codes: np.ndarray
    trie: SidTrie
    binding: dict | None
    dataset: Dataset | None = None

    def rank(self, histories: Sequence[Sequence[int]], beams: int, cutoff_len: int = 256, batch_size: int = 32,
             progress: bool = False, shard: tuple[int, int] = (0, 1)):
        return rank_histories(self.step_model, self.tokenizer, self.trie, self.codes, histories, beams, cutoff_len,
                              batch_size, progress=progress, shard=shard)


def load_for_inference(model_dir: str | Path, sids: str | Path, data_dir: str | Path | None = None, *,
                       backend: str = "torch", dtype: str = "fp32", device: str | None = None,
                       threads: int | None = None, onnx_dir: str | Path | None = None,
                       allow_mismatch: bool = False) -> InferenceModel:
    """Load `model_dir` for ranking with the SIDs in `sids`, refusing SIDs (and, given `data_dir`, a dataset) other
    than those it was trained with unless `allow_mismatch`; a corrupt or non-finite weights file is an error.
    With `data_dir`, the dataset is loaded too (`.dataset`) and the SIDs must cover its items.

    `backend`: "torch", "int8" or "onnx" (`sidrec.decode.backends`); `threads`/`onnx_dir` are ONNX Runtime's."""
    from sidrec.data.sid_index import load_sids

    device = check_backend(backend, device, dtype)
    codes, _ = load_sids(sids)
    dataset = None
    if data_dir is not None:
        dataset = Dataset.load(data_dir)
        check_sid_coverage(dataset, codes)
    binding = check_binding(model_dir, codes, sids, data_dir, allow_mismatch=allow_mismatch)
    tokenizer, model = load_model_for_inference(model_dir, dtype=dtype, device=device)
    trie = build_trie(tokenizer, codes)  # fails if the model's tokenizer lacks these SID tokens
    return InferenceModel(tokenizer, model, step_model(model, backend, threads=threads, onnx_dir=onnx_dir), codes,
                          trie, binding, dataset)
