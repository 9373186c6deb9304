"""Artifacts that do not belong together are refused, not silently scored: a model evaluated, served or RL-trained
with SIDs (or a dataset) other than its own, a weights file with flipped bytes, NaN weights."""

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from generative_fixtures import NUM_ITEMS, toy_codes, train_toy_sft
from sidrec.errors import SidrecError
from sidrec.evaluate.generative import evaluate_generative
from sidrec.io import array_fingerprint, file_sha256
from sidrec.model.binding import BINDING, write_binding
from sidrec.serve import Recommender


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("bind")
    data, sids, model_dir = train_toy_sft(root, epochs=15)
    return root, data, sids, model_dir


def write_index(path, codes):
    path.write_text(json.dumps({str(i): [f"<{'abc'[l]}_{c}>" for l, c in enumerate(row)]
                                for i, row in enumerate(np.asarray(codes).tolist())}))
    return path


def copy_model(model_dir, dest):
    shutil.copytree(model_dir, dest)
    return dest


def test_sft_records_its_sids_data_and_weights(toy):
    root, data, sids, model_dir = toy
    record = json.loads((model_dir / BINDING).read_text())
    assert record["sids"]["fingerprint"] == array_fingerprint(toy_codes())
    assert record["sids"]["path"] == str(sids.resolve()) and record["data"]["path"] == str(data.resolve())
    assert record["weights"]["model.safetensors"]["sha256"] == file_sha256(model_dir / "model.safetensors")


def test_right_pairing_evaluates_as_before(toy, tmp_path, caplog):
    root, data, sids, model_dir = toy
    res = evaluate_generative(model_dir, data, sids, tmp_path / "e", beams=10)
    assert res["metrics"]["HR@5"] >= 0.5 and res["binding"] == "checked"  # chance is 5/12
    # the same folder without its record (an older run) ranks the same, with a one-line warning
    old = copy_model(model_dir, tmp_path / "old")
    (old / BINDING).unlink()
    with caplog.at_level(logging.WARNING, logger="sidrec.model"):
        again = evaluate_generative(old, data, sids, tmp_path / "e2", beams=10)
    assert again["metrics"] == res["metrics"] and again["binding"] == "none"
    assert any(f"has no {BINDING}" in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)


def test_other_sid_index_is_refused_naming_both_and_runs_with_the_override(toy, tmp_path, caplog):
    root, data, sids, model_dir = toy
    # the same SIDs on other items: every beam is a "valid SID", the ranking is wrong
    other = write_index(tmp_path / "other.json", toy_codes()[np.random.default_rng(0).permutation(NUM_ITEMS)])
    with pytest.raises(SidrecError) as e:
        evaluate_generative(model_dir, data, other, tmp_path / "e", beams=10)
    msg = str(e.value)
    assert str(sids.resolve()) in msg and str(other) in msg and "--allow-mismatch" in msg and "\n" not in msg
    assert not (tmp_path / "e" / "results.json").exists()
    right = evaluate_generative(model_dir, data, sids, tmp_path / "right", beams=10)
    with caplog.at_level(logging.WARNING, logger="sidrec.model"):
        wrong = evaluate_generative(model_dir, data, other, tmp_path / "wrong", beams=10, allow_mismatch=True)
    assert wrong["metrics"]["HR@1"] < right["metrics"]["HR@1"] - 0.3
    assert any("going on as asked" in r.getMessage() for r in caplog.records)


def test_swapped_sids_are_refused(toy, tmp_path):
    root, data, sids, model_dir = toy
    codes = toy_codes()
    codes[[0, 5]] = codes[[5, 0]]
    with pytest.raises(SidrecError, match="trained with the SIDs"):
        evaluate_generative(model_dir, data, write_index(tmp_path / "swapped.json", codes), tmp_path / "e", beams=10)


def test_other_catalogue_is_refused_other_rows_are_not(toy, tmp_path):
    from sidrec.data import Dataset

    root, data, sids, model_dir = toy
    ds = Dataset.load(data)
    items = ds.items.copy()
    items.loc[3, "title"] = "another widget"
    Dataset.from_frames(items, ds.splits, meta=ds.meta).save(tmp_path / "other_items")
    with pytest.raises(SidrecError, match=r"trained with the dataset catalogue .*--allow-mismatch"):
        evaluate_generative(model_dir, tmp_path / "other_items", sids, tmp_path / "e", beams=10)
    # the same catalogue with other rows (e.g. RL on other prompts) is the model's
    Dataset.from_frames(ds.items, {**ds.splits, "test": ds.splits["test"].iloc[:5]}, meta=ds.meta).save(
        tmp_path / "fewer_rows")
    assert evaluate_generative(model_dir, tmp_path / "fewer_rows", sids, tmp_path / "e", beams=10)["num_samples"] == 5


def test_flipped_bytes_in_the_weights_are_a_clear_error(toy, tmp_path):
    root, data, sids, model_dir = toy
    bad = copy_model(model_dir, tmp_path / "bad")
    weights = bad / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0xFF  # inside a tensor: safetensors loads it without complaint
    weights.write_bytes(bytes(raw))
    with pytest.raises(SidrecError, match=r"model\.safetensors: weights file is corrupt"):
        evaluate_generative(bad, data, sids, tmp_path / "e", beams=10)
    # without a record, a broken header is still one clear line
    (bad / BINDING).unlink()
    raw[20] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(SidrecError, match=r"cannot be parsed \(SafetensorError"):
        evaluate_generative(bad, data, sids, tmp_path / "e", beams=10)


def test_a_copy_with_new_file_times_is_hashed_and_loads(toy, tmp_path):
    root, data, sids, model_dir = toy
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy, copy_function=shutil.copyfile)  # mtimes not kept: verified by sha256
    record = json.loads((copy / BINDING).read_text())["weights"]["model.safetensors"]
    assert (copy / "model.safetensors").stat().st_mtime_ns != record["mtime_ns"]
    rec = Recommender.load(copy, sids, data, beams=10, device="cpu")
    assert len(rec.recommend([[3, 4]], k=2)[0]) == 2


def test_nan_weights_are_a_clear_error(toy, tmp_path):
    from safetensors.torch import load_file, save_file

    root, data, sids, model_dir = toy
    bad = copy_model(model_dir, tmp_path / "nan")
    tensors = load_file(bad / "model.safetensors")
    name = next(n for n in tensors if "mlp" in n)
    tensors[name][0, 0] = float("nan")
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    write_binding(bad, toy_codes(), sids, data)  # a run that diverged records its NaN weights faithfully
    with pytest.raises(SidrecError, match=r"model\.safetensors: weight .*mlp.* holds NaN or inf"):
        evaluate_generative(bad, data, sids, tmp_path / "e", beams=10)
    with pytest.raises(SidrecError, match="NaN or inf"):
        Recommender.load(bad, sids, data, beams=10, device="cpu")


def test_recommender_refuses_other_sids(toy, tmp_path):
    root, data, sids, model_dir = toy
    codes = toy_codes()
    codes[[1, 2]] = codes[[2, 1]]
    other = write_index(tmp_path / "other.json", codes)
    with pytest.raises(SidrecError, match="--allow-mismatch"):
        Recommender.load(model_dir, other, data, beams=10, device="cpu")
    rec = Recommender.load(model_dir, other, data, beams=10, device="cpu", allow_mismatch=True)
    assert len(rec.recommend([[3, 4]], k=3)[0]) == 3


def test_rl_refuses_other_sids_before_training(toy, tmp_path):
    from sidrec.train.rl import RlConfig, run_rl

    root, data, sids, model_dir = toy
    codes = toy_codes()
    codes[[3, 4]] = codes[[4, 3]]
    other = write_index(tmp_path / "other.json", codes)
    cfg = RlConfig(rewards={"rule": 1.0}, prompts="rows", extend_prompts=0, suffix_prompts=0, num_generations=4,
                   train_batch_size=8, micro_batch_size=8)
    with pytest.raises(SidrecError, match="trained with the SIDs"):
        run_rl(cfg, model_dir, data, other, tmp_path / "rl")
    assert not (tmp_path / "rl" / "checkpoints").exists()


def test_eval_cli_refuses_in_one_line_and_takes_the_flag(toy, tmp_path):
    root, data, sids, model_dir = toy
    codes = toy_codes()
    codes[[0, 1]] = codes[[1, 0]]
    other = write_index(tmp_path / "other.json", codes)
    cmd = [sys.executable, "-m", "sidrec", "eval", "--model", str(model_dir), "--data", str(data), "--sids",
           str(other), "--out", str(tmp_path / "ev"), "--beams", "5", "--max-rows", "4"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--allow-mismatch" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(cmd + ["--allow-mismatch"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["allow_mismatch"] is True
