import json
import subprocess
import sys

import pytest
import transformers

from generative_fixtures import make_toy
from sidrec.errors import SidrecError
from sidrec.pipeline import Pipeline, load_pipeline_config, run_pipeline

TOY = [
    "embed.model=minilm", "embed.max_seq_length=16",
    "sid.codebook=4", "sid.threads=1",
    "sft.small={hidden_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 128, "
    "vocab_size: 300, dropout: 0.0}",
    "sft.epochs=6", "sft.batch_size=32", "sft.micro_batch_size=32", "sft.learning_rate=5e-3", "sft.eval_steps=10",
    "sft.early_stopping_patience=null", "sft.cutoff_len=128", "sft.seed=0",
    "rl.enabled=true", "rl.num_generations=4", "rl.sample_size=16", "rl.train_batch_size=16",
    "rl.micro_batch_size=16", "rl.eval_beams=10", "rl.max_valid_rows=20", "rl.eval_step=0.5",
    "scorer.seeds=[1, 2]", "scorer.sasrec={hidden: 16, blocks: 1, max_epochs: 2}",
    "eval.beams=10",
]
ALL = ("data", "embed", "sid", "sft", "scorer", "rl", "eval_sft", "eval", "rerank", "analyze")


def sidrec(*args):
    return subprocess.run([sys.executable, "-m", "sidrec", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def statuses(run):
    ledger = json.loads((run / "pipeline.json").read_text())
    return {s: e["status"] for s, e in ledger["stages"].items()}, ledger


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    data, _ = make_toy(root)
    return root, data


def test_pipeline_runs_every_stage_then_skips_them(toy, tmp_path):
    root, data = toy
    cfg = load_pipeline_config("configs/smoke.yaml", TOY)
    run = tmp_path / "run"
    Pipeline(cfg, data, run).run()
    st, ledger = statuses(run)
    assert st == {s: "done" for s in ALL}
    assert (run / "analysis" / "badcase_report.json").exists()
    first = json.loads((run / "eval" / "results.json").read_text())
    assert ledger["stages"]["eval"]["outputs"]["metrics"] == first["metrics"]
    assert ledger["stages"]["eval"]["outputs"]["model"] == str(run / "rl" / "model")
    assert ledger["stages"]["eval_sft"]["outputs"]["model"] == str(run / "sft" / "model")
    rl = json.loads((run / "rl" / "manifest.json").read_text())
    assert rl["stage"] == "rl" and rl["config"]["scorer"] == [str(run / "scorer" / f"seed{s}") for s in (1, 2)]
    assert [json.loads((run / "scorer" / f"seed{s}" / "manifest.json").read_text())["config"]["seed"]
            for s in (1, 2)] == [1, 2]
    assert not (run / ".lock").exists()
    # the rerank stage: the RL model's test beams re-ranked with the scorer stage's runs, λ picked on its valid beams
    rr = json.loads((run / "rerank" / "results.json").read_text())
    out_rr = ledger["stages"]["rerank"]["outputs"]
    assert rr["rerank"]["scorer"]["paths"] == [str(run / "scorer" / f"seed{s}") for s in (1, 2)]
    assert rr["model"] == str(run / "rl" / "model") and rr["split"] == "test"
    gains = json.loads((run / "rerank" / "gains.json").read_text())
    assert out_rr["weight"] == rr["rerank"]["weight"] == gains["weight"]
    grid = {g["weight"]: g["NDCG@10"] for g in rr["rerank"]["picked_on"]["grid"]}
    assert grid[out_rr["weight"]] == max(grid.values()) == out_rr["valid"]["reranked"]["NDCG@10"]
    valid_beams = json.loads((run / "rerank" / "valid_beams" / "results.json").read_text())
    assert valid_beams["split"] == "valid" and out_rr["valid"]["model"] == valid_beams["metrics"]
    assert rr["model_metrics"] == first["metrics"] and out_rr["metrics"] == rr["metrics"]
    # the run keeps its resolved config, which --config takes back as the same config
    assert load_pipeline_config(run / "config.yaml") == cfg

    # a re-run through the command line on that config skips every stage; its summary, piped, keeps every digit
    r = sidrec("pipeline", "--config", run / "config.yaml", "--data", data, "--out", run)
    assert r.returncode == 0, r.stderr
    st, ledger = statuses(run)
    assert ledger["last_run"] == {s: "skipped" for s in ALL}
    assert all(e.get("skipped_runs") == 1 for e in ledger["stages"].values())
    out = r.stdout
    sft = json.loads((run / "eval_sft" / "results.json").read_text())["metrics"]
    assert "…" not in out and f"data: {data}" in out
    for stage, model, metrics in (("eval_sft", "sft/model", sft), ("eval", "rl/model", first["metrics"]),
                                  ("rerank", "rl/model+scorer", rr["metrics"])):
        row = next(x.split() for x in out.splitlines() if x.strip().startswith(stage + " "))
        assert row[:4] == [stage, model, "test", str(first["num_samples"])]
        assert row[4:] == [repr(metrics[f"{m}@{k}"]) for k in (5, 10, 20) for m in ("HR", "NDCG")]
    v = out_rr["valid"]
    assert (f"rerank: λ = {out_rr['weight']!r} (beam log-likelihood + λ · z(scorer logit)), picked on valid NDCG@10 "
            f"over {v['rows']} rows: model HR@10 {v['model']['HR@10']!r} NDCG@10 {v['model']['NDCG@10']!r} -> "
            f"re-ranked HR@10 {v['reranked']['HR@10']!r} NDCG@10 {v['reranked']['NDCG@10']!r}") in out
    report = json.loads((run / "analysis" / "badcase_report.json").read_text())
    assert f"bad cases (analyze): {report['failure_rate']!r}" in out
    assert str(run / "analysis" / "visualizations") in out and "total:" in out
    assert f"analyze skipped ({ledger['stages']['analyze']['seconds']} s when it ran)" in out
    assert (run / "summary.txt").read_text().strip() == out[out.index("run folder:"):].strip()

    # a changed SFT setting reruns SFT and what reads it, nothing before it and not the scorer
    Pipeline(load_pipeline_config("configs/smoke.yaml", TOY + ["sft.learning_rate=4e-3"]), data, run).run(until="eval")
    _, ledger = statuses(run)
    assert [s for s, e in ledger["stages"].items() if e.get("skipped_runs") == 2] == ["data", "embed", "sid", "scorer"]
    assert "out of date (their settings or inputs changed since they ran): rerank, analyze" in \
        (run / "summary.txt").read_text()
    # a thread count is no output setting: nothing reruns
    Pipeline(load_pipeline_config("configs/smoke.yaml", TOY + ["sft.learning_rate=4e-3", "sft.threads=1",
                                                               "scorer.sasrec.threads=2"]), data, run).run(until="eval")
    assert set(statuses(run)[1]["last_run"].values()) == {"skipped"}

    # one round of analyze -> optimize --auto -> retrain -> compare
    cfg = load_pipeline_config("configs/smoke.yaml", TOY + ["sft.learning_rate=4e-3"])
    run_pipeline(cfg, data, run, iterate=1)
    optimized = (run / "iter1" / "optimized.yaml").read_text()
    assert "Strategies (chosen by --auto)" in optimized
    assert load_pipeline_config(run / "iter1" / "optimized.yaml") != cfg
    cmp = json.loads((run / "iter1" / "compare" / "compare.json").read_text())
    assert json.dumps(cmp).count("iter1") >= 1
    assert statuses(run / "iter1")[0]["eval"] == "done"

    # a fixed λ reruns the rerank stage alone (no valid beams needed); λ = 0 is the model's own ranking
    Pipeline(load_pipeline_config("configs/smoke.yaml", TOY + ["sft.learning_rate=4e-3", "rerank.weight=0"]), data,
             run).run()
    _, ledger = statuses(run)
    assert ledger["last_run"] == {s: "done" if s == "rerank" else "skipped" for s in ALL}
    zero = ledger["stages"]["rerank"]["outputs"]
    assert zero["weight"] == 0.0 and zero["valid"] is None
    assert zero["metrics"] == ledger["stages"]["eval"]["outputs"]["metrics"]
    assert "rerank: λ = 0.0 (beam log-likelihood + λ · z(scorer logit)), fixed in the config" in \
        (run / "summary.txt").read_text()


def test_pipeline_killed_in_sft_resumes_there_with_the_same_result(toy, tmp_path, monkeypatch):
    root, data = toy
    overrides = TOY + ["rl.enabled=false", "scorer.enabled=false", "rerank.enabled=false"]
    ref = tmp_path / "ref"
    Pipeline(load_pipeline_config("configs/smoke.yaml", overrides), data, ref).run(until="eval")
    expected = json.loads((ref / "eval" / "results.json").read_text())["metrics"]

    run = tmp_path / "run"
    original = transformers.Trainer.training_step
    calls = {"n": 0}

    def dies_after_a_checkpoint(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 25:  # checkpoints every 10 steps
            raise KeyboardInterrupt("killed")
        return original(self, *a, **kw)

    monkeypatch.setattr(transformers.Trainer, "training_step", dies_after_a_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(load_pipeline_config("configs/smoke.yaml", overrides), data, run).run(until="eval")
    monkeypatch.setattr(transformers.Trainer, "training_step", original)
    st, _ = statuses(run)
    assert st["sft"] == "running" and "eval" not in st and "scorer" not in st
    assert list((run / "sft" / "checkpoints").glob("checkpoint-*"))

    Pipeline(load_pipeline_config("configs/smoke.yaml", overrides), data, run).run(until="eval")
    st, ledger = statuses(run)
    assert [s for s, e in ledger["stages"].items() if e.get("skipped_runs")] == ["data", "embed", "sid"]
    assert json.loads((run / "sft" / "manifest.json").read_text())["resumed_from"] is not None
    assert json.loads((run / "eval" / "results.json").read_text())["metrics"] == expected


def test_pipeline_config_errors(toy, tmp_path):
    with pytest.raises(SidrecError, match="sft.learning_rat"):
        load_pipeline_config("configs/smoke.yaml", ["sft.learning_rat=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("sfft: {epochs: 1}\n")
    with pytest.raises(SidrecError, match="unknown section.*sfft"):
        load_pipeline_config(bad)
    with pytest.raises(SidrecError, match="unknown stage 'train'"):
        Pipeline(load_pipeline_config(None), toy[1], tmp_path / "r").run(start="train")
    # --interactive's answers: a changed setting is kept in the run's config; a stage never run cannot be skipped
    run = tmp_path / "asked"
    Pipeline(load_pipeline_config("configs/smoke.yaml"), toy[1], run,
             ask=lambda stage, state: "set:eval.beams=7").run(until="data")
    assert load_pipeline_config(run / "config.yaml").eval.beams == 7
    with pytest.raises(SidrecError, match="cannot skip stage embed"):
        Pipeline(load_pipeline_config("configs/smoke.yaml"), toy[1], run,
                 ask=lambda stage, state: "skip").run(until="embed")
    with pytest.raises(SidrecError, match="collaborative reward needs a scorer.*scorer.enabled=true"):
        load_pipeline_config("configs/smoke.yaml", ["scorer.enabled=false"])
    with pytest.raises(SidrecError, match="rerank stage re-ranks with the scorer stage's ensemble"):
        load_pipeline_config("configs/smoke.yaml", ["scorer.enabled=false", "rl.enabled=false"])
    for bad, message in (("rerank.weight=-1", "rerank.weight: -1 is neither auto nor a λ in 0..100"),
                         ("rerank.grid=[]", "rerank.grid"), ("rerank.grid=[0, 1000]", "rerank.grid.1"),
                         ("rerank.group=0", "rerank.group"), ("eval.split=valid", "eval.split=test")):
        with pytest.raises(SidrecError, match=message):
            load_pipeline_config("configs/smoke.yaml", [bad])


def test_version():
    from importlib.metadata import version

    r = sidrec("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sidrec {version('sidrec')}"


def test_baselines_command_and_the_deprecated_demo_name(toy, tmp_path):
    root, data = toy
    r = sidrec("demo", "--data", data, "--out", tmp_path / "b", "--set", "sasrec.max_epochs=1",
               "--set", "sasrec.hidden=16")
    assert r.returncode == 0, r.stderr
    assert "`sidrec demo` is deprecated" in r.stderr and "sidrec baselines" in r.stderr
    assert "…" not in r.stdout
    for model in ("pop", "sasrec"):
        m = json.loads((tmp_path / "b" / model / "results.json").read_text())["metrics"]
        row = next(x for x in r.stdout.splitlines() if f" {model} " in x)
        assert f"{m['HR@10']:.4f}" in row and f"{m['NDCG@10']:.4f}" in row
