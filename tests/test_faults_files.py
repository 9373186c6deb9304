"""Bad files and bad values: each case builds a broken input in tmp_path and expects one clear line, never a
traceback: `sidrec ...` exits 2 with a one-line `error:` naming the file, a reader raises SidrecError naming it, or the
oddity is counted and reported. No case leaves a finished-looking (manifest.json) or temporary file in its output.

Case ids are `class/name`; `python tests/test_faults_files.py` prints the number of cases per class.
"""

from __future__ import annotations

import errno
import gzip
import json
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # conftest's helpers, also when run as a script

from conftest import tiny_frames  # noqa: E402
from sidrec.data import Dataset  # noqa: E402
from sidrec.errors import SidrecError  # noqa: E402

CSV = "Tiny_5_2016-10-2018-11.csv"


# ---------------------------------------------------------------------------------------------------- the inputs
def mini(tmp: Path) -> Path:
    """A small MiniOneRec folder (train/valid/test CSVs, index/, info/, inter/) exported from the tiny dataset."""
    from sidrec.data.minionerec import export_minionerec

    items, splits = tiny_frames()
    ds = Dataset.from_frames(items, splits, meta={"category": "Tiny", "window": {"start": "2016-10", "end": "2018-11"}})
    ds.save(tmp / "canon")
    (tmp / "canon" / "sids").mkdir()
    index = {str(i): [f"<a_{i % 2}>", f"<b_{i}>", "<c_0>"] for i in range(6)}
    (tmp / "canon" / "sids" / "index.json").write_text(json.dumps(index))
    export_minionerec(tmp / "canon", tmp / "mini")
    return tmp / "mini"


def canon(tmp: Path) -> Path:
    items, splits = tiny_frames()
    return Dataset.from_frames(items, splits, meta={"name": "tiny"}).save(tmp / "canon")


def edit_csv(folder: Path, split: str, row: int, column: str, value: str) -> Path:
    """Set one cell of a MiniOneRec split CSV (row 0 is file line 2)."""
    path = folder / split / CSV
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, column] = value
    df.to_csv(path, index=False)
    return path


def edit_json(path: Path, change) -> Path:
    obj = json.loads(path.read_text())
    path.write_text(json.dumps(change(obj), ensure_ascii=False))
    return path


def interactions(tmp: Path, times=None) -> tuple[Path, Path]:
    """4 users x 3 items (all in 2017), the items file; `times` replaces the timestamp column."""
    rows = [(f"u{u}", it, 1_500_000_000 + 1000 * u + t) for u in range(4) for t, it in enumerate("abc")]
    log = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    if times is not None:
        log["timestamp"] = times(log["timestamp"])
    log.to_csv(tmp / "log.csv", index=False)
    pd.DataFrame({"item_id": list("abc"), "title": ["A one", "B two", "C three"]}).to_csv(tmp / "items.csv", index=False)
    return tmp / "log.csv", tmp / "items.csv"


INTER_ARGS = ["--user-k", "1", "--item-k", "1", "--start", "2017-01", "--end", "2018-01"]


def amazon(tmp: Path, scale: int = 1) -> tuple[Path, Path]:
    reviews = [{"reviewerID": f"U{u}", "asin": it, "unixReviewTime": (1_500_000_000 + 100 * u + t) * scale}
               for u in range(4) for t, it in enumerate(["I1", "I2", "I3"])]
    (tmp / "reviews.json").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    meta = [{"asin": a, "title": f"Item {a}"} for a in ("I1", "I2", "I3")]
    (tmp / "meta.json").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return tmp / "reviews.json", tmp / "meta.json"


def amazon_args(tmp: Path) -> list:
    return ["data", "amazon18", "--category", "Tiny", "--reviews", tmp / "reviews.json", "--meta", tmp / "meta.json",
            "--out", tmp / "out", "--user-k", "1", "--item-k", "1", "--no-progress"]


def npy(tmp: Path) -> Path:
    np.save(tmp / "emb.npy", np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))
    return tmp / "emb.npy"


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


_MODEL: dict = {}


def model(tmp: Path) -> Path:
    """A tiny saved causal LM + tokenizer (built once per session, copied per case)."""
    import shutil

    if "dir" not in _MODEL:
        from sidrec.model.backbone import build_small_model
        from sidrec.model.tokenizer import build_data_tokenizer
        from sidrec.train.config import SmallModelConfig

        src = Path(tmp).parent / "tiny-model"
        tok = build_data_tokenizer(["a tiny item title"], ["<a_1>", "<b_2>"], vocab_size=300)
        m = build_small_model(tok, SmallModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                                                     intermediate_size=32))
        m.save_pretrained(src)
        tok.save_pretrained(src)
        _MODEL["dir"] = src
    shutil.copytree(_MODEL["dir"], tmp / "model")
    return tmp / "model"


def load_model(folder: Path):
    from sidrec.model.backbone import load_llm

    return load_llm(str(folder))


# ---------------------------------------------------------------------------------------------------- simulated disks
def failing_replace(code: int):
    """os.replace that fails like a full / read-only / forbidden disk when an artifact is moved into place."""
    def replace(src, dst):
        raise OSError(code, __import__("os").strerror(code), str(dst))
    return replace


def half_written_parquet(code: int):
    """pyarrow's write_table that writes some bytes, then fails with `code` (a disk filling up mid-file)."""
    def write_table(table, where, *a, **k):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(code, __import__("os").strerror(code))
    return write_table


# ---------------------------------------------------------------------------------------------------- the cases
# Each case: (id, build) where build(tmp, monkeypatch) returns a dict with
#   cli:   argv for `sidrec` (expects exit 2 and one `error:` line), or call: a function (expects SidrecError), or
#   ok:    a function whose result `check` must accept (a counted skip / detected unit);
#   names: text the message must contain (the file, line or field); out: output folder that must hold no
#   manifest.json and no temporary file afterwards.
def _c(**kw):
    return kw


def _do(*steps):
    """Run the setup steps (their values are ignored) and return the last: the case's spec."""
    return steps[-1]


CASES = {
    # -- paths and disks ---------------------------------------------------------------------------------------------
    "path/missing-npy": lambda t, m: _c(cli=["sid", "build", "--emb", t / "nope.npy", "--out", t / "out"],
                                        names="nope.npy", out=t / "out"),
    "path/folder-as-npy": lambda t, m: _do((t / "d.npy").mkdir(), _c(
        cli=["sid", "build", "--emb", t / "d.npy", "--out", t / "out"], names="d.npy: is a folder", out=t / "out")),
    "path/symlink-loop-npy": lambda t, m: _do((t / "loop.npy").symlink_to(t / "loop.npy"), _c(
        cli=["sid", "build", "--emb", t / "loop.npy", "--out", t / "out"], names="symbolic links", out=t / "out")),
    "path/symlink-loop-csv": lambda t, m: _do((t / "loop.csv").symlink_to(t / "loop.csv"), _c(
        cli=["data", "import-interactions", "--interactions", t / "loop.csv", "--items", t / "loop.csv",
             "--out", t / "out"], names="loop.csv: too many levels of symbolic links", out=t / "out")),
    "path/folder-as-csv": lambda t, m: _do((mini(t) / "valid" / CSV).unlink() or (t / "mini" / "valid" / CSV).mkdir(), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "out"], names=f"{CSV}: is a folder",
        out=t / "out")),
    "path/file-as-folder": lambda t, m: _do((t / "f").write_text("x"), _c(
        cli=["data", "import-minionerec", t / "f", "--out", t / "out"], names="is a file where a MiniOneRec folder")),
    "path/out-under-a-file": lambda t, m: _do(mini(t) and (t / "file").write_text("x"), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "file" / "out"], names="file")),
    "disk/full-on-rename": lambda t, m: _do(mini(t) and m.setattr("sidrec.io.os.replace", failing_replace(errno.ENOSPC)), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "out"], names="no space left", out=t / "out")),
    "disk/full-mid-parquet": lambda t, m: _do(mini(t) and m.setattr("pyarrow.parquet.write_table",
                                                                half_written_parquet(errno.ENOSPC)), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "out"], names="items.parquet: no space left",
        out=t / "out")),
    "disk/read-only": lambda t, m: _do(npy(t) and m.setattr("sidrec.io.os.replace", failing_replace(errno.EROFS)), _c(
        cli=["sid", "build", "--emb", t / "emb.npy", "--out", t / "out", "--codebook", "4", "--levels", "2"],
        names="read-only file system", out=t / "out")),
    "disk/permission-denied": lambda t, m: _do(canon(t) and m.setattr("sidrec.io.os.replace",
                                                                  failing_replace(errno.EACCES)), _c(
        cli=["baseline", "pop", "--data", t / "canon", "--out", t / "out"], names="permission denied", out=t / "out")),
    # -- not UTF-8 ---------------------------------------------------------------------------------------------------
    "encoding/minionerec-csv": lambda t, m: _do((mini(t) / "train" / CSV).write_bytes(
        (t / "mini" / "train" / CSV).read_bytes().replace(b"item 0", b"item \xff", 1)), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "out"], names=f"{CSV}: not UTF-8", out=t / "out")),
    "encoding/item-json": lambda t, m: _do((mini(t) / "index" / "Tiny.item.json").write_bytes(b'{"0": "\xff"}'), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "out"], names="Tiny.item.json: not UTF-8",
        out=t / "out")),
    "encoding/index-json": lambda t, m: _do((mini(t) / "index" / "Tiny.index.json").write_bytes(b'\xfe\xff'), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "out"], names="Tiny.index.json: not UTF-8",
        out=t / "out")),
    "encoding/yaml-config": lambda t, m: _do(npy(t) and (t / "c.yaml").write_bytes(b"sid:\n  method: \xff\n"), _c(
        cli=["sid", "build", "--emb", t / "emb.npy", "--out", t / "out", "--config", t / "c.yaml"],
        names="c.yaml: not UTF-8", out=t / "out")),
    "encoding/interactions-csv": lambda t, m: _do(interactions(t) and (t / "log.csv").write_bytes(
        (t / "log.csv").read_bytes().replace(b"u1", b"u\xff")), _c(
        cli=["data", "import-interactions", "--interactions", t / "log.csv", "--items", t / "items.csv",
             "--out", t / "out", *INTER_ARGS], names="log.csv", out=t / "out")),
    "encoding/amazon-reviews": lambda t, m: _do(amazon(t) and (t / "reviews.json").write_bytes(
        (t / "reviews.json").read_bytes().replace(b'"U2"', b'"U\xff"', 1)), _c(
        cli=amazon_args(t), names="reviews.json:7: not UTF-8", out=t / "out")),
    "encoding/meta-json": lambda t, m: _do((canon(t) / "meta.json").write_bytes(b'{"name": "\xff"}'), _c(
        cli=["baseline", "pop", "--data", t / "canon", "--out", t / "out"], names="meta.json: not UTF-8",
        out=t / "out")),
    # -- 0-byte files ------------------------------------------------------------------------------------------------
    "empty/npy": lambda t, m: _do((t / "e.npy").write_bytes(b""), _c(
        cli=["sid", "build", "--emb", t / "e.npy", "--out", t / "out"], names="e.npy: not a readable .npy",
        out=t / "out")),
    "empty/minionerec-csv": lambda t, m: _do((mini(t) / "test" / CSV).write_bytes(b""), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "out"], names=f"{CSV}: not a readable CSV",
        out=t / "out")),
    "empty/item-json": lambda t, m: _do((mini(t) / "index" / "Tiny.item.json").write_bytes(b""), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "out"], names="Tiny.item.json:1: not valid JSON",
        out=t / "out")),
    "empty/index-json": lambda t, m: _do((mini(t) / "index" / "Tiny.index.json").write_bytes(b""), _c(
        cli=["data", "import-minionerec", t / "mini", "--out", t / "out"], names="Tiny.index.json:1: not valid JSON",
        out=t / "out")),
    "empty/parquet": lambda t, m: _do((canon(t) / "train.parquet").write_bytes(b""), _c(
        cli=["baseline", "pop", "--data", t / "canon", "--out", t / "out"], names="train.parquet: ", out=t / "out")),
    "empty/meta-json": lambda t, m: _do((canon(t) / "meta.json").write_bytes(b""), _c(
        cli=["baseline", "pop", "--data", t / "canon", "--out", t / "out"], names="meta.json:1: not valid JSON",
        out=t / "out")),
    "empty/interactions-csv": lambda t, m: _do(interactions(t) and (t / "log.csv").write_bytes(b""), _c(
        cli=["data", "import-interactions", "--interactions", t / "log.csv", "--items", t / "items.csv",
             "--out", t / "out"], names="log.csv: cannot read", out=t / "out")),
    "empty/safetensors": lambda t, m: _do((model(t) / "model.safetensors").write_bytes(b""), _c(
        call=lambda: load_model(t / "model"), names="model: cannot be parsed (SafetensorError")),
    "empty/yaml-is-empty-config": lambda t, m: _do((t / "c.yaml").write_bytes(b""), _c(
        ok=lambda: __import__("sidrec.config", fromlist=["read_yaml"]).read_yaml(t / "c.yaml"), check=lambda r: r == {})),
    # -- truncated or garbage ----------------------------------------------------------------------------------------
    "corrupt/npy-garbage": lambda t, m: _do((t / "g.npy").write_bytes(b"garbage!" * 10), _c(
        cli=["sid", "build", "--emb", t / "g.npy", "--out", t / "out"], names="g.npy: not a readable .npy",
        out=t / "out")),
    "corrupt/npy-truncated": lambda t, m: _do(truncate(npy(t), 0.8), _c(
        cli=["sid", "build", "--emb", t / "emb.npy", "--out", t / "out"], names="emb.npy: not a readable .npy",
        out=t / "out")),
    "corrupt/parquet-truncated": lambda t, m: _do(truncate(canon(t) / "items.parquet"), _c(
        cli=["baseline", "pop", "--data", t / "canon", "--out", t / "out"], names="items.parquet: ", out=t / "out")),
    "corrupt/parquet-wrong-columns": lambda t, m: _do(pd.DataFrame({"x": [1]}).to_parquet(canon(t) / "users.parquet"), _c(
        cli=["baseline", "pop", "--data", t / "canon", "--out", t / "out"], names="users.parquet: missing column",
        out=t / "out")),
    "corrupt/meta-json-truncated": lambda t, m: _do(truncate(canon(t) / "meta.json"), _c(
        cli=["baseline", "pop", "--data", t / "canon", "--out", t / "out"], names="meta.json:", out=t / "out")),
    "corrupt/meta-json-a-list": lambda t, m: _do((canon(t) / "meta.json").write_text("[1, 2]"), _c(
        cli=["baseline", "pop", "--data", t / "canon", "--out", t / "out"], names="meta.json: expected a JSON object",
        out=t / "out")),
    "corrupt/reviews-gzip-truncated": lambda t, m: _do(amazon(t) and (t / "r.json.gz").write_bytes(
        gzip.compress((t / "reviews.json").read_bytes() * 50)[:200]), _c(
        cli=[*amazon_args(t)[:5], t / "r.json.gz", *amazon_args(t)[6:]], names="r.json.gz:", out=t / "out")),
    "corrupt/safetensors-truncated": lambda t, m: _do(truncate(model(t) / "model.safetensors", 0.3), _c(
        call=lambda: load_model(t / "model"), names="model: cannot be parsed")),
    "corrupt/tokenizer-garbage": lambda t, m: _do((model(t) / "tokenizer.json").write_text("garbage"), _c(
        call=lambda: load_model(t / "model"), names="model: cannot be parsed")),
    "corrupt/tokenizer-wrong-shape": lambda t, m: _do((model(t) / "tokenizer.json").write_text('{"model": 3}'), _c(
        call=lambda: load_model(t / "model"), names="model: the model files cannot be parsed")),
    "corrupt/config-json-garbage": lambda t, m: _do((model(t) / "config.json").write_text("{"), _c(
        call=lambda: load_model(t / "model"), names="model: cannot load a model")),
    "corrupt/sid-quality-json": lambda t, m: _do((t / "sids").mkdir() or (t / "sids" / "quality.json").write_text("{"), _c(
        cli=["sid", "inspect", t / "sids"], names="quality.json:1: not valid JSON")),
    # -- odd values in MiniOneRec CSVs, item.json and SID indexes --------------------------------------------------------
    "values/csv-history-boolean": lambda t, m: _c(
        call=lambda: _import(t, edit_csv(mini(t), "train", 1, "history_item_id", "[True, 1]")),
        names=f"{CSV}:3: column 'history_item_id'", out=t / "out"),
    "values/csv-history-non-ascii-digit": lambda t, m: _c(
        call=lambda: _import(t, edit_csv(mini(t), "train", 0, "history_item_id", "[\u0661]")),
        names=f"{CSV}:2: column 'history_item_id'", out=t / "out"),
    "values/csv-history-not-a-list": lambda t, m: _c(
        call=lambda: _import(t, edit_csv(mini(t), "valid", 0, "history_item_id", "{0: 1}")),
        names=f"{CSV}:2: column 'history_item_id'", out=t / "out"),
    "values/csv-history-float": lambda t, m: _c(
        call=lambda: _import(t, edit_csv(mini(t), "test", 1, "history_item_id", "[5.0]")),
        names=f"{CSV}:3: column 'history_item_id'", out=t / "out"),
    "values/csv-user-non-ascii-digit": lambda t, m: _c(
        call=lambda: _import(t, edit_csv(mini(t), "train", 2, "user_id", "A\u0661")),
        names=f"{CSV}:4: user_id", out=t / "out"),
    "values/csv-item-non-ascii-digit": lambda t, m: _c(
        call=lambda: _import(t, edit_csv(mini(t), "test", 0, "item_id", "\u0665")),
        names=f"{CSV}:2: item_id", out=t / "out"),
    "values/csv-huge-item-id": lambda t, m: _c(
        call=lambda: _import(t, edit_csv(mini(t), "test", 0, "item_id", "9" * 30)),
        names=f"{CSV}:2: item id", out=t / "out"),
    "values/item-json-a-list": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.item.json", lambda o: list(o.values()))),
        names="Tiny.item.json: expected a non-empty JSON object", out=t / "out"),
    "values/item-json-non-ascii-id": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.item.json",
                                          lambda o: {("\u0660" if k == "0" else k): v for k, v in o.items()})),
        names="Tiny.item.json: item id", out=t / "out"),
    "values/item-json-title-not-text": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.item.json",
                                          lambda o: {**o, "2": {**o["2"], "title": 123}})),
        names="Tiny.item.json: item 2: field 'title'", out=t / "out"),
    "values/item-json-categories-a-dict": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.item.json",
                                          lambda o: {**o, "1": {**o["1"], "categories": {"a": 1}}})),
        names="Tiny.item.json: item 1: field 'categories'", out=t / "out"),
    "values/index-a-list": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.index.json", lambda o: list(o.values()))),
        names="Tiny.index.json: expected a non-empty JSON object", out=t / "out"),
    "values/index-tokens-not-a-list": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.index.json", lambda o: {**o, "3": "<a_1>"})),
        names="Tiny.index.json: item 3: expected a non-empty list", out=t / "out"),
    "values/index-token-boolean": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.index.json",
                                          lambda o: {**o, "4": [True, "<b_1>", "<c_0>"]})),
        names="Tiny.index.json: item 4: token True", out=t / "out"),
    "values/index-non-ascii-code": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.index.json",
                                          lambda o: {**o, "4": ["<a_\u0661>", "<b_1>", "<c_0>"]})),
        names="Tiny.index.json: item 4: token", out=t / "out"),
    "values/index-huge-code": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.index.json",
                                          lambda o: {**o, "5": [f"<a_{'9' * 25}>", "<b_1>", "<c_0>"]})),
        names="Tiny.index.json: item 5: token", out=t / "out"),
    "values/index-inconsistent-length": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.index.json", lambda o: {**o, "2": ["<a_0>"]})),
        names="Tiny.index.json: item 2: 1 tokens", out=t / "out"),
    "values/index-stray-extra-token": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.index.json",
                                          lambda o: {**o, "3": [*o["3"], "<d_0>"]})),
        names="Tiny.index.json: item 3: an extra token '<d_0>'", out=t / "out"),
    "values/index-non-ascii-id": lambda t, m: _c(
        call=lambda: _import(t, edit_json(mini(t) / "index" / "Tiny.index.json",
                                          lambda o: {("\u0661" if k == "1" else k): v for k, v in o.items()})),
        names="Tiny.index.json: item id", out=t / "out"),
    # -- timestamps in other units with --start/--end ----------------------------------------------------------------
    "time/interactions-milliseconds": lambda t, m: _c(
        ok=lambda: _interactions(t, interactions(t, times=lambda s: s * 1000)),
        check=lambda ds: ds.meta["time_unit"] == "ms" and ds.meta["funnel"]["in_window"] == 12),
    "time/interactions-microseconds": lambda t, m: _c(
        ok=lambda: _interactions(t, interactions(t, times=lambda s: s * 1_000_000)),
        check=lambda ds: ds.meta["time_unit"] == "us" and ds.meta["funnel"]["in_window"] == 12),
    "time/interactions-mixed-units": lambda t, m: _c(
        call=lambda: _interactions(t, interactions(t, times=lambda s: s.where(s.index != 5, s * 1000))),
        names="log.csv:7: time", out=t / "out"),
    "time/amazon-milliseconds": lambda t, m: _do(amazon(t, scale=1000), _c(
        ok=lambda: _amazon(t), check=lambda ds: ds.meta["time_unit"] == "ms" and ds.meta["funnel"]["in_window"] == 12)),
    # -- malformed values in columns the importer does not read: counted and reported ------------------------------------
    "unread/csv-history-sid": lambda t, m: _c(
        ok=lambda: _import(t, edit_csv(mini(t), "train", 0, "history_item_sid", "oops")),
        check=lambda ds: any("1 rows have a malformed 'history_item_sid'" in w and f"{CSV}:2" in w
                             for w in ds.meta["warnings"])),
    "unread/csv-item-sid": lambda t, m: _c(
        ok=lambda: _import(t, _do(edit_csv(mini(t), "test", 0, "item_sid", "<a_1"), edit_csv(t / "mini", "valid", 0, "item_sid", "x"))),
        check=lambda ds: any("2 rows have a malformed 'item_sid'" in w for w in ds.meta["warnings"])),
    "unread/cli-prints-warning": lambda t, m: _do(edit_csv(mini(t), "train", 0, "history_item_title", "not a list"), _c(
        cli_ok=["data", "import-minionerec", t / "mini", "--out", t / "out"],
        names="warning: 1 rows have a malformed 'history_item_title'")),
    # -- history cells: cut to max_history while parsing ---------------------------------------------------------------
    "history/longer-than-max-history": lambda t, m: _c(
        ok=lambda: _import(t, edit_csv(mini(t), "train", 1, "history_item_id", "[3, 4, 5, 0, 1]"), max_history=2),
        check=lambda ds: ds.splits["train"]["history"].tolist()[1] == [0, 1]
        and max(map(len, ds.splits["valid"]["history"])) <= 2 and "were cut" in ds.meta["warnings"][0]),
    "history/huge-cell": lambda t, m: _do(
        edit_csv(mini(t), "train", 0, "history_item_id", "[" + "1, 2, " * 300_000 + "3]"),
        (t / "mini" / "inter" / "Tiny.train.inter").unlink(), _c(
            ok=lambda: _import(t), check=lambda ds: ds.splits["train"]["history"].tolist()[0] == [2, 1] * 4 + [2, 3]
            and "1 histories longer than max_history=10" in ds.meta["warnings"][0])),
}


def _import(tmp: Path, _edited=None, max_history: int = 10):
    from sidrec.data.minionerec import import_minionerec

    return import_minionerec(tmp / "mini", tmp / "out", max_history=max_history)


def _interactions(tmp: Path, files):
    from sidrec.data.interactions import import_interactions

    return import_interactions(*files, tmp / "out", user_k=1, item_k=1, start="2017-01", end="2018-01")


def _amazon(tmp: Path):
    from sidrec.data.amazon18 import preprocess_amazon18

    return preprocess_amazon18("Tiny", tmp / "out", reviews=tmp / "reviews.json", meta=tmp / "meta.json", user_k=1,
                               item_k=1, progress=False)


def run_cli(args, monkeypatch, capsys) -> tuple[int, str, str]:
    from sidrec.cli import main

    monkeypatch.setattr(sys, "argv", ["sidrec", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file(case, tmp_path, monkeypatch, capsys):
    spec = CASES[case](tmp_path, monkeypatch)
    if "cli" in spec:
        code, _, err = run_cli(spec["cli"], monkeypatch, capsys)
        assert code == 2, err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and "Aborted" not in err
        assert spec["names"] in err, err
    elif "cli_ok" in spec:
        code, out, _ = run_cli(spec["cli_ok"], monkeypatch, capsys)
        assert code == 0 and spec["names"] in out, out
    elif "call" in spec:
        with pytest.raises(SidrecError) as e:
            spec["call"]()
        assert spec["names"] in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
    else:
        assert spec["check"](spec["ok"]())
    out = spec.get("out")
    if out is not None and out.exists():  # nothing half-written: no manifest (unfinished) and no temporary files
        assert not (out / "manifest.json").exists()
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_huge_history_cell_is_cut_while_parsing():
    """A 2 MB history cell (~330k ids) is checked and cut to max_history without a Python object per id."""
    from sidrec.data.minionerec import parse_history

    cell = "[" + ", ".join(["1", "22", "333"] * 110_000) + ", 7]"
    tracemalloc.start()
    ids, cut = parse_history(cell, Path("x.csv"), 2, max_history=10)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ids == [1, 22, 333] * 3 + [7] and cut
    assert peak < 3 * len(cell), peak  # ast.literal_eval needs ~100x the cell


def test_genuine_bug_keeps_its_traceback(monkeypatch, capsys, tmp_path):
    """Only file problems become one line: a bug (here a ZeroDivisionError inside a command) still raises."""
    monkeypatch.setattr("sidrec.data.minionerec.import_minionerec", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_cli(["data", "import-minionerec", tmp_path, "--out", tmp_path / "o"], monkeypatch, capsys)


def case_classes() -> Counter:
    return Counter(c.split("/")[0] for c in CASES)


if __name__ == "__main__":
    for cls, n in sorted(case_classes().items()):
        print(f"{cls:10s} {n}")
    print(f"{'total':10s} {len(CASES)}")
