"""Where RL's prompts come from (`rl.prompts`), and the dataset of them that TRL trains on.

- `rows`: training rows (history -> target), all or a seeded sample (`sample_train`, `sample_size`).
- `after_train`: each user's history at the end of the training period (no target), plus `extend_prompts`
  continuations of it by one item drawn from the start model's beams (`extended_histories`), plus `suffix_prompts`
  short suffixes of those continuations (`suffix_histories`), which look like the histories of users with no
  training row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sidrec.data.canonical import histories_after
from sidrec.tasks.builders import fit_history
from sidrec.train.config import RlConfig


def extended_histories(model, tokenizer, trie, codes: np.ndarray, prompt_df, k: int, beams: int,
                       max_history: int, cutoff_len: int, seed: int):
    """`k` continuations of each history in `prompt_df`: the history plus one item drawn without replacement from
    the model's top-`beams` constrained beams, with the beams' probabilities renormalised (see `extend_prompts`)."""
    from sidrec.decode.inference import rank_histories

    histories = [list(h) for h in prompt_df["history"]]
    sid_index, scores = rank_histories(model, tokenizer, trie, codes, histories, beams, cutoff_len, batch_size=64)
    rng = np.random.default_rng(seed)
    users, extended = [], []
    for h, u, sids, logp in zip(histories, prompt_df["user"], sid_index, scores):
        p = np.exp(logp - logp.max())
        for s in rng.choice(sids, size=min(k, len(sids)), replace=False, p=p / p.sum()):
            items = trie.items_of_sid[s]
            extended.append((h + [int(items[rng.integers(len(items))])])[-max_history:])
            users.append(u)
    return pd.DataFrame({"user": users, "history": extended})


def suffix_histories(extended: pd.DataFrame, k: int, max_len: int, seed: int) -> pd.DataFrame:
    """`k` short histories per user: the last L items (L uniform in 1..`max_len`, at most the history's length) of
    `k` of the user's histories in `extended`, drawn without replacement (see `suffix_prompts`)."""
    rng = np.random.default_rng(seed)
    histories = extended["history"].tolist()
    users, picked = [], []
    for user, rows in extended.groupby("user", sort=False).indices.items():
        for r in rng.choice(rows, size=min(k, len(rows)), replace=False):
            h = list(histories[r])
            picked.append(h[-int(rng.integers(1, min(max_len, len(h)) + 1)):])
            users.append(user)
    return pd.DataFrame({"user": users, "history": picked})


def prompt_frame(cfg: RlConfig, train_df: pd.DataFrame, max_history: int, model=None, tokenizer=None, trie=None,
                 codes: np.ndarray | None = None, prompt_len: int = 0) -> pd.DataFrame:
    """user/history/target rows to prompt with: `train_df` itself for `rows`; for `after_train`, the users'
    end-of-training histories and (with `extend_prompts`, which needs the start model) their continuations and
    suffixes, with target -1."""
    if cfg.prompts == "rows":
        return train_df
    prompt_df = histories_after(train_df, max_history)
    if cfg.extend_prompts:
        more = extended_histories(model, tokenizer, trie, codes, prompt_df, cfg.extend_prompts, cfg.num_generations,
                                  max_history, prompt_len, cfg.seed)
        short = suffix_histories(more, cfg.suffix_prompts, cfg.suffix_max, cfg.seed)
        prompt_df = pd.concat([prompt_df, more, short], ignore_index=True)
    return prompt_df.assign(target=-1)


def training_rows(prompt_df: pd.DataFrame, cfg: RlConfig) -> np.ndarray:
    """Positions of the rows of `prompt_df` RL prompts with: all, or a seeded sample of `sample_size` of them when
    `sample_train`."""
    rows = np.arange(len(prompt_df))
    if cfg.sample_train and cfg.sample_size < len(rows):
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, cfg.sample_size, replace=False))
    return rows


def prompt_dataset(prompt_df: pd.DataFrame, rows: np.ndarray, codes: np.ndarray, tokenizer, prompt_len: int):
    """The HF dataset TRL iterates: each picked row's seq-rec prompt text (at most `prompt_len` tokens), with the
    row's target, history and user for the rewards."""
    from datasets import Dataset as HFDataset

    histories, targets, users = (prompt_df[c].tolist() for c in ("history", "target", "user"))
    return HFDataset.from_list([
        {"prompt": fit_history("seqrec", list(histories[r]), codes, tokenizer, prompt_len)[0],
         "row": int(r), "target": int(targets[r]), "history": [int(i) for i in histories[r]], "user": int(users[r])}
        for r in rows])
