"""Embedding a large catalogue in resumable parts: an interrupted run encodes only the missing parts again."""

import numpy as np
import pandas as pd
import pytest

import sidrec.embed.encoder as enc
from sidrec.embed import embed_items

ITEMS = pd.DataFrame({"item_id": range(25), "title": [f"tool number {i} for the lab bench" for i in range(25)]})
ARGS = dict(model="minilm", fields=("title",), max_seq_length=16, progress=False)


def interrupt_at_second_part(monkeypatch, out):
    """embed_items into `out` in parts of 10, interrupted as the second part starts; returns the list that counts
    the texts of each encode call, then used by a counting (not interrupting) encoder."""
    real, calls = enc.encode_texts, []

    def crash_on_second(encoder, texts, **kw):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(encoder, texts, **kw)

    monkeypatch.setattr(enc, "encode_texts", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        embed_items(ITEMS, out, chunk=10, **ARGS)
    calls.clear()
    monkeypatch.setattr(enc, "encode_texts", lambda encoder, texts, **kw: calls.append(len(texts)) or
                        real(encoder, texts, **kw))
    return calls


def test_interrupted_embedding_resumes_from_the_missing_parts(tmp_path, monkeypatch):
    whole = embed_items(ITEMS, tmp_path / "whole.npy", **ARGS)  # one part: the plain path
    assert not whole["reused"] and not (tmp_path / "whole.parts").exists()

    out = tmp_path / "emb.npy"
    calls = interrupt_at_second_part(monkeypatch, out)
    assert not out.exists() and sorted(p.name for p in (tmp_path / "emb.parts").glob("*.npy")) == ["00000.npy"]
    embed_items(ITEMS, out, chunk=10, **ARGS)
    assert calls == [10, 5]  # parts 2 and 3 only
    assert not (tmp_path / "emb.parts").exists()
    np.testing.assert_allclose(np.load(out), np.load(tmp_path / "whole.npy"), atol=1e-5)


def test_parts_made_with_other_settings_are_not_reused(tmp_path, monkeypatch):
    out = tmp_path / "emb.npy"
    calls = interrupt_at_second_part(monkeypatch, out)
    embed_items(ITEMS, out, chunk=10, **{**ARGS, "max_seq_length": 4})  # another setting: every part again
    assert calls == [10, 10, 5]
    fresh = embed_items(ITEMS, tmp_path / "fresh.npy", **{**ARGS, "max_seq_length": 4})
    assert fresh["max_seq_length"] == 4
    np.testing.assert_allclose(np.load(out), np.load(tmp_path / "fresh.npy"), atol=1e-5)
