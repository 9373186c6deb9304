"""Item text for the sentence encoder: chosen fields, cleaned, joined.

Amazon metadata arrives messy: descriptions are often a stringified python list (`"['a', 'b']"`, a MiniOneRec
artefact) and sometimes carry raw HTML or a whole `<style>` block. We undo both so the encoder sees prose.
"""

from __future__ import annotations

import ast
import hashlib
import html
import re
from typing import Iterable, Sequence

import pandas as pd

from sidrec.errors import SidrecError

# the long field goes last, so a model's token limit trims the description, not the brand or categories
FIELDS = ("title", "brand", "categories", "description")
# MiniOneRec's own fallback; an encoder needs some text, and a fixed string keeps such items together.
PLACEHOLDER = "unknown item"

_BLOCK = re.compile(r"<(style|script)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _unlist(value) -> list[str]:
    """A value as a list of strings: real lists stay, stringified lists are parsed, None/NaN vanish."""
    if value is None:
        return []
    if isinstance(value, float) and value != value:
        return []
    if isinstance(value, str):
        s = value.strip()
        if len(s) >= 2 and s[0] == "[" and s[-1] == "]":
            try:
                parsed = ast.literal_eval(s)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return [s]
            if isinstance(parsed, (list, tuple)):
                return [x for v in parsed for x in _unlist(v)]
        return [s]
    if isinstance(value, Iterable):
        return [x for v in value for x in _unlist(v)]
    return [str(value)]


def clean_text(value) -> str:
    """Plain text from a field value: lists joined, HTML blocks and tags dropped, entities decoded, spaces collapsed."""
    parts = []
    for s in _unlist(value):
        s = _TAG.sub(" ", _BLOCK.sub(" ", s))
        s = _SPACE.sub(" ", html.unescape(s)).strip()
        if s:
            parts.append(s)
    return " ".join(parts)


def item_texts(items: pd.DataFrame, fields: Sequence[str] = FIELDS) -> tuple[list[str], list[int]]:
    """One text per item (in item_id order) and the item ids whose fields were all empty (given PLACEHOLDER)."""
    if not fields:
        raise SidrecError("no text fields chosen; pick some of " + ", ".join(FIELDS))
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise SidrecError(f"item field(s) {missing} not in the item table (columns: {', '.join(map(str, items.columns))})")
    items = items.sort_values("item_id", kind="stable") if "item_id" in items else items
    texts, empty = [], []
    columns = [items[f].tolist() for f in fields]
    ids = items["item_id"].tolist() if "item_id" in items else list(range(len(items)))
    for i, values in zip(ids, zip(*columns)):
        parts = []
        for name, v in zip(fields, values):
            s = clean_text(v)
            if not s:
                continue
            # label the short fields so "Stanley" reads as a brand, not a word of the title
            parts.append(s if name in ("title", "description") else f"{name.capitalize()}: {s}")
        if parts:
            texts.append(". ".join(parts))
        else:
            texts.append(PLACEHOLDER)
            empty.append(int(i))
    return texts, empty


def texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()
