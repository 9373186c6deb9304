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
from sidrec.train.config import RlConfig, SftConfig

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
    """The run, then `iterate` rounds of analyze -> `optimize --auto` -> retrain -> compare.

    Round k lives in RUN_DIR/iterK: `optimized.yaml` (the previous round's config + the strategies the previous
    round's bad-case report calls for), a full pipeline run on it, and `compare/` (previous round vs this one).
    """
    import yaml

    from sidrec.analysis import run_compare
    from sidrec.io import write_text
    from sidrec.optimize.strategies import optimize

    run_dir = Path(run_dir)
    ledger = Pipeline(cfg, data, run_dir, ask=ask).run(start=start, until=until)
    if iterate and until not in (None, "analyze"):
        raise SidrecError("--iterate needs the analyze stage: drop --until or set it to analyze")
    previous, previous_cfg = run_dir, cfg
    for k in range(1, iterate + 1):
        here = run_dir / f"iter{k}"
        here.mkdir(parents=True, exist_ok=True)
        base = here / "base.yaml"
        write_text(base, yaml.safe_dump(previous_cfg.model_dump(mode="json"), sort_keys=False))
        optimize(previous / "analysis" / "badcase_report.json", here / "optimized.yaml", auto=True, base=base,
                 data=Pipeline(previous_cfg, data, previous).dataset_dir())
        next_cfg = load_pipeline_config(here / "optimized.yaml")
        console.rule(f"[bold]iteration {k}: {here / 'optimized.yaml'}")
        Pipeline(next_cfg, data, here, ask=ask).run(start=start)
        run_compare([previous, here], here / "compare", names=[previous.name, here.name])
        previous, previous_cfg = here, next_cfg
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
