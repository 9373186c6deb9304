"""Run settings as validated pydantic models, loaded from YAML and overridable from the command line.

Every stage's settings subclass `StageConfig` (unknown keys are errors, so a typo never silently does nothing).
`load_config(Model, path, ["key=value", "section.key=value"])` reads a YAML file (optionally one section of it),
applies the overrides and validates; `check_options(Model, option=value, ...)` validates a command's options with the
same model. Either names the field (or `--option`) and the allowed range in one `SidrecError` line.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from sidrec.errors import SidrecError
from sidrec.io import reading

T = TypeVar("T", bound="StageConfig")
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # the range numpy accepts


class Section(BaseModel):
    """A block of settings: an unknown key is an error, and so is NaN or infinity in a number."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StageConfig(Section):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)
    # Settings that change how a stage runs but not what it writes (thread counts, devices, logging targets, redo
    # flags): `output_settings` leaves them out, so the pipeline's cache key never reruns a stage for them. A subclass
    # with more such fields extends the set.
    RUNTIME: ClassVar[frozenset[str]] = frozenset({"threads", "report_to", "device", "force"})

    def output_settings(self) -> dict:
        """The settings that decide this stage's outputs (nested stage settings likewise), as JSON-ready values."""
        out = self.model_dump(mode="json", exclude=set(self.RUNTIME))
        for name in out:
            value = getattr(self, name)
            if isinstance(value, StageConfig):
                out[name] = value.output_settings()
        return out


def setting_error(message: str) -> PydanticCustomError:
    """Raise this from a validator: pydantic reports `message` as is, under the field being validated."""
    return PydanticCustomError("setting", message)


def describe_error(e: ValidationError, prefix: str = "", option: bool = False) -> str:
    """The first problem of `e` in one line: `prefix`, the field (`--field-name` when `option`), rule and value."""
    first = e.errors()[0]
    loc = [str(x) for x in first["loc"]]
    if option:
        loc = ["--" + "-".join(loc).replace("_", "-")] if loc else []
    where = prefix + ".".join(loc) if loc else prefix.rstrip(". :")
    msg = first["msg"].removeprefix("Value error, ")
    quiet = first["type"] in ("extra_forbidden", "missing", "setting", "value_error")  # their message says enough
    got = "" if quiet else f" (got {first['input']!r})"
    return f"{where}: {msg}{got}" if where else f"{msg}{got}"


def check_options(model: type[T], **options: Any) -> T:
    """`model` built from a command's options (None: the model's default); a bad one raises a `SidrecError` naming
    its `--option`, before the command loads anything."""
    try:
        return model.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError as e:
        raise SidrecError(describe_error(e, option=True)) from None


def parse_overrides(pairs: list[str] | None) -> list[tuple[list[str], Any]]:
    """`["a.b=3", "c=[1,2]"]` -> `[(["a", "b"], 3), (["c"], [1, 2])]`; values are parsed as YAML."""
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise SidrecError(f"override '{pair}' must look like key=value (e.g. sasrec.epochs=50)")
        key, raw = pair.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise SidrecError(f"--set {pair}: the key must be dot-separated names (e.g. sft.epochs=2)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise SidrecError(f"--set {pair}: the value is not valid YAML ({problem}); write key=value with a YAML "
                              f"value, e.g. sft.epochs=2 or 'sft.tasks={{seqrec: 1.0, title2sid: 0.5}}'") from None
        out.append((parts, value))
    return out


def apply_overrides(data: dict, pairs: list[str] | None, section: str | None = None) -> dict:
    """A copy of `data` with each `key.path=value` set. The value replaces what the path names, a mapping too:
    `sft.tasks={seqrec: 1}` trains seqrec alone rather than merging into the file's task weights, because that is
    what the command line says. With `section`, a leading `section.` is optional."""
    out = copy.deepcopy(data)
    for parts, value in parse_overrides(pairs):
        if section is not None and len(parts) > 1 and parts[0] == section:
            parts = parts[1:]
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


def deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise SidrecError(f"{path}: config file does not exist")
    try:
        with reading(path):
            text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise SidrecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SidrecError(f"{path}: a config file must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                section: str | None = None) -> T:
    data: dict = {}
    if path is not None:
        data = read_yaml(path)
        if section is not None:
            data = data.get(section, {}) or {}
    data = apply_overrides(data, overrides, section)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        src = f"{path}" if path else "config"
        line = describe_error(e, f"{src}: {(section + '.') if section else ''}")
        if e.errors()[0]["type"] == "extra_forbidden":
            line += f" (valid keys: {', '.join(model.model_fields)})"
        raise SidrecError(line) from None
