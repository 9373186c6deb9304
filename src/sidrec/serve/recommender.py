"""`Recommender`: top-k items for a batch of histories, through the same constrained beam search as evaluation.

    rec = Recommender.load("RUN/model", "SIDS", "DATA", backend="onnx")
    rec.recommend([[12, 40, 7], [3]], k=10)   # -> [[Recommendation(item_id, title, score, sid), ...], ...]

`Recommender.load` and `evaluate_generative` load and rank through `sidrec.decode.inference` (which refuses SIDs the
model was not trained with), so what is served is what was measured. A score is
the beam's log-likelihood of the item's SID given the history (the sum of its tokens' full-vocabulary
log-probabilities); items that share a SID (collisions) share its score and follow each other in item-id order.

Hybrid ranking: loaded with `rerank=` (a rerank folder such as RUN/rerank, whose results.json records the SASRec
scorer runs and λ, or the scorer run folders with `rerank_weight=λ`), each request's beams are re-ordered by
`sidrec.evaluate.fusion.rerank_beams` (log-likelihood + λ · z(scorer logit) within the request's beams, + τ · the
transition prior from the last history item, counted over every labelled row of the dataset, when the folder records
τ), as `sidrec rerank` scored them (the others' λ and τ for every request when it re-ranked cold rows apart); each
`Recommendation` keeps the model's score and carries the fused one beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np

from sidrec.data.canonical import Dataset
from sidrec.decode import BeamResult, SidTrie
from sidrec.errors import SidrecError
from sidrec.tasks.template import sid_text


@dataclass(frozen=True)
class Recommendation:
    item_id: int
    title: str
    score: float  # log P(item's SID | history) under the model, from the beam search
    sid: str
    fused_score: float | None = None  # the re-ranking score (the list's order) when re-ranking; None otherwise


class Recommender:
    """A loaded model, its SIDs and catalogue, and a backend; see `load`."""

    def __init__(self, step_model, tokenizer, trie: SidTrie, codes: np.ndarray, dataset: Dataset, *, beams: int,
                 cutoff_len: int = 256, batch_size: int = 32, backend: str = "torch", scorer=None,
                 rerank: dict | None = None):
        self.step_model, self.tokenizer, self.trie, self.codes, self.dataset = step_model, tokenizer, trie, codes, dataset
        self.beams, self.cutoff_len, self.batch_size, self.backend = beams, cutoff_len, batch_size, backend
        self.titles = dataset.titles()
        self.num_items = dataset.num_items
        self.scorer, self.rerank_info = scorer, rerank  # rerank: `resolve_rerank`'s spec
        self.first_items = trie.first_items()
        self.transitions = None  # the transition prior's counts over every labelled row, when the spec weighs it
        if rerank is not None and rerank.get("transition_weight", 0.0) > 0:
            from sidrec.evaluate.fusion import transition_counts

            self.transitions = transition_counts(dataset, None)

    @classmethod
    def load(cls, model_dir: str | Path, sids_dir: str | Path, data_dir: str | Path, *, backend: str = "torch",
             device: str | None = None, beams: int = 50, cutoff_len: int = 256, batch_size: int = 32,
             dtype: str = "fp32", threads: int | None = None, onnx_dir: str | Path | None = None,
             allow_mismatch: bool = False, rerank=None, rerank_weight: float | None = None) -> "Recommender":
        """`backend`: "torch" (the model as trained), "int8" (dynamic int8 Linear layers, CPU) or "onnx" (ONNX Runtime,
        CPU). `beams`: beam width, the most items one call can return per history. `threads`: ONNX Runtime's
        intra-op threads (default: torch's). `onnx_dir`: keep the exported graph there (default: a temp folder).
        `allow_mismatch`: load even if the model was trained with other SIDs or another dataset (a warning).
        `rerank`: re-rank each request's beams (module doc): a rerank folder (its λ unless `rerank_weight` is given)
        or SASRec run folder(s) with `rerank_weight`; the scorer must be trained on this dataset and catalogue."""
        from sidrec.decode.inference import load_for_inference
        from sidrec.rerank import load_checked_scorer, resolve_rerank

        if not isinstance(beams, Integral) or beams < 1:
            raise SidrecError(f"beams={beams!r} must be a positive integer")
        spec = None if rerank is None else resolve_rerank(rerank, rerank_weight)  # before the model is loaded
        if rerank is None and rerank_weight is not None:
            raise SidrecError("a re-rank weight needs a scorer: give rerank= (a rerank folder or SASRec run folders)")
        bound = load_for_inference(model_dir, sids_dir, data_dir, backend=backend, dtype=dtype, device=device,
                                   threads=threads, onnx_dir=onnx_dir, allow_mismatch=allow_mismatch)
        dataset, trie, codes = bound.dataset, bound.trie, bound.codes
        if beams > trie.num_sids:
            raise SidrecError(f"--beams {beams} is larger than the catalogue's {trie.num_sids} distinct SIDs")
        scorer = None
        if spec is not None:
            scorer = load_checked_scorer(spec["paths"], dataset, codes, sids_dir)[0]
            spec = {**spec, "paths": [str(p) for p in spec["paths"]]}
        return cls(bound.step_model, bound.tokenizer, trie, codes, dataset, beams=int(beams), cutoff_len=cutoff_len,
                   batch_size=batch_size, backend=backend, scorer=scorer, rerank=spec)

    # ------------------------------------------------------------------ ranking
    def check_histories(self, histories) -> list[list[int]]:
        """Histories as lists of ints; a SidrecError names the first bad history and value."""
        if isinstance(histories, (str, bytes)) or not hasattr(histories, "__len__"):
            raise SidrecError(f"histories must be a list of item-id lists (one per user), got {type(histories).__name__}")
        out = []
        for i, history in enumerate(histories):
            if isinstance(history, (Integral, str, bytes)) or not hasattr(history, "__len__"):
                raise SidrecError(f"history {i} is {history!r}, not a list of item ids (pass one list per user)")
            if len(history) == 0:
                raise SidrecError(f"history {i} is empty: at least one item id is needed to recommend")
            for item in history:
                if isinstance(item, bool) or not isinstance(item, Integral):
                    raise SidrecError(f"history {i}: item id {item!r} is not an integer")
                if not 0 <= item < self.num_items:
                    raise SidrecError(f"history {i}: unknown item id {item} (the catalogue has ids 0..{self.num_items - 1})")
            out.append([int(item) for item in history])
        return out

    def rank(self, histories, progress: bool = False) -> BeamResult:
        """The top `beams` SIDs (indices into `trie.sids`) and their log-likelihoods for each history."""
        from sidrec.decode.inference import rank_histories

        histories = self.check_histories(histories)
        if not histories:
            return BeamResult(np.zeros((0, self.beams), dtype=np.int64), np.zeros((0, self.beams)))
        sid_index, scores = rank_histories(self.step_model, self.tokenizer, self.trie, self.codes, histories,
                                           self.beams, self.cutoff_len, self.batch_size, progress=progress)
        return BeamResult(sid_index, scores)

    def rerank(self, histories: list[list[int]], result: BeamResult) -> tuple[BeamResult, np.ndarray]:
        """`result`'s beams in fused order (`fusion.rerank_beams`), each with the model's own score, and the fused
        scores in that order."""
        from sidrec.evaluate.fusion import rerank_beams

        sid_index, fused = rerank_beams(histories, result.sid_index, result.scores, self.scorer,
                                        self.rerank_info["weight"], self.first_items, group=self.rerank_info["group"],
                                        transitions=self.transitions,
                                        transition_weight=self.rerank_info.get("transition_weight", 0.0))
        own = [dict(zip(row, scores)) for row, scores in zip(result.sid_index.tolist(), result.scores.tolist())]
        scores = np.array([[own[r][s] for s in row] for r, row in enumerate(sid_index.tolist())]).reshape(fused.shape)
        return BeamResult(sid_index, scores), fused

    def recommend(self, histories, k: int = 10) -> list[list[Recommendation]]:
        """The k best items for each history (item ids of the dataset), best first."""
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise SidrecError(f"k={k!r} must be a positive integer")
        if k > self.num_items:
            raise SidrecError(f"k={k} is more than the catalogue's {self.num_items} items")
        if k > self.beams:
            raise SidrecError(f"k={k} is more than the beam width {self.beams}; load the Recommender with beams >= {k}")
        histories = self.check_histories(histories)
        result = self.rank(histories)
        fused = np.full(result.scores.shape, np.nan)
        if self.scorer is not None and len(histories):
            result, fused = self.rerank(histories, result)
        out = []
        for sids, scores, fused_row in zip(result.sid_index.tolist(), result.scores.tolist(), fused.tolist()):
            recs: list[Recommendation] = []
            for s, score, f in zip(sids, scores, fused_row):
                if s < 0:
                    break
                sid = sid_text(self.trie.sids[s].tolist())
                recs.extend(Recommendation(item, self.titles[item], float(score), sid,
                                           None if self.scorer is None else float(f))
                            for item in self.trie.items_of_sid[s])
                if len(recs) >= k:
                    break
            out.append(recs[:k])
        return out
