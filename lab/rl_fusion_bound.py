"""What can GRPO with the `collaborative` reward reach at best? The KL-regularised optimum, measured offline.

GRPO maximises E[A] - beta * KL(pi || pi_ref). With the collaborative reward alone the group-normalised advantage of
a completion is z, the SASRec logit z-scored within its group, and the optimum of that objective is the tilted
policy pi*(item) ~ pi_ref(item) * exp(z / beta): a log-linear fusion of the SFT model and SASRec whose mix is set by
beta. This script ranks valid and test rows with the SFT model (constrained beam search), re-ranks the top G beams of
each row by  log pi_ref + lam * z  (beams below G keep their order), picks lam on valid and reports test, so a run's
beta can be chosen from lam = 1 / beta and its gain compared with the ceiling of its reward.

`--novelty NU --popularity P` add the other target-free rewards at fixed weights, NU * [SID not in history] +
P * log(1 + count among the latest `--popularity-window` training targets), to every tilt (lam 0 included).
`--collaborative-repeats ignore` z-scores the SASRec logits over the beams not in the history and gives those in it 0,
as `rl.collaborative_repeats: ignore` does.

    .venv/bin/python lab/rl_fusion_bound.py --model runs/demo/sft/model --data runs/demo/dataset \
        --sids runs/demo/sid --scorer bench/out/sasrec_run1 --out bench/out/rl_fusion_bound.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from sidrec.baselines.sasrec import load_scorer
from sidrec.data import Dataset
from sidrec.evaluate.generative import build_trie, load_model_for_inference, rank_histories
from sidrec.evaluate.metrics import hr_ndcg, target_ranks
from sidrec.io import write_json
from sidrec.sid.io import load_sids
from sidrec.evaluate.fusion import group_zscores
from sidrec.train.rewards import in_history, recent_popularity

LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 25.0)


def tilt(sid_index: np.ndarray, loglik: np.ndarray, logits: np.ndarray, group: int, lam: float,
         bonus: np.ndarray | None = None, keep: np.ndarray | None = None) -> np.ndarray:
    """Re-rank the first `group` beams of each row by loglik + lam * z(logits within those beams) + bonus; with
    `keep`, z is taken over the kept beams and is 0 for the others, as the `collaborative` reward's
    `ignore_repeats` does."""
    head_s = loglik[:, :group]
    z = group_zscores(logits[:, :group], None if keep is None else keep[:, :group])
    extra = 0.0 if bonus is None else bonus[:, :group]
    order = np.argsort(-(head_s + lam * z + extra), axis=1, kind="stable")
    return np.concatenate([np.take_along_axis(sid_index[:, :group], order, 1), sid_index[:, group:]], axis=1)


def beam_logits(scorer, histories: list[list[int]], sid_index: np.ndarray, first_item: np.ndarray) -> np.ndarray:
    """SASRec's logit of each beam's item given its row's history, in chunks of 512 rows."""
    return np.concatenate([scorer.score(histories[i:i + 512], first_item[sid_index[i:i + 512]].tolist())
                           for i in range(0, len(histories), 512)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--sids", required=True)
    ap.add_argument("--scorer", required=True, help="SASRec run folder, or several joined by commas (averaged)")
    ap.add_argument("--beams", type=int, default=50)
    ap.add_argument("--groups", default="16,32,50", help="G values: how many beams the tilt re-ranks")
    ap.add_argument("--novelty", type=float, default=0.0, help="weight of [SID not in the history]")
    ap.add_argument("--popularity", type=float, default=0.0, help="weight of the recent-popularity log count")
    ap.add_argument("--popularity-window", type=int, default=2000)
    ap.add_argument("--collaborative-repeats", choices=("score", "ignore"), default="score",
                    help="ignore: beams already in the history get z 0 (rl.collaborative_repeats)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    dataset = Dataset.load(args.data)
    codes, _ = load_sids(args.sids)
    tokenizer, model = load_model_for_inference(args.model)
    trie = build_trie(tokenizer, codes)
    scorer = load_scorer(args.scorer.split(",") if "," in args.scorer else args.scorer)
    first_item = trie.first_items()
    sid_of_item = trie.sid_of_item(dataset.num_items)
    prior = recent_popularity(dataset.splits["train"]["target"], dataset.num_items, args.popularity_window)

    per_split, base = {}, []
    for split in ("valid", "test"):
        t0 = time.time()
        df = dataset.splits[split]
        histories = [list(h) for h in df["history"]]
        targets = sid_of_item[np.asarray(df["target"].tolist())].tolist()
        sid_index, loglik = rank_histories(model, tokenizer, trie, codes, histories, args.beams, batch_size=64)
        base.append(hr_ndcg(target_ranks(sid_index.tolist(), targets), ks=(10,))["NDCG@10"])  # the SFT ranking
        logits = beam_logits(scorer, histories, sid_index, first_item)
        novel = ~in_history(sid_index, histories, sid_of_item)
        bonus = args.novelty * novel + args.popularity * prior[first_item[sid_index]]
        keep = novel if args.collaborative_repeats == "ignore" else None
        table = {}
        for g in (int(x) for x in args.groups.split(",")):
            for lam in LAMBDAS:
                ranked = tilt(sid_index, loglik, logits, g, lam, bonus, keep)
                m = hr_ndcg(target_ranks(ranked.tolist(), targets), ks=(10,))
                table[f"G={g} lam={lam}"] = {"G": g, "lam": lam, **m}
        per_split[split] = table
        print(f"{split}: {len(df)} rows, {time.time() - t0:.0f} s")

    print(f"{'G':>3} {'lam':>5} | valid HR@10 NDCG@10 (vs SFT) | test HR@10 NDCG@10 (vs SFT)")
    for key, v in per_split["valid"].items():
        t = per_split["test"][key]
        print(f"{v['G']:>3} {v['lam']:>5} | {v['HR@10']:.4f} {v['NDCG@10']:.4f} ({v['NDCG@10'] / base[0] - 1:+.1%}) "
              f"| {t['HR@10']:.4f} {t['NDCG@10']:.4f} ({t['NDCG@10'] / base[1] - 1:+.1%})")
    best = max(per_split["valid"], key=lambda k: per_split["valid"][k]["NDCG@10"])
    print(f"picked on valid: {best}; test {per_split['test'][best]}")
    write_json(args.out, {"args": vars(args), "picked_on_valid": best, "valid": per_split["valid"],
                          "test": per_split["test"]})
    extra = "".join(f" + {w:g}·{name}" for name, w in (("novelty", args.novelty), ("popularity", args.popularity)) if w)
    z = "z(SASRec, repeats 0)" if args.collaborative_repeats == "ignore" else "z(SASRec)"
    plot(per_split, base, Path(args.out).with_suffix(".png"), f"SFT beams re-ranked by log π_ref + λ·{z}{extra}")


def plot(per_split: dict, base: tuple[float, float], path: Path, title: str) -> None:
    """NDCG@10 against the SFT ranking as the tilt grows: one line per G, valid dashed, test solid."""
    from sidrec.analysis.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = sorted({v["G"] for v in per_split["test"].values()})
    for color, g in zip(("tab:blue", "tab:orange", "tab:green", "tab:red"), groups):
        for split, ref, style in (("valid", base[0], "--"), ("test", base[1], "-")):
            rows = sorted((v["lam"], v["NDCG@10"]) for v in per_split[split].values() if v["G"] == g and v["lam"])
            ax.plot([r[0] for r in rows], [100 * (r[1] / ref - 1) for r in rows], style, color=color, marker=".",
                    label=f"G={g} {split}")
    ax.axhline(5, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.text(0.01, 5.2, "+5% (issue #5's bar)", color="grey", fontsize=8, transform=ax.get_yaxis_transform())
    ax.set_xlabel("tilt λ (= 1/β for the collaborative reward alone)")
    ax.set_ylabel("NDCG@10 vs SFT ranking (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
