"""SASRec: a small causal transformer over the last `max_len` items, trained with full softmax over the catalogue.

Read top to bottom: config, model, data tensors, training loop (early stop on valid NDCG@10, best weights restored),
evaluation through the harness, and `SasrecScorer` that reloads the checkpoint as a collaborative scorer.

Checkpoint (`OUT/model/`): `model.safetensors` (weights only) + `config.json` (architecture + catalogue size) +
`manifest.json`. Loading never unpickles anything.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file

from sidrec.baselines.config import SasrecConfig
from sidrec.data.canonical import Dataset, history_chunks
from sidrec.errors import SidrecError
from sidrec.evaluate import hr_ndcg, write_evaluation
from sidrec.evaluate.harness import MAX_PREDICTIONS
from sidrec.io import atomic_path, read_manifest, reading, write_json, write_jsonl, write_manifest

WEIGHTS = "model.safetensors"
ARCH = "config.json"


# ---------------------------------------------------------------------------------------------------------- model
class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float, ffn_mult: int):
        super().__init__()
        if d % heads:
            raise SidrecError(f"sasrec: hidden ({d}) must be divisible by heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.mlp(self.ln2(x))


class SASRec(nn.Module):
    """Pre-LN causal transformer; item embeddings are tied to the output layer. Pad id = num_items."""

    def __init__(self, num_items: int, hidden: int, blocks: int, heads: int, dropout: float, max_len: int,
                 ffn_mult: int = 1):
        super().__init__()
        self.arch = {"num_items": num_items, "hidden": hidden, "blocks": blocks, "heads": heads, "dropout": dropout,
                     "max_len": max_len, "ffn_mult": ffn_mult}
        self.num_items, self.max_len = num_items, max_len
        self.item = nn.Embedding(num_items + 1, hidden, padding_idx=num_items)
        self.pos = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout, ffn_mult) for _ in range(blocks))
        self.ln = nn.LayerNorm(hidden)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def user_vector(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, max_len) left-padded ids -> (B, hidden) state at the last position."""
        real = seq != self.num_items
        x = self.drop((self.item(seq) + self.pos.weight) * real.unsqueeze(-1))
        L = seq.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()
        # Pad keys are hidden; each position still sees itself so an all-pad row never gets an empty softmax.
        mask = (causal & real[:, None, :]) | torch.eye(L, dtype=torch.bool, device=seq.device)
        mask = mask.unsqueeze(1)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.ln(x[:, -1])

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Logits over the whole catalogue, (B, num_items)."""
        return self.user_vector(seq) @ self.item.weight[: self.num_items].T


# ---------------------------------------------------------------------------------------------------------- data
def pad_histories(histories: Sequence[Sequence[int]], max_len: int, pad: int) -> torch.Tensor:
    """Left-pad (keeping the most recent `max_len` items) so the newest item always sits at the last position.
    Lists and a split's Arrow `history` column alike are padded from the flat arrays (`history_chunks`), without a
    Python list per row."""
    out = np.full((len(histories), max_len), pad, dtype=np.int64)
    first = 0
    for lengths, flat in history_chunks(histories):
        keep = np.minimum(lengths, max_len)
        j = np.arange(keep.sum()) - np.repeat(np.cumsum(keep) - keep, keep)  # place among a row's kept items
        out[first + np.repeat(np.arange(len(keep)), keep), np.repeat(max_len - keep, keep) + j] = \
            flat[np.repeat(np.cumsum(lengths) - keep, keep) + j]
        first += len(lengths)
    return torch.from_numpy(out)


def _split_tensors(ds: Dataset, name: str, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    df = ds.splits[name]
    if len(df) == 0:
        raise SidrecError(f"split '{name}' is empty; SASRec needs rows in train, valid and test")
    targets = torch.tensor(df["target"].to_numpy(), dtype=torch.int64)
    return pad_histories(df["history"], max_len, ds.num_items), targets


@torch.no_grad()
def rank_top(model: SASRec, seqs: torch.Tensor, k: int, batch: int) -> np.ndarray:
    model.eval()
    k = min(k, model.num_items)
    return np.concatenate([torch.topk(model(seqs[i:i + batch]), k).indices.numpy()
                           for i in range(0, len(seqs), batch)])


def _ndcg_at(top: np.ndarray, targets: torch.Tensor, k: int = 10) -> dict:
    hit = top[:, :k] == targets.numpy()[:, None]
    ranks = np.where(hit.any(1), hit.argmax(1), -1)
    return hr_ndcg(ranks, (k,))


# ---------------------------------------------------------------------------------------------------------- training
def seed_everything(seed: int, threads: int) -> None:
    # Fixed threads + deterministic kernels: the same seed gives the same numbers to the last digit on one machine.
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_sasrec(data_dir: str | Path, out_dir: str | Path, config: SasrecConfig | None = None,
               progress: bool = True) -> dict:
    """Train on train, early-stop on valid NDCG@10, evaluate the best weights on valid and test; return test's."""
    cfg = config or SasrecConfig()
    # Thread count and deterministic mode are process-wide; put them back so callers (tests, RL) are unaffected.
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _train_and_evaluate(data_dir, out_dir, cfg, progress)
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])


def _train_and_evaluate(data_dir: str | Path, out_dir: str | Path, cfg: SasrecConfig, progress: bool) -> dict:
    t_start = time.time()
    out = Path(out_dir)
    ds = Dataset.load(data_dir)
    n, fingerprint = ds.num_items, ds.fingerprint()  # before any fold filtering: the dataset the run belongs to
    seed_everything(cfg.seed, cfg.threads)
    if cfg.folds > 1:
        train = ds.splits["train"]
        ds.splits["train"] = train[train["user"] % cfg.folds != cfg.holdout_fold].reset_index(drop=True)
    train_x, train_y = _split_tensors(ds, "train", cfg.max_len)
    valid_x, valid_y = _split_tensors(ds, "valid", cfg.max_len)
    test_x, test_y = _split_tensors(ds, "test", cfg.max_len)

    model = SASRec(n, cfg.hidden, cfg.blocks, cfg.heads, cfg.dropout, cfg.max_len, cfg.ffn_mult)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # an unfinished run must not look finished

    log, best, best_state, bad = [], -1.0, None, 0
    budget = cfg.max_minutes * 60
    stop_reason = "max_epochs"
    columns = [TextColumn("sasrec"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}")]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("epochs", total=cfg.max_epochs, info="")
        for epoch in range(1, cfg.max_epochs + 1):
            t0 = time.time()
            model.train()
            perm = torch.randperm(len(train_x), generator=gen)
            total, seen = 0.0, 0
            for i in range(0, len(perm), cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                seen += len(idx)
            valid = _ndcg_at(rank_top(model, valid_x, 10, cfg.eval_batch_size), valid_y)
            improved = valid["NDCG@10"] > best
            if improved:
                best, bad = valid["NDCG@10"], 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            elapsed = time.time() - t_start
            log.append({"epoch": epoch, "loss": round(total / seen, 6), "valid_HR@10": valid["HR@10"],
                        "valid_NDCG@10": valid["NDCG@10"], "best": improved,
                        "epoch_seconds": round(time.time() - t0, 3), "elapsed_seconds": round(elapsed, 3)})
            write_jsonl(out / "train_log.jsonl", log)
            bar.update(task, advance=1, info=f"loss {total / seen:.4f}  valid NDCG@10 {valid['NDCG@10']:.4f} "
                                             f"(best {best:.4f})")
            if bad >= cfg.patience:
                stop_reason = "patience"
                break
            # Stop before an epoch that would overrun the budget, leaving room for the final evaluations.
            # A wall-clock stop depends on machine load, so such a run is not guaranteed to repeat exactly.
            if elapsed + (time.time() - t0) * 1.5 > budget:
                stop_reason = "time_budget"
                bar.console.print(f"[yellow]sasrec: stopped by max_minutes={cfg.max_minutes} after epoch {epoch} "
                                  f"(patience not reached); a rerun may stop elsewhere[/]")
                break

    model.load_state_dict(best_state)
    best_epoch = max((r for r in log if r["best"]), key=lambda r: r["epoch"])["epoch"]
    save_checkpoint(model, out / "model", cfg, extra={"best_epoch": best_epoch, "best_valid_NDCG@10": best,
                                                          "data_fingerprint": fingerprint})

    info = {"model": "sasrec", "best_epoch": best_epoch, "epochs_run": len(log), "stop_reason": stop_reason,
            "best_valid_NDCG@10": best, "seed": cfg.seed}
    users = {s: ds.splits[s]["user"].tolist() for s in ("valid", "test")}
    top = {s: rank_top(model, x, MAX_PREDICTIONS, cfg.eval_batch_size)
           for s, x in (("valid", valid_x), ("test", test_x))}
    write_evaluation(out / "valid", "valid", valid_y.tolist(), top["valid"], users=users["valid"], num_items=n,
                     info=info, config=cfg.model_dump())
    seconds = time.time() - t_start
    results = write_evaluation(out, "test", test_y.tolist(), top["test"], users=users["test"], num_items=n,
                               info={**info, "seconds": round(seconds, 3)}, config=cfg.model_dump(), seconds=seconds)
    write_manifest(out, "baseline.sasrec", config=cfg.model_dump(), inputs={"data": data_dir},
                   seconds=time.time() - t_start, extra={"metrics": results["metrics"], "best_epoch": best_epoch,
                                                  "data_fingerprint": fingerprint})
    return results


# ---------------------------------------------------------------------------------------------------------- checkpoint
def save_checkpoint(model: SASRec, folder: str | Path, cfg: SasrecConfig | None = None,
                    extra: dict | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    arch = {**model.arch, "format": "sidrec-sasrec-1"}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(folder / ARCH, arch)
    write_manifest(folder, "baseline.sasrec.model", config=cfg.model_dump() if cfg else None, extra=extra)


class SasrecScorer:
    """A trained SASRec as a collaborative scorer: `SasrecScorer.load(dir).score(histories, candidates)`.

    Scores are the raw logits (higher = more likely next item); softmax over all items gives probabilities.
    """

    def __init__(self, model: SASRec, config: dict | None = None):
        self.model = model.eval()
        self.num_items = model.num_items
        self.config = config or {}  # the settings it was trained with (its manifest), e.g. folds/holdout_fold

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> "SasrecScorer":
        folder = Path(folder)
        if (folder / "model" / WEIGHTS).exists():  # accept the run folder as well as its model/ folder
            folder = folder / "model"
        if not (folder / WEIGHTS).exists() or not (folder / ARCH).exists():
            raise SidrecError(f"{folder}: no SASRec checkpoint ({WEIGHTS} + {ARCH}); train one with "
                              f"`sidrec baseline sasrec --data DIR --out OUT` and pass OUT or OUT/model")
        manifest = read_manifest(folder)
        if manifest is None:
            raise SidrecError(f"{folder}: checkpoint has no manifest.json, so saving did not finish; retrain")
        try:
            arch = json.loads((folder / ARCH).read_text())
            model = SASRec(**{k: arch[k] for k in ("num_items", "hidden", "blocks", "heads", "dropout", "max_len",
                                                   "ffn_mult")})
            with reading(folder / WEIGHTS, hint="retrain"):
                model.load_state_dict(load_file(str(folder / WEIGHTS)))
        except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError, RuntimeError) as e:
            raise SidrecError(f"{folder}: SASRec checkpoint is unreadable or does not match its config ({e})") from None
        if threads is not None:
            torch.set_num_threads(threads)
        return cls(model, manifest.get("config"))

    @torch.no_grad()
    def score(self, history_item_ids, candidate_item_ids=None) -> np.ndarray:
        """Score candidates given histories (oldest first).

        - one history (list of ints) -> 1-D array; a batch (list of lists) -> 2-D array (rows = histories).
        - candidates: None = all items; a flat list = the same candidates for every row; a list of equal-length
          lists = one candidate list per row.
        """
        single = len(history_item_ids) == 0 or np.isscalar(history_item_ids[0])
        hists = [history_item_ids] if single else list(history_item_ids)
        for h in hists:
            self._check(h, "history")
        logits = self.model(pad_histories(hists, self.model.max_len, self.num_items))
        if candidate_item_ids is None:
            scores = logits
        else:
            cand = np.asarray(candidate_item_ids, dtype=np.int64)
            self._check(cand.ravel(), "candidate")
            if cand.ndim == 1:
                scores = logits[:, torch.from_numpy(cand)]
            elif cand.ndim == 2 and len(cand) == len(hists):
                scores = torch.gather(logits, 1, torch.from_numpy(cand))
            else:
                raise SidrecError(f"candidates must be a flat list or one list per history ({len(hists)} rows); "
                                  f"got shape {cand.shape}")
        scores = scores.numpy()
        return scores[0] if single else scores

    def _check(self, ids, what: str) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_items):
            bad = ids[(ids < 0) | (ids >= self.num_items)][0]
            raise SidrecError(f"{what} item {bad} is not in the scorer's catalogue of {self.num_items} items")


def _shared_catalogue(scorers: list) -> int:
    sizes = {s.num_items for s in scorers}
    if len(sizes) > 1:
        raise SidrecError(f"SASRec runs disagree on the catalogue size ({sorted(sizes)}); train them on one dataset")
    return sizes.pop()


class SasrecEnsemble:
    """Several trained SASRecs (e.g. seeds) as one scorer: the mean of their logits, same `score` contract.

    A single SASRec's ranking varies with its seed; averaging runs gives the collaborative reward a steadier teacher
    (lab/rl_fusion_bound.py measures how much that moves the reward's ceiling)."""

    def __init__(self, scorers: list[SasrecScorer]):
        if not scorers:
            raise SidrecError("an ensemble needs at least one SASRec scorer")
        self.scorers, self.num_items = scorers, _shared_catalogue(scorers)

    def score(self, history_item_ids, candidate_item_ids=None) -> np.ndarray:
        return np.mean([s.score(history_item_ids, candidate_item_ids) for s in self.scorers], axis=0)

    @property
    def config(self) -> dict:
        folds = {(s.config.get("folds", 1), s.config.get("holdout_fold", 0)) for s in self.scorers}
        return dict(zip(("folds", "holdout_fold"), folds.pop())) if len(folds) == 1 else {"folds": None}


class CrossFitScorer:
    """One scorer per user fold: the rows of users with id % K == k are scored by the scorer that held fold k out of
    its training (`sasrec.folds=K`, `sasrec.holdout_fold=k`), so no row is scored by a model that learnt its target."""

    needs_users = True

    def __init__(self, by_fold: dict[int, SasrecScorer | SasrecEnsemble]):
        k = len(by_fold)
        if sorted(by_fold) != list(range(k)) or k < 2:
            raise SidrecError(f"cross-fitted scorers need folds 0..K-1 with K >= 2; got folds {sorted(by_fold)}")
        for fold, scorer in by_fold.items():
            trained = (scorer.config.get("folds", 1), scorer.config.get("holdout_fold", 0))
            if trained != (k, fold):
                raise SidrecError(f"the scorer for fold {fold} was trained with (folds, holdout_fold)={trained}, "
                                  f"not ({k}, {fold}): it has seen the rows it would score; train it with "
                                  f"`sidrec baseline sasrec --set sasrec.folds={k} --set sasrec.holdout_fold={fold}`")
        self.by_fold, self.folds, self.num_items = by_fold, k, _shared_catalogue(list(by_fold.values()))

    def score(self, history_item_ids: list[list[int]], candidate_item_ids, users) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        cands = np.asarray(candidate_item_ids, dtype=np.int64)
        out = np.zeros(cands.shape, dtype=np.float32)
        for fold, scorer in self.by_fold.items():
            rows = np.flatnonzero(users % self.folds == fold)
            if len(rows):
                out[rows] = scorer.score([history_item_ids[r] for r in rows], cands[rows].tolist())
        return out


def load_scorer(folders, threads: int | None = None) -> SasrecScorer | SasrecEnsemble | CrossFitScorer:
    """One SASRec run folder; a list of them (averaged); or {fold: folder or list} of cross-fitted runs."""
    if isinstance(folders, dict):
        return CrossFitScorer({int(k): load_scorer(v, threads) for k, v in folders.items()})
    if isinstance(folders, (str, Path)):
        return SasrecScorer.load(folders, threads)
    return SasrecEnsemble([SasrecScorer.load(f, threads) for f in folders])
