"""MiniOneRec's index.json (`{"item_id": ["<a_x>", "<b_y>", "<c_z>"]}`) and SID tokens: the format the data importers and
the SID builders share, so it lives in the first part that needs it.

Inside sidrec a SID is a row of ints; `-1` pads variable-length SIDs (the dedup level). Tokens exist only here,
at the edge: level l's letter is chr(ord('a') + l), codes are 0-based as in the paper's shipped files.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from sidrec.errors import SidrecError
from sidrec.io import read_json, write_json

INDEX_FILE = "index.json"
_TOKEN = re.compile(r"<([a-z])_([0-9]+)>")  # ASCII digits only: int() would also read "٣"
_ID = re.compile(r"0|[1-9][0-9]*")
MAX_CODE = (1 << 20) - 1  # codebooks are 256..65536 entries; larger codes are corrupt (and would overflow int64)


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
        raise SidrecError(f"{path}: expected a non-empty JSON object item_id -> list of SID tokens, got "
                          f"{_kind(raw)}")
    bad = next((k for k in raw if not _ID.fullmatch(k)), None)
    if bad is not None:
        raise SidrecError(f"{path}: item id {bad!r} is not a plain integer (ASCII digits, no sign or spaces)")
    ids = sorted(int(k) for k in raw)
    if ids != list(range(len(ids))):
        raise SidrecError(f"{path}: item ids must be dense 0..{len(ids) - 1}; got {len(ids)} ids from {ids[0]} to "
                          f"{ids[-1]}")
    keys = {int(k): k for k in raw}
    tokens = [raw[keys[i]] for i in ids]
    for i, toks in enumerate(tokens):
        if not isinstance(toks, list) or not toks:
            raise SidrecError(f"{path}: item {i}: expected a non-empty list of tokens, got {_kind(toks)}")
    lengths = np.array([len(t) for t in tokens])
    short, width = int(lengths.min()), int(lengths.max())
    if width > short + 1:  # only the dedup level (on colliding items) makes a SID one token longer
        odd = int(np.flatnonzero(lengths != np.bincount(lengths).argmax())[0])
        raise SidrecError(f"{path}: item {odd}: {lengths[odd]} tokens, but SIDs here have {short} to {width}; all "
                          f"SIDs need the same length (plus at most one dedup token); was the index edited or "
                          f"merged from two builds?")
    codes = np.full((len(ids), width), -1, dtype=np.int64)
    for i, toks in enumerate(tokens):
        for level, tok in enumerate(toks):
            m = _TOKEN.fullmatch(tok) if isinstance(tok, str) else None
            if m is None:
                raise SidrecError(f"{path}: item {i}: token {tok!r} is not of the form <a_12>")
            if m.group(1) != chr(ord("a") + level):
                raise SidrecError(f"{path}: item {i}: token {tok!r} at position {level} should start with "
                                  f"'<{chr(ord('a') + level)}_'")
            if len(m.group(2)) > len(str(MAX_CODE)) or int(m.group(2)) > MAX_CODE:
                raise SidrecError(f"{path}: item {i}: token {tok[:40]!r}: code above {MAX_CODE} is no codebook index")
            codes[i, level] = int(m.group(2))
    if width > short:  # a dedup token only tells apart items that share all their other codes
        prefixes = [tuple(row) for row in codes[:, :short].tolist()]
        shared = Counter(prefixes)
        alone = next((i for i in np.flatnonzero(lengths == width) if shared[prefixes[i]] < 2), None)
        if alone is not None:
            raise SidrecError(f"{path}: item {alone}: an extra token {tokens[alone][-1]!r} but no other item shares its "
                              f"first {short} codes, so it is no dedup token; was the index edited?")
    return codes, tokens


def _kind(value) -> str:
    return f"{type(value).__name__} {str(value)[:40]!r}"
