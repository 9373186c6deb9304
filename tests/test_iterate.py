"""`sidrec pipeline --iterate`: rounds are chosen on valid, never on test, and compared with intervals.

The stages are stubbed (a round's "model" scores fixed hit rates on valid and test, by round); optimize, analyze
and compare run for real on a small dataset.
"""

import json

import numpy as np
import pandas as pd
import pytest

import sidrec.pipeline as pipeline
from sidrec.data import Dataset
from sidrec.evaluate.harness import write_evaluation
from sidrec.pipeline import PipelineConfig, run_pipeline

N_ITEMS, N_ROWS = 12, 40
# hit rate per round (run folder name) on (valid, test): iter1 is better on test but worse on valid
QUALITY = {"run": (0.5, 0.5), "iter1": (0.3, 0.8), "iter2": (0.7, 0.4)}


def ranked(targets, hit_rate):
    out = []
    for i, t in enumerate(targets):
        others = [x for x in range(N_ITEMS) if x != t][:10]
        out.append([t] + others[:9] if i < round(hit_rate * len(targets)) else others)
    return out


@pytest.fixture
def world(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    split = lambda n: pd.DataFrame({"user": range(n), "history": [[int(x) for x in rng.integers(0, N_ITEMS, 3)]  # noqa
                                                                  for _ in range(n)],
                                    "target": [int(x) for x in rng.integers(0, N_ITEMS, n)]})
    items = pd.DataFrame({"item_id": range(N_ITEMS), "title": [f"item {i}" for i in range(N_ITEMS)]})
    data = tmp_path / "data"
    ds = Dataset.from_frames(items, {"train": split(200), "valid": split(N_ROWS), "test": split(N_ROWS)})
    ds.save(data)
    sids = tmp_path / "sids"
    sids.mkdir()
    (sids / "index.json").write_text(json.dumps({str(i): [f"<a_{i % 4}>", f"<b_{i}>"] for i in range(N_ITEMS)}))

    def evaluate(model, data_dir, sid_dir, out, split="test", **kw):
        name = model.split("/")[-2]
        targets = ds.splits[split]["target"].tolist()
        return write_evaluation(out, split, targets, ranked(targets, QUALITY[name][split == "test"]),
                                num_items=N_ITEMS, info={"model": model, "sids": str(sid_dir)})

    class Stages:  # the pipeline's run: a "model" folder and the eval stage on test
        def __init__(self, cfg, data, run_dir, ask=None, update_from=None):
            self.run_dir = run_dir

        def run(self, start=None, until=None):
            evaluate(f"{self.run_dir}/model", data, sids, self.run_dir / "eval")
            return {"stages": {"data": {"outputs": {"dataset": str(data)}},
                               "eval": {"outputs": {"eval": str(self.run_dir / "eval")}}}}

    monkeypatch.setattr(pipeline, "Pipeline", Stages)
    monkeypatch.setattr("sidrec.evaluate.generative.evaluate_generative", evaluate)
    monkeypatch.setattr("sidrec.analysis.plots.write_plots", lambda report, folder: [])
    return data, tmp_path / "run"


def test_iterate_keeps_the_best_round_on_valid(world, capsys):
    data, run = world
    cfg = PipelineConfig.model_validate({"sft": {"learning_rate": 1e-3}})
    run_pipeline(cfg, data, run, iterate=2)
    summary = json.loads((run / "iterate" / "iterate.json").read_text())
    assert summary["selected_by"] == "valid NDCG@10" and summary["kept"] == "iter2"
    rounds = {r["name"]: r for r in summary["rounds"]}
    assert [rounds[n]["valid"]["HR@10"] for n in ("run", "iter1", "iter2")] == pytest.approx([0.5, 0.3, 0.7])
    assert rounds["iter1"]["test"]["HR@10"] == pytest.approx(0.8)  # the best on test, not kept
    # iter1 lost on valid, so iter2 starts again from the run, from the run's valid bad-case report
    assert rounds["iter1"]["started_from"] == "run" and rounds["iter2"]["started_from"] == "run"
    assert (run / "valid" / "analysis" / "badcase_report.json").exists()
    assert json.loads((run / "valid" / "analysis" / "badcase_report.json").read_text())["dataset"]["split"] == "valid"
    assert "valid/analysis/badcase_report.json" in (run / "iter2" / "optimized.yaml").read_text().splitlines()[0]
    # valid and test comparisons vs the first run, each delta with its paired-bootstrap interval
    d = summary["deltas"]
    assert d["valid"]["iter1"]["HR@10"]["abs"] == pytest.approx(-0.2)
    lo, hi = d["valid"]["iter1"]["HR@10"]["ci95"]
    assert lo <= -0.2 <= hi < 0  # 8 rows lose their hit, none gains one: every draw is <= 0
    assert d["test"]["iter1"]["HR@10"]["abs"] == pytest.approx(0.3) and d["test"]["iter1"]["HR@10"]["ci95"][0] > 0
    assert (run / "iterate" / "compare_test" / "compare.md").exists()
    out = capsys.readouterr().out
    assert "kept: iter2" in out and "valid NDCG@10" in out and "test HR@10" in out
