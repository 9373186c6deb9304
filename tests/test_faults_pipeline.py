"""The pipeline's run folder under faults: a second pipeline on the same folder, a lock left by a killed run, input
data edited between runs."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import tiny_frames
from sidrec.data import Dataset
from sidrec.data.minionerec import export_minionerec
from sidrec.errors import SidrecError
from sidrec.pipeline import LOCK, Pipeline, RunLock, load_pipeline_config


@pytest.fixture
def mini(tmp_path):
    """A tiny MiniOneRec folder (the format the data stage imports)."""
    items, splits = tiny_frames()
    Dataset.from_frames(items, splits, meta={"category": "Tiny"}).save(tmp_path / "canon")
    (tmp_path / "canon" / "sids").mkdir()
    index = {str(i): [f"<a_{i % 2}>", f"<b_{i}>", "<c_0>"] for i in range(6)}
    (tmp_path / "canon" / "sids" / "index.json").write_text(json.dumps(index))
    export_minionerec(tmp_path / "canon", tmp_path / "mini")
    return tmp_path / "mini"


def data_only(mini, run):
    return Pipeline(load_pipeline_config("configs/smoke.yaml"), mini, run).run(until="data")


@pytest.fixture
def other_process():
    """A live process that is not this one (the holder of a lock)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


def test_second_pipeline_on_a_folder_is_refused_at_once(mini, tmp_path, other_process):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(json.dumps({"pid": other_process, "host": os.uname().nodename, "since": "then"}))
    with pytest.raises(SidrecError, match=f"in use by another pipeline \\(PID {other_process} .*another --out"):
        data_only(mini, run)
    assert not (run / "pipeline.json").exists()  # refused before touching anything
    assert json.loads((run / LOCK).read_text())["pid"] == other_process  # and the holder keeps its lock

    # the command line says it in one line, exit 2
    r = subprocess.run([sys.executable, "-m", "sidrec", "pipeline", "--config", "configs/smoke.yaml", "--data", mini,
                        "--out", run], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"PID {other_process}" in r.stderr and "Traceback" not in r.stderr

    # within one process too: a folder whose lock is held cannot be locked again
    with RunLock(tmp_path / "x"):
        with pytest.raises(SidrecError, match=f"PID {os.getpid()}"):
            RunLock(tmp_path / "x").__enter__()
    assert not (tmp_path / "x" / LOCK).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(mini, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "since": "then"}))
    ledger = data_only(mini, run)
    assert ledger["stages"]["data"]["status"] == "done"
    assert f"taking over a stale lock {run / LOCK} from PID {dead.pid}" in capsys.readouterr().out
    assert not (run / LOCK).exists()  # released at the end

    # a half-written lock: held while fresh (a pipeline starting now), stale once old (killed while writing it)
    (run / LOCK).write_text("{")
    with pytest.raises(SidrecError, match="in use by another pipeline \\(PID unknown"):
        data_only(mini, run)
    os.utime(run / LOCK, (time.time() - 60, time.time() - 60))
    # ... and a failing run still releases the lock
    with pytest.raises(SidrecError, match="data folder does not exist"):
        data_only(tmp_path / "missing", run)
    assert not (run / LOCK).exists()


def test_edited_input_reruns_the_data_stage_and_what_reads_it(mini, tmp_path):
    run = tmp_path / "run"
    data_only(mini, run)
    before = {s: Pipeline(load_pipeline_config("configs/smoke.yaml"), mini, run).stage_hash(s)
              for s in ("data", "embed", "sft", "scorer")}

    # touched, not changed: the size+mtime miss is checked by hash, and nothing reruns
    item_json = next((mini / "index").glob("*.item.json"))
    os.utime(item_json, ns=(1, 1))
    assert data_only(mini, run)["last_run"]["data"] == "skipped"

    # a title edited in the source: the data stage imports again, and every stage downstream has a new key
    items = json.loads(item_json.read_text())
    items["0"]["title"] = "an edited title"
    item_json.write_text(json.dumps(items))
    ledger = data_only(mini, run)
    assert ledger["last_run"]["data"] == "done"
    assert Dataset.load(run / "dataset").items.loc[0, "title"] == "an edited title"
    after = Pipeline(load_pipeline_config("configs/smoke.yaml"), mini, run)
    assert all(after.stage_hash(s) != h for s, h in before.items())
    assert after.is_done("data")


def test_scorer_killed_between_seeds_keeps_the_finished_ones(mini, tmp_path, monkeypatch):
    import sidrec.baselines.sasrec as sasrec
    from sidrec.pipeline import BY_NAME

    cfg = load_pipeline_config("configs/smoke.yaml", ["scorer.seeds=[1, 2]",
                                                      "scorer.sasrec={hidden: 16, blocks: 1, max_epochs: 1}"])
    run = tmp_path / "run"
    p = Pipeline(cfg, mini, run)
    p.run(until="data")
    trained, real = [], sasrec.run_sasrec

    def dies_on_seed_2(data, out, config, **kw):
        trained.append(config.seed)
        if config.seed == 2:
            raise KeyboardInterrupt("killed")
        return real(data, out, config, **kw)

    monkeypatch.setattr(sasrec, "run_sasrec", dies_on_seed_2)
    with pytest.raises(KeyboardInterrupt):
        BY_NAME["scorer"].run(p)
    monkeypatch.setattr(sasrec, "run_sasrec", lambda data, out, config, **kw: trained.append(config.seed)
                        or real(data, out, config, **kw))
    out = BY_NAME["scorer"].run(p)  # resumed: seed 1 is kept
    assert trained == [1, 2, 2] and out["runs"] == [str(run / "scorer" / "seed1"), str(run / "scorer" / "seed2")]

    # another key (a changed setting) trains every seed again
    p2 = Pipeline(load_pipeline_config("configs/smoke.yaml", ["scorer.seeds=[1, 2]", "scorer.sasrec={hidden: 16, "
                                                              "blocks: 1, max_epochs: 1, dropout: 0.1}"]), mini, run)
    BY_NAME["scorer"].run(p2)
    assert trained == [1, 2, 2, 1, 2]
