"""Optimization strategies: a bad-case report -> concrete overrides of the run config (sections sft / rl / sid).

Each strategy answers one failure pattern of `sidrec analyze` (`badcase_report.json`) with settings the training
code honours:

| strategy | overrides | honoured by |
|---|---|---|
| `long_tail` | `sft.sampling: {kind: inverse_frequency, power: 0.5}`; `rl.rewards.diversity: 0.1` | seqrec rows whose target is rare are repeated (`tasks.builders.balance_copies`); GRPO rewards groups that spread over first-level codes |
| `cold_start` | `sft.tasks.title2sid` and `sft.tasks.sid2title` doubled (at least 2.0) | the alignment tasks cover every catalogue item, also those never or seldom a target (`build_examples` task weights) |
| `short_history` | `sft.augment.short_history: k` (k = the report's `short_history_max_len`, else 3) | every seqrec row with more than k items is added again with only its last k |
| `recency_bias` | `sft.augment.drop_old_fraction: f` (f = the report's `recency_old_fraction`, else 0.5) | every seqrec row is added again without its old part, so the target is learnt from the recent items alone (the pattern: the top prediction follows the old part of the history) |
| `sid_quality` | `sid.method: rqkmeans-constrained` (balanced codes); `sid.levels` + 1 when SIDs collide | `sidrec sid build --config`; SFT then trains on the new SIDs |
| `hyperparameter` | `sft.learning_rate` x 0.5, `sft.epochs` x 1.5 | HF `TrainingArguments` (`train.sft.training_arguments`) |

`--auto` rules (`auto_select`). A pattern selects its strategy when the report shows it clears its own uncertainty:

- it is in more than 20 % of the failures (`MIN_FAILURE_SHARE`),
- in at least 30 failing rows (`MIN_COUNT`), and
- the lower end of the 95 % interval of its lift is above 1.1 (`MIN_LIFT_LOW`): the pattern is over-represented
  among failures by at least 10 % even at the pessimistic end. The interval is the report's `lift_ci95` (Katz's log
  interval of a ratio of two shares, `sidrec.evaluate.stats.lift_interval`), or computed from the report's counts;
  a pattern with neither never triggers.

A lift of 1.01 on a few hundred rows has an interval around 1 and selects nothing. `sid_quality` is selected only
when the report's SID-quality figures show a problem: SIDs collide, or the first level has a normalised code entropy
below 0.9 or uses under half its codebook; a `category_mismatch` that clears the rule is then quoted as supporting
evidence (the coarse SID levels group items into categories for the model), but on SIDs whose figures are fine it
selects nothing. `hyperparameter` is the fallback when nothing else is selected.

The base config (`--base`) is what the strategies change. Without it, the config the evaluated run used: the
`config` of the run's ledger `pipeline.json`, or its `config.yaml`, in the run folder holding the report's analysis
(RUN/analysis/badcase_report.json) or its evaluation (RUN/eval). `--base` accepts a run config YAML, such a ledger,
or a run folder.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ValidationError

from sidrec.config import deep_merge, read_yaml
from sidrec.errors import SidrecError
from sidrec.evaluate.stats import lift_interval
from sidrec.io import read_json

STRATEGIES = ("long_tail", "cold_start", "short_history", "recency_bias", "sid_quality", "hyperparameter")
PATTERNS = ("cold_start", "long_tail", "short_history", "category_mismatch", "recency_bias")

# --auto thresholds
MIN_FAILURE_SHARE = 0.20  # a pattern must be in more than this share of the failures,
MIN_COUNT = 30  # in at least this many failing rows,
MIN_LIFT_LOW = 1.1  # and the lower 95 % bound of its lift (rate among failures / among successes) above this
MIN_FIRST_LEVEL_ENTROPY = 0.9  # normalised entropy of the first SID level's code sizes
MIN_FIRST_LEVEL_USAGE = 0.5  # share of the first level's codebook in use
PATTERN_STRATEGY = {"long_tail": "long_tail", "cold_start": "cold_start", "short_history": "short_history",
                    "recency_bias": "recency_bias", "category_mismatch": "sid_quality"}

# strategy settings
LONG_TAIL_POWER = 0.5
DIVERSITY_WEIGHT = 0.1
ALIGN_FACTOR = 2.0
SHORT_HISTORY_ITEMS = 3  # when the report does not record analysis.short_history_max_len
DROP_OLD_FRACTION = 0.5  # when the report does not record analysis.recency_old_fraction
LR_FACTOR = 0.5
EPOCHS_FACTOR = 1.5
BALANCED_METHOD = "rqkmeans-constrained"


# ---------------------------------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class PatternStats:
    name: str
    rate_failures: float | None  # share of the failures that have the pattern
    rate_successes: float | None
    lift: float | None  # rate_failures / rate_successes
    count_failures: int | None = None
    available: bool = True
    lift_ci: tuple[float, float] | None = None  # 95 % interval of the lift

    @property
    def effective_lift(self) -> float | None:
        if self.lift is not None:
            return self.lift
        if self.rate_failures and self.rate_successes == 0:
            return math.inf  # found among failures only
        return None

    def triggers(self) -> bool:
        """The --auto rule (module doc): share, count and the lift's lower bound all clear their thresholds."""
        return (self.available and self.rate_failures is not None and self.rate_failures > MIN_FAILURE_SHARE
                and self.count_failures is not None and self.count_failures >= MIN_COUNT
                and self.lift_ci is not None and self.lift_ci[0] > MIN_LIFT_LOW)

    def describe(self) -> str:
        if not self.available:
            return f"{self.name}: not available in the report"
        lift = self.effective_lift
        lift_s = "n/a" if lift is None else ("inf" if math.isinf(lift) else f"{lift:.2f}")
        ci = "no interval" if self.lift_ci is None else f"95% CI {self.lift_ci[0]:.2f}-{self.lift_ci[1]:.2f}"
        succ = "n/a" if self.rate_successes is None else f"{self.rate_successes:.1%}"
        fail = "n/a" if self.rate_failures is None else f"{self.rate_failures:.1%}"
        count = f" ({self.count_failures} rows)" if self.count_failures is not None else ""
        return f"{self.name} in {fail} of failures{count} vs {succ} of successes (lift {lift_s}, {ci})"


@dataclass(frozen=True)
class SidStats:
    collided_items: int | None
    collision_rate: float | None
    first_usage: float | None
    first_entropy: float | None

    @property
    def collides(self) -> bool:
        return bool(self.collided_items) or bool(self.collision_rate)

    def problems(self) -> list[str]:
        out = []
        if self.collides:
            parts = [f"{self.collided_items} collided items" if self.collided_items is not None else None,
                     f"collision rate {self.collision_rate:.4f}" if self.collision_rate is not None else None]
            out.append("SIDs collide (" + ", ".join(p for p in parts if p) + ")")
        if self.first_entropy is not None and self.first_entropy < MIN_FIRST_LEVEL_ENTROPY:
            out.append(f"first-level code entropy {self.first_entropy:.3f} < {MIN_FIRST_LEVEL_ENTROPY}")
        if self.first_usage is not None and self.first_usage < MIN_FIRST_LEVEL_USAGE:
            out.append(f"first-level codebook usage {self.first_usage:.3f} < {MIN_FIRST_LEVEL_USAGE}")
        return out

    def describe(self) -> str:
        fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
        return (f"SIDs: {fmt(self.collided_items, 'd')} collided items, first level usage "
                f"{fmt(self.first_usage, '.3f')}, entropy {fmt(self.first_entropy, '.3f')}")


@dataclass
class BadcaseReport:
    source: str
    patterns: dict[str, PatternStats]
    failure_rate: float
    sid: SidStats | None = None
    dataset: dict | None = None
    settings: dict = field(default_factory=dict)  # the analysis thresholds, when recorded (`config`)
    failures: int | None = None
    num_rows: int | None = None
    top_k: int | None = None
    eval: str | None = None  # the evaluation folder the report analysed


def _number(value: Any, where: str, integer: bool = False, optional: bool = True):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise SidrecError(f"{where}: expected {kind}{' or null' if optional else ''}, got {value!r}")
    return int(value) if integer else float(value)


def _require(obj: dict, key: str, where: str, hint: str = ""):
    if key not in obj:
        raise SidrecError(f"{where}: missing key '{key}'{hint}")
    return obj[key]


def _parse_pattern(name: str, p: Any, where: str) -> PatternStats:
    if not isinstance(p, dict):
        raise SidrecError(f"{where}: expected an object with rate_failures, rate_successes and lift")
    available = p.get("available", True) is not False
    ci = None
    if isinstance(p.get("failures"), dict):  # `sidrec analyze`: failures/successes {rows, with_pattern, rate}
        fails = p["failures"]
        succ = _require(p, "successes", where)
        if not isinstance(succ, dict):
            raise SidrecError(f"{where}.successes: expected an object with 'rate'")
        rf = _number(_require(fails, "rate", f"{where}.failures"), f"{where}.failures.rate")
        rs = _number(_require(succ, "rate", f"{where}.successes"), f"{where}.successes.rate")
        count = _number(fails.get("with_pattern"), f"{where}.failures.with_pattern", integer=True)
        counts = [_number(d.get(k), f"{where}.{side}.{k}", integer=True)
                  for side, d in (("failures", fails), ("successes", succ)) for k in ("with_pattern", "rows")]
        if "lift_ci95" not in p and None not in counts:  # a report written before lift_ci95 existed
            ci = lift_interval(*counts)
    else:
        hint = " (or 'failures': {rate, with_pattern})" if "rate_successes" not in p else ""
        rf = _number(_require(p, "rate_failures", where, hint), f"{where}.rate_failures")
        rs = _number(_require(p, "rate_successes", where), f"{where}.rate_successes")
        count = _number(p.get("count_failures"), f"{where}.count_failures", integer=True)
    lift = _number(_require(p, "lift", where), f"{where}.lift")
    for key, v in (("rate_failures", rf), ("rate_successes", rs)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise SidrecError(f"{where}: {key} must be a share between 0 and 1, got {v}")
    raw = p.get("lift_ci95")
    if raw is not None:
        if not isinstance(raw, list) or len(raw) != 2:
            raise SidrecError(f"{where}.lift_ci95: expected [low, high] or null, got {raw!r}")
        ci = (_number(raw[0], f"{where}.lift_ci95[0]", optional=False),
              _number(raw[1], f"{where}.lift_ci95[1]", optional=False))
    return PatternStats(name, rf, rs, lift, count, available, ci)


def sid_stats(q: Any, where: str = "sid_quality") -> SidStats | None:
    """Collisions and first-level usage from a report's `sid_quality` (a `sid_quality()` dict, or a quality.json
    with before/after, whose `before` (the quantiser's own collisions) is used); None when absent."""
    if q is None:
        return None
    if not isinstance(q, dict):
        raise SidrecError(f"{where}: expected an object or null, got {type(q).__name__}")
    if isinstance(q.get("before"), dict):
        q, where = q["before"], f"{where}.before"
    collided = q.get("collided_items", q.get("collisions"))
    collided = _number(collided, f"{where}.collided_items", integer=True) if not isinstance(collided, dict) else None
    rate = _number(q.get("collision_rate"), f"{where}.collision_rate")
    per = q.get("per_level")
    first = per[0] if isinstance(per, list) and per and isinstance(per[0], dict) else {}
    return SidStats(collided, rate, _number(first.get("usage"), f"{where}.per_level[0].usage"),
                    _number(first.get("entropy"), f"{where}.per_level[0].entropy"))


def parse_report(obj: Any, source: str = "report") -> BadcaseReport:
    """A bad-case report as written by `sidrec analyze`, or the flat form
    `{"patterns": {name: {rate_failures, rate_successes, lift, count_failures}}, "failure_rate", "sid_quality",
    "dataset"}`. Missing required keys are errors that name the key."""
    if not isinstance(obj, dict):
        raise SidrecError(f"{source}: a bad-case report is a JSON object, got {type(obj).__name__}")
    hint = " (a bad-case report written by `sidrec analyze`)"
    patterns_raw = _require(obj, "patterns", source, hint)
    if not isinstance(patterns_raw, dict):
        raise SidrecError(f"{source}: patterns: expected an object of pattern name -> figures")
    failure_rate = _number(_require(obj, "failure_rate", source, hint), f"{source}: failure_rate", optional=False)
    patterns = {name: _parse_pattern(name, p, f"{source}: patterns.{name}") for name, p in patterns_raw.items()}
    dataset = obj.get("dataset")
    if dataset is not None and not isinstance(dataset, dict):
        raise SidrecError(f"{source}: dataset: expected an object or null")
    settings = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    return BadcaseReport(
        source=source, patterns=patterns, failure_rate=failure_rate,
        sid=sid_stats(obj.get("sid_quality"), f"{source}: sid_quality"), dataset=dataset, settings=settings,
        failures=_number(obj.get("failures"), f"{source}: failures", integer=True),
        num_rows=_number(obj.get("num_rows"), f"{source}: num_rows", integer=True),
        top_k=_number(obj.get("top_k"), f"{source}: top_k", integer=True),
        eval=obj.get("eval") if isinstance(obj.get("eval"), str) else None)


def read_report(path: str | Path) -> BadcaseReport:
    path = Path(path)
    if path.is_dir():
        path = path / "badcase_report.json"
    if not path.exists():
        raise SidrecError(f"{path}: bad-case report does not exist (write it with `sidrec analyze`)")
    return parse_report(read_json(path), str(path))


# ---------------------------------------------------------------------------------------------------- base config
RUN_CONFIGS = ("pipeline.json", "config.yaml")  # in a run folder: the ledger (its "config"), the run's config


def run_config_file(folder: Path) -> Path | None:
    """The run config in `folder`: pipeline.json when it records the resolved config, else config.yaml."""
    for name in RUN_CONFIGS:
        path = folder / name
        if path.is_file() and (name != "pipeline.json" or isinstance(read_json(path).get("config"), dict)):
            return path
    return None


def find_run_config(report: BadcaseReport) -> Path | None:
    """The config of the run the report was computed on (module doc), or None."""
    here = Path(report.source).parent
    folders = [here.parent, here] + ([Path(report.eval).parent] if report.eval else [])
    for folder in folders:
        found = run_config_file(folder)
        if found is not None:
            return found
    return None


def read_base(path: str | Path) -> dict:
    """A base config: a run config YAML, a run ledger (pipeline.json: its "config"), or a run folder with either."""
    path = Path(path)
    if path.is_dir():
        found = run_config_file(path)
        if found is None:
            raise SidrecError(f"{path}: no {' or '.join(RUN_CONFIGS)} with a run config in this folder; give --base "
                              f"a run config YAML")
        path = found
    data = read_yaml(path)
    if isinstance(data.get("config"), dict):  # a ledger, or a config file that wraps its sections
        data = data["config"]
    return data


def section_models() -> dict[str, type[BaseModel] | None]:
    """Config sections a run YAML may hold and the model validating each (None: free-form, checked by its stage).
    The pipeline's sections when `sidrec.pipeline` is there (its `rl` adds `enabled`), plus `sasrec`."""
    from sidrec.baselines.config import SasrecConfig
    from sidrec.sid.config import EmbedConfig, SidConfig
    from sidrec.train.config import RlConfig, SftConfig

    models: dict[str, type[BaseModel] | None] = {"embed": EmbedConfig, "sid": SidConfig, "sft": SftConfig,
                                                 "rl": RlConfig, "sasrec": SasrecConfig}
    try:
        from sidrec.pipeline import PipelineConfig
    except ImportError:
        return models
    for name, f in PipelineConfig.model_fields.items():
        ann = f.annotation
        models[name] = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return models


def validate_config(data: dict, source: str) -> dict[str, BaseModel]:
    """Validate every section of a run config; unknown sections and keys are errors naming them."""
    models = section_models()
    unknown = sorted(set(data) - set(models))
    if unknown:
        raise SidrecError(f"{source}: unknown section(s) {unknown}; valid: {', '.join(models)}")
    out = {}
    for name, model in models.items():
        section = data.get(name)
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise SidrecError(f"{source}: section '{name}' must be a mapping of keys, got {type(section).__name__}")
        if model is None:
            continue
        try:
            out[name] = model.model_validate(section)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise SidrecError(f"{source}: {name}.{loc}: {first['msg']} (valid keys: {', '.join(model.model_fields)})"
                              ) from None
    return out


# ---------------------------------------------------------------------------------------------------- strategies
Sections = dict[str, BaseModel]


def _long_tail(cfg: Sections, report: BadcaseReport | None) -> dict:
    rewards = dict(cfg["rl"].rewards)
    rewards["diversity"] = max(rewards.get("diversity", 0.0), DIVERSITY_WEIGHT)
    return {"sft": {"sampling": {"kind": "inverse_frequency", "power": LONG_TAIL_POWER}}, "rl": {"rewards": rewards}}


def _cold_start(cfg: Sections, report: BadcaseReport | None) -> dict:
    tasks = dict(cfg["sft"].tasks)
    for task in ("title2sid", "sid2title"):
        tasks[task] = round(max(tasks.get(task, 0.0), 1.0) * ALIGN_FACTOR, 4)
    return {"sft": {"tasks": tasks}}


def _setting(report: BadcaseReport | None, key: str, default, ok: Callable[[Any], bool]):
    """An analysis threshold recorded in the report (its `config`), or `default` when absent or unusable."""
    v = report.settings.get(key) if report else None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and ok(v) else default


def _short_history(cfg: Sections, report: BadcaseReport | None) -> dict:
    k = _setting(report, "short_history_max_len", SHORT_HISTORY_ITEMS, lambda v: v >= 1)
    return {"sft": {"augment": {"short_history": int(k)}}}


def _recency_bias(cfg: Sections, report: BadcaseReport | None) -> dict:
    f = _setting(report, "recency_old_fraction", DROP_OLD_FRACTION, lambda v: 0 < v < 1)
    return {"sft": {"augment": {"drop_old_fraction": float(f)}}}


def _sid_quality(cfg: Sections, report: BadcaseReport | None) -> dict:
    sid = cfg["sid"]
    out: dict = {"method": BALANCED_METHOD}
    if report and report.sid and report.sid.collides and sid.levels < 26:
        out["levels"] = sid.levels + 1
    return {"sid": out}


def _hyperparameter(cfg: Sections, report: BadcaseReport | None) -> dict:
    sft = cfg["sft"]
    return {"sft": {"learning_rate": float(f"{sft.learning_rate * LR_FACTOR:.6g}"),
                    "epochs": round(sft.epochs * EPOCHS_FACTOR, 3)}}


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    overrides: Callable[[Sections, BadcaseReport | None], dict]


REGISTRY: dict[str, Strategy] = {s.name: s for s in (
    Strategy("long_tail", "inverse-frequency oversampling of rare seqrec targets + RL diversity reward", _long_tail),
    Strategy("cold_start", "double the title2sid / sid2title alignment task weights", _cold_start),
    Strategy("short_history", "add short-history copies (last k items) of seqrec rows", _short_history),
    Strategy("recency_bias", "add recent-only copies (old part dropped) of seqrec rows", _recency_bias),
    Strategy("sid_quality", "balanced RQ-KMeans SIDs, one more level when SIDs collide",
             _sid_quality),
    Strategy("hyperparameter", "halve the SFT learning rate, 1.5x the epochs", _hyperparameter),
)}


def check_names(names: list[str]) -> list[str]:
    """Split comma lists, drop repeats, reject unknown names (listing the valid ones)."""
    out: list[str] = []
    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name not in REGISTRY:
                raise SidrecError(f"unknown strategy '{name}'; valid: {', '.join(STRATEGIES)}")
            if name not in out:
                out.append(name)
    if not out:
        raise SidrecError(f"no strategy given; valid: {', '.join(STRATEGIES)}")
    return out


# ---------------------------------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


RULE = (f"> {MIN_FAILURE_SHARE:.0%} of failures, >= {MIN_COUNT} failing rows, lift 95% lower bound > "
        f"{MIN_LIFT_LOW:g}")


def evidence(name: str, report: BadcaseReport) -> list[str]:
    """The report's figures behind strategy `name`, each saying whether it meets the --auto rule."""
    out = []
    for pattern, strategy in PATTERN_STRATEGY.items():
        if strategy == name and pattern in report.patterns:
            p = report.patterns[pattern]
            rule = "meets" if p.triggers() else "below"
            out.append(p.describe() if not p.available else f"{p.describe()}: {rule} the rule ({RULE})")
    if name == "sid_quality" and report.sid is not None:
        problems = report.sid.problems()
        out.append("; ".join(problems) if problems else report.sid.describe() + ": no collision, usage/entropy fine")
    return out


def auto_select(report: BadcaseReport) -> list[Choice]:
    """Strategies chosen by the documented rules (module doc), in STRATEGIES order; `hyperparameter` if none."""
    reasons: dict[str, list[str]] = {}
    sid_problems = report.sid.problems() if report.sid is not None else []
    for pattern, strategy in PATTERN_STRATEGY.items():
        p = report.patterns.get(pattern)
        if p is not None and p.triggers() and (strategy != "sid_quality" or sid_problems):
            reasons.setdefault(strategy, []).append(f"{p.describe()}: meets the rule ({RULE})")
    if sid_problems:
        reasons.setdefault("sid_quality", []).extend(sid_problems)
    if not reasons:
        reasons["hyperparameter"] = [f"fallback: no pattern meets the rule ({RULE}) and no SID problem (failure "
                                     f"rate {report.failure_rate:.1%})"]
    return [Choice(n, "; ".join(reasons[n])) for n in STRATEGIES if n in reasons]


def manual_choices(names: list[str], report: BadcaseReport, how: str = "--strategy") -> list[Choice]:
    out = []
    for n in check_names(names):
        ev = evidence(n, report)
        out.append(Choice(n, f"chosen by {how}" + (": " + "; ".join(ev) if ev else "")))
    return out


# ---------------------------------------------------------------------------------------------------- applying
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


UNSET = "(unset)"


@dataclass
class Applied:
    name: str
    reason: str
    overrides: dict
    changes: list[tuple[str, Any, Any]]  # (dotted key, value before, value after)


def apply_strategies(base: dict, choices: list[Choice], report: BadcaseReport | None,
                     source: str = "base config") -> tuple[dict, list[Applied]]:
    """Merge each chosen strategy's overrides into `base` (in order); returns the merged config and what changed."""
    merged = dict(base)
    sections = validate_config(merged, source)
    applied = []
    for choice in choices:
        before = _flatten({k: v.model_dump() for k, v in sections.items()})
        overrides = REGISTRY[choice.name].overrides(sections, report)
        merged = deep_merge(merged, overrides)
        sections = validate_config(merged, f"config after strategy {choice.name}")
        after = _flatten({k: sections[k].model_dump() for k in overrides})
        changes = [(k, before.get(k, UNSET), v) for k, v in after.items() if before.get(k, UNSET) != v]
        applied.append(Applied(choice.name, choice.reason, overrides, changes))
    return merged, applied


def _fmt(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def render(merged: dict, applied: list[Applied], report: BadcaseReport, base_path: str | None, how: str) -> str:
    """The optimized YAML with a comment header: which strategies, why (the report's figures), what changed."""
    rows = ""
    if report.failures is not None and report.num_rows is not None:
        top = f" miss the top {report.top_k}" if report.top_k else " fail"
        rows = f" ({report.failures} of {report.num_rows} rows{top})"
    ds = report.dataset or {}
    ds_s = "/".join(str(ds[k]) for k in ("name", "split") if ds.get(k) is not None)
    lines = [f"# Written by `sidrec optimize` from {report.source}" + (f", base {base_path}" if base_path else "")
             + ".",
             f"# Report: failure rate {report.failure_rate:.2%}{rows}" + (f", dataset {ds_s}" if ds_s else "") + ".",
             f"# Strategies ({how}): {', '.join(a.name for a in applied)}", "#"]
    for a in applied:
        lines.append(f"# {a.name}: {a.reason}")
        for key, old, new in a.changes:
            lines.append(f"#   {key}: {_fmt(old)} -> {_fmt(new)}")
        if not a.changes:
            lines.append("#   (no change: the base already has these settings)")
    if any(a.name == "sid_quality" for a in applied):
        lines.append("# The sid section changed: rebuild SIDs (`sidrec sid build --config THIS ...`) before SFT.")
    return "\n".join(lines) + "\n" + dump_config(merged)


def dump_config(data: dict) -> str:
    """YAML in the style of configs/*.yaml: sections and their keys in block style, small leaf mappings and lists
    inline."""
    parts = []
    for name, section in data.items():
        if isinstance(section, dict) and section:
            body = "".join(yaml.safe_dump({k: v}, sort_keys=False, width=110,
                                          default_flow_style=None if isinstance(v, (dict, list)) else False)
                           for k, v in section.items())
            parts.append(f"{name}:\n" + textwrap.indent(body, "  "))
        else:
            parts.append(yaml.safe_dump({name: section}, sort_keys=False, default_flow_style=None))
    return "".join(parts)


def optimize(report_path: str | Path, out: str | Path, names: list[str] | None = None, auto: bool = False,
             base: str | Path | None = None, choose: Callable[[BadcaseReport, list[Choice]], list[str]] | None = None,
             data: str | Path | None = None) -> tuple[str, list[Applied]]:
    """Read the report and base config (`base`, else the run's own: `find_run_config`), pick strategies (auto,
    named, or `choose(report, suggested)`), write the optimized YAML atomically to `out`; returns its text and what
    each strategy changed. With `data`, the report must have been computed on that dataset (a report of another
    dataset would tune the wrong run)."""
    from sidrec.io import write_text

    if auto and names:
        raise SidrecError("give either --auto or --strategy, not both")
    if names:
        check_names(names)  # a typo in a name is reported before anything is looked up
    report = read_report(report_path)
    if data is not None:
        from sidrec.analysis.badcase import check_identity
        from sidrec.data.canonical import Dataset

        check_identity(read_json(report.source), Dataset.load(data), report.source)
    if base is None:
        base = find_run_config(report)
        if base is None:
            raise SidrecError(f"{report.source}: no --base given and no run config found for this report (looked for "
                              f"{' / '.join(RUN_CONFIGS)} in the run folder of its analysis and evaluation); give "
                              f"--base CONFIG, the config the evaluated model was trained with")
    base_data = read_base(base)
    validate_config(base_data, str(base))  # report a bad base before asking anything
    if auto:
        choices, how = auto_select(report), "chosen by --auto"
    elif names:
        choices, how = manual_choices(names, report), "--strategy"
    elif choose is not None:
        choices, how = manual_choices(choose(report, auto_select(report)), report, "hand"), "chosen by hand"
    else:
        raise SidrecError(f"choose strategies: --auto or --strategy NAME ({', '.join(STRATEGIES)})")
    merged, applied = apply_strategies(base_data, choices, report, str(base))
    text = render(merged, applied, report, str(base), how)
    write_text(out, text)
    return text, applied
