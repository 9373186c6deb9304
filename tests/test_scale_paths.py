"""Parts of the data and evaluation paths whose cost must not follow the catalogue: item text cleaned in chunks,
SID strings made only for the items an evaluation looks at."""

import numpy as np
import polars as pl

from sidrec.data.interactions import _clean_items
from sidrec.evaluate.generative import ItemSids
from sidrec.tasks.template import sid_text


def test_item_table_cleaned_in_chunks_is_the_one_pass_table(tmp_path):
    table = tmp_path / "items.csv"
    pl.DataFrame({"sku": [str(i) for i in range(7)],
                  "name": ["a <b>bolt</b>", "", "nut", None, "gear&amp;co", "x", "  "],
                  "description": ["d1", None, "<p>d3</p>", "d4", "", "d6", "d7"],
                  "categories": ["A|B", None, "C", "", "D|<i>E</i>", "F", "G"]}).write_csv(table)

    def cleaned(chunk):
        spill = tmp_path / f"spill-{chunk}"
        skipped = _clean_items(table, spill, "sku", "name", None, None, None, chunk=chunk)
        parts = sorted(spill.glob("*.parquet"))
        return skipped, len(parts), pl.read_parquet(parts)

    skipped, parts, whole = cleaned(100)
    assert (skipped, parts) == (3, 1) and whole["item"].to_list() == ["0", "2", "4", "5"]  # no title: skipped
    assert whole["title"].to_list() == ["a bolt", "nut", "gear&co", "x"]
    assert whole["categories"].to_list() == [["A", "B"], ["C"], ["D", "E"], ["F"]]
    for chunk in (1, 2, 3):
        skipped, parts, df = cleaned(chunk)
        assert skipped == 3 and parts == -(-7 // chunk) and df.equals(whole)  # one file per chunk, the same rows


def test_item_sids_are_made_on_demand():
    codes = np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3]])
    sids = ItemSids(codes)
    assert len(sids) == 3 and not sids.cache
    assert sids[1] == sid_text([4, 5, 6]) == "<a_4><b_5><c_6>" and sids[2] == sids[0] != sids[1]
    assert sorted(sids.cache) == [0, 1, 2]


def test_scale_bench_eval_stage_on_a_small_catalogue(tmp_path, monkeypatch):
    """bench/scale.py's eval stage: the product's evaluation over a generated catalogue, timed by phase."""
    import json
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import scale

    row = scale.run_eval(tmp_path, 300)
    assert row["rows"] == 128 and row["valid"] == 1.0 and row["rows_per_s"] > 0
    assert row["load_s"] > 0 and row["rank_s"] > 0
    preds = [json.loads(line) for line in (tmp_path / "catalogue_300" / "eval" / "predictions.jsonl").open()]
    assert len(preds) == 128 and all(len(p["predictions"]) == 50 and 0 <= min(p["predictions"]) for p in preds)


def _trie_reference(codes, sizes):
    """The trie by dictionaries, item by item: distinct SIDs and prefixes numbered in order of first appearance."""
    index, items_of = {}, []
    for item, row in enumerate(map(tuple, codes.tolist())):
        j = index.setdefault(row, len(index))
        if j == len(items_of):
            items_of.append([])
        items_of[j].append(item)
    sids, allowed, child, nodes = list(index), [], [], {(): 0}
    for l, k in enumerate(sizes):
        nxt, a, c = {}, np.zeros((len(nodes), k), bool), np.full((len(nodes), k), -1)
        for s, sid in enumerate(sids):
            a[nodes[sid[:l]], sid[l]] = True
            c[nodes[sid[:l]], sid[l]] = s if l == len(sizes) - 1 else nxt.setdefault(sid[: l + 1], len(nxt))
        allowed.append(a)
        child.append(c)
        nodes = nxt
    return np.array(sids), items_of, allowed, child


def test_trie_built_in_numpy_is_the_item_by_item_trie():
    from sidrec.decode import SidTrie

    rng = np.random.default_rng(0)
    for _ in range(100):
        sizes = rng.integers(1, 6, int(rng.integers(1, 5)))
        n = int(rng.integers(1, 60))  # few codes per level: many shared prefixes and collided SIDs
        codes = np.stack([rng.integers(0, k, n) for k in sizes], 1)
        trie = SidTrie.build(codes, [list(range(k)) for k in sizes])
        sids, items_of, allowed, child = _trie_reference(codes, sizes)
        assert (trie.sids == sids).all() and trie.items_of_sid == items_of
        for got, want in zip(trie.allowed + trie.child, allowed + child):
            assert (got.numpy() == want).all()


def test_serve_freezes_what_it_loaded_before_serving(tmp_path, monkeypatch):
    """A catalogue of 10^6 items is millions of Python objects: each full GC pass over them stalled requests by
    ~0.4 s (p99 337 ms against 26 at 3,686 items); `sidrec serve` moves them out of the collector's reach."""
    import gc

    from test_faults_serve import FakeRecommender
    from typer.testing import CliRunner

    import sidrec.cli.serve  # noqa: F401
    import sidrec.serve.app as serve_app
    from sidrec.cli import app as cli

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    events = []
    monkeypatch.setattr(serve_app, "load_variants", lambda specs, data, **kw: events.append("load") or
                        {name: FakeRecommender() for name, _, _ in specs})
    monkeypatch.setattr(gc, "freeze", lambda: events.append("freeze"))
    monkeypatch.setattr("uvicorn.run", lambda *a, **kw: events.append("serve"))
    res = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path / "model"), "--sids", str(tmp_path), "--data",
                                   str(tmp_path), "--no-log"])
    assert res.exit_code == 0, res.output
    assert events == ["load", "freeze", "serve"]


def test_scale_bench_log_inputs_in_chunks_and_no_extrapolation_once_measured(tmp_path, monkeypatch):
    """bench/scale.py writes the interactions item table a chunk at a time (every item once, in order, the import
    reads it), and extrapolates a log stage to 10^8 only while 10^8 has not been measured."""
    from argparse import Namespace
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import scale

    inter, items = scale.interaction_files(tmp_path / "log", 3_000, chunk=70)
    table = pl.read_parquet(items)
    assert table["item_id"].to_list() == list(range(300)) and table["title"].str.len_chars().min() > 0
    assert pl.read_parquet(inter).shape == (3_000, 3)

    row = lambda n, s, m: {"stage": "interactions", "size": n, "seconds": s, "peak_rss_mb": m, "ok": True,  # noqa: E731
                           "wall_s": s, "load_before": 0, "load_after": 0, "rows_per_s": 1, "items": 9}
    args = Namespace(quick=False)
    two = [row(10**6, 6.0, 600), row(10**7, 60.0, 3000)]
    assert "extrapolated" in scale.report(two, tmp_path / "out" / "scale", args)
    assert "extrapolated" not in scale.report(two + [row(10**8, 600.0, 15000)], tmp_path / "out" / "scale", args)
