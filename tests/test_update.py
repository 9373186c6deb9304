"""`sidrec update` and `sidrec data split-time`: continue a trained model on a later slice with new items.

The toy: 12 old items in a cycle (i is followed by i+1). From time T on, a new item 12 always follows item 5 (and
is followed by 6). A model trained before T cannot recommend item 12 at all; after the update it must, without
forgetting the old transitions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from generative_fixtures import TINY, toy_codes
from sidrec.data import Dataset
from sidrec.data.temporal import split_time, split_time_folders
from sidrec.errors import SidrecError
from sidrec.io import read_manifest, write_json, write_manifest
from sidrec.train.config import SftConfig, UpdateConfig
from sidrec.train.sft import run_sft
from sidrec.train.update import Trained, check_after_training, check_sid_lineage, run_update

OLD = list(range(12))
NEW = [0, 1, 2, 3, 4, 5, 12, 6, 7, 8, 9, 10, 11]  # the cycle after T: item 12 between 5 and 6
T = 100_000
NEW_SID = [0, 0, 2]  # <c_2>: a code no old item uses, so one token is added


def rows(cycle, users, t0, rng, seq_len=6):
    out = []
    for u in users:
        start = int(rng.integers(len(cycle)))
        seq = [cycle[(start + k) % len(cycle)] for k in range(seq_len)]
        out += [(u, seq[:i], seq[i], t0 + u * 10 + i) for i in range(1, seq_len)]
    return out


def make_world(root):
    """The full dataset (13 items; train = before T and after it; valid/test after it) and the old SIDs."""
    rng = np.random.default_rng(0)
    before = rows(OLD, range(80), 0, rng)
    after = rows(NEW, range(80, 240), T, rng)
    cols = ["user", "history", "target", "timestamp"]
    splits = {"train": pd.DataFrame(before + after[:400], columns=cols),
              "valid": pd.DataFrame(after[400:600], columns=cols), "test": pd.DataFrame(after[600:], columns=cols)}
    items = pd.DataFrame({"item_id": range(13), "title": [f"widget number {i}" for i in range(13)]})
    Dataset.from_frames(items, splits, meta={"name": "toy", "max_history": 10}).save(root / "full")
    write_index(root / "sids0", toy_codes())
    return root / "full", root / "sids0"


def write_index(folder, codes):
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "index.json", {str(i): [f"<{'abc'[l]}_{c}>" for l, c in enumerate(row) if c >= 0]
                                       for i, row in enumerate(np.asarray(codes).tolist())}, indent=None)


def assigned(parent, out, new_codes):
    """A SID folder as `sidrec sid assign` leaves it: the parent's entries, new ones after, the parent recorded."""
    codes = np.vstack([toy_codes(), new_codes])
    write_index(out, codes)
    write_manifest(out, "sid", config={}, inputs={"parent_index": parent / "index.json"},
                   extra={"parent": {"path": str(parent), "manifest": read_manifest(parent)}})
    return out


def sft_config(**kw):
    base = dict(small=TINY, epochs=15, batch_size=32, micro_batch_size=32, learning_rate=5e-3, eval_steps=1000,
                early_stopping_patience=None, cutoff_len=128, seed=0, tasks={"seqrec": 1.0, "title2sid": 1.0})
    return SftConfig(**{**base, **kw})


UPDATE = dict(epochs=6, learning_rate=5e-3, replay_fraction=0.5, early_stopping_patience=None, eval_steps=1000)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("update")
    full, sids0 = make_world(root)
    summary = split_time_folders(full, root / "old", root / "new", at=T)
    assert summary["old_items"] == 12 and summary["new_items"] == summary["new_items_in_slice"] == 1
    stale = run_sft(sft_config(), root / "old", sids0, root / "stale")
    sids1 = assigned(sids0, root / "sids1", [NEW_SID])
    updated = run_update(UpdateConfig(**UPDATE), stale, root / "new", sids1, root / "updated")
    return root, stale, sids1, updated


def hits(model, data, sids, out, k=1):
    """Per test row: is the target in the model's top k (row order of the test split)."""
    from sidrec.evaluate.generative import evaluate_generative

    evaluate_generative(model, data, sids, out, beams=5)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return np.array([r["target"] in r["predictions"][:k] for r in rows])


def test_split_time_renumbers_new_items_after_old_ones(tmp_path):
    items = pd.DataFrame({"item_id": range(4), "title": ["a", "new", "b", "c"]})
    cols = ["user", "history", "target", "timestamp"]
    train = pd.DataFrame([(0, [0], 2, 10), (1, [2], 3, 20), (0, [0, 2], 1, 30), (1, [2, 3], 0, 40)], columns=cols)
    later = pd.DataFrame([(0, [2, 1], 3, 50), (1, [3, 0], 2, 60)], columns=cols)
    ds = Dataset.from_frames(items, {"train": train, "valid": later, "test": later})
    old, new, s = split_time(ds, at=30)
    assert old.titles() == ["a", "b", "c"] and new.titles() == ["a", "b", "c", "new"]  # old ids kept, new after
    assert new.splits["train"]["target"].tolist() == [3, 0] and new.splits["train"]["history"][0] == [0, 1]
    assert old.splits["valid"]["target"].tolist() == [1]  # only the later rows on old items
    assert (s["old_rows"], s["new_rows"], s["new_items_in_slice"]) == (2, 2, 1)
    assert split_time(ds, fraction=0.5)[2]["at"] == 30  # the same cut as a share of the rows
    no_time = Dataset.from_frames(items, {k: v.assign(timestamp=None) for k, v in ds.splits.items()})
    assert split_time(no_time, fraction=0.5)[2]["old_rows"] == 2
    with pytest.raises(SidrecError, match="no timestamps.*--fraction"):
        split_time(no_time, at=30)
    with pytest.raises(SidrecError, match="leaves no training row before"):
        split_time(ds, at=5)
    with pytest.raises(SidrecError, match="either as a time"):
        split_time(ds)


def test_update_adds_tokens_only_for_unused_codes_and_keeps_old_ids(world, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, stale, sids1, updated = world
    before, after = AutoTokenizer.from_pretrained(stale), AutoTokenizer.from_pretrained(updated)
    old_vocab = before.get_vocab()
    assert {t: after.get_vocab()[t] for t in old_vocab} == old_vocab
    assert sorted(set(after.get_vocab()) - set(old_vocab)) == ["<c_2>"]
    assert AutoModelForCausalLM.from_pretrained(updated).get_input_embeddings().weight.shape[0] >= len(after)
    manifest = read_manifest(updated.parent)
    assert manifest["stage"] == "update" and manifest["added_sid_tokens"] == ["<c_2>"]
    assert manifest["num_replay_examples"] > 0 and manifest["train_period"]["end_timestamp"] > T
    # a new item whose SID reuses old codes adds no token
    reuse = assigned(root / "sids0", tmp_path / "sids-reuse", [[2, 0, 1]])
    cfg = UpdateConfig(**{**UPDATE, "epochs": 0.1})
    again = run_update(cfg, stale, root / "new", reuse, tmp_path / "reuse")
    assert AutoTokenizer.from_pretrained(again).get_vocab() == old_vocab
    assert read_manifest(tmp_path / "reuse")["added_sid_tokens"] == []


def test_updated_model_ranks_the_new_item_and_keeps_the_old_ones(world, tmp_path):
    root, stale, sids1, updated = world
    new = Dataset.load(root / "new").splits["test"]
    to_new = (new["target"] == 12).to_numpy()
    on_old = np.array([max(h) < 12 and t < 12 for h, t in zip(new["history"], new["target"])])
    assert to_new.sum() >= 5 and on_old.sum() >= 50
    after = hits(updated, root / "new", sids1, tmp_path / "after", k=3)
    stale_old = hits(stale, root / "old", root / "sids0", tmp_path / "before", k=3)  # the same rows: old items only
    assert len(stale_old) == on_old.sum()
    print(f"HR@3 new-item targets: stale 0 (no such item), updated {after[to_new].mean():.3f}; old-item rows: "
          f"stale {stale_old.mean():.3f}, updated {after[on_old].mean():.3f}")
    assert after[to_new].mean() >= 0.8  # chance 3/13; the stale model's catalogue has no item 12 at all
    assert stale_old.mean() >= 0.8 and after[on_old].mean() >= stale_old.mean() - 0.1


def test_bad_updates_are_one_line_errors_before_training(world, tmp_path):
    root, stale, sids1, updated = world
    cfg = UpdateConfig(**UPDATE)
    # the slice overlaps the model's training period (the full dataset's train holds the old rows)
    with pytest.raises(SidrecError, match=r"train.parquet: row 0: target time .* not after the end of .*training"):
        run_update(cfg, stale, root / "full", sids1, tmp_path / "o")
    # SIDs that were not assigned from the model's (a copy of the index without its lineage)
    stray = tmp_path / "stray"
    stray.mkdir()
    shutil.copy(sids1 / "index.json", stray / "index.json")
    with pytest.raises(SidrecError, match="neither the SIDs .* was trained with .* nor assigned from them"):
        run_update(cfg, stale, root / "new", stray, tmp_path / "o")
    # an old item's SID changed after the assignment
    edited = assigned(root / "sids0", tmp_path / "edited", [NEW_SID])
    index = json.loads((edited / "index.json").read_text())
    index["3"], index["4"] = index["4"], index["3"]
    (edited / "index.json").write_text(json.dumps(index))
    with pytest.raises(SidrecError, match="item 3's SID <a_1><b_0><c_0> differs from <a_0><b_3><c_1>"):
        run_update(cfg, stale, root / "new", edited, tmp_path / "o")
    with pytest.raises(SidrecError, match="must be a new folder"):
        run_update(cfg, stale, root / "new", sids1, stale.parent)
    with pytest.raises(SidrecError, match="no sft / update / rl manifest.json"):
        run_update(cfg, root / "new", root / "new", sids1, tmp_path / "o")
    with pytest.raises(SidrecError, match="update .*micro_batch_size: must divide batch_size=32"):
        run_update(UpdateConfig(micro_batch_size=5), stale, root / "new", sids1, tmp_path / "o")
    # an updated model records its own period: the same slice again overlaps it
    with pytest.raises(SidrecError, match="not after the end of .*updated/model's training period"):
        run_update(cfg, updated, root / "new", sids1, tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing was trained or written


def test_without_timestamps_a_row_the_model_saw_is_refused(world):
    root, stale, _, _ = world
    old, new = Dataset.load(root / "old"), Dataset.load(root / "full")
    trained = Trained(stale, {}, root / "sids0", None, [root / "old"], end_timestamp=None)
    with pytest.raises(SidrecError, match="row 0 is a row .* was trained on"):
        check_after_training(trained, [old], new, root / "full")
    check_after_training(trained, [old], Dataset.load(root / "new"), root / "new")  # the later rows pass


def test_lineage_follows_real_assign_manifests(tmp_path):
    """`sidrec sid assign`'s own manifests (parent's index sha256, a chain of assigns) are what the check reads."""
    from sidrec.io import file_sha256
    from sidrec.sid import assign_sids, build_sids
    from sidrec.sid.build import thread_limit

    X = np.random.default_rng(0).normal(size=(14, 8)).astype(np.float32)
    for name, rows_ in (("old", X[:12]), ("new", X[12:13]), ("newer", X[13:])):
        np.save(tmp_path / f"{name}.npy", rows_)
    with thread_limit(1):
        build_sids("rqkmeans", tmp_path / "old.npy", None, tmp_path / "s0", codebook=4, seed=1, threads=1)
        assign_sids(tmp_path / "s0", tmp_path / "new.npy", tmp_path / "s1", threads=1)
        assign_sids(tmp_path / "s1", tmp_path / "newer.npy", tmp_path / "s2", threads=1)
    trained = Trained(tmp_path / "m", {}, tmp_path / "s0", file_sha256(tmp_path / "s0" / "index.json"), [], None)
    for s in ("s0", "s1", "s2"):
        check_sid_lineage(trained, tmp_path / s)
    other = Trained(tmp_path / "m", {}, tmp_path / "s1", file_sha256(tmp_path / "s1" / "index.json"), [], None)
    with pytest.raises(SidrecError, match="nor assigned from them"):
        check_sid_lineage(other, tmp_path / "s0")  # a parent is not derived from its child


def test_cli_split_time_and_update_error(world, tmp_path):
    root, stale, sids1, _ = world
    run = lambda *a: subprocess.run([sys.executable, "-m", "sidrec", *map(str, a)], capture_output=True, text=True)
    r = run("data", "split-time", root / "full", "--at", "1970-01-02T03:46:40", "--out-old", tmp_path / "a",
            "--out-new", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert "1 new items" in r.stdout and Dataset.load(tmp_path / "b").num_items == 13
    assert Dataset.load(tmp_path / "a").splits["train"].equals(Dataset.load(root / "old").splits["train"])
    r = run("update", "--model", stale, "--data", root / "full", "--sids", sids1, "--out", tmp_path / "u",
            "--set", "update.replay_fraction=2")
    assert r.returncode == 2 and "replay_fraction" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_model_folder_must_carry_its_training_record(world, tmp_path):
    root, stale, sids1, _ = world
    cfg = UpdateConfig(**UPDATE)
    with pytest.raises(SidrecError, match="a run folder; pass its model folder"):
        run_update(cfg, stale.parent, root / "new", sids1, tmp_path / "o")
    bare = tmp_path / "run" / "model"
    shutil.copytree(stale, bare)
    write_json(tmp_path / "run" / "manifest.json", {"stage": "sft", "config": {}})
    with pytest.raises(SidrecError, match="manifest.json: no config or inputs data, sids recorded"):
        run_update(cfg, bare, root / "new", sids1, tmp_path / "o")
    # an RL model was trained on its SFT model's data and SIDs
    from sidrec.train.update import trained_record

    rl = tmp_path / "rl" / "model"
    shutil.copytree(stale, rl)
    write_json(tmp_path / "rl" / "manifest.json", {"stage": "rl", "config": {"beta": 0.1}, "inputs": {
        k: {"path": str(p)} for k, p in (("model", stale), ("data", root / "old"), ("sids", root / "sids0"))}})
    record = trained_record(rl)
    assert record.model == rl and record.sids == root / "sids0" and record.sft["epochs"] == 15
    # the data it was trained on is gone: nothing to replay
    gone = tmp_path / "gone" / "model"
    shutil.copytree(stale, gone)
    manifest = read_manifest(stale.parent)
    manifest["inputs"]["data"]["path"] = str(tmp_path / "deleted")
    write_json(tmp_path / "gone" / "manifest.json", manifest)
    with pytest.raises(SidrecError, match="deleted: the data .* was trained on is gone.*replay_fraction=0"):
        run_update(cfg, gone, root / "new", sids1, tmp_path / "o")


def test_update_examples_are_the_slice_new_items_and_a_replay_sample(world):
    from sidrec.train.sft import train_examples
    from sidrec.train.update import update_examples

    root, _, _, _ = world
    cfg, old, new = sft_config(), Dataset.load(root / "old"), Dataset.load(root / "new")
    codes = np.vstack([toy_codes(), [NEW_SID]])
    fresh, replay = update_examples(cfg, new, codes, 12, [old], 0.25)
    assert sum(e["task"] == "seqrec" for e in fresh) == len(new.splits["train"])
    assert [e["item"] for e in fresh if e["task"] == "title2sid"] == [12]  # alignment of the new item only
    old_examples = list(train_examples(cfg, old, toy_codes()))
    assert len(replay) == round(0.25 * len(old_examples)) and all(e in old_examples for e in replay)
    assert update_examples(cfg, new, codes, 12, [old], 0.0)[1] == []


def test_cli_update_runs(world, tmp_path):
    root, stale, sids1, _ = world
    r = subprocess.run([sys.executable, "-m", "sidrec", "update", "--model", str(stale), "--data", str(root / "new"),
                        "--sids", str(sids1), "--out", str(tmp_path / "u"), "--set", "update.epochs=0.1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "model saved to" in r.stdout and read_manifest(tmp_path / "u")["stage"] == "update"


def test_update_learning_rate_defaults_to_the_models_own(world):
    from sidrec.train.update import effective_config, trained_record

    _, stale, _, _ = world
    trained = trained_record(stale)
    assert effective_config(UpdateConfig(), trained).learning_rate == 5e-3  # sft_config()'s rate
    assert effective_config(UpdateConfig(learning_rate=1e-4), trained).learning_rate == 1e-4


PIPE = ["embed.model=minilm", "embed.max_seq_length=16", "sid.codebook=4", "sid.threads=1",
        "sft.small={hidden_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 128, "
        "vocab_size: 300, dropout: 0.0}", "sft.epochs=4", "sft.batch_size=32", "sft.micro_batch_size=32",
        "sft.learning_rate=5e-3", "sft.early_stopping_patience=null", "sft.seed=0", "scorer.enabled=false",
        "rl.enabled=false", "rerank.enabled=false", "eval.beams=10", "update.epochs=1", "update.threads=1"]


def test_pipeline_update_from_a_run(world, tmp_path):
    """`--update-from RUN`: the slice through data and embed, the new item's SID assigned from RUN's codebooks, RUN's
    model updated, then evaluated; finished stages are skipped on a re-run; a folder that is no run is refused."""
    from sidrec.pipeline import Pipeline, load_pipeline_config, run_pipeline
    from sidrec.sid.io import load_sids

    root = world[0]
    cfg = load_pipeline_config("configs/smoke.yaml", PIPE)
    parent = tmp_path / "parent"
    Pipeline(cfg, root / "old", parent).run(until="eval")
    run = tmp_path / "updated"
    ledger = run_pipeline(cfg, root / "new", run, update_from=parent)
    st = ledger["stages"]
    assert {n: e["status"] for n, e in st.items()} == {n: "done" for n in ("data", "embed", "sid", "update", "eval",
                                                                            "analyze")}
    assert st["eval"]["outputs"]["model"] == str(run / "update" / "model") == st["update"]["outputs"]["model"]
    assert st["update"]["outputs"]["parent_model"] == str(parent / "sft" / "model")
    old, _ = load_sids(parent / "sid")
    new, _ = load_sids(run / "sid")
    assert len(new) == 13 and (new[:12] == old).all()  # the old SIDs as they were, the new item after them
    assert read_manifest(run / "update")["new_items"] == 1
    again = run_pipeline(cfg, root / "new", run, update_from=parent)
    assert set(again["last_run"].values()) == {"skipped"}
    with pytest.raises(SidrecError, match="not a finished pipeline run"):
        run_pipeline(cfg, root / "new", tmp_path / "x", update_from=root / "old")
    with pytest.raises(SidrecError, match="does not combine with --update-from"):
        run_pipeline(cfg, root / "new", tmp_path / "y", update_from=parent, iterate=1)
    r = subprocess.run([sys.executable, "-m", "sidrec", "pipeline", "--update-from", str(root / "old"), "--data",
                        str(root / "new"), "--out", str(tmp_path / "z")], capture_output=True, text=True)
    assert r.returncode == 2 and "not a finished pipeline run" in r.stderr and "Traceback" not in r.stderr
