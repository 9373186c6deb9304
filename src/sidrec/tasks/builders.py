"""Task builders: (dataset, SIDs) -> examples {task, prompt, response, row}.

Histories are cut from the left (oldest items dropped) to fit `cutoff_len`, one whole item at a time, so a SID is
never cut in half; `fit_history` does that for every stage.
"""

from __future__ import annotations

import numpy as np

from sidrec.data.canonical import Dataset
from sidrec.errors import SidrecError
from sidrec.tasks.template import history_text, render_prompt, sid_text

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
        if len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= cutoff_len:
            return prompt, keep
        keep -= 1
    raise SidrecError(f"cutoff_len={cutoff_len} is too short for a prompt with even one history item; raise cutoff_len")


def build_examples(dataset: Dataset, codes: np.ndarray, split: str, tasks: dict[str, float], seed: int = 0,
                   titles_max_words: int = 20) -> list[dict]:
    """Examples of each enabled task; a task's weight w > 0 repeats its examples floor(w) times plus a
    seeded fraction (w - floor(w)) of them, so weights change how much of each task training sees."""
    check_sid_coverage(dataset, codes)
    unknown = set(tasks) - {"seqrec", "history2title", "title2sid", "sid2title"}
    if unknown:
        raise SidrecError(f"unknown task(s) {sorted(unknown)}; valid: seqrec, history2title, title2sid, sid2title")
    rng = np.random.default_rng(seed)
    titles = [" ".join(t.split()[:titles_max_words]) for t in dataset.titles()]
    df = dataset.splits[split]
    out: list[dict] = []
    for task, weight in tasks.items():
        if weight <= 0:
            continue
        if task in SEQ_TASKS:
            base = [
                {"task": task, "history": list(h), "row": r,
                 "response": sid_text(codes[t]) if task == "seqrec" else titles[t]}
                for r, (h, t) in enumerate(zip(df["history"], df["target"]))
            ]
        elif task == "title2sid":
            base = [{"task": task, "prompt": render_prompt(task, titles[i]), "response": sid_text(codes[i]), "item": i}
                    for i in range(dataset.num_items)]
        else:
            base = [{"task": task, "prompt": render_prompt(task, sid_text(codes[i])), "response": titles[i], "item": i}
                    for i in range(dataset.num_items)]
        reps = int(weight)
        chosen = base * reps
        frac = weight - reps
        if frac > 0:
            pick = rng.choice(len(base), size=int(round(frac * len(base))), replace=False)
            chosen += [base[i] for i in sorted(pick)]
        out.extend(chosen)
    return out
