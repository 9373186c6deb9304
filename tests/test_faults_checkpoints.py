"""Faults during a checkpoint save never stop a run for good, for SFT and RL alike.

A process killed mid-save, or a disk that fills up mid-save, leaves a `checkpoint-N/` without `trainer_state.json`
(HF's `get_last_checkpoint` still picks it, and every re-run used to fail). The re-run must remove it, resume from the
last whole checkpoint and end with the same model, bit for bit, as a run that was never disturbed.
"""

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers.trainer_utils import get_last_checkpoint

import sidrec
from generative_fixtures import TINY, make_toy
from sidrec.errors import SidrecError
from sidrec.train.checkpoints import incomplete_reason, is_disk_full, resume_point
from sidrec.train.rl import RlConfig, run_rl
from sidrec.train.sft import SftConfig, run_sft

# 20 steps, a checkpoint every 3 (the second save is checkpoint-6); RL: 8 steps, a checkpoint every 2 (checkpoint-4)
SFT = SftConfig(small=TINY, epochs=2, batch_size=32, micro_batch_size=32, learning_rate=5e-3, eval_steps=3,
                early_stopping_patience=None, cutoff_len=128, seed=0, tasks={"seqrec": 1.0})
RL = RlConfig(num_generations=8, train_batch_size=32, micro_batch_size=32, sample_train=True, sample_size=32,
              epochs=1, learning_rate=1e-2, beta=0.0, eval_step=2, eval_beams=10, max_valid_rows=20, keep_best=True,
              rewards={"rule": 1.0}, prompts="rows", loss="grpo", scale_rewards="group", extend_prompts=0,
              suffix_prompts=0, seed=0)
CUT = {"sft": 6, "rl": 4, "rl_sampled": 4}  # the checkpoint whose save is cut short: the second one
RESUMED = {"sft": 3, "rl": 2, "rl_sampled": 2}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy data and the undisturbed runs: SFT (also RL's starting model), RL, RL with sampled rollouts."""
    root = tmp_path_factory.mktemp("faults")
    data, sids = make_toy(root)
    toy = {"data": data, "sids": sids}
    for kind in CUT:
        toy[kind] = root / kind
        train(kind, toy, root / kind)
    return toy


def train(kind: str, toy: dict, out: Path) -> Path:
    if kind == "sft":
        return run_sft(SFT, toy["data"], toy["sids"], out)
    cfg = RL.model_copy(update={"rollout": "sample"}) if kind == "rl_sampled" else RL
    return run_rl(cfg, toy["sft"] / "model", toy["data"], toy["sids"], out)


def assert_same_result(kind: str, toy: dict, out: Path) -> None:
    ref = toy[kind]
    a, b = load_file(ref / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if kind == "sft":
        log = lambda run: json.loads((run / "train_log.json").read_text())
        evals = lambda run: [e["eval_loss"] for e in log(run) if "eval_loss" in e]
        assert evals(out) == evals(ref) and len(evals(ref)) == 7
    else:
        assert (out / "valid_history.json").read_text() == (ref / "valid_history.json").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_from"].endswith(f"checkpoint-{RESUMED[kind]}")


def dying_save(real_save, die, saves: list):
    """`torch.save` that, on the second optimizer save, writes half of optimizer.pt and then calls `die`."""
    def save(obj, f, *a, **kw):
        if str(f).endswith("optimizer.pt"):
            saves.append(f)
            if len(saves) == 2:
                buf = io.BytesIO()
                real_save(obj, buf)
                Path(f).write_bytes(buf.getvalue()[: buf.tell() // 2])
                die()
        return real_save(obj, f, *a, **kw)

    return save


CHILD = """
import os, sys, torch
sys.path.insert(0, {tests!r})
import test_faults_checkpoints as t
torch.save = t.dying_save(torch.save, lambda: os._exit(137), [])  # the process dies in the middle of a file
t.train(sys.argv[1], {{k: t.Path(v) for k, v in {toy!r}.items()}}, t.Path(sys.argv[2]))
"""


@pytest.mark.parametrize("kind", ["sft", "rl", "rl_sampled"])
def test_killed_mid_save_resumes_to_the_same_model(kind, toy, tmp_path, capsys):
    out = tmp_path / kind
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(sidrec.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    child = CHILD.format(tests=str(Path(__file__).parent), toy={k: str(v) for k, v in toy.items()})
    r = subprocess.run([sys.executable, "-c", child, kind, str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == 137, r.stderr[-2000:]
    cut = out / "checkpoints" / f"checkpoint-{CUT[kind]}"
    assert cut.is_dir() and not (cut / "trainer_state.json").exists()
    assert get_last_checkpoint(str(out / "checkpoints")) == str(cut)  # what HF alone would resume from

    capsys.readouterr()
    train(kind, toy, out)
    said = capsys.readouterr().out
    assert f"removed the unfinished checkpoint {cut} (no trainer_state.json" in said
    assert f"Resuming from checkpoint {RESUMED[kind]} ({out / 'checkpoints' / f'checkpoint-{RESUMED[kind]}'})" in said
    assert not cut.exists() or (cut / "trainer_state.json").exists()
    assert_same_result(kind, toy, out)


@pytest.fixture(params=["tmpfs", "injected"])
def full_disk(request, tmp_path, monkeypatch):
    """(folder, free_space): a folder whose disk fills up during the second checkpoint save. `tmpfs`: a 2 MiB tmpfs
    mounted there (skipped where mounting is not permitted); `injected`: torch.save raises ENOSPC half-way."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if request.param == "injected":
        def enospc():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(torch, "save", dying_save(torch.save, enospc, []))
        yield folder, monkeypatch.undo
        return
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected variant covers a full disk")
    try:
        yield folder, lambda: subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)
    finally:  # the resumed run's weights may still be mapped: detach lazily if busy
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("kind", ["sft", "rl"])
def test_full_disk_is_one_line_then_the_rerun_resumes(kind, toy, full_disk, capsys):
    folder, free_space = full_disk
    out = folder / kind
    cut = out / "checkpoints" / f"checkpoint-{CUT[kind]}"
    with pytest.raises(SidrecError) as e:
        train(kind, toy, out)
    assert str(e.value) == (f"the disk is full: {kind} stopped while saving {cut}; free space, then re-run the same "
                            "command to resume")
    free_space()
    train(kind, toy, out)
    assert "Resuming from checkpoint" in capsys.readouterr().out
    assert_same_result(kind, toy, out)


def test_unfinished_checkpoints_are_told_from_whole_ones(toy, tmp_path, capsys):
    whole = toy["sft"] / "checkpoints" / "checkpoint-20"
    assert incomplete_reason(whole) is None
    checkpoints = tmp_path / "checkpoints"

    def broken(step, damage):
        folder = checkpoints / f"checkpoint-{step}"
        shutil.copytree(whole, folder)
        state = json.loads((folder / "trainer_state.json").read_text())
        (folder / "trainer_state.json").write_text(json.dumps({**state, "global_step": step}))
        damage(folder)
        return incomplete_reason(folder)

    half = lambda name: lambda f: (f / name).write_bytes((f / name).read_bytes()[: (f / name).stat().st_size // 2])
    assert broken(20, lambda f: None) is None
    assert broken(21, lambda f: (f / "trainer_state.json").unlink()) == "no trainer_state.json"
    assert broken(22, half("trainer_state.json")) == "unreadable trainer_state.json"
    assert broken(23, half("model.safetensors")) == "model.safetensors is truncated or missing"
    assert broken(24, half("optimizer.pt")) == "optimizer.pt is truncated"
    assert broken(25, lambda f: (f / "model.safetensors").unlink()) == "no model weights"
    assert broken(26, lambda f: (f / "trainer_state.json").write_text(
        json.dumps({**json.loads((f / "trainer_state.json").read_text()), "global_step": 20}))) \
        == "trainer_state.json is for step 20"
    (checkpoints / "notes").mkdir()

    assert resume_point(checkpoints, "sft") == str(checkpoints / "checkpoint-20")
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 7 and said[-1] == f"[sft] Resuming from checkpoint 20 ({checkpoints / 'checkpoint-20'})"
    assert said[0].startswith(f"[sft] removed the unfinished checkpoint {checkpoints / 'checkpoint-26'} ")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-20", "notes"]
    assert resume_point(tmp_path / "none", "sft") is None


def test_each_writers_full_disk_error_is_recognised(tmp_path):
    """The three ways a full disk surfaces: OSError (open/write), safetensors' error, torch.save's RuntimeError."""
    from safetensors.torch import save_file

    folder = tmp_path / "disk"
    folder.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    big = {"w": torch.zeros(200_000)}
    writes = [lambda: (folder / "a.json").write_text("x" * 400_000), lambda: save_file(big, folder / "b.safetensors"),
              lambda: torch.save(big, folder / "c.pt")]
    try:
        for write in writes:
            with pytest.raises(Exception) as e:
                write()
            assert is_disk_full(e.value, folder), repr(e.value)
            for f in folder.iterdir():
                f.unlink()
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
    assert not is_disk_full(RuntimeError("size mismatch for lm_head.weight"), tmp_path)
