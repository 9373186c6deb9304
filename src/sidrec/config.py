"""Run settings as validated pydantic models, loaded from YAML and overridable from the command line.

Every stage's settings subclass `StageConfig` (unknown keys are errors, so a typo never silently does nothing).
`load_config(Model, path, ["key=value", "section.key=value"])` reads a YAML file (optionally one section of it),
applies the overrides and validates.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sidrec.errors import SidrecError

T = TypeVar("T", bound="StageConfig")


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
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


def parse_overrides(pairs: list[str] | None) -> list[tuple[list[str], Any]]:
    """`["a.b=3", "c=[1,2]"]` -> `[(["a", "b"], 3), (["c"], [1, 2])]`; values are parsed as YAML."""
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise SidrecError(f"override '{pair}' must look like key=value (e.g. sasrec.epochs=50)")
        key, raw = pair.split("=", 1)
        out.append((key.strip().split("."), yaml.safe_load(raw) if raw != "" else ""))
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
        data = yaml.safe_load(path.read_text()) or {}
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
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        valid = ", ".join(model.model_fields)
        src = f"{path}" if path else "config"
        raise SidrecError(f"{src}: {(section + '.') if section else ''}{loc}: {first['msg']} "
                          f"(valid keys: {valid})") from None
