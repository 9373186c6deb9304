"""Tokenized SFT examples packed into flat arrays give exactly the per-example lists they replace."""

import numpy as np

from generative_fixtures import TINY, make_toy
from sidrec.data import Dataset
from sidrec.sid.io import load_sids
from sidrec.tasks.builders import SEQ_TASKS, build_examples, fit_history
from sidrec.tasks.template import encode_prompt
from sidrec.train.config import SftConfig
from sidrec.train.sft import PadCollator, prepare_model, sid_loss_rows, tokenize_examples


def reference(examples, tokenizer, codes, cutoff_len, sid_rows=None):
    """The list-of-dicts tokenisation, written out plainly."""
    out = []
    for ex in examples:
        response = tokenizer(ex["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if ex["task"] in SEQ_TASKS:
            prompt, _ = fit_history(ex["task"], ex["history"], codes, tokenizer, cutoff_len - len(response))
        else:
            prompt = ex["prompt"]
        p = encode_prompt(tokenizer, prompt)[: max(0, cutoff_len - len(response))]
        out.append({"input_ids": p + response, "labels": [-100] * len(p) + response})
        if sid_rows is not None:
            out[-1]["sid_target"] = all(t in sid_rows for t in response)
    return out


def test_packed_examples_equal_the_lists(tmp_path):
    data, sids = make_toy(tmp_path)
    cfg = SftConfig(small=TINY, tasks={"seqrec": 1.0, "title2sid": 1.0, "sid2title": 1.0}, cutoff_len=96)
    dataset, (codes, _) = Dataset.load(data), load_sids(sids)
    tokenizer, _ = prepare_model(cfg, dataset, codes)
    examples = build_examples(dataset, codes, "train", cfg.tasks, seed=0)
    rows = set(sid_loss_rows(tokenizer, codes))
    sizes = {}
    for cutoff, sid_rows in ((96, None), (96, rows), (72, rows)):  # 72: long histories are cut
        packed = tokenize_examples(examples, tokenizer, codes, cutoff, sid_rows)
        want = reference(examples, tokenizer, codes, cutoff, sid_rows)
        assert len(packed) == len(want) and [packed[i] for i in range(len(packed))] == want
        assert packed[-1] == want[-1] and packed.ids.dtype == np.int32
        sizes[cutoff] = len(packed.ids)
    assert sizes[72] < sizes[96]  # the shorter context did cut histories
    batch = PadCollator(tokenizer.pad_token_id)([packed[0], packed[1]])
    assert batch["input_ids"].shape[0] == 2 and batch["labels"][0, 0] == -100


def test_training_examples_stream_one_at_a_time(tmp_path):
    """`train_examples` yields `build_examples`' examples one by one, so the training set is never held as one dict
    per example: consuming the stream peaks at a small fraction of the list's memory, and it packs to the same ids."""
    import tracemalloc

    import pandas as pd

    from sidrec.train.sft import train_examples

    data, sids = make_toy(tmp_path)
    cfg = SftConfig(small=TINY, tasks={"seqrec": 1.5, "title2sid": 1.0, "sid2title": 0.5}, cutoff_len=96,
                    augment={"short_history": 2, "drop_old_fraction": 0.5})
    dataset, (codes, _) = Dataset.load(data), load_sids(sids)
    tokenizer, _ = prepare_model(cfg, dataset, codes)
    whole = build_examples(dataset, codes, "train", cfg.tasks, seed=cfg.seed, short_history=2, drop_old_fraction=0.5)
    stream = train_examples(cfg, dataset, codes)
    assert not isinstance(stream, list) and list(stream) == whole
    a = tokenize_examples(train_examples(cfg, dataset, codes), tokenizer, codes, 96)
    b = tokenize_examples(whole, tokenizer, codes, 96)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.offsets, b.offsets)

    train = dataset.splits["train"]
    dataset.splits["train"] = pd.concat([train] * (20_000 // len(train) + 1), ignore_index=True)

    def peak(consume):
        tracemalloc.start()
        consume()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    held = peak(lambda: list(train_examples(cfg, dataset, codes)))
    streamed = peak(lambda: sum(1 for _ in train_examples(cfg, dataset, codes)))
    assert streamed < held / 5, (streamed, held)
