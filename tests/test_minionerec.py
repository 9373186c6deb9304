import json
import shutil
from pathlib import Path

import pytest

from conftest import tiny_frames
from sidrec.data import Dataset
from sidrec.data.minionerec import export_minionerec, import_minionerec
from sidrec.errors import SidrecError


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("README.md", "manifest.json")}


@pytest.fixture
def tiny_minionerec(tmp_path):
    items, splits = tiny_frames()
    ds = Dataset.from_frames(items, splits, meta={"category": "Tiny", "user_k": 5,
                                                   "window": {"start": "2016-10", "end": "2018-11"}})
    ds.save(tmp_path / "canon")
    (tmp_path / "canon" / "sids").mkdir()
    index = {str(i): [f"<a_{i % 2}>", f"<b_{i}>", "<c_0>"] for i in range(6)}
    (tmp_path / "canon" / "sids" / "index.json").write_text(json.dumps(index))
    export_minionerec(tmp_path / "canon", tmp_path / "mini")
    return tmp_path / "mini"


def test_tiny_export_layout_and_round_trip(tiny_minionerec, tmp_path):
    mini = tiny_minionerec
    csv = (mini / "test" / "Tiny_5_2016-10-2018-11.csv").read_text().splitlines()
    assert csv[0] == "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid"
    assert csv[1] == "A1,\"['item 2', 'item 3']\",item 5,\"[2, 3]\",5,\"['<a_0><b_2><c_0>', '<a_1><b_3><c_0>']\",<a_1><b_5><c_0>"
    assert (mini / "info" / "Tiny_5_2016-10-2018-11.txt").read_text().splitlines()[1] == "<a_1><b_1><c_0>\titem 1\t1"
    assert json.loads((mini / "inter" / "Tiny.inter.json").read_text()) == {"0": [0, 1, 2, 4], "1": [2, 3, 5], "2": [5, 0]}
    ds = import_minionerec(mini, tmp_path / "again")
    assert ds.splits["train"]["history"].tolist() == [[0], [0, 1], [2]]
    assert ds.users["user_raw"].tolist() == ["A0", "A1", "A2"]
    export_minionerec(tmp_path / "again", tmp_path / "mini2")
    assert _files(mini) == _files(tmp_path / "mini2")


def _break(mini: Path, split: str, line: int, old: str, new: str):
    path = next((mini / split).glob("*.csv"))
    lines = path.read_text().split("\n")
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_text("\n".join(lines))
    return path


def test_bad_list_column_names_file_and_line(tiny_minionerec, tmp_path):
    path = _break(tiny_minionerec, "train", 3, '"[0, 1]"', '"[0, 1"')
    with pytest.raises(SidrecError, match=rf"{path}:3: column 'history_item_id' is not a Python list"):
        import_minionerec(tiny_minionerec, tmp_path / "x")


def test_unknown_item_names_file_and_line(tiny_minionerec, tmp_path):
    path = _break(tiny_minionerec, "test", 2, ",5,", ",77,")
    with pytest.raises(SidrecError, match=rf"{path}:2: item id 77 is not in the catalogue of 6 items"):
        import_minionerec(tiny_minionerec, tmp_path / "x")


def test_empty_split_and_missing_parts(tiny_minionerec, tmp_path):
    path = next((tiny_minionerec / "valid").glob("*.csv"))
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(SidrecError, match=rf"{path}: the split has no rows"):
        import_minionerec(tiny_minionerec, tmp_path / "x")
    shutil.rmtree(tiny_minionerec / "valid")
    with pytest.raises(SidrecError, match="no valid split CSV"):
        import_minionerec(tiny_minionerec, tmp_path / "x")
    with pytest.raises(SidrecError, match="does not exist"):
        import_minionerec(tmp_path / "nowhere", tmp_path / "x")


def test_inconsistent_inter_file_is_caught(tiny_minionerec, tmp_path):
    inter = tiny_minionerec / "inter" / "Tiny.test.inter"
    inter.write_text(inter.read_text().replace("1\t2 3\t5", "1\t2 3\t4"))
    with pytest.raises(SidrecError, match=r"Tiny.test.inter:2: row disagrees"):
        import_minionerec(tiny_minionerec, tmp_path / "x")


def test_export_needs_sids_covering_every_item(tiny_minionerec, tmp_path):
    ds = import_minionerec(tiny_minionerec, tmp_path / "c")
    index = tmp_path / "partial.json"
    index.write_text(json.dumps({"0": ["<a_0>", "<b_0>", "<c_0>"]}))
    with pytest.raises(SidrecError, match="no SID for 5 items"):
        export_minionerec(tmp_path / "c", tmp_path / "out", sids=index)
    assert ds.num_items == 6


@pytest.mark.slow
def test_real_industrial_round_trip_is_byte_for_byte(shared_industrial, tmp_path):
    ds = import_minionerec(shared_industrial, tmp_path / "canon")
    assert ds.counts() == {"num_items": 3686, "num_users": 7694, "num_train": 36259, "num_valid": 4532,
                           "num_test": 4533}
    export_minionerec(tmp_path / "canon", tmp_path / "out")
    original, exported = _files(shared_industrial), _files(tmp_path / "out")
    assert set(original) == set(exported) and len(original) == 10
    for name in original:
        assert exported[name] == original[name], name
