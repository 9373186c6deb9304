"""MiniOneRec's index.json (`{"item_id": ["<a_x>", "<b_y>", "<c_z>"]}`) and SID tokens: the format the data importers and
the SID builders share, so it lives in the first part that needs it.

Inside sidrec a SID is a row of ints; `-1` pads variable-length SIDs (the dedup level). Tokens exist only here,
at the edge: level l's letter is chr(ord('a') + l), codes are 0-based as in the paper's shipped files.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sidrec.errors import SidrecError
from sidrec.io import read_json, write_json

INDEX_FILE = "index.json"
_TOKEN = re.compile(r"<([a-z])_(\d+)>")


def token(level: int, code: int) -> str:
    if not 0 <= level < 26:
        raise SidrecError(f"level {level} has no token letter (at most 26 levels)")
    return f"<{chr(ord('a') + level)}_{int(code)}>"


def sid_tokens(row) -> list[str]:
    return [token(level, c) for level, c in enumerate(row) if c >= 0]


def codes_to_tokens(codes: np.ndarray) -> list[list[str]]:
    return [sid_tokens(row) for row in np.asarray(codes).tolist()]


def write_index(path: str | Path, codes: np.ndarray) -> None:
    write_json(path, {str(i): toks for i, toks in enumerate(codes_to_tokens(codes))}, indent=None)


def load_sids(path: str | Path) -> tuple[np.ndarray, list[list[str]]]:
    """Codes (n_items, max_len; -1 pads shorter SIDs) and tokens from any MiniOneRec index.json, or a folder holding one.

    Collisions are kept as they are: measuring them is `sid_quality`'s job, not the loader's.
    """
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_FILE
    if not path.exists():
        raise SidrecError(f"{path}: no SID index here (build one with `sidrec sid build`)")
    raw = read_json(path)
    if not isinstance(raw, dict) or not raw:
        raise SidrecError(f"{path}: expected a non-empty mapping item_id -> list of SID tokens")
    try:
        ids = sorted(int(k) for k in raw)
    except ValueError:
        raise SidrecError(f"{path}: item ids must be integers, got e.g. {next(iter(raw))!r}") from None
    if ids != list(range(len(ids))):
        raise SidrecError(f"{path}: item ids must be dense 0..{len(ids) - 1}; got {len(ids)} ids from {ids[0]} to {ids[-1]}")
    tokens = [raw[str(i)] for i in ids]
    width = max(len(t) for t in tokens)
    codes = np.full((len(ids), width), -1, dtype=np.int64)
    for i, toks in enumerate(tokens):
        if not isinstance(toks, list) or not toks:
            raise SidrecError(f"{path}: item {i}: expected a non-empty list of tokens, got {toks!r}")
        for level, tok in enumerate(toks):
            m = _TOKEN.fullmatch(str(tok))
            if m is None:
                raise SidrecError(f"{path}: item {i}: token {tok!r} is not of the form <a_12>")
            if m.group(1) != chr(ord("a") + level):
                raise SidrecError(f"{path}: item {i}: token {tok!r} at position {level} should start with "
                                  f"'<{chr(ord('a') + level)}_'")
            codes[i, level] = int(m.group(2))
    return codes, tokens
