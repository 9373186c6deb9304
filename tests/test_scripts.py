"""The workflow-guide wrappers in scripts/: each runs with the guide's flags on a tiny dataset, prints the `sidrec`
command it runs and produces that command's outputs.

Everything runs in one temporary folder laid out like the guide's working directory (./data/Amazon18/CATEGORY,
./outputs, ./evaluation, ./analysis_output); trained artifacts are shared through module fixtures. A few tests point
SIDREC at a stub that only echoes its arguments, to check flag mappings without training.
"""

import gzip
import importlib.util
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from generative_fixtures import NUM_ITEMS, make_toy
from sidrec.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SIDREC = str(Path(sys.executable).parent / "sidrec")
WRAPPERS = [
    "pipeline_0.5b.sh", "amazon18_data_process.sh", "amazon_text2emb.sh", "rqkmeans_faiss.py",
    "rqkmeans_constrained.sh", "rqkmeans_plus.sh", "generate_indices_plus.sh", "rqvae.sh", "convert_dataset.sh",
    "sft_single_gpu_swanlab.sh", "rl.py", "rl.sh", "evaluate.sh", "analyze_badcase.sh", "optimization_strategies.py",
    "compare_results.py",
]
SMALL = ("sft.small={hidden_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 128, "
         "vocab_size: 300, dropout: 0.0}")
# the tiny SFT (tests/test_pipeline.py's TOY, 2 epochs), through the wrapper's variables and extra args
SFT_ENV = {"CATEGORY": "toy", "BASE_MODEL": "small", "BATCH_SIZE": "32", "MICRO_BATCH_SIZE": "32", "NUM_EPOCHS": "2",
           "LEARNING_RATE": "5e-3", "CUTOFF_LEN": "128", "OUTPUT_DIR": "./outputs/sft_toy",
           "CONFIG": str(ROOT / "configs" / "smoke.yaml"), "REPORT_TO": "none"}
SFT_EXTRA = ["--set", SMALL, "--set", "sft.eval_steps=10", "--set", "sft.early_stopping_patience=null",
             "--set", "sft.seed=0"]
# settings the wrappers read from the environment: the tests set them explicitly
WRAPPER_VARIABLES = {"BASE_MODEL", "BATCH_SIZE", "MICRO_BATCH_SIZE", "NUM_EPOCHS", "LEARNING_RATE", "CUTOFF_LEN",
                     "CATEGORY", "DATA", "SIDS", "OUTPUT_DIR", "CONFIG", "REPORT_TO", "MODEL_PATH", "DATA_ROOT",
                     "TRAIN_BATCH_SIZE", "GRADIENT_ACCUMULATION_STEPS", "NUM_TRAIN_EPOCHS", "SAMPLE_TRAIN",
                     "SAMPLE_SIZE", "REWARD_TYPE", "NUM_GENERATIONS", "EVAL_STEP", "BETA", "BEAM_SEARCH", "ADD_GT",
                     "PYTHON", "SID_INSPECT_IF_BUILT"}
RL_TINY = ["--set", "rl.eval_beams=10", "--set", "rl.max_valid_rows=20"]


def run(script, *args, cwd, env=None, input=None, ok=True, sidrec=SIDREC):
    cmd = ["bash", str(SCRIPTS / script)] if script.endswith(".sh") else [sys.executable, str(SCRIPTS / script)]
    inherited = {k: v for k, v in os.environ.items() if k not in WRAPPER_VARIABLES}
    full_env = {**inherited, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "SIDREC": sidrec, **(env or {})}
    p = subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=full_env, capture_output=True, text=True,
                       input=input, stdin=None if input is not None else subprocess.DEVNULL, timeout=900)
    if ok:
        assert p.returncode == 0, f"{script} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


def commands(p) -> list[list[str]]:
    """The `sidrec ...` commands a wrapper printed, as argument lists."""
    return [shlex.split(line[2:]) for line in p.stdout.splitlines() if line.startswith("+ sidrec ")]


def only_command(p) -> list[str]:
    cmds = commands(p)
    assert len(cmds) == 1, p.stdout
    return cmds[0]


def option(cmd, flag):
    return cmd[cmd.index(flag) + 1]


def sets(cmd) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]


def load_index(folder) -> dict:
    index = json.loads((Path(folder) / "index.json").read_text())
    assert len(index) == NUM_ITEMS and all(len(sid) == 3 for sid in index.values())
    return index


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The guide's working directory: ./data/Amazon18/toy (dataset + learnable hand-made SIDs) for training, and
    ./data/Amazon18/toy2 (dataset only) for the embedding and SID wrappers."""
    work = tmp_path_factory.mktemp("guide")
    data, sids = make_toy(work / "made")
    shutil.copytree(data, work / "data" / "Amazon18" / "toy")
    shutil.copytree(sids, work / "data" / "Amazon18" / "toy" / "sids")
    shutil.copytree(data, work / "data" / "Amazon18" / "toy2")
    return work


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    """A stand-in for sidrec that only echoes its arguments."""
    path = tmp_path_factory.mktemp("stub") / "sidrec"
    path.write_text('#!/usr/bin/env bash\necho "STUB $*"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_wrappers_are_complete_and_well_formed():
    for name in WRAPPERS:
        path = SCRIPTS / name
        assert path.is_file() and os.access(path, os.X_OK), name
        text = path.read_text()
        if name.endswith(".sh"):
            assert "set -euo pipefail" in text, name
            subprocess.run(["bash", "-n", str(path)], check=True)
        else:
            assert subprocess.run([sys.executable, str(path), "--help"], capture_output=True).returncode == 0, name


# ---------------------------------------------------------------------------------------------------------- data
def write_raw_amazon(folder: Path, category: str) -> None:
    """30 users x 6 reviews of 10 titled items, Nov 2017 - Apr 2018: survives a 5-core."""
    rng = np.random.default_rng(0)
    t0 = int(datetime(2017, 11, 1, tzinfo=timezone.utc).timestamp())
    with gzip.open(folder / f"{category}_5.json.gz", "wt") as f:
        for u in range(30):
            for k, item in enumerate(rng.choice(10, size=6, replace=False)):
                f.write(json.dumps({"reviewerID": f"U{u}", "asin": f"B{item:03d}", "overall": 5.0,
                                    "unixReviewTime": t0 + 86400 * (u + 10 * k)}) + "\n")
    with gzip.open(folder / f"meta_{category}.json.gz", "wt") as f:
        for item in range(10):
            f.write(json.dumps({"asin": f"B{item:03d}", "title": f"Tool number {item}", "brand": "Acme",
                                "category": ["Tools"], "description": ["a tool"]}) + "\n")


def test_amazon18_data_process(work):
    raw = work / "raw"
    raw.mkdir()
    write_raw_amazon(raw, "Tools")
    guide = ["--dataset", "Tools", "--user_k", "5", "--item_k", "5", "--st_year", "2017", "--st_month", "10",
             "--ed_year", "2018", "--ed_month", "11", "--output_path", "./data/Amazon18"]
    p = run("amazon18_data_process.sh", *guide, "--input_path", "./raw", "--no-progress", cwd=work)
    assert only_command(p) == [
        "sidrec", "data", "amazon18", "--category", "Tools", "--out", "./data/Amazon18/Tools",
        "--reviews", "./raw/Tools_5.json.gz", "--meta", "./raw/meta_Tools.json.gz", "--start", "2017-10",
        "--end", "2018-11", "--user-k", "5", "--item-k", "5", "--no-progress"]
    ds = Dataset.load(work / "data" / "Amazon18" / "Tools")
    assert ds.num_items == 10 and len(ds.splits["test"]) > 0

    # the raw files named one by one; a month without its year is refused before anything runs
    p = run("amazon18_data_process.sh", *guide[:-1], "./data/by_file", "--reviews", "raw/Tools_5.json.gz",
            "--meta", "raw/meta_Tools.json.gz", "--no-progress", cwd=work)
    assert option(only_command(p), "--reviews") == "raw/Tools_5.json.gz"
    assert Dataset.load(work / "data" / "by_file" / "Tools").num_items == 10
    p = run("amazon18_data_process.sh", "--dataset", "Tools", "--st_month", "3", cwd=work, ok=False)
    assert p.returncode != 0 and "--st_month needs --st_year" in p.stderr and not commands(p)


def test_convert_dataset_all_three_directions(work):
    # sidrec dataset + SIDs -> MiniOneRec CSVs (the guide's convert step output)
    p = run("convert_dataset.sh", "--dataset_name", "toy", "--data_dir", "./data/Amazon18/toy",
            "--output_dir", "./data/Amazon", cwd=work)
    assert only_command(p) == ["sidrec", "data", "export-minionerec", "./data/Amazon18/toy", "--out", "./data/Amazon"]
    mini = work / "data" / "Amazon"
    for split in ("train", "valid", "test"):
        assert len(list((mini / split).glob("*.csv"))) == 1
    assert (mini / "info").is_dir() and (mini / "index" / "toy.index.json").is_file()

    # MiniOneRec folder with CSVs -> sidrec dataset
    p = run("convert_dataset.sh", "--dataset_name", "toy", "--data_dir", "./data/Amazon", cwd=work)
    assert only_command(p) == ["sidrec", "data", "import-minionerec", "./data/Amazon", "--out", "./data/sidrec/toy"]

    # MiniOneRec's preprocessing output (.inter + .item.json + .index.json, no CSVs) -> sidrec dataset
    flat = work / "minionerec_preprocessed"
    flat.mkdir()
    for f in ["inter/toy.train.inter", "inter/toy.valid.inter", "inter/toy.test.inter", "index/toy.item.json",
              "index/toy.index.json"]:
        shutil.copy(mini / f, flat)
    p = run("convert_dataset.sh", "--dataset_name", "toy", "--data_dir", str(flat), "--output_dir",
            "./data/sidrec/from_inter", cwd=work)
    cmd = only_command(p)
    assert cmd[:3] == ["sidrec", "data", "import-minionerec"] and option(cmd, "--out") == "./data/sidrec/from_inter"

    original = Dataset.load(work / "data" / "Amazon18" / "toy")
    for out in ("toy", "from_inter"):
        back = Dataset.load(work / "data" / "sidrec" / out)
        for split in ("train", "valid", "test"):
            a, b = original.splits[split], back.splits[split]
            assert a["history"].tolist() == b["history"].tolist() and a["target"].tolist() == b["target"].tolist()
        assert (work / "data" / "sidrec" / out / "sids" / "index.json").is_file()


# ---------------------------------------------------------------------------------------------- embeddings, SIDs
@pytest.fixture(scope="module")
def emb(work):
    return run("amazon_text2emb.sh", "--dataset", "toy2", "--root", "./data/Amazon18/toy2", "--plm_checkpoint", "minilm",
               "--max_sent_len", "16", cwd=work)


def test_amazon_text2emb(work, emb):
    assert only_command(emb) == ["sidrec", "embed", "--data", "./data/Amazon18/toy2", "--out",
                                 "./data/Amazon18/toy2/toy2.emb.npy", "--model", "minilm", "--max-seq-length", "16"]
    assert np.load(work / "data" / "Amazon18" / "toy2" / "toy2.emb.npy").shape == (NUM_ITEMS, 384)


def test_rqkmeans_faiss(work, emb):
    p = run("rqkmeans_faiss.py", "--dataset", "toy2", "--root", "./data/Amazon18/toy2", "--num_levels", "3",
            "--codebook_size", "4", "--output", "./sids/faiss", "--threads", "1", cwd=work)
    assert only_command(p) == ["sidrec", "sid", "build", "--method", "rqkmeans", "--emb",
                               "data/Amazon18/toy2/toy2.emb.npy", "--data", "data/Amazon18/toy2", "--out", "sids/faiss",
                               "--levels", "3", "--codebook", "4", "--threads", "1"]
    load_index(work / "sids" / "faiss")


def test_rqkmeans_constrained_writes_the_datasets_sids(work, emb):
    p = run("rqkmeans_constrained.sh", "--dataset", "toy2", "--root", "./data/Amazon18/toy2", "--k", "4", "--l", "3",
            "--seed", "42", "--threads", "1", cwd=work)
    cmd = only_command(p)
    assert cmd[:5] == ["sidrec", "sid", "build", "--method", "rqkmeans-constrained"]
    assert option(cmd, "--out") == "./data/Amazon18/toy2/sids" and option(cmd, "--codebook") == "4"
    load_index(work / "data" / "Amazon18" / "toy2" / "sids")


def test_rqkmeans_plus_then_generate_indices_plus(work, emb):
    guide = ["--dataset", "toy2", "--root", "./data/Amazon18/toy2", "--num_emb_list", "4", "4", "4",
             "--output", "./sids/plus"]
    p = run("rqkmeans_plus.sh", *guide, "--lr", "1e-4", "--epochs", "5", "--threads", "1", cwd=work)
    cmd = only_command(p)
    assert option(cmd, "--method") == "rqkmeans-plus" and option(cmd, "--levels") == "3"
    assert sets(cmd) == ["rqkmeans_plus.lr=1e-4", "rqkmeans_plus.epochs=5"]
    index = load_index(work / "sids" / "plus")

    # sidrec trains and indexes in one step: the guide's index step shows the SIDs already built
    p = run("generate_indices_plus.sh", *guide, "--ckpt_path", "best_collision_model.pth", cwd=work)
    assert only_command(p) == ["sidrec", "sid", "inspect", "./sids/plus"]
    assert "--ckpt_path ignored" in p.stderr and load_index(work / "sids" / "plus") == index


def test_rqvae(work, emb):
    p = run("rqvae.sh", "--data_path", "./data/Amazon18/toy2/toy2.emb.npy", "--ckpt_dir", "./sids/rqvae", "--lr",
            "1e-3", "--epochs", "5", "--batch_size", "64", "--num_emb_list", "4", "4", "4", "--threads", "1", cwd=work)
    cmd = only_command(p)
    assert option(cmd, "--method") == "rqvae" and option(cmd, "--out") == "./sids/rqvae"
    assert sets(cmd) == ["rqvae.lr=1e-3", "rqvae.epochs=5", "rqvae.batch_size=64"]
    load_index(work / "sids" / "rqvae")


def test_sid_wrappers_refuse_what_they_cannot_do(work, stub):
    imported = work / "imported"
    (imported / "sids").mkdir(parents=True)
    (imported / "sids" / "manifest.json").write_text(json.dumps({"stage": "sid", "config": {"method": "imported"}}))
    np.save(imported / "x.emb.npy", np.zeros((2, 4), dtype=np.float32))
    for script in ("rqkmeans_constrained.sh", "rqkmeans_faiss.py"):
        p = run(script, "--dataset", "x", "--root", imported, cwd=work, ok=False, sidrec=stub)
        assert p.returncode != 0 and "imported with the dataset" in p.stderr and "STUB" not in p.stdout
        p = run(script, "--dataset", "x", "--root", imported, "--force", cwd=work, sidrec=stub)
        assert "STUB sid build" in p.stdout
    p = run("rqvae.sh", "--dataset", "x", "--root", imported, "--output", work / "o", "--num_emb_list", "256", "128",
            cwd=work, ok=False, sidrec=stub)
    assert "one codebook size for every level" in p.stderr and "STUB" not in p.stdout
    p = run("rqkmeans_plus.sh", "--dataset", "nothing_here", cwd=work, ok=False, sidrec=stub)
    assert "run scripts/amazon_text2emb.sh" in p.stderr


# ------------------------------------------------------------------------------------------------------ SFT / RL
@pytest.fixture(scope="module")
def sft_run(work):
    return run("sft_single_gpu_swanlab.sh", *SFT_EXTRA, cwd=work, env=SFT_ENV)


def test_sft_single_gpu_swanlab(work, sft_run):
    cmd = only_command(sft_run)
    assert cmd[:10] == ["sidrec", "sft", "--config", SFT_ENV["CONFIG"], "--data", "./data/Amazon18/toy", "--sids",
                        "./data/Amazon18/toy/sids", "--out", "./outputs/sft_toy"]
    assert sets(cmd) == ["sft.base_model=small", "sft.batch_size=32", "sft.micro_batch_size=32", "sft.epochs=2",
                         "sft.learning_rate=5e-3", "sft.cutoff_len=128", "sft.report_to=none", *SFT_EXTRA[1::2]]
    run_dir = work / "outputs" / "sft_toy"
    assert (run_dir / "model" / "config.json").is_file() and (run_dir / "manifest.json").is_file()


def test_sft_settings_default_to_the_guide_unless_another_config_is_given(work, stub):
    p = run("sft_single_gpu_swanlab.sh", cwd=work, sidrec=stub, env={"OUTPUT_DIR": "o"})
    expected = "swanlab" if importlib.util.find_spec("swanlab") else "none"
    assert sets(only_command(p)) == [
        "sft.base_model=Qwen/Qwen2.5-0.5B-Instruct", "sft.batch_size=128", "sft.micro_batch_size=16", "sft.epochs=3",
        "sft.learning_rate=5e-4", "sft.cutoff_len=256", f"sft.report_to={expected}"]
    assert option(only_command(p), "--config") == str(ROOT / "configs" / "qwen2.5-0.5b.yaml")
    assert (expected == "swanlab") == ("swanlab is not installed" not in p.stderr)
    # an optimized config keeps its own values; only what is set explicitly overrides it
    for how in ({"env": {"CONFIG": "opt.yaml", "LEARNING_RATE": "1e-3"}, "args": []},
                {"env": {"LEARNING_RATE": "1e-3"}, "args": ["--config", "opt.yaml"]}):
        p = run("sft_single_gpu_swanlab.sh", *how["args"], cwd=work, sidrec=stub,
                env={"OUTPUT_DIR": "o", "REPORT_TO": "none", **how["env"]})
        cmd = only_command(p)
        assert option(cmd, "--config") == "opt.yaml"
        assert sets(cmd) == ["sft.learning_rate=1e-3", "sft.report_to=none"]


@pytest.fixture(scope="module")
def rl_run(work, sft_run):
    return run("rl.py", "--model_path", "./outputs/sft_toy", "--category", "toy", "--train_batch_size", "16",
               "--num_train_epochs", "1", "--sample_train", "True", "--sample_size", "16", "--reward_type", "ranking",
               "--num_generations", "4", "--eval_step", "0.5", *RL_TINY, cwd=work)


def test_rl_py(work, rl_run):
    cmd = only_command(rl_run)
    assert cmd[:10] == ["sidrec", "rl", "--model", "outputs/sft_toy/model", "--data", "data/Amazon18/toy", "--sids",
                        "data/Amazon18/toy/sids", "--out", "outputs/rl_sft_toy"]
    assert sets(cmd) == [
        "rl.micro_batch_size=16", "rl.train_batch_size=16", "rl.epochs=1.0", "rl.sample_train=true",
        "rl.sample_size=16", "rl.num_generations=4", "rl.eval_step=0.5",
        "rl.rewards={rule: 1.0, ranking: 1.0, prefix: 0.0, collaborative: 0.0, diversity: 0.0}",
        "rl.eval_beams=10", "rl.max_valid_rows=20"]
    out = work / "outputs" / "rl_sft_toy"
    assert (out / "model" / "config.json").is_file() and (out / "valid_history.json").is_file()


def test_rl_sh_runs_rl_py_with_the_guide_defaults(work, sft_run):
    p = run("rl.sh", "--train_batch_size", "16", "--gradient_accumulation_steps", "1", "--sample_train", "True",
            "--sample_size", "16", "--num_generations", "4", "--num_train_epochs", "1", "--eval_step", "0.5",
            "--output_dir", "./outputs/rl_sh", *RL_TINY, cwd=work,
            env={"MODEL_PATH": "./outputs/sft_toy", "CATEGORY": "toy"})
    s = sets(only_command(p))
    # the guide's defaults, with the flags given after them winning
    for kv in ("rl.learning_rate=1e-05", "rl.beta=0.001", "rl.rollout=beam", "rl.add_target=false",
               "rl.num_generations=4", "rl.train_batch_size=16", "rl.sample_train=true",
               "rl.rewards={rule: 1.0, ranking: 1.0, prefix: 0.0, collaborative: 0.0, diversity: 0.0}"):
        assert kv in s
    assert (work / "outputs" / "rl_sh" / "model" / "config.json").is_file()


def test_rl_reward_types_and_guide_flags_map_onto_rl_settings(work, stub):
    model = work / "fake_sft"
    (model / "model").mkdir(parents=True)
    (model / "model" / "config.json").write_text("{}")
    base = ["--model_path", model, "--data", "d"]
    expected = {"rule": "{rule: 1.0, ranking: 0.0, prefix: 0.0, collaborative: 0.0, diversity: 0.0}",
                "ranking_only": "{rule: 0.0, ranking: 1.0, prefix: 0.0, collaborative: 0.0, diversity: 0.0}",
                "prefix": "{rule: 0.0, ranking: 0.0, prefix: 1.0, collaborative: 0.0, diversity: 0.0}"}
    for reward, weights in expected.items():
        p = run("rl.py", *base, "--reward_type", reward, cwd=work, sidrec=stub)
        assert sets(only_command(p)) == [f"rl.rewards={weights}"]
    p = run("rl.py", *base, "--reward_type", "sasrec", cwd=work, sidrec=stub, ok=False)
    assert p.returncode != 0 and "--cf_path" in p.stderr and not commands(p)
    p = run("rl.py", *base, "--reward_type", "sasrec", "--cf_path", "runs/sasrec", cwd=work, sidrec=stub)
    assert sets(only_command(p)) == [
        "rl.rewards={rule: 0.0, ranking: 0.0, prefix: 0.0, collaborative: 1.0, diversity: 0.0}", "rl.scorer=runs/sasrec"]
    # MiniOneRec's rl.sh flags: per-device batch x accumulation, sampling rollouts, flags with no counterpart noted
    p = run("rl.py", *base, "--train_batch_size", "64", "--gradient_accumulation_steps", "2", "--beam_search", "False",
            "--add_gt", "True", "--temperature", "1.0", "--dapo", "False", cwd=work, sidrec=stub)
    assert sets(only_command(p)) == ["rl.micro_batch_size=64", "rl.train_batch_size=128", "rl.add_target=true",
                                     "rl.rollout=sample"]
    assert "--temperature ignored" in p.stderr and "--dapo ignored" in p.stderr
    # under torchrun / accelerate launch the per-process batch is multiplied by the processes, as MiniOneRec's is
    p = run("rl.py", *base, "--train_batch_size", "64", "--gradient_accumulation_steps", "2", cwd=work, sidrec=stub,
            env={"WORLD_SIZE": "4"})
    assert sets(only_command(p)) == ["rl.micro_batch_size=64", "rl.train_batch_size=512"]
    p = run("rl.py", *base, "--reward_type", "semantic", cwd=work, sidrec=stub, ok=False)
    assert p.returncode != 0 and "invalid choice" in p.stderr


# --------------------------------------------------------------------------------- eval, analysis, optimize, compare
@pytest.fixture(scope="module")
def eval_run(work, sft_run):
    return run("evaluate.sh", "--base_model", "./outputs/sft_toy", "--category", "toy", "--num_beams", "10",
               "--max_rows", "20", cwd=work)


def test_evaluate(work, eval_run):
    assert only_command(eval_run) == [
        "sidrec", "eval", "--model", "./outputs/sft_toy/model", "--data", "./data/Amazon18/toy", "--out",
        "./evaluation/sft_toy", "--beams", "10", "--max-rows", "20"]
    res = json.loads((work / "evaluation" / "sft_toy" / "results.json").read_text())
    # no --sids: the SIDs the model was trained with, from its sidrec_binding.json
    assert res["sids"] == str((work / "data" / "Amazon18" / "toy" / "sids").resolve())
    assert "HR@10" in json.dumps(res["metrics"])
    assert len((work / "evaluation" / "sft_toy" / "predictions.jsonl").read_text().splitlines()) == 20


@pytest.fixture(scope="module")
def analysis(work, eval_run):
    return run("analyze_badcase.sh", "--model", "./outputs/sft_toy", "--category", "toy", "--top_k", "10",
               "--output_dir", "./analysis_output/sft", cwd=work)


def test_analyze_badcase_reuses_a_fresh_evaluation(work, analysis):
    assert only_command(analysis) == [
        "sidrec", "analyze", "--eval", "./evaluation/sft_toy", "--data", "./data/Amazon18/toy", "--sids",
        "./data/Amazon18/toy/sids", "--out", "./analysis_output/sft", "--top-k", "10"]
    assert "reusing the evaluation" in analysis.stderr
    out = work / "analysis_output" / "sft"
    for f in ("badcase_report.json", "eval_results.jsonl", "visualizations/summary_report.txt"):
        assert (out / f).is_file(), f


@pytest.fixture(scope="module")
def rl_analysis(work, rl_run):
    return run("analyze_badcase.sh", "--model", "./outputs/rl_sft_toy", "--category", "toy", "--top_k", "5",
               "--num_beams", "10", "--max_rows", "20", "--output_dir", "./analysis_output/rl", cwd=work)


def test_analyze_badcase_evaluates_first_when_needed(work, rl_analysis):
    ev, an = commands(rl_analysis)
    assert ev[:2] == ["sidrec", "eval"] and option(ev, "--out") == "./evaluation/rl_sft_toy"
    assert an[:2] == ["sidrec", "analyze"] and option(an, "--top-k") == "5"
    assert (work / "evaluation" / "rl_sft_toy" / "results.json").is_file()
    assert json.loads((work / "analysis_output" / "rl" / "badcase_report.json").read_text())["top_k"] == 5


def test_optimization_strategies_auto_recommend(work, analysis):
    from sidrec.pipeline import load_pipeline_config

    p = run("optimization_strategies.py", "--badcase_report", "./analysis_output/sft/badcase_report.json",
            "--output_config", "./optimized_config.json", "--auto_recommend", cwd=work)
    assert only_command(p) == [
        "sidrec", "optimize", "--report", "./analysis_output/sft/badcase_report.json", "--out",
        "optimized_config.yaml", "--base", str(ROOT / "configs" / "qwen2.5-0.5b.yaml"), "--auto"]
    as_yaml = work / "optimized_config.yaml"
    assert "chosen by --auto" in as_yaml.read_text()
    assert json.loads((work / "optimized_config.json").read_text()) == yaml.safe_load(as_yaml.read_text())
    assert load_pipeline_config(as_yaml).sft.base_model == "Qwen/Qwen2.5-0.5B-Instruct"


def test_optimization_strategies_asks_without_auto_recommend(work, analysis):
    p = run("optimization_strategies.py", "--badcase_report", "./analysis_output/sft", "--output_config",
            "./manual.yaml", cwd=work, input="long_tail\n")
    assert "--auto" not in only_command(p)
    text = (work / "manual.yaml").read_text()
    assert "chosen by hand" in text and "long_tail" in text


def test_compare_results(work, eval_run, rl_analysis):
    p = run("compare_results.py", "--baseline", "./evaluation/sft_toy/results.json", "--optimized",
            "./evaluation/rl_sft_toy", "--output_dir", "./comparison", cwd=work)
    assert only_command(p) == ["sidrec", "compare", "./evaluation/sft_toy/results.json", "./evaluation/rl_sft_toy",
                               "--names", "baseline,optimized", "--out", "./comparison"]
    for f in ("compare.json", "compare.md", "compare.png"):
        assert (work / "comparison" / f).is_file()
    assert "optimized" in (work / "comparison" / "compare.md").read_text()


# ------------------------------------------------------------------------------------------------------ pipeline
def test_pipeline_0_5b(work):
    p = run("pipeline_0.5b.sh", "--data", "./data/Amazon18/toy", "--out", "./outputs/pipeline", "--until", "sid",
            "--set", "embed.model=minilm", "--set", "embed.max_seq_length=16", "--set", "sid.codebook=4",
            "--set", "sid.threads=1", cwd=work)
    assert only_command(p) == [
        "sidrec", "pipeline", "--config", str(ROOT / "configs" / "qwen2.5-0.5b.yaml"), "--data", "./data/Amazon18/toy",
        "--out", "./outputs/pipeline", "--until", "sid", "--set", "embed.model=minilm", "--set",
        "embed.max_seq_length=16", "--set", "sid.codebook=4", "--set", "sid.threads=1"]
    ledger = json.loads((work / "outputs" / "pipeline" / "pipeline.json").read_text())
    assert {s: e["status"] for s, e in ledger["stages"].items()} == {"data": "done", "embed": "done", "sid": "done"}
    load_index(work / "outputs" / "pipeline" / "sid")
