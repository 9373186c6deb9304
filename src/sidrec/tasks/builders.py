"""Task builders: (dataset, SIDs) -> examples {task, prompt, response, row}.

Histories are cut from the left (oldest items dropped) to fit `cutoff_len`, one whole item at a time, so a SID is
never cut in half; `fit_history` does that for every stage.

Training-only knobs of `build_examples` (all off by default; `sidrec optimize` turns them on):
- `short_history=k`: every seqrec row with more than k history items is added once more with only its last k items
  (more short-context examples, for users with few interactions);
- `drop_old_fraction=f`: every seqrec row with n >= 2 history items is added once more without its oldest
  m = min(n - 1, max(1, floor(n * f))) items (the old part of the bad-case `recency_bias` pattern), so the target has
  to be predicted from the recent items alone;
- `balance_power=p`: inverse-frequency oversampling of seqrec rows (after the two above). A row whose target is the
  target of c rows weighs c^-p; a row is kept once and, when its weight is above the mean, repeated
  weight / mean times in expectation (floor plus a seeded coin for the fraction), so rare targets are seen more
  often and frequent ones no less.
"""

from __future__ import annotations

import numpy as np

from sidrec.data.canonical import Dataset, history_array, history_lengths
from sidrec.errors import SidrecError
from sidrec.tasks.template import encode_prompt, history_text, render_prompt, sid_text

SEQ_TASKS = ("seqrec", "history2title")


def check_sid_coverage(dataset: Dataset, codes: np.ndarray) -> None:
    if len(codes) != dataset.num_items:
        raise SidrecError(f"SIDs cover {len(codes)} items but the dataset has {dataset.num_items}; build SIDs on this "
                          f"dataset (`sidrec sid build --data ...`)")


def fit_history(task: str, history: list[int], codes: np.ndarray, tokenizer, cutoff_len: int) -> tuple[str, int]:
    """The prompt for `history`, dropping oldest items until it has at most `cutoff_len` tokens; returns (prompt, kept)."""
    keep = len(history)
    while keep > 0:
        prompt = render_prompt(task, history_text([codes[i] for i in history[len(history) - keep:]]))
        if len(encode_prompt(tokenizer, prompt)) <= cutoff_len:
            return prompt, keep
        keep -= 1
    raise SidrecError(f"cutoff_len={cutoff_len} is too short for a prompt with even one history item; raise cutoff_len")


def balance_copies(targets: np.ndarray, power: float, rng: np.random.Generator) -> np.ndarray:
    """Copies of each row under inverse-frequency oversampling (see the module doc); all ones when power is 0."""
    targets = np.asarray(targets)
    if power <= 0 or len(targets) == 0:
        return np.ones(len(targets), dtype=np.int64)
    _, inverse, counts = np.unique(targets, return_inverse=True, return_counts=True)
    weight = counts[inverse].astype(np.float64) ** -power
    expected = np.maximum(1.0, weight / weight.mean())
    copies = np.floor(expected).astype(np.int64)
    copies += rng.random(len(copies)) < (expected - copies)
    return copies


def build_examples(dataset: Dataset, codes: np.ndarray, split: str, tasks: dict[str, float], seed: int = 0,
                   titles_max_words: int = 20, *, balance_power: float = 0.0, short_history: int = 0,
                   drop_old_fraction: float = 0.0) -> list[dict]:
    """Examples of each enabled task; a task's weight w > 0 repeats its examples floor(w) times plus a
    seeded fraction (w - floor(w)) of them, so weights change how much of each task training sees.

    `short_history`, `drop_old_fraction` and `balance_power` reshape the seqrec rows before the weight applies (module
    doc); at their defaults the examples are exactly those without them. `iter_examples` yields the same examples
    one at a time."""
    return list(iter_examples(dataset, codes, split, tasks, seed, titles_max_words, balance_power=balance_power,
                              short_history=short_history, drop_old_fraction=drop_old_fraction))


AUGMENT_TAGS = (None, "short_history", "drop_old")


def old_part(n, fraction: float):
    """How many of the oldest of n history items make the "old part" (>= 1, < n; 0 when n < 2): an int for one
    length, an array for an array of lengths. The bad-case `recency_bias` pattern and `drop_old_fraction` share it."""
    n = np.asarray(n, dtype=np.int64)
    m = np.where(n < 2, 0, np.minimum(n - 1, np.maximum(1, np.floor(n * fraction).astype(np.int64))))
    return int(m) if m.ndim == 0 else m


def seq_plan(lengths: np.ndarray, short_history: int = 0, drop_old_fraction: float = 0.0):
    """The seqrec rows with the augmentation copies of the module doc (originals, then short-history copies, then
    recent-only copies), as arrays: (source row, first history item kept, index into `AUGMENT_TAGS`)."""
    rows = np.arange(len(lengths), dtype=np.int64)
    src, start, tag = [rows], [np.zeros(len(rows), dtype=np.int64)], [np.zeros(len(rows), dtype=np.int8)]
    if short_history > 0:
        keep = rows[lengths > short_history]
        src.append(keep), start.append(lengths[keep] - short_history), tag.append(np.full(len(keep), 1, np.int8))
    if drop_old_fraction > 0:
        m = old_part(lengths, drop_old_fraction)
        keep = rows[m > 0]
        src.append(keep), start.append(m[keep]), tag.append(np.full(len(keep), 2, np.int8))
    return np.concatenate(src), np.concatenate(start), np.concatenate(tag)


def iter_examples(dataset: Dataset, codes: np.ndarray, split: str, tasks: dict[str, float], seed: int = 0,
                  titles_max_words: int = 20, *, balance_power: float = 0.0, short_history: int = 0,
                  drop_old_fraction: float = 0.0):
    """`build_examples`' examples, in its order, made one at a time: which rows each task repeats and samples is
    decided on integer arrays first, so the whole training set is never held as one dict per example."""
    check_sid_coverage(dataset, codes)
    unknown = set(tasks) - {"seqrec", "history2title", "title2sid", "sid2title"}
    if unknown:
        raise SidrecError(f"unknown task(s) {sorted(unknown)}; valid: seqrec, history2title, title2sid, sid2title")
    rng = np.random.default_rng(seed)
    titles = [" ".join(t.split()[:titles_max_words]) for t in dataset.titles()]
    df = dataset.splits[split]
    # a row's history list is made when its example is (~3 us), not one list per training row up front
    histories, targets = history_array(df["history"]), np.asarray(df["target"], dtype=np.int64)
    lengths = history_lengths(histories)
    for task, weight in tasks.items():
        if weight <= 0:
            continue
        if task in SEQ_TASKS:
            src, start, tag = seq_plan(lengths, short_history, drop_old_fraction) if task == "seqrec" else \
                seq_plan(lengths)
            order = np.arange(len(src))
            if task == "seqrec":
                # its own stream, so the task-weight draws below are the same with and without balancing
                copies = balance_copies(targets[src], balance_power, np.random.default_rng([seed, 1]))
                order = np.repeat(order, copies)
        else:
            order = np.arange(dataset.num_items)
        reps = int(weight)
        chosen = [order] * reps
        frac = weight - reps
        if frac > 0:
            chosen.append(order[np.sort(rng.choice(len(order), size=int(round(frac * len(order))), replace=False))])
        for j in np.concatenate(chosen):  # weight > 0: at least one part; numpy ints, not a list of Python ints
            j = int(j)
            if task in SEQ_TASKS:
                r, t = int(src[j]), int(targets[src[j]])
                ex = {"task": task, "history": histories[r][int(start[j]):], "row": r, "target": t,
                      "response": sid_text(codes[t]) if task == "seqrec" else titles[t]}
                if tag[j]:
                    ex["augment"] = AUGMENT_TAGS[tag[j]]
                yield ex
            elif task == "title2sid":
                yield {"task": task, "prompt": render_prompt(task, titles[j]), "response": sid_text(codes[j]), "item": j}
            else:
                yield {"task": task, "prompt": render_prompt(task, sid_text(codes[j])), "response": titles[j], "item": j}
