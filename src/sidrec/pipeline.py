"""The one-command workflow: data -> embed -> sid -> sft -> scorer -> rl -> eval -> rerank -> analyze.

Every stage has one shape (`Stage`): the config section whose settings change its outputs, the stages whose outputs
it reads, and a `run` that writes its outputs and returns them. The pipeline is only the loop over `STAGES`.

A run folder holds one sub-folder per stage, `config.yaml` (the resolved run config; `--config` takes it back),
`log.txt` (trainer logs and library warnings), `summary.txt` (what the last run did, also printed at its end),
`.lock` (held while a pipeline works in the folder) and `pipeline.json`, the run's ledger: per stage its status
(running / done / off), its cache key, outputs and seconds.
A stage's cache key hashes its output settings (`StageConfig.output_settings`: thread counts and such are left out)
with the keys of the stages it reads; the data stage's covers the content of every input file. A stage is skipped
when the ledger says done with the same key and its outputs are still there, so changing a setting (or editing the
input data) reruns that stage and every stage that reads it. A run killed inside a stage is re-entered there: SFT and
RL pick up their last checkpoint, the scorer its finished seeds, every other stage is short enough to redo.

One YAML file describes the run (sections embed, sid, sft, scorer, rl, eval, rerank, analysis; see
configs/cpu.yaml), and `--set section.key=value` overrides any key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator
from rich.console import Console

from sidrec.analysis.badcase import AnalysisConfig
from sidrec.baselines.config import SasrecConfig
from sidrec.config import StageConfig, apply_overrides, describe_error, read_yaml, setting_error
from sidrec.errors import SidrecError
from sidrec.evaluate.fusion import COLD, GRID, PRIOR_GRID, TRANSITION_GRID
from sidrec.io import MANIFEST, config_hash, file_sha256, read_json, read_manifest, write_json, write_text
from sidrec.sid.config import EmbedConfig, SidConfig
from sidrec.train.config import RlConfig, SftConfig, UpdateConfig, check_tracker

LEDGER = "pipeline.json"
LOCK = ".lock"
LOG = "log.txt"
RESOLVED = "config.yaml"
SUMMARY = "summary.txt"
console = Console(soft_wrap=True)  # paths and numbers are never broken across lines


class ScorerConfig(StageConfig):
    """The collaborative scorer: one SASRec per seed, their logits averaged (RL's `collaborative` reward)."""

    enabled: bool = False
    seeds: list[int] = Field(default_factory=lambda: [42, 2, 3], min_length=1)
    sasrec: SasrecConfig = Field(default_factory=SasrecConfig)  # its `seed` is replaced by each of `seeds`


class PipelineRlConfig(RlConfig):
    enabled: bool = False  # rl.scorer unset: the scorer stage's runs


class EvalConfig(StageConfig):
    beams: int = Field(50, ge=1)
    split: Literal["train", "valid", "test"] = "test"
    batch_size: int = Field(32, ge=1)
    cutoff_len: int = Field(256, ge=8)
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    max_rows: int | None = Field(None, ge=1)


MAX_LAMBDA = 100.0
Lambda = Annotated[float, Field(ge=0.0, le=MAX_LAMBDA)]


class RerankConfig(StageConfig):
    """Hybrid ranking of the final model's test beams with the scorer stage's ensemble (`sidrec.rerank`): beam
    log-likelihood + weight · z(SASRec logit) + τ · transition prior, `weight` and τ picked on the valid split's beams
    (`auto`) from `grid` x `transition_grid`."""

    enabled: bool = False
    weight: Union[Literal["auto"], Lambda] = "auto"  # λ, or auto: the grid point with the best valid NDCG@10
    grid: list[Lambda] = Field(default_factory=lambda: list(GRID), min_length=1, max_length=100)
    group: int | None = Field(None, ge=1)  # re-rank only each row's first `group` beams (default: all)
    # cold rows (no train row, or history <= 2) and the others: each their own λ and recency-prior weight μ from
    # grid x prior_grid, picked on valid (`fusion.cold_rows`, `recency_prior`; needs weight auto)
    cold: bool = False
    prior_grid: list[Lambda] = Field(default_factory=lambda: list(PRIOR_GRID), min_length=1, max_length=100)
    # τ of the transition prior, log(1 + count of (last history item -> beam's item) among earlier labelled rows),
    # picked on valid with λ (and μ) when weight is auto (`fusion.transition_prior`); [0] leaves the prior out
    transition_grid: list[Lambda] = Field(default_factory=lambda: list(TRANSITION_GRID), min_length=1,
                                          max_length=100)

    @field_validator("weight", mode="before")
    @classmethod
    def _weight(cls, v):
        if isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_LAMBDA:
            raise setting_error(f"{v!r} is neither auto nor a λ in 0..{MAX_LAMBDA:g}")
        return float(v)


class PipelineConfig(StageConfig):
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    sid: SidConfig = Field(default_factory=SidConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    rl: PipelineRlConfig = Field(default_factory=PipelineRlConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)  # `--update-from RUN` only

    @model_validator(mode="after")
    def _scorer_for_rl(self):
        if self.rl.enabled and self.rl.rewards.get("collaborative") and self.rl.scorer is None \
                and not self.scorer.enabled:
            raise ValueError("the collaborative reward needs a scorer: set scorer.enabled=true (the pipeline trains "
                             "it) or rl.scorer=SASREC_RUN_FOLDER")
        if self.rerank.enabled and not self.scorer.enabled:
            raise ValueError("the rerank stage re-ranks with the scorer stage's ensemble: set scorer.enabled=true or "
                             "rerank.enabled=false")
        if self.rerank.cold and self.rerank.weight != "auto":
            raise ValueError("rerank.cold picks λ and μ on valid for cold rows and the others: set "
                             "rerank.weight=auto")
        if self.rerank.enabled and self.rerank.weight == "auto" and self.eval.split != "test":
            raise ValueError(f"rerank.weight=auto picks λ on valid and re-ranks the test beams, but eval.split is "
                             f"{self.eval.split!r}: set eval.split=test or a fixed rerank.weight")
        return self


def load_pipeline_config(path: str | Path | None, overrides: list[str] | None = None) -> PipelineConfig:
    data = read_yaml(path) if path else {}
    unknown = sorted(set(data) - set(PipelineConfig.model_fields))
    if unknown:
        raise SidrecError(f"{path}: unknown section(s) {unknown}; valid: {', '.join(PipelineConfig.model_fields)}")
    return validate_pipeline_config(apply_overrides(data, overrides), path or "config")


def validate_pipeline_config(data: dict, source: str | Path = "config") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        msg = describe_error(e, prefix=f"{source}: ")
        section = PipelineConfig.model_fields.get(str(first["loc"][0])) if first["loc"] else None
        if first["type"] == "extra_forbidden" and section is not None and hasattr(section.annotation, "model_fields"):
            msg += f" (valid keys: {', '.join(section.annotation.model_fields)})"
        raise SidrecError(msg) from None


# ---------------------------------------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class Stage:
    """One step of the run. `run(pipeline)` writes the stage's outputs and returns them: paths and small results
    (`metrics`, `failure_rate`, `report`, `plots` go into the run's summary), with `made`, the files whose presence
    says the outputs are complete (manifests are written last)."""

    name: str
    section: str | None  # the config section whose output settings are part of its cache key
    inputs: tuple[str, ...]  # stages whose outputs it reads: their keys are part of its key
    run: Callable[["Pipeline"], dict]
    enabled: Callable[[PipelineConfig], bool] = lambda cfg: True
    help: str = ""
    reads_files: bool = False  # its key covers the content of the input data files (the data stage)


def _data(p: Pipeline) -> dict:
    from sidrec.data.resolve import is_canonical, resolve_data

    source = p.data_source()
    if source is not None and not is_canonical(source):  # the inputs changed: import them again
        (p.run_dir / "dataset" / MANIFEST).unlink(missing_ok=True)
    dataset = resolve_data(p.data, p.run_dir)
    return {"dataset": str(dataset), "made": [str(dataset / MANIFEST)]}


def _embed(p: Pipeline) -> dict:
    from sidrec.embed import embed_items

    out = p.folder("embed") / "embeddings.npy"
    info = embed_items(p.dataset_dir(), out, **p.cfg.embed.model_dump())
    return {"embeddings": str(out), "reused": info["reused"], "made": [str(out), str(out.with_suffix(".json"))]}


def _sid(p: Pipeline) -> dict:
    from sidrec.sid.build import build_sids

    s = p.cfg.sid
    build_sids(s.method, p.output("embed", "embeddings"), p.dataset_dir(), p.folder("sid"), levels=s.levels,
               codebook=s.codebook, seed=s.seed, collision=s.collision, threads=s.threads, **s.method_params())
    return {"sids": str(p.folder("sid")), "made": [str(p.folder("sid") / MANIFEST)]}


def _sft(p: Pipeline) -> dict:
    from sidrec.train.sft import run_sft

    model = run_sft(p.cfg.sft, p.dataset_dir(), p.output("sid", "sids"), p.folder("sft"))
    return {"model": str(model), "made": [str(p.folder("sft") / MANIFEST)]}


def _scorer(p: Pipeline) -> dict:
    from sidrec.baselines.sasrec import run_sasrec

    s = p.cfg.scorer
    # a run killed after some seeds keeps them when resumed with the same key; any other key trains every seed again
    stamp = p.folder("scorer") / "key.json"
    resumed = stamp.exists() and read_json(stamp).get("key") == p.stage_hash("scorer")
    write_json(stamp, {"key": p.stage_hash("scorer")})
    runs, metrics = [], {}
    for seed in s.seeds:
        run = p.folder("scorer") / f"seed{seed}"
        if not (resumed and read_manifest(run) is not None):
            console.print(f"scorer: SASRec seed {seed}")
            (run / MANIFEST).unlink(missing_ok=True)  # written again last: a seed killed half-way is not finished
            run_sasrec(p.dataset_dir(), run, s.sasrec.model_copy(update={"seed": seed}), progress=False)
        metrics[seed] = read_json(run / "results.json")["metrics"]["NDCG@10"]
        runs.append(str(run))
    return {"runs": runs, "test_ndcg10": metrics, "made": [str(Path(r) / MANIFEST) for r in runs]}


def _rl(p: Pipeline) -> dict:
    from sidrec.train.rl import run_rl

    cfg = RlConfig(**p.cfg.rl.model_dump(exclude={"enabled"}))
    if cfg.scorer is None and p.cfg.scorer.enabled:
        cfg.scorer = p.output("scorer", "runs")
    model = run_rl(cfg, p.output("sft", "model"), p.dataset_dir(), p.output("sid", "sids"), p.folder("rl"))
    return {"model": str(model), "made": [str(p.folder("rl") / MANIFEST)]}


def _evaluate(p: Pipeline, name: str, model: str) -> dict:
    from sidrec.evaluate.generative import evaluate_generative

    e = p.cfg.eval
    res = evaluate_generative(model, p.dataset_dir(), p.output("sid", "sids"), p.folder(name), split=e.split,
                              beams=e.beams, batch_size=e.batch_size, cutoff_len=e.cutoff_len, dtype=e.dtype,
                              max_rows=e.max_rows)
    m = res["metrics"]
    console.print(f"{name}: {model} {e.split} HR@10 {m['HR@10']} NDCG@10 {m['NDCG@10']}", highlight=False)
    return {"eval": str(p.folder(name)), "model": model, "split": e.split, "rows": res["num_samples"], "metrics": m,
            "made": [str(p.folder(name) / MANIFEST)]}


def _eval_sft(p: Pipeline) -> dict:
    return _evaluate(p, "eval_sft", p.output("sft", "model"))


def _eval(p: Pipeline) -> dict:
    return _evaluate(p, "eval", p.output("rl" if p.cfg.rl.enabled else "sft", "model"))


SUMMARY_GROUPS = ("user without a train row", "user with a train row", COLD, "history 1-2", "history 3-5",
                  "history 6-10", "history 11-20", "history 21+")


def _rerank(p: Pipeline) -> dict:
    """The final model's test beams re-ranked with the scorer stage's ensemble into RUN/rerank (a harness folder and
    gains.json); with weight auto, λ is picked on the same model's valid beams (ranked here, into valid_beams/)."""
    from sidrec.evaluate.generative import evaluate_generative
    from sidrec.rerank import rerank_eval

    r, e, out = p.cfg.rerank, p.cfg.eval, p.folder("rerank")
    test_eval, model = p.output("eval", "eval"), p.output("eval", "model")
    shutil.rmtree(out, ignore_errors=True)  # no valid folders of an earlier λ left beside this one's
    valid_eval = None
    if r.weight == "auto":
        valid_eval = out / "valid_beams"
        evaluate_generative(model, p.dataset_dir(), p.output("sid", "sids"), valid_eval, split="valid",
                            beams=e.beams, batch_size=e.batch_size, cutoff_len=e.cutoff_len, dtype=e.dtype,
                            max_rows=e.max_rows)
    report = rerank_eval(test_eval, p.dataset_dir(), p.output("scorer", "runs"), out, r.weight, valid_eval=valid_eval,
                         sids=p.output("sid", "sids"), grid=r.grid, group=r.group, cold=r.cold, prior_grid=r.prior_grid,
                         transition_grid=r.transition_grid)
    res = read_json(out / "results.json")
    valid = None if valid_eval is None else {  # the figures λ was picked on: the model's valid ranking and the fused
        "rows": report["splits"]["valid"]["num_rows"], "picked_by": report["metric"],
        "model": read_json(valid_eval / "results.json")["metrics"], "reranked": read_json(out / "valid" /
                                                                                          "results.json")["metrics"]}
    m = res["metrics"]
    console.print(f"rerank: λ = {report['weight']:g}; {res['split']} HR@10 {m['HR@10']} NDCG@10 {m['NDCG@10']}",
                  highlight=False)
    return {"eval": str(out), "model": model, "suffix": "+scorer", "split": res["split"], "rows": res["num_samples"],
            "metrics": m, "weight": report["weight"], "scorer": report["scorer"]["paths"], "valid": valid,
            "gains": str(out / "gains.json"), "cold": report["cold"], "transition": report["transition"],
            "groups": {  # HR/NDCG@10 by user kind
                g: {split: {"rows": s["groups"][g]["rows"], **s["groups"][g]["reranked"]}
                    for split, s in report["splits"].items() if g in s["groups"]}
                for g in SUMMARY_GROUPS}, "made": [str(out / MANIFEST)]}


def _analyze(p: Pipeline) -> dict:
    from sidrec.analysis import run_analysis

    out = p.folder("analysis")
    report = run_analysis(p.output("eval", "eval"), p.dataset_dir(), out, cfg=p.cfg.analysis,
                          sids=p.output("sid", "sids"))
    return {"analysis": str(out), "failure_rate": report.get("failure_rate"), "top_k": report.get("top_k"),
            "report": str(out / "visualizations" / "summary_report.txt"), "plots": str(out / "visualizations"),
            "made": [str(out / MANIFEST)]}


STAGES = (
    Stage("data", None, (), _data, help="import the data into the canonical format", reads_files=True),
    Stage("embed", "embed", ("data",), _embed, help="item text embeddings"),
    Stage("sid", "sid", ("data", "embed"), _sid, help="semantic IDs"),
    Stage("sft", "sft", ("data", "sid"), _sft, help="supervised fine-tuning"),
    Stage("scorer", "scorer", ("data",), _scorer, lambda c: c.scorer.enabled,
          "SASRec ensemble (RL reward, re-ranking)"),
    Stage("rl", "rl", ("data", "sid", "sft", "scorer"), _rl, lambda c: c.rl.enabled, "RL from the SFT model"),
    Stage("eval_sft", "eval", ("data", "sid", "sft"), _eval_sft, lambda c: c.rl.enabled,
          "evaluate the SFT model (RL's start) for comparison"),
    Stage("eval", "eval", ("data", "sid", "sft", "rl"), _eval, help="evaluate the final model"),
    Stage("rerank", "rerank", ("data", "sid", "scorer", "eval"), _rerank, lambda c: c.rerank.enabled,
          "re-rank the final model's beams with the scorer and priors (picked on valid)"),
    Stage("analyze", "analysis", ("data", "sid", "eval"), _analyze, help="bad-case analysis (the model's own ranking)"),
)
BY_NAME = {s.name: s for s in STAGES}


# `sidrec pipeline --update-from RUN`: a later slice of data (its catalogue extends RUN's) goes through the same data
# and embed stages, then the new items get SIDs from RUN's codebooks and RUN's final model is continued on the slice
# (docs/update.md). Its sid and update stages' keys include RUN's, so a changed parent runs them again.
def _assign(p: Pipeline) -> dict:
    from sidrec.sid import assign_sids

    parent = p.parent()
    summary = assign_sids(parent["sids"], p.output("embed", "embeddings"), p.folder("sid"), data=p.dataset_dir())
    return {"sids": str(p.folder("sid")), "parent_sids": parent["sids"], "assign": summary["assign"],
            "made": [str(p.folder("sid") / MANIFEST)]}


def _update(p: Pipeline) -> dict:
    from sidrec.train.update import run_update

    parent = p.parent()
    model = run_update(p.cfg.update, parent["model"], p.dataset_dir(), p.output("sid", "sids"), p.folder("update"))
    return {"model": str(model), "parent_model": parent["model"], "made": [str(p.folder("update") / MANIFEST)]}


def _eval_update(p: Pipeline) -> dict:
    return _evaluate(p, "eval", p.output("update", "model"))


UPDATE_STAGES = (
    STAGES[0], STAGES[1],
    Stage("sid", None, ("data", "embed"), _assign, help="SIDs for the new items from the parent run's codebooks"),
    Stage("update", "update", ("data", "sid"), _update, help="continue the parent run's final model on the slice"),
    Stage("eval", "eval", ("data", "sid", "update"), _eval_update, help="evaluate the updated model"),
    BY_NAME["analyze"],
)
FOLDERS = {"data": "dataset", "analyze": "analysis"}  # every other stage writes into a folder of its own name


# ------------------------------------------------------------------------------------------------- the run folder
def input_files(source: Path) -> list[Path]:
    return sorted(f for f in source.rglob("*") if f.is_file() and not f.name.startswith("."))


def content_key(source: Path, known: dict) -> tuple[str, dict]:
    """A key of every file's content under `source`: a file whose size and mtime match `known` (from the previous
    run) keeps its recorded hash, any other is hashed again, so a touched but unchanged file changes nothing."""
    files = {}
    for f in input_files(source):
        st, rel = f.stat(), str(f.relative_to(source))
        old = known.get(rel)
        same = old and old["size"] == st.st_size and old["mtime_ns"] == st.st_mtime_ns
        files[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": old["sha256"] if same else
                      file_sha256(f)}
    return config_hash({k: v["sha256"] for k, v in files.items()}), files


class RunLock:
    """`RUN/.lock` (PID, host, start time) held while a pipeline works in RUN; a second one fails at once. A lock
    whose process is gone (killed run) is taken over, with a message."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": platform.node(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if not holder and time.time() - self._mtime() < 5:  # being written by a pipeline starting now
                    holder = {"pid": "unknown", "host": platform.node(), "since": "just now"}
                if holder.get("host") not in (None, platform.node()) or _alive(holder.get("pid")) or \
                        holder.get("pid") == "unknown":
                    raise SidrecError(
                        f"{self.path.parent} is in use by another pipeline (PID {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('since')}); wait for it to finish or stop it, or "
                        f"use another --out") from None
                console.print(f"taking over a stale lock {self.path} from PID {holder.get('pid')} (no longer "
                              f"running)", highlight=False)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            return self
        raise SidrecError(f"{self.path}: could not take the run lock; another pipeline is starting in this folder")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # half-written or unreadable

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def __exit__(self, *exc):
        if self._holder().get("pid") == os.getpid():  # still ours
            self.path.unlink(missing_ok=True)


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_log(path: Path):
    """Library logs, warnings and the trainers' log dicts go to `path` instead of the console while the run lasts."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    hf = None
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf

        hf.disable_default_handler()
        hf.enable_propagation()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        if hf is not None:
            hf.disable_propagation()
            hf.enable_default_handler()
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


# ----------------------------------------------------------------------------------------------------- the loop
class Pipeline:
    """Runs the stages in order over one run folder, skipping the finished ones.

    `ask(stage, state)` (the CLI's --interactive) answers "run" (if needed), "skip", "rerun" or "set:KEY=VALUE"
    (change a setting, then run if needed)."""

    def __init__(self, cfg: PipelineConfig, data: str | Path | None, run_dir: str | Path,
                 ask: Callable[[str, str], str] | None = None, update_from: str | Path | None = None):
        self.cfg, self.data, self.run_dir, self.ask = cfg, data, Path(run_dir), ask
        self.update_from = None if update_from is None else Path(update_from)
        self.stages = STAGES if update_from is None else UPDATE_STAGES
        self.by_name = {s.name: s for s in self.stages}
        if self.update_from is not None:
            if self.update_from.resolve() == self.run_dir.resolve():
                raise SidrecError(f"{self.run_dir}: --out must be a new run folder, not the run being updated")
            self.parent()  # checked before anything runs
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ledger_path = self.run_dir / LEDGER
        self.ledger: dict = read_ledger(self.ledger_path)
        self._data_key: str | None = None

    # ------------------------------------------------------------------------------------------------ bookkeeping
    def _save(self) -> None:
        write_json(self.ledger_path, self.ledger)

    def folder(self, stage: str) -> Path:
        return self.run_dir / FOLDERS.get(stage, stage)

    def entry(self, stage: str) -> dict:
        return self.ledger.get("stages", {}).get(stage) or {}

    def output(self, stage: str, key: str):
        try:
            return self.ledger["stages"][stage]["outputs"][key]
        except KeyError:
            raise SidrecError(f"{self.run_dir}: stage {stage} has no finished outputs; run the pipeline with "
                              f"--from {stage}") from None

    def dataset_dir(self) -> Path:
        return Path(self.output("data", "dataset"))

    def parent(self) -> dict:
        """`--update-from`: the parent run's final model (update, else RL, else SFT) and SIDs, and its key."""
        ledger = read_ledger(self.update_from / LEDGER)
        st = ledger.get("stages", {})
        final = next((n for n in ("update", "rl", "sft") if st.get(n, {}).get("status") == "done"), None)
        if final is None or st.get("sid", {}).get("status") != "done":
            raise SidrecError(f"{self.update_from}: not a finished pipeline run (no {LEDGER} with done sid and sft "
                              f"stages); --update-from takes the run folder of `sidrec pipeline`")
        model, sids = st[final]["outputs"]["model"], st["sid"]["outputs"]["sids"]
        for path in (model, sids):
            if not Path(path).is_dir():
                raise SidrecError(f"{path}: recorded in {self.update_from / LEDGER} but gone; cannot update from it")
        key = config_hash({"run": str(self.update_from.resolve()), "model": st[final]["hash"],
                           "sid": st["sid"]["hash"]})
        return {"model": model, "sids": sids, "key": key}

    def data_source(self) -> Path | None:
        """The folder the data stage reads: --data, else the first default location that exists."""
        from sidrec.data.resolve import DEFAULT_CANDIDATES

        if self.data is not None:
            return Path(self.data) if Path(self.data).exists() else None
        return next((c for c in DEFAULT_CANDIDATES if c.exists()), None)

    def settings(self, stage: Stage) -> dict:
        """What decides the stage's outputs, besides its inputs: its section's output settings, the data's content."""
        if not stage.enabled(self.cfg):
            return {"enabled": False}
        out = getattr(self.cfg, stage.section).output_settings() if stage.section else {}
        if self.update_from is not None and stage.name in ("sid", "update"):
            out["parent"] = self.parent()["key"]
        if stage.reads_files:
            out["content"] = self.data_key()
        return out

    def data_key(self) -> str:
        if self._data_key is None:
            source = self.data_source()
            if source is None:  # the Amazon 2018 download (or a missing folder, which the data stage reports)
                self._data_key = config_hash({"download": str(self.data)})
            else:
                self._data_key, files = content_key(source, self.ledger.get("data_files", {}))
                self.ledger["data_files"] = files
        return self._data_key

    def stage_hash(self, name: str) -> str:
        """This stage's output settings hashed with the keys of the stages it reads."""
        stage = self.by_name[name]
        return config_hash({"settings": self.settings(stage), "inputs": {i: self.stage_hash(i) for i in stage.inputs}})

    def is_done(self, name: str) -> bool:
        e = self.entry(name)
        return bool(e.get("status") in ("done", "off") and e.get("hash") == self.stage_hash(name)
                    and self._outputs_complete(name))

    def _outputs_complete(self, name: str) -> bool:
        return all(Path(f).exists() for f in self.entry(name).get("outputs", {}).get("made", []))

    # ------------------------------------------------------------------------------------------------------- run
    def run(self, start: str | None = None, until: str | None = None) -> dict:
        names = [s.name for s in self.stages]
        for name in (start, until):
            if name is not None and name not in names:
                raise SidrecError(f"unknown stage '{name}'; stages: {', '.join(names)}")
        check_tracker(self.cfg.sft.report_to, "sft.report_to")  # before the first stage, not after the SIDs
        if self.cfg.rl.enabled:
            check_tracker(self.cfg.rl.report_to, "rl.report_to")
        with RunLock(self.run_dir), run_log(self.run_dir / LOG):
            t0 = time.time()
            self._run(names[: names.index(until) + 1] if until else names, names.index(start) if start else None)
            self.summary(time.time() - t0)
        return self.ledger

    def _run(self, names: list[str], forced: int | None) -> None:
        self.ledger.setdefault("stages", {})
        self._record_config()
        this_run = {}
        for i, name in enumerate(names):
            rerun = forced is not None and i >= forced
            if self.ask is not None:
                choice = self.ask(name, "done" if self.is_done(name) else "to do")
                if choice == "skip":
                    if not (self.entry(name).get("status") in ("done", "off") and self._outputs_complete(name)):
                        raise SidrecError(f"cannot skip stage {name}: it has no finished outputs in {self.run_dir}")
                    console.print(f"[yellow]{name}[/]: skipped (asked)")
                    this_run[name] = "skipped (asked)"
                    continue
                if choice.startswith("set:"):
                    self.cfg = validate_pipeline_config(apply_overrides(self.cfg.model_dump(), [choice[4:]]))
                    self._record_config()
                rerun = rerun or choice == "rerun"
            entry = self.entry(name)
            if self.is_done(name) and not rerun:
                if entry["status"] == "done":
                    console.print(f"[green]{name}[/]: done earlier, skipped")
                entry["skipped_runs"] = entry.get("skipped_runs", 0) + 1
                this_run[name] = "skipped"
                self._save()
                continue
            self._run_stage(self.by_name[name])
            this_run[name] = self.entry(name)["status"]
        self.ledger["last_run"] = this_run
        self._save()

    def _record_config(self) -> None:
        import yaml

        self.ledger["config"] = self.cfg.model_dump(mode="json")
        write_text(self.run_dir / RESOLVED, "# the resolved config of this run: sidrec pipeline --config THIS_FILE\n"
                   + yaml.safe_dump(self.ledger["config"], sort_keys=False))

    def _run_stage(self, stage: Stage) -> None:
        entry = {"status": "running", "hash": self.stage_hash(stage.name),
                 "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if not stage.enabled(self.cfg):
            entry.update(status="off", outputs={}, seconds=0.0)
            self.ledger["stages"][stage.name] = entry
            self._save()
            return
        console.rule(f"[bold]{stage.name}[/]: {stage.help}")
        logging.getLogger("sidrec.pipeline").info("stage %s starts", stage.name)
        self.ledger["stages"][stage.name] = entry
        self._save()
        t0 = time.time()
        outputs = stage.run(self)
        entry.update(status="done", outputs=outputs, seconds=round(time.time() - t0, 1),
                     finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        logging.getLogger("sidrec.pipeline").info("stage %s done in %s s", stage.name, entry["seconds"])
        self._save()

    # --------------------------------------------------------------------------------------------------- summary
    def summary(self, seconds: float) -> None:
        """What happened, as plain text (full precision, never cut to the terminal's width)."""
        st = self.ledger.get("stages", {})
        lines = [f"run folder: {self.run_dir}"]
        if "dataset" in st.get("data", {}).get("outputs", {}):
            lines.append(f"data: {st['data']['outputs']['dataset']}")
        ran = [n for n in self.by_name if st.get(n, {}).get("status") == "done"]
        done = [(n, st[n]["outputs"]) for n in ran if self.is_done(n)]
        stale = [n for n in ran if not self.is_done(n)]
        evals = [(n, o) for n, o in done if "metrics" in o]
        if evals:
            keys = [f"{m}@{k}" for k in (5, 10, 20) for m in ("HR", "NDCG")]
            rows = [["stage", "model", "split", "rows", *keys]]
            for n, o in evals:
                model = Path(o["model"])
                model = model.relative_to(self.run_dir) if model.is_relative_to(self.run_dir) else model
                rows.append([n, str(model) + o.get("suffix", ""), o["split"], str(o["rows"]),
                             *[repr(o["metrics"].get(k)) for k in keys]])
            width = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
            lines.append("metrics (exact items):")
            lines += ["  " + "  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(r, width)))
                      for r in rows]
        for n, o in done:
            if "weight" in o:
                lines.append(f"{n}: λ = {o['weight']!r} (beam log-likelihood + λ · z(scorer logit)), " + (
                    "fixed in the config" if o["valid"] is None else
                    f"picked on valid {o['valid']['picked_by']} over {o['valid']['rows']} rows: model HR@10 "
                    f"{o['valid']['model']['HR@10']!r} NDCG@10 {o['valid']['model']['NDCG@10']!r} -> re-ranked HR@10 "
                    f"{o['valid']['reranked']['HR@10']!r} NDCG@10 {o['valid']['reranked']['NDCG@10']!r}")
                    + f"; gains per row group: {o['gains']}")
                tau = o.get("transition") or {}
                if tau and "weight" in tau:
                    lines.append(f"{n}: transition prior τ = {tau['weight']!r} (picked on valid with λ)")
                if o.get("cold"):
                    c = o["cold"]
                    taus = {part: f", transition prior τ = {c[part]['transition_weight']!r}" if tau else ""
                            for part in ("cold", "others")}
                    lines.append(f"{n}: cold rows ({c['rows']}) λ = {c['cold']['weight']!r}, recency prior μ = "
                                 f"{c['cold']['prior_weight']!r}{taus['cold']}; the others λ = "
                                 f"{c['others']['weight']!r}, μ = {c['others']['prior_weight']!r}{taus['others']} "
                                 f"(all picked on valid)")
                groups = {g: by for g, by in (o.get("groups") or {}).items() if by}
                if groups:
                    lines.append(f"{n} by row group, the final ranking (rows HR@10 NDCG@10; valid | test):")
                    lines += [f"  {g:<40} " + " | ".join(f"{split} {v['rows']:>5} {v['HR@10']:.4f} {v['NDCG@10']:.4f}"
                                                         for split, v in by.items()) for g, by in groups.items()]
            if "failure_rate" in o:
                lines.append(f"bad cases ({n}): {o['failure_rate']!r} of rows miss the target in the top {o['top_k']}")
            if "report" in o:
                lines.append(f"report: {o['report']}  plots: {o['plots']}/")
        if stale:
            lines.append(f"out of date (their settings or inputs changed since they ran): {', '.join(stale)}")
        times = []
        for n, state in self.ledger.get("last_run", {}).items():
            e = st.get(n, {})
            if e.get("status") == "off":
                times.append(f"{n} off")
            elif state == "done":
                times.append(f"{n} {e.get('seconds')} s")
            else:
                times.append(f"{n} {state}" + (f" ({e['seconds']} s when it ran)" if "seconds" in e else ""))
        lines.append("stages: " + ", ".join(times))
        lines.append(f"total: {seconds:.1f} s; log: {self.run_dir / LOG}; config: {self.run_dir / RESOLVED}")
        text = "\n".join(lines)
        write_text(self.run_dir / SUMMARY, text + "\n")
        print(text, flush=True)


def run_pipeline(cfg: PipelineConfig, data, run_dir: str | Path, start: str | None = None, until: str | None = None,
                 ask=None, iterate: int = 0, update_from: str | Path | None = None) -> dict:
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
    if iterate and update_from is not None:
        raise SidrecError("--iterate retrains from scratch each round; it does not combine with --update-from")
    run_dir = Path(run_dir)
    ledger = Pipeline(cfg, data, run_dir, ask=ask, update_from=update_from).run(start=start, until=until)
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
