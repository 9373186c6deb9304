"""sft.loss="sid": a SID response scored over the SID rows (and EOS) of the head only, free text over all of it."""

import json

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from generative_fixtures import TINY, make_toy
from sidrec.evaluate.generative import evaluate_generative
from sidrec.train import sft
from sidrec.train.sft import SftConfig, run_sft, sid_restricted_loss

VOCAB = 40


def tiny_model():
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True))


def toy_batch():
    """4 rows of 10 tokens: prompts of 6, rows 0 and 2 with responses among ids 20..39, row 3 padded after 8."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 20, (4, 10), generator=g)
    ids[[0, 2], 6:] = torch.randint(20, VOCAB, (2, 4), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100
    labels[3, 8:] = -100
    mask = torch.ones_like(ids)
    mask[3, 8:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask,
            "sid_target": torch.tensor([True, False, True, False])}


def test_whole_vocabulary_as_rows_is_the_models_own_loss_and_gradient():
    model, batch = tiny_model(), toy_batch()
    total, count = sid_restricted_loss(model, batch, torch.arange(VOCAB))
    assert count == int((batch["labels"][:, 1:] != -100).sum()) == 14
    (total / count).backward()
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    own.backward()
    torch.testing.assert_close(total / count, own)
    for a, p in zip(ours, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_sid_rows_score_only_against_the_given_rows():
    model, batch = tiny_model(), toy_batch()
    rows = torch.arange(20, VOCAB)
    total, count = sid_restricted_loss(model, batch, rows)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = 0.0
    for i in range(4):
        for t in range(9):
            target = int(batch["labels"][i, t + 1])
            if target == -100:
                continue
            if batch["sid_target"][i]:  # a softmax over ids 20..39 alone
                expected -= torch.log_softmax(logits[i, t, 20:], -1)[target - 20].item()
            else:
                expected -= torch.log_softmax(logits[i, t], -1)[target].item()
    assert count == 14
    assert total.item() == pytest.approx(expected, rel=1e-5)
    full, _ = sid_restricted_loss(model, batch, torch.arange(VOCAB))
    assert total.item() < full.item()  # leaving rows out of a softmax can only raise the target's probability


def sft_config(**kw):
    base = dict(small=TINY, epochs=30, batch_size=32, micro_batch_size=32, learning_rate=5e-3, eval_steps=100,
                early_stopping_patience=None, cutoff_len=128, seed=0,
                tasks={"seqrec": 1.0, "title2sid": 1.0, "sid2title": 1.0})
    return SftConfig(**{**base, **kw})


def test_trainer_normalises_like_the_full_loss(tmp_path, monkeypatch):
    """Through the Trainer, with gradient accumulation: rows = the whole vocabulary trains like loss="full"."""
    data, sids = make_toy(tmp_path)
    cfg = dict(epochs=1, batch_size=32, micro_batch_size=16, eval_steps=2)
    run_sft(sft_config(**cfg), data, sids, tmp_path / "full")
    monkeypatch.setattr(sft, "sid_loss_rows", lambda tokenizer, codes: list(range(len(tokenizer))))
    run_sft(sft_config(loss="sid", **cfg), data, sids, tmp_path / "sid")

    def losses(run):
        log = json.loads((tmp_path / run / "train_log.json").read_text())
        return [r["loss"] for r in log if "loss" in r], [r["eval_loss"] for r in log if "eval_loss" in r]

    (full_train, full_eval), (sid_train, sid_eval) = losses("full"), losses("sid")
    assert len(full_train) >= 2 and len(full_eval) >= 2
    assert sid_train == pytest.approx(full_train, rel=1e-4)
    assert sid_eval == pytest.approx(full_eval, rel=1e-4)


def test_sft_with_the_sid_loss_learns_the_rule(tmp_path):
    data, sids = make_toy(tmp_path)
    model_dir = run_sft(sft_config(loss="sid"), data, sids, tmp_path / "sft")
    res = evaluate_generative(model_dir, data, sids, tmp_path / "eval", beams=10)
    assert res["metrics"]["HR@1"] >= 0.8  # chance is 1/12
    manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    assert manifest["config"]["loss"] == "sid"


def test_loss_setting_is_checked():
    with pytest.raises(ValueError, match="loss"):
        SftConfig(loss="sids")
