import json

import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from generative_fixtures import NUM_ITEMS, make_toy, toy_codes
from sidrec.data import Dataset
from sidrec.errors import SidrecError
from sidrec.evaluate.generative import evaluate_generative
from sidrec.model.backbone import load_llm
from sidrec.model.tokenizer import build_data_tokenizer
from sidrec.tasks.builders import build_examples, fit_history
from sidrec.tasks.template import level_tokens, render_prompt, sid_text
from sidrec.train.sft import SftConfig, run_sft

TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128,
        "vocab_size": 300, "dropout": 0.0}


def sft_config(**kw):
    base = dict(small=TINY, epochs=30, batch_size=32, micro_batch_size=32, learning_rate=5e-3, eval_steps=100,
                early_stopping_patience=None, cutoff_len=128, seed=0, tasks={"seqrec": 1.0, "title2sid": 1.0})
    return SftConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    data, sids = make_toy(root)
    model_dir = run_sft(sft_config(), data, sids, root / "sft")
    return root, data, sids, model_dir


def test_data_tokenizer_round_trips_after_autotokenizer_reload(tmp_path):
    sid_tokens = [t for level in level_tokens(toy_codes()) for t in level]
    tok = build_data_tokenizer(["widget number 3", "a gadget"] * 20, sid_tokens, vocab_size=300)
    from sidrec.model.backbone import build_small_model
    from sidrec.train.config import SmallModelConfig

    build_small_model(tok, SmallModelConfig(**TINY)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)  # the way users reload it (returns Qwen2Tokenizer)
    prompt = render_prompt("seqrec", ", ".join(sid_text(c) for c in toy_codes()[:3])) + sid_text(toy_codes()[5])
    ids = reloaded(prompt, add_special_tokens=False)["input_ids"]
    assert ids == tok(prompt, add_special_tokens=False)["input_ids"]
    assert reloaded.decode(ids) == prompt
    sid_ids = [reloaded.convert_tokens_to_ids(t) for t in sid_tokens]
    assert all(i in ids for i in sid_ids[:2])  # SID tokens are atomic, one id each
    assert len(set(sid_ids)) == len(sid_ids)


def test_history_is_cut_whole_items_from_the_left():
    codes = toy_codes()
    tok = build_data_tokenizer(["widget"] * 5, [t for lv in level_tokens(codes) for t in lv], vocab_size=300)
    full, kept = fit_history("seqrec", list(range(8)), codes, tok, 10_000)
    assert kept == 8
    two = len(tok(fit_history("seqrec", [6, 7], codes, tok, 10_000)[0])["input_ids"])
    prompt, kept = fit_history("seqrec", list(range(8)), codes, tok, two)
    assert kept == 2 and prompt.endswith("\n" + sid_text(codes[6]) + ", " + sid_text(codes[7]) + "\n### Response:\n")
    prompt, kept = fit_history("seqrec", list(range(8)), codes, tok, two - 1)  # one token short: a whole item goes
    assert kept == 1 and prompt.endswith("\n" + sid_text(codes[7]) + "\n### Response:\n")
    with pytest.raises(SidrecError, match="cutoff_len=5 is too short"):
        fit_history("seqrec", [1, 2], codes, tok, 5)


def test_task_weights_change_what_training_sees(tmp_path):
    data, _ = make_toy(tmp_path)
    ds, codes = Dataset.load(data), toy_codes()
    one = build_examples(ds, codes, "train", {"seqrec": 1.0, "title2sid": 1.0})
    more = build_examples(ds, codes, "train", {"seqrec": 1.0, "title2sid": 2.5})
    count = lambda ex, t: sum(e["task"] == t for e in ex)
    assert count(one, "title2sid") == NUM_ITEMS and count(more, "title2sid") == 30
    assert count(one, "seqrec") == count(more, "seqrec") == len(ds.splits["train"])
    with pytest.raises(SidrecError, match="unknown task"):
        build_examples(ds, codes, "train", {"seqrec": 1.0, "sid2sid": 1.0})


def test_sft_learns_the_rule_and_eval_is_valid(trained, tmp_path):
    root, data, sids, model_dir = trained
    # a checkpoint that ships sampling defaults must not change evaluation (Qwen Instruct's trap)
    cfg_path = model_dir / "generation_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(do_sample=True, top_p=0.8, top_k=2, temperature=0.7, repetition_penalty=1.05)
    cfg_path.write_text(json.dumps(cfg))
    res = evaluate_generative(model_dir, data, sids, tmp_path / "eval", beams=10)
    assert res["metrics"]["HR@1"] >= 0.8  # chance is 1/12
    assert res["valid_sid_rate"] == 1.0 and res["rows_with_duplicate_sids"] == 0
    rows = [json.loads(l) for l in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == res["num_samples"] and all(len(r["predictions"]) == 10 for r in rows)
    assert all(len(set(r["predictions"])) == 10 for r in rows)
    # same seed, same metrics
    again = evaluate_generative(model_dir, data, sids, tmp_path / "eval2", beams=10)
    assert again["metrics"] == res["metrics"]
    # the folder reloads with the plain HF auto classes
    AutoModelForCausalLM.from_pretrained(model_dir)


def test_eval_bad_inputs(trained, tmp_path):
    root, data, sids, model_dir = trained
    with pytest.raises(SidrecError, match="does not exist"):
        evaluate_generative(tmp_path / "nope", data, sids, tmp_path / "e")
    with pytest.raises(SidrecError, match="larger than the catalogue"):
        evaluate_generative(model_dir, data, sids, tmp_path / "e", beams=13)
    with pytest.raises(SidrecError, match=r"eval.cutoff_len=100000 is longer than the model's max_position_embeddings"):
        evaluate_generative(model_dir, data, sids, tmp_path / "e", cutoff_len=100000)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"0": ["<a_0>", "<b_0>", "<c_0>"]}))
    with pytest.raises(SidrecError, match="cover 1 items but the dataset has 12"):
        evaluate_generative(model_dir, data, short, tmp_path / "e")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({str(i): [f"<a_{i + 50}>", "<b_0>", "<c_0>"] for i in range(NUM_ITEMS)}))
    with pytest.raises(SidrecError, match="no SID tokens"):
        evaluate_generative(model_dir, data, other, tmp_path / "e", allow_mismatch=True)
    notlm = tmp_path / "notlm"
    notlm.mkdir()
    (notlm / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(SidrecError, match="notlm"):
        load_llm(str(notlm))


def test_sft_resumes_from_last_checkpoint(tmp_path):
    data, sids = make_toy(tmp_path)
    out = tmp_path / "run"
    run_sft(sft_config(epochs=2, eval_steps=1), data, sids, out)  # a checkpoint every step
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert ckpts
    manifest = json.loads((out / "manifest.json").read_text())
    total = manifest["global_step"]
    # simulate a kill: keep only an early checkpoint, drop the finished model, run again with more epochs
    (out / "manifest.json").unlink()
    second = run_sft(sft_config(epochs=3, eval_steps=1), data, sids, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_from"] is not None and manifest["global_step"] > total
    assert second.exists()


def test_eval_cli_prints_both_tables(trained, tmp_path):
    import subprocess
    import sys

    root, data, sids, model_dir = trained
    r = subprocess.run([sys.executable, "-m", "sidrec", "eval", "--model", str(model_dir), "--data", str(data),
                        "--sids", str(sids), "--out", str(tmp_path / "ev"), "--beams", "5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "exact items" in r.stdout and "SID match" in r.stdout and "valid SIDs: 100.00%" in r.stdout
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["beams"] == 5


def test_a_split_is_encoded_into_packed_prompts():
    import pyarrow as pa

    from sidrec.data.canonical import HISTORY_TYPE, history_array
    from sidrec.decode.inference import encode_histories
    from sidrec.tasks.template import encode_prompt

    codes = toy_codes()
    tok = build_data_tokenizer(["widget"] * 5, [t for lv in level_tokens(codes) for t in lv], vocab_size=300)
    lists = [[1], [2, 3, 4], list(range(12)), [5, 6]]
    col = history_array(pa.chunked_array([pa.array(lists[:1], HISTORY_TYPE), pa.array(lists[1:], HISTORY_TYPE)]))
    cutoff = len(tok(fit_history("seqrec", [6, 7, 8], codes, tok, 10_000)[0])["input_ids"])  # the long row is cut
    for histories in (lists, col):
        flat, offsets = encode_histories(histories, codes, tok, cutoff)
        assert flat.dtype == np.int32 and len(offsets) == len(lists) + 1
        for r, h in enumerate(lists):
            assert flat[offsets[r]:offsets[r + 1]].tolist() == encode_prompt(tok, fit_history("seqrec", h, codes, tok,
                                                                                               cutoff)[0])
    assert offsets[3] - offsets[2] <= cutoff < len(encode_prompt(tok, fit_history("seqrec", lists[2], codes, tok,
                                                                                       10_000)[0]))
