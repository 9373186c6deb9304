"""The one-command workflow: data -> embed -> sid -> sft -> rl (optional) -> eval -> analyze.

A run folder holds one sub-folder per stage and `pipeline.json`, the run's ledger: per stage its status
(running / done / skipped), the hash of its settings *and of everything upstream*, its inputs and seconds. A stage
is skipped when the ledger says done with the same hash and the stage's own outputs are complete; changing a
setting reruns that stage and everything after it. A run killed inside a stage is re-entered there: SFT and RL pick
up their last checkpoint, every other stage is short enough to redo.

One YAML file describes the run (sections embed, sid, sft, rl, eval, analysis; see configs/cpu.yaml), and
`--set section.key=value` overrides any key.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field
from rich.console import Console

from sidrec.analysis.badcase import AnalysisConfig
from sidrec.config import StageConfig, apply_overrides, read_yaml
from sidrec.errors import SidrecError
from sidrec.io import config_hash, read_json, read_manifest, write_json
from sidrec.sid.config import EmbedConfig, SidConfig
from sidrec.train.config import RlConfig, SftConfig, check_tracker

STAGES = ("data", "embed", "sid", "sft", "rl", "eval", "analyze")
LEDGER = "pipeline.json"
console = Console()


class PipelineRlConfig(RlConfig):
    enabled: bool = False


class EvalConfig(StageConfig):
    beams: int = Field(50, ge=1)
    split: Literal["train", "valid", "test"] = "test"
    batch_size: int = Field(32, ge=1)
    cutoff_len: int = Field(256, ge=8)
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    max_rows: int | None = Field(None, ge=1)


class PipelineConfig(StageConfig):
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    sid: SidConfig = Field(default_factory=SidConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    rl: PipelineRlConfig = Field(default_factory=PipelineRlConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)


def load_pipeline_config(path: str | Path | None, overrides: list[str] | None = None) -> PipelineConfig:
    from pydantic import ValidationError

    data = read_yaml(path) if path else {}
    unknown = sorted(set(data) - set(PipelineConfig.model_fields))
    if unknown:
        raise SidrecError(f"{path}: unknown section(s) {unknown}; valid: {', '.join(PipelineConfig.model_fields)}")
    data = apply_overrides(data, overrides)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        section = PipelineConfig.model_fields.get(str(first["loc"][0]))
        valid = ", ".join(section.annotation.model_fields) if section and hasattr(section.annotation,
                                                                                  "model_fields") else ""
        raise SidrecError(f"{path or 'config'}: {loc}: {first['msg']}" + (f" (valid keys: {valid})" if valid else ""))


class Pipeline:
    """Runs the stages in order over one run folder, skipping the finished ones."""

    def __init__(self, cfg: PipelineConfig, data: str | Path | None, run_dir: str | Path,
                 ask: Callable[[str, str], str] | None = None):
        self.cfg, self.data, self.run_dir, self.ask = cfg, data, Path(run_dir), ask
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ledger_path = self.run_dir / LEDGER
        self.ledger: dict = read_ledger(self.ledger_path)
        self.paths = {
            "dataset": self.run_dir / "dataset", "embeddings": self.run_dir / "embed" / "embeddings.npy",
            "sids": self.run_dir / "sid", "sft": self.run_dir / "sft", "rl": self.run_dir / "rl",
            "eval": self.run_dir / "eval", "analysis": self.run_dir / "analysis",
        }

    # ------------------------------------------------------------------------------------------------ bookkeeping
    def _save(self) -> None:
        write_json(self.ledger_path, self.ledger)

    def stage_settings(self, stage: str) -> dict:
        c = self.cfg
        return {"data": {"data": str(self.data)}, "embed": c.embed.model_dump(exclude={"force", "device"}),
                "sid": c.sid.model_dump(exclude={"threads"}), "sft": c.sft.model_dump(exclude={"threads", "report_to"}),
                "rl": c.rl.model_dump(exclude={"threads", "report_to"}), "eval": c.eval.model_dump(),
                "analyze": c.analysis.model_dump()}[stage]

    def stage_hash(self, stage: str) -> str:
        """The hash of this stage's settings chained with every upstream stage's."""
        chain = [self.stage_settings(s) for s in STAGES[: STAGES.index(stage) + 1]]
        return config_hash(chain)

    def is_done(self, stage: str) -> bool:
        entry = self.ledger.get("stages", {}).get(stage)
        return bool(entry and entry["status"] in ("done", "skipped") and entry["hash"] == self.stage_hash(stage)
                    and self._outputs_complete(stage))

    def _outputs_complete(self, stage: str) -> bool:
        p = self.paths
        if stage == "data":
            return read_manifest(Path(self.ledger["stages"]["data"]["outputs"]["dataset"])) is not None
        if stage == "embed":
            return p["embeddings"].exists() and p["embeddings"].with_suffix(".json").exists()
        if stage == "rl" and not self.cfg.rl.enabled:
            return True
        folder = {"sid": p["sids"], "sft": p["sft"], "rl": p["rl"], "eval": p["eval"], "analyze": p["analysis"]}
        return read_manifest(folder[stage]) is not None

    # ------------------------------------------------------------------------------------------------------- run
    def run(self, start: str | None = None, until: str | None = None) -> dict:
        for name in (start, until):
            if name is not None and name not in STAGES:
                raise SidrecError(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
        check_tracker(self.cfg.sft.report_to, "sft.report_to")  # before the first stage, not after the SIDs
        if self.cfg.rl.enabled:
            check_tracker(self.cfg.rl.report_to, "rl.report_to")
        last = STAGES.index(until) if until else len(STAGES) - 1
        forced = STAGES.index(start) if start else len(STAGES)
        self.ledger.setdefault("stages", {})
        self.ledger["config"] = self.cfg.model_dump()
        for i, stage in enumerate(STAGES[: last + 1]):
            rerun = i >= forced
            if self.ask is not None:
                choice = self.ask(stage, "done" if self.is_done(stage) else "to do")
                if choice == "skip":
                    if not self._outputs_complete_safe(stage):
                        raise SidrecError(f"cannot skip stage {stage}: it has no finished outputs in {self.run_dir}")
                    console.print(f"[yellow]{stage}[/]: skipped (asked)")
                    continue
                if choice.startswith("method:"):  # the workflow script's "change SID method"
                    self.cfg.sid.method = choice.split(":", 1)[1]
                    self.ledger["config"] = self.cfg.model_dump()
                rerun = rerun or choice == "rerun"
            if self.is_done(stage) and not rerun:
                console.print(f"[green]{stage}[/]: done earlier, skipped")
                self.ledger["stages"][stage]["skipped_runs"] = self.ledger["stages"][stage].get("skipped_runs", 0) + 1
                self._save()
                continue
            self._run_stage(stage)
        return self.ledger

    def _outputs_complete_safe(self, stage: str) -> bool:
        try:
            return self._outputs_complete(stage)
        except KeyError:
            return False

    def _run_stage(self, stage: str) -> None:
        console.rule(f"[bold]{stage}")
        entry = {"status": "running", "hash": self.stage_hash(stage), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.ledger["stages"][stage] = entry
        self._save()
        t0 = time.time()
        outputs = getattr(self, f"_stage_{stage}")()
        entry.update(status="skipped" if outputs is None else "done", outputs=outputs or {},
                     seconds=round(time.time() - t0, 1), finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self._save()

    def dataset_dir(self) -> Path:
        try:
            return Path(self.ledger["stages"]["data"]["outputs"]["dataset"])
        except KeyError:
            raise SidrecError(f"{self.run_dir}: the data stage has not run; start with --from data") from None

    def model_dir(self) -> Path:
        return (self.paths["rl"] if self.cfg.rl.enabled else self.paths["sft"]) / "model"

    # ---------------------------------------------------------------------------------------------------- stages
    def _stage_data(self):
        from sidrec.data.resolve import resolve_data

        return {"dataset": str(resolve_data(self.data, self.run_dir))}

    def _stage_embed(self):
        from sidrec.embed import embed_items

        info = embed_items(self.dataset_dir(), self.paths["embeddings"], **self.cfg.embed.model_dump())
        return {"embeddings": str(self.paths["embeddings"]), "reused": info["reused"]}

    def _stage_sid(self):
        from sidrec.sid.build import build_sids

        s = self.cfg.sid
        build_sids(s.method, self.paths["embeddings"], self.dataset_dir(), self.paths["sids"], levels=s.levels,
                   codebook=s.codebook, seed=s.seed, collision=s.collision, threads=s.threads, **s.method_params())
        return {"sids": str(self.paths["sids"])}

    def _stage_sft(self):
        from sidrec.train.sft import run_sft

        return {"model": str(run_sft(self.cfg.sft, self.dataset_dir(), self.paths["sids"], self.paths["sft"]))}

    def _stage_rl(self):
        if not self.cfg.rl.enabled:
            console.print("rl: disabled (rl.enabled=false)")
            return None
        from sidrec.train.rl import RlConfig, run_rl

        rl = RlConfig(**self.cfg.rl.model_dump(exclude={"enabled"}))
        return {"model": str(run_rl(rl, self.paths["sft"] / "model", self.dataset_dir(), self.paths["sids"],
                                    self.paths["rl"]))}

    def _stage_eval(self):
        from sidrec.evaluate.generative import evaluate_generative
        from sidrec.evaluate.report import print_results

        e = self.cfg.eval
        res = evaluate_generative(self.model_dir(), self.dataset_dir(), self.paths["sids"], self.paths["eval"],
                                  split=e.split, beams=e.beams, batch_size=e.batch_size, cutoff_len=e.cutoff_len,
                                  dtype=e.dtype, max_rows=e.max_rows)
        print_results({str(self.model_dir()): res}, console, title=f"{e.split} metrics (exact items)")
        return {"eval": str(self.paths["eval"]), "metrics": res["metrics"]}

    def _stage_analyze(self):
        from sidrec.analysis import run_analysis

        report = run_analysis(self.paths["eval"], self.dataset_dir(), self.paths["analysis"], cfg=self.cfg.analysis,
                              sids=self.paths["sids"])
        return {"analysis": str(self.paths["analysis"]), "failure_rate": report.get("failure_rate")}


def run_pipeline(cfg: PipelineConfig, data, run_dir: str | Path, start: str | None = None, until: str | None = None,
                 ask=None, iterate: int = 0) -> dict:
    """The run, then `iterate` rounds of analyze -> `optimize --auto` -> retrain -> compare, judged on valid.

    The rounds never look at test. Each round's model (the run's own too) is evaluated on the valid split with the
    run's eval settings (`evaluate_generative(split="valid")`, into ROUND/valid/eval; the train logs hold only valid
    losses, not ranking metrics) and analysed there (ROUND/valid/analysis). Round k starts from the best round so
    far by valid NDCG@10: its config (`iterK/base.yaml`) plus the strategies its *valid* bad-case report calls for
    (`iterK/optimized.yaml`); a full pipeline run on that config; `iterK/compare/` (test, vs the round it started
    from). At the end the round with the best valid NDCG@10 is kept, and RUN_DIR/iterate/ holds compare_valid/ and
    compare_test/ (every round vs the first run, with paired-bootstrap 95% intervals) and iterate.json; the same
    comparison is printed. Test metrics are reported, never used to choose.
    """
    import yaml
    from rich.table import Table

    from sidrec.analysis import run_analysis, run_compare
    from sidrec.evaluate.generative import evaluate_generative
    from sidrec.io import write_text
    from sidrec.optimize.strategies import optimize

    select = "NDCG@10"  # the valid metric that picks the round
    if iterate and until not in (None, "analyze"):
        raise SidrecError("--iterate needs the analyze stage: drop --until or set it to analyze")
    run_dir = Path(run_dir)
    ledger = Pipeline(cfg, data, run_dir, ask=ask).run(start=start, until=until)
    if not iterate:
        return ledger

    def on_valid(folder: Path, round_cfg: PipelineConfig, round_ledger: dict) -> dict:
        """Evaluate and analyse the round's model on valid (skipped when newer than its test evaluation)."""
        test_eval = Path(round_ledger["stages"]["eval"]["outputs"]["eval"])
        dataset = Path(round_ledger["stages"]["data"]["outputs"]["dataset"])
        tested = read_json(test_eval / "results.json")  # names the model and SIDs the eval stage used
        ev, an = (test_eval, folder / "analysis") if round_cfg.eval.split == "valid" else (
            folder / "valid" / "eval", folder / "valid" / "analysis")
        fresh = lambda out, than: (out / "manifest.json").exists() and (  # noqa: E731
            (out / "manifest.json").stat().st_mtime >= (than / "manifest.json").stat().st_mtime)
        e = round_cfg.eval
        if not fresh(ev, test_eval):
            evaluate_generative(tested["model"], dataset, tested["sids"], ev, split="valid", beams=e.beams,
                                batch_size=e.batch_size, cutoff_len=e.cutoff_len, dtype=e.dtype, max_rows=e.max_rows)
        if not fresh(an, ev):
            run_analysis(ev, dataset, an, cfg=round_cfg.analysis, sids=tested["sids"])
        return {"name": folder.name, "folder": str(folder), "cfg": round_cfg, "dataset": dataset,
                "valid_eval": ev, "test_eval": test_eval, "report": an / "badcase_report.json",
                "valid": read_json(ev / "results.json")["metrics"], "test": tested["metrics"]}

    rounds = [on_valid(run_dir, cfg, ledger)]
    rounds[0]["started_from"] = None
    best = rounds[0]
    for k in range(1, iterate + 1):
        here = run_dir / f"iter{k}"
        here.mkdir(parents=True, exist_ok=True)
        base = here / "base.yaml"
        write_text(base, yaml.safe_dump(best["cfg"].model_dump(mode="json"), sort_keys=False))
        optimize(best["report"], here / "optimized.yaml", auto=True, base=base, data=best["dataset"])
        next_cfg = load_pipeline_config(here / "optimized.yaml")
        console.rule(f"[bold]iteration {k}: {here / 'optimized.yaml'} (from {best['name']})")
        round_ledger = Pipeline(next_cfg, data, here, ask=ask).run(start=start)
        run_compare([Path(best["folder"]), here], here / "compare", names=[best["name"], here.name])
        rounds.append(on_valid(here, next_cfg, round_ledger) | {"started_from": best["name"]})
        if rounds[-1]["valid"][select] > best["valid"][select]:
            best = rounds[-1]

    names = [r["name"] for r in rounds]
    cmps = {split: run_compare([r[f"{split}_eval"] for r in rounds], run_dir / "iterate" / f"compare_{split}",
                               names=names) for split in ("valid", "test")}
    t = Table(title=f"--iterate: each round on valid and test; deltas vs {names[0]} with 95% paired-bootstrap "
                    f"intervals; kept = best valid {select}")
    for col in ("round", "from", *(f"{sp} {m}" for sp in ("valid", "test") for m in ("HR@10", "NDCG@10")), "kept"):
        t.add_column(col, justify="left" if col in ("round", "from") else "right")
    for r in rounds:
        cells = []
        for sp in ("valid", "test"):
            for m in ("HR@10", "NDCG@10"):
                v = cmps[sp]["metrics"][r["name"]][m]
                d = cmps[sp]["deltas"].get(r["name"], {}).get(m)
                ci = d and d.get("ci95")
                cells.append(f"{v:.4f}" if d is None else f"{v:.4f} {d['abs']:+.4f}" +
                             (f"\n[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""))
        t.add_row(r["name"], r["started_from"] or "-", *cells, "yes" if r is best else "")
    console.print(t)
    console.print(f"kept: {best['name']} (valid {select} {best['valid'][select]:.4f}); its run folder "
                  f"{best['folder']}", highlight=False)
    write_json(run_dir / "iterate" / "iterate.json", {
        "selected_by": f"valid {select}", "kept": best["name"],
        "rounds": [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items() if k != "cfg"} for r in rounds],
        "deltas": {sp: cmps[sp]["deltas"] for sp in cmps}})
    return ledger


def read_ledger(path: Path) -> dict:
    if not path.exists():
        return {}
    return read_json(path, hint="the run ledger is damaged; move it away to start the run afresh")


def interactive_ask(stage: str, state: str) -> str:
    import typer

    from sidrec.sid.config import METHODS

    choices = {"r": "run", "s": "skip", "R": "rerun"}
    extra = ""
    if stage == "sid":
        choices["m"] = "method"
        extra = " / [m] change SID method"
    default = "s" if state == "done" else "r"
    while True:
        answer = typer.prompt(f"stage {stage} ({state}): [r]un if needed / [s]kip / [R]erun{extra}", default=default)
        if answer in choices:
            break
        console.print(f"'{answer}' is not one of {', '.join(choices)}")
    if choices[answer] == "method":
        method = typer.prompt(f"SID method ({', '.join(METHODS)})", default="rqkmeans-constrained")
        if method not in METHODS:
            raise SidrecError(f"unknown SID method '{method}'; choose from {', '.join(METHODS)}")
        return f"method:{method}"
    return choices[answer]
