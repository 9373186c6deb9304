"""bench/gpu.py end to end on the CPU with small shapes (the GPU run itself needs a lent device)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_gpu_bench_runs_on_cpu_tiny_and_writes_its_figures(tmp_path):
    out = tmp_path / "gpu.json"
    res = _run("--cpu", "--tiny", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["tiny"] and r["device"] == "cpu" and r["sft"]["tokens_per_s"] > 0
    assert r["eval"]["beams"] == 50 and r["eval"]["rows_per_s"] > 0
    assert r["rl"]["group"] == 32 and r["rl"]["seconds_per_step"] > 0
    assert "SFT" in res.stdout and "rows/s" in res.stdout


def test_gpu_bench_without_cuda_skips_with_a_message(tmp_path):
    res = _run("--out", str(tmp_path / "gpu.json"), env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 0 and "no CUDA device found; skipped" in res.stdout
    assert not (tmp_path / "gpu.json").exists()
