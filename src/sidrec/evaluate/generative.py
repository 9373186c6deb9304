"""Evaluate a generative SID model: trie-constrained beam search over the closed catalogue, then the harness.

The model is loaded and ranked through `sidrec.decode.inference` (`load_for_inference` + `rank_histories`), the path
serving (`sidrec.serve.Recommender`) and RL take too, so what is served is what was measured, on any backend (torch,
int8, onnx). Loading refuses SIDs or a dataset other than those the model was trained with (`allow_mismatch`).

Under `accelerate launch --num_processes N` (or torchrun) each process ranks every N-th batch of rows, the rows are
gathered, and the main process writes the files: the same predictions and metrics as one process, N times faster.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sidrec.decode import BeamResult
from sidrec.decode.inference import load_for_inference
from sidrec.decode.inference import build_trie, load_model_for_inference, rank_histories  # noqa: F401 (for bench/)
from sidrec.errors import SidrecError
from sidrec.evaluate.harness import MAX_PREDICTIONS, write_evaluation
from sidrec.model.backbone import check_context_length
from sidrec.tasks.template import sid_text


class ItemSids:
    """Item id -> its SID string (`sid_text`), made on first use: an evaluation needs only its targets' and
    predictions' SIDs, not all of a catalogue's (a million strings at 10^6 items)."""

    def __init__(self, codes: np.ndarray):
        self.codes, self.cache = codes, {}

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, item: int) -> str:
        text = self.cache.get(item)
        if text is None:
            text = self.cache[item] = sid_text(self.codes[item].tolist())
        return text


def process_state():
    """accelerate's `PartialState`: this process's index and the number of processes (1 without a launcher).

    Without a GPU, processes join on the gloo backend only when `cpu` is set (as HF Trainer's `use_cpu` does)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def evaluate_generative(model_dir: str | Path, data_dir: str | Path, sids: str | Path, out: str | Path,
                        split: str = "test", beams: int = 50, batch_size: int = 32, cutoff_len: int = 256,
                        dtype: str = "fp32", device: str | None = None, max_rows: int | None = None,
                        backend: str = "torch", allow_mismatch: bool = False) -> dict:
    t0 = time.time()
    state = process_state()
    if state.num_processes > 1 and device is None:
        device = str(state.device)  # each process on its own accelerator (cpu under the gloo backend)
    bound = load_for_inference(model_dir, sids, data_dir, backend=backend, dtype=dtype, device=device,
                               allow_mismatch=allow_mismatch)
    dataset, codes, trie = bound.dataset, bound.codes, bound.trie
    check_context_length(bound.model, cutoff_len, "eval.cutoff_len")
    if beams > trie.num_sids:
        raise SidrecError(f"--beams {beams} is larger than the catalogue's {trie.num_sids} distinct SIDs")
    df = dataset.splits[split]
    if max_rows:
        df = df.iloc[:max_rows]
    sid_index, scores = bound.rank(df["history"], beams, cutoff_len, batch_size,
                                   progress=state.is_main_process, shard=(state.process_index, state.num_processes))
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list, gather_object

        done = np.flatnonzero(sid_index[:, 0] >= 0)  # the rows this process ranked (a beam always finds a SID)
        parts = gather_object([(done, sid_index[done], scores[done])])
        if not state.is_main_process:  # the main process writes the files; the others return its results
            return broadcast_object_list([None])[0]
        for rows, index, sc in parts:
            sid_index[rows], scores[rows] = index, sc
    decode_seconds = time.time() - t0

    sid_strings = ItemSids(codes)
    predicted = [[sid_text(trie.sids[s].tolist()) for s in row if s >= 0] for row in sid_index]
    returned = sum(len(p) for p in predicted)
    # a returned SID is valid when the first item the trie files under it has that SID in the catalogue
    valid = sum(sid_strings[trie.items_of_sid[s][0]] == p for r, row in zip(predicted, sid_index)
                for s, p in zip(row[row >= 0].tolist(), r))
    duplicate_rows = sum(len(set(p)) != len(p) for p in predicted)
    items = BeamResult(sid_index, scores).items(trie, limit=MAX_PREDICTIONS)
    extras = [{"target_sid": sid_strings[t], "predicted_sids": p, "scores": [round(float(x), 4) for x in sc[:len(p)]]}
              for t, p, sc in zip(df["target"], predicted, scores)]
    info = {"model": str(model_dir), "sids": str(sids), "beams": beams, "backend": backend,
            "binding": "checked" if bound.binding else "none", "allow_mismatch": allow_mismatch,
            "valid_sid_rate": valid / max(returned, 1), "rows_with_duplicate_sids": duplicate_rows, "decode_seconds": round(decode_seconds, 2),
            "rows_per_second": round(len(df) / decode_seconds, 2), "num_processes": state.num_processes}
    results = write_evaluation(out, split, df["target"].tolist(), items, users=df["user"].tolist(), row_extras=extras,
                            sid_of_item=sid_strings, num_items=dataset.num_items, info=info,
                            config={"beams": beams, "cutoff_len": cutoff_len, "split": split, "dtype": dtype,
                                    "backend": backend},
                            seconds=time.time() - t0)
    if state.num_processes > 1:
        broadcast_object_list([results])
    return results
