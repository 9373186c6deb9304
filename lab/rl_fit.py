"""How much of its reward's optimum has an RL model learned, per reward, on its own prompts and on valid rows?

With `scale_rewards: none` the optimum of GRPO's objective is the start model tilted by exp(reward / beta): on the
start model's top-G beams of a prompt, log pi*(y) - log pi_ref(y) = sum_k w_k r_k(y) / beta + a constant. This script
takes the RL run's own reward weights, beta and scorer from its manifest, draws `--rows` of its prompts
(`after_train` histories) and `--rows` valid rows, and regresses the learned shift, log pi_rl - log pi_ref centred
within each group, on the rewards centred within each group. A coefficient equal to w_k / beta means that reward is
fully learned; `learned` is coefficient / (w_k / beta). Equal fractions on prompts and valid rows mean the model
generalises what it learned, and the limit is the optimisation; a much lower fraction on valid means it does not.

Also reported: the same regression with `collaborative` and `novelty` each split into the item's mean over the set
and the rest (what depends on the history), and how much of what the rewards leave unexplained is a shift of the
item itself (its mean residual on the prompts, as a prediction on valid rows, and against its log counts).

    .venv/bin/python lab/rl_fit.py --runs runs/at/N4,runs/at/N3 --rows 600 --out bench/out/rl_fit.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sidrec.baselines.sasrec import load_scorer
from sidrec.data import Dataset
from sidrec.data.canonical import histories_after
from sidrec.evaluate.generative import build_trie, load_model_for_inference, rank_histories
from sidrec.io import read_json, write_json
from sidrec.sid.io import load_sids
from sidrec.tasks.builders import fit_history
from sidrec.tasks.template import sid_text
from sidrec.train.rewards import Groups, combine, recent_popularity
from sidrec.train.rl import shared_prompt_logps


def beam_logps(model, tokenizer, codes, trie, histories, sid_index, cutoff_len: int) -> np.ndarray:
    """(rows, G) log-likelihood under `model` of each given SID after each history's prompt."""
    out = np.zeros(sid_index.shape)
    for r, (h, sids) in enumerate(zip(histories, sid_index)):
        prompt = tokenizer(fit_history("seqrec", h, codes, tokenizer, cutoff_len)[0],
                           add_special_tokens=False)["input_ids"]
        completions = [tokenizer(sid_text(trie.sids[s]), add_special_tokens=False)["input_ids"] for s in sids]
        ids = torch.tensor([prompt + c for c in completions])
        with torch.no_grad():
            token_logp, _ = shared_prompt_logps(model, ids, torch.ones_like(ids), len(completions[0]))
        out[r] = token_logp.sum(-1).numpy()
    return out


def item_means(sid_index: np.ndarray, values: np.ndarray, num_sids: int, min_count: int = 3) -> np.ndarray:
    """(num_sids,) mean of `values` over each SID's completions; NaN for SIDs seen fewer than `min_count` times."""
    counts = np.bincount(sid_index, minlength=num_sids)
    sums = np.bincount(sid_index, values, minlength=num_sids)
    return np.where(counts >= min_count, sums / np.maximum(counts, 1), np.nan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="RL run folder(s) (manifest.json + model/), joined by commas")
    ap.add_argument("--rows", type=int, default=300, help="prompts and valid rows drawn (each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    runs = args.runs.split(",")
    manifests = {r: read_json(f"{r}/manifest.json") for r in runs}
    first = manifests[runs[0]]
    paths = {k: first["inputs"][k]["path"] for k in ("model", "data", "sids")}
    if any({k: m["inputs"][k]["path"] for k in paths} != paths for m in manifests.values()):
        raise SystemExit("the runs must share their start model, data and SIDs")
    cfg = first["config"]
    dataset = Dataset.load(paths["data"])
    codes, _ = load_sids(paths["sids"])
    tokenizer, ref = load_model_for_inference(paths["model"])
    trie = build_trie(tokenizer, codes)
    sid_of_item = trie.sid_of_item(dataset.num_items)
    first_item = trie.first_items()
    g = cfg["num_generations"]
    cutoff = cfg["cutoff_len"] - codes.shape[1] - 1

    rng = np.random.default_rng(args.seed)
    prompts = histories_after(dataset.splits["train"], dataset.max_history)
    valid = dataset.splits["valid"]
    sets = {name: [list(df["history"].iloc[i]) for i in np.sort(rng.choice(len(df), args.rows, replace=False))]
            for name, df in (("prompts (after_train)", prompts), ("valid rows", valid))}
    models = {r: load_model_for_inference(f"{r}/model")[1] for r in runs}
    train_targets = dataset.splits["train"]["target"]
    contexts = {}  # per run: its reward weights and what those rewards need
    for run in runs:
        rcfg = manifests[run]["config"]
        weights = {k: w for k, w in rcfg["rewards"].items() if w}
        contexts[run] = (weights, {
            "scorer": load_scorer(rcfg["scorer"]) if weights.get("collaborative") else None,
            "sid_of_item": sid_of_item,
            "item_prior": recent_popularity(train_targets, dataset.num_items, rcfg["popularity_window"])})
    report, residuals = {}, {}
    for set_name, histories in sets.items():
        sid_index, _ = rank_histories(ref, tokenizer, trie, codes, histories, g, batch_size=64, progress=False)
        ref_logp = beam_logps(ref, tokenizer, codes, trie, histories, sid_index, cutoff)
        flat = sid_index.ravel()
        groups = Groups(trie.sids[flat], np.full((len(flat), codes.shape[1]), -1), first_item[flat],
                        [h for h in histories for _ in range(g)], g)
        for run in runs:
            rcfg = manifests[run]["config"]
            weights, context = contexts[run]
            _, parts = combine(groups, weights, **context)
            # a shift along the start model's own log-likelihood sharpens (> 0) or flattens (< 0) it: no reward
            # asks for that, so its optimum is 0
            parts["log pi_ref"] = ref_logp.ravel()
            # GRPO's loss is per token: a completion's first SID token is pushed by the advantages of every
            # completion in the group that shares it. This regressor is that sum over the other completions, of
            # the total reward centred in the group; a positive coefficient is the push spilling over to siblings.
            total = sum(weights[n] / rcfg["beta"] * parts[n] for n in weights).reshape(-1, g)
            total = total - total.mean(1, keepdims=True)
            head = trie.sids[sid_index][..., 0]
            same = head[:, :, None] == head[:, None, :]
            parts["siblings' reward"] = (np.einsum("rij,rj->ri", same, total) - total).ravel()
            names = list(parts)
            x = np.stack([parts[n].reshape(-1, g) for n in names], -1)
            x = (x - x.mean(1, keepdims=True)).reshape(-1, len(names))
            shift = beam_logps(models[run], tokenizer, codes, trie, histories, sid_index, cutoff) - ref_logp
            shift = (shift - shift.mean(1, keepdims=True)).ravel()
            coef = np.linalg.lstsq(x, shift, rcond=None)[0]
            optimum = np.array([weights.get(n, 0.0) / rcfg["beta"] for n in names])
            row = {n: {"coefficient": round(float(c), 4), "optimum": float(o),
                       "learned": round(float(c / o), 3) if o else None} for n, c, o in zip(names, coef, optimum)}
            row["r2"] = round(float(1 - ((shift - x @ coef) ** 2).sum() / (shift ** 2).sum()), 3)
            report.setdefault(run, {})[set_name] = row
            residuals[run, set_name] = (flat, shift - x @ coef)
            # Which part of a history-dependent reward is learned: the item's mean reward over this set's
            # completions (the same for every history, so shared parameters learn it from every group the item is
            # in) or the rest, the part that depends on the history? Items seen < 3 times keep all in the rest.
            split_names, columns = [], []
            for n in names:
                if n in ("collaborative", "novelty"):
                    mean = item_means(flat, parts[n], trie.num_sids)[flat]
                    mean = np.where(np.isnan(mean), parts[n].mean(), mean)
                    split_names += [f"{n}: item mean", f"{n}: rest"]
                    columns += [mean, parts[n] - mean]
                else:
                    split_names.append(n)
                    columns.append(parts[n])
            xs = np.stack([c.reshape(-1, g) for c in columns], -1)
            xs = (xs - xs.mean(1, keepdims=True)).reshape(-1, len(columns))
            coef_split = np.linalg.lstsq(xs, shift, rcond=None)[0]
            row["split"] = {n: round(float(c), 4) for n, c in zip(split_names, coef_split)}
            cells = "  ".join(f"{n} {v['coefficient']:+.3f} of {v['optimum']:.2f}"
                              + (f" ({v['learned']:.0%})" if v["learned"] is not None else "")
                              for n, v in row.items() if n not in ("r2", "split"))
            print(f"{run:14s} {set_name:22s} {cells}  R² {row['r2']:.2f}", flush=True)
            print(f"{'':14s} {'':22s} split: " + "  ".join(f"{n} {c:+.3f}" for n, c in row["split"].items()
                                                            if ":" in n), flush=True)
    # What the rewards leave unexplained: is it a shift of the item itself, the same whatever the history? The
    # item's mean residual on the prompts, used as a prediction of its residuals on the valid rows.
    on_prompts, on_valid = sets
    in_histories = np.concatenate([np.asarray(h, dtype=np.int64) for h in dataset.splits["train"]["history"]])
    log_counts = np.stack([recent_popularity(train_targets, dataset.num_items, None),
                           recent_popularity(train_targets, dataset.num_items, 2000),
                           recent_popularity(in_histories, dataset.num_items, None)], 1)
    for run in runs:
        item_mean = item_means(*residuals[run, on_prompts], trie.num_sids)
        flat, resid = residuals[run, on_valid]
        predicted = item_mean[flat]
        known = ~np.isnan(predicted)
        explained = 1 - ((resid[known] - predicted[known]) ** 2).sum() / (resid[known] ** 2).sum()
        # popularity in another form? the item shift against the item's log counts (all training targets, the
        # latest 2,000, and in training histories)
        sids = np.flatnonzero(~np.isnan(item_mean))
        shift = item_mean[sids]
        counts = np.column_stack([log_counts[first_item[sids]], np.ones(len(sids))])
        fit = np.linalg.lstsq(counts, shift, rcond=None)[0]
        by_counts = 1 - ((shift - counts @ fit) ** 2).sum() / ((shift - shift.mean()) ** 2).sum()
        report[run]["item_shift"] = {"valid_completions_with_item_on_prompts": round(float(known.mean()), 3),
                                     "valid_residual_explained": round(float(explained), 3),
                                     "item_shift_r2_on_log_counts": round(float(by_counts), 3)}
        print(f"{run:14s} the item's mean unexplained shift on the prompts explains {explained:.0%} of the "
              f"unexplained shift on valid rows ({known.mean():.0%} of valid completions have their item among the "
              f"prompts' beams); the item's log counts explain {by_counts:.0%} of that item shift")
    print(f"{time.time() - t0:.0f} s")
    write_json(args.out, {"args": vars(args), "runs": report})


if __name__ == "__main__":
    main()
