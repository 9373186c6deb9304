"""Several processes: `accelerate launch --multi_gpu --num_processes 2` on this CPU (2 processes, gloo backend).

Evaluation gives byte-identical files to one process; SFT and RL follow one process's curve at the same global
batch; a per-process batch that does not divide the global batch is refused before anything loads."""

import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from generative_fixtures import TINY, make_toy
from sidrec.errors import SidrecError
from sidrec.train.distributed import accumulation_steps

SRC = Path(__file__).resolve().parents[1] / "src"
SFT = dict(small=TINY, epochs=1, batch_size=16, micro_batch_size=4, learning_rate=5e-3, eval_steps=5,
           early_stopping_patience=None, cutoff_len=128, seed=0, tasks={"seqrec": 1.0})
# 2 processes x micro 16 = 32 completions per step (accumulation 1); one process accumulates 2 micro-batches
RL = dict(num_generations=8, train_batch_size=32, micro_batch_size=16, sample_train=True, sample_size=48, epochs=1,
          learning_rate=1e-2, beta=0.04, eval_step=5, eval_beams=10, max_valid_rows=8, keep_best=False,
          rewards={"rule": 1.0}, prompts="rows", loss="grpo", scale_rewards="group", extend_prompts=0,
          suffix_prompts=0, seed=0)


@contextmanager
def one_thread():
    """Run in this process as each launched one does (OMP_NUM_THREADS=1): the same arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes N -m sidrec ARGS`, each process on one thread."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "sidrec", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def config_file(path: Path, section: str, cfg: dict) -> Path:
    path.write_text(json.dumps({section: cfg}))  # JSON is YAML
    return path


def logged(run: Path, key: str) -> dict[int, float]:
    return {e["step"]: e[key] for e in json.loads((run / "train_log.json").read_text()) if key in e}


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory):
    """The toy catalogue, SFT on one process (in this one) and on two launched ones, same config."""
    from sidrec.train.sft import SftConfig, run_sft

    root = tmp_path_factory.mktemp("dist")
    data, sids = make_toy(root)
    with one_thread():
        run_sft(SftConfig(**SFT), data, sids, root / "one")
    res = launch("sft", "--data", str(data), "--sids", str(sids), "--out", str(root / "two"),
                 "--config", str(config_file(root / "sft.yaml", "sft", SFT)))
    assert res.returncode == 0, res.stderr[-3000:]
    return root, data, sids


def test_sft_two_processes_follow_one_at_the_same_global_batch(sft_runs):
    root, _, _ = sft_runs
    one, two = root / "one", root / "two"
    # 16 examples per step either way: 1 x 4 x 4 accumulated, or 2 processes x 4 x 2 (not 2 x 16 steps of 8)
    steps = manifest(one)["global_step"]
    assert steps == -(-manifest(one)["num_train_examples"] // 16) and manifest(two)["global_step"] == steps
    for key in ("loss", "eval_loss"):
        a, b = logged(one, key), logged(two, key)
        assert a.keys() == b.keys() and len(a) >= 4, (key, a, b)
        assert all(abs(a[s] - b[s]) < 1e-3 for s in a), (key, a, b)  # seen: 5e-7
    first, last = logged(one, "loss")[1], logged(one, "loss")[steps]
    assert last < first - 1.0  # it learnt: a flat curve would match trivially


def test_eval_two_processes_write_the_files_of_one(sft_runs, tmp_path):
    from sidrec.evaluate.generative import evaluate_generative

    root, data, sids = sft_runs
    opts = dict(split="train", beams=5, batch_size=4, cutoff_len=128, max_rows=60)  # 15 batches, one uneven share
    with one_thread():
        evaluate_generative(root / "one" / "model", data, sids, tmp_path / "one", **opts)
    res = launch("eval", "--model", str(root / "one" / "model"), "--data", str(data), "--sids", str(sids),
                 "--out", str(tmp_path / "two"), "--split", "train", "--beams", "5", "--batch-size", "4",
                 "--cutoff-len", "128", "--max-rows", "60")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("metrics (exact items)") == 1  # the main process reports, once
    one_pred, two_pred = ((tmp_path / d / "predictions.jsonl").read_bytes() for d in ("one", "two"))
    assert len(one_pred.splitlines()) == 60 and one_pred == two_pred
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    timing = {"decode_seconds", "rows_per_second", "num_processes"}
    assert {k: v for k, v in one.items() if k not in timing} == {k: v for k, v in two.items() if k not in timing}


def test_rl_two_processes_follow_one_at_the_same_global_batch(sft_runs, tmp_path):
    from sidrec.train.rl import RlConfig, run_rl

    root, data, sids = sft_runs
    model = root / "one" / "model"
    with one_thread():
        run_rl(RlConfig(**RL), model, data, sids, tmp_path / "one")
    res = launch("rl", "--model", str(model), "--data", str(data), "--sids", str(sids), "--out", str(tmp_path / "two"),
                 "--config", str(config_file(tmp_path / "rl.yaml", "rl", RL)))
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert manifest(one)["global_step"] == manifest(two)["global_step"] == 48 * 8 // 32
    for key, tol in (("reward", 1e-6), ("entropy", 1e-3), ("loss", 1e-3)):
        a, b = logged(one, key), logged(two, key)
        assert a.keys() == b.keys() and len(a) >= 10, (key, a, b)
        assert all(abs(a[s] - b[s]) <= tol * max(1.0, abs(a[s])) for s in a), (key, a, b)
    assert max(logged(one, "loss").values()) > 1e-4  # the KL term moves: the losses compared are not all 0
    history = [json.loads((r / "valid_history.json").read_text()) for r in (one, two)]
    assert history[0] == history[1] and len(history[0]) >= 3


# ------------------------------------------------------------------------- the global batch and the processes
def test_accumulation_steps_cover_the_global_batch(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert accumulation_steps(16, 4, ("batch_size", "micro_batch_size")) == 4
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert accumulation_steps(16, 4, ("batch_size", "micro_batch_size")) == 2
    with pytest.raises(SidrecError, match=r"batch_size=16 is the global batch .* micro_batch_size=16 x 2 processes "
                                          r"= 32"):
        accumulation_steps(16, 16, ("batch_size", "micro_batch_size"))
    # RL: 48 completions over 2 processes is 24 each, not whole groups of 16
    with pytest.raises(SidrecError, match=r"train_batch_size=48 .* whole groups of 16 on each process"):
        accumulation_steps(48, 8, ("train_batch_size", "micro_batch_size"), group=16)


def test_sft_and_rl_refuse_an_uneven_share_before_loading(monkeypatch, tmp_path):
    from sidrec.train.rl import RlConfig, run_rl
    from sidrec.train.sft import SftConfig, run_sft

    monkeypatch.setenv("WORLD_SIZE", "4")
    missing = tmp_path / "no-such-data"  # nothing is read: the settings fail first
    with pytest.raises(SidrecError, match=r"batch_size=16 .* micro_batch_size=8 x 4 processes = 32"):
        run_sft(SftConfig(**{**SFT, "micro_batch_size": 8}), missing, missing, tmp_path / "sft")
    with pytest.raises(SidrecError, match=r"train_batch_size=32 .* micro_batch_size=16 x 4 processes = 64"):
        run_rl(RlConfig(**RL), missing, missing, missing, tmp_path / "rl")


def test_launched_sft_with_an_uneven_share_is_one_line(tmp_path):
    cfg = config_file(tmp_path / "sft.yaml", "sft", {**SFT, "micro_batch_size": 16})
    res = launch("sft", "--data", str(tmp_path / "data"), "--sids", str(tmp_path / "sids"), "--out",
                 str(tmp_path / "out"), "--config", str(cfg))
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors and all(e == errors[0] for e in errors), res.stderr[-3000:]
    assert "batch_size=16 is the global batch and must be a multiple of micro_batch_size=16 x 2 processes" in errors[0]
