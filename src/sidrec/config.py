"""Run settings as validated pydantic models, loaded from YAML and overridable from the command line.

Every stage's settings subclass `StageConfig` (unknown keys are errors, so a typo never silently does nothing).
`load_config(Model, path, ["key=value", "section.key=value"])` reads a YAML file (optionally one section of it),
applies the overrides and validates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sidrec.errors import SidrecError

T = TypeVar("T", bound="StageConfig")


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`["a.b=3", "c=[1,2]"]` -> `{"a": {"b": 3}, "c": [1, 2]}`; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SidrecError(f"override '{pair}' must look like key=value (e.g. sasrec.epochs=50)")
        key, raw = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
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
    ov = parse_overrides(overrides)
    if section is not None and section in ov and isinstance(ov[section], dict):
        ov = {**{k: v for k, v in ov.items() if k != section}, **ov[section]}
    data = deep_merge(data, ov)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        valid = ", ".join(model.model_fields)
        src = f"{path}" if path else "config"
        raise SidrecError(f"{src}: {(section + '.') if section else ''}{loc}: {first['msg']} "
                          f"(valid keys: {valid})") from None
