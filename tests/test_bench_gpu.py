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


def test_suite_runs_it_and_skips_it_with_a_row_without_cuda(tmp_path, monkeypatch):
    import pytest

    sys.path.insert(0, str(ROOT / "bench"))
    import run_all

    assert "gpu" in [b[0] for b in run_all.BENCHES]
    monkeypatch.setattr(run_all, "fixture", lambda data: None)
    monkeypatch.setattr(run_all, "OUT", tmp_path)
    monkeypatch.setattr(run_all, "cuda_available", lambda: False)
    real_run = subprocess.run

    def run(cmd, *a, **k):
        if any("gpu.py" in str(c) for c in cmd):
            pytest.fail("a skipped benchmark must not run")
        return real_run(cmd, *a, **k)

    monkeypatch.setattr(run_all.subprocess, "run", run)
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--quick", "--only", "gpu"])
    assert run_all.main() == 0
    row = json.loads((tmp_path / "results.json").read_text())["benchmarks"][-1]
    assert row["name"] == "gpu" and row["rc"] == 0 and row["figures"] == "skipped: no CUDA device on this machine"
    assert row["command"] == "python bench/gpu.py"  # one size: no --quick
    assert "| gpu | skipped: no CUDA device on this machine |" in (tmp_path / "results.md").read_text()
