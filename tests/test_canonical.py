import pandas as pd
import pytest

from conftest import tiny_frames
from sidrec.data import Dataset
from sidrec.errors import SidrecError
from sidrec.io import atomic_path, read_manifest


def test_round_trip(tmp_path):
    items, splits = tiny_frames()
    ds = Dataset.from_frames(items, splits, meta={"name": "tiny"})
    ds.save(tmp_path / "ds", config={"k": 1})
    back = Dataset.load(tmp_path / "ds")
    assert back.num_items == 6
    assert back.splits["train"]["history"].tolist() == [[0], [0, 1], [2]]
    assert back.items["categories"].tolist()[0] == ["Tools"]
    assert back.meta["num_test"] == 2 and back.meta["name"] == "tiny"
    assert read_manifest(tmp_path / "ds")["stage"] == "data"
    assert back.train_target_counts().tolist() == [0, 1, 1, 1, 0, 0]
    pd.testing.assert_frame_equal(Dataset.load_items(tmp_path / "ds"), back.items)  # the item table alone
    assert back.user_sequences() == {0: [0, 1, 2, 4], 1: [2, 3, 5], 2: [5, 0]}


@pytest.mark.parametrize("mutate, message", [
    (lambda it, sp: sp.__setitem__("valid", sp["valid"].iloc[0:0]), "split 'valid' is empty"),
    (lambda it, sp: sp["test"].__setitem__("target", [5, 99]), "target item 99 is not in the catalogue"),
    (lambda it, sp: sp["train"].__setitem__("history", [[0], [0, 42], [2]]), "history item 42"),
    (lambda it, sp: sp["train"].__setitem__("history", [[0], [], [2]]), "row 1: empty history"),
])
def test_validation_errors(mutate, message):
    items, splits = tiny_frames()
    mutate(items, splits)
    with pytest.raises(SidrecError, match=message):
        Dataset.from_frames(items, splits)


def test_non_dense_item_ids():
    items, splits = tiny_frames()
    items["item_id"] = [0, 1, 2, 3, 4, 7]
    with pytest.raises(SidrecError, match="dense"):
        Dataset.from_frames(items, splits)


def test_unfinished_folder_is_not_taken_for_done(tmp_path):
    items, splits = tiny_frames()
    Dataset.from_frames(items, splits).save(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(SidrecError, match="not finished"):
        Dataset.load(tmp_path)
    with pytest.raises(SidrecError, match="not finished"):
        Dataset.load_items(tmp_path)
    with pytest.raises(SidrecError, match="does not exist"):
        Dataset.load(tmp_path / "nope")


def test_atomic_write_leaves_nothing_on_crash(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_histories_are_arrow_and_errors_name_the_row_across_chunks(tmp_path):
    import pyarrow as pa

    from sidrec.data.canonical import HISTORY_TYPE

    items, splits = tiny_frames()
    ds = Dataset.from_frames(items, splits)
    assert all(isinstance(df["history"].dtype, pd.ArrowDtype) for df in ds.splits.values())
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert isinstance(back.splits["train"]["history"].dtype, pd.ArrowDtype)
    assert back.splits["train"]["history"].iloc[1] == [0, 1] and [len(h) for h in back.splits["train"]["history"]] \
        == [1, 2, 1]
    # three rows in two Arrow chunks: the bad row is the second chunk's first, row 2 of the split
    for bad, message in (([42], "row 2: history item 42 is not in the catalogue"), ([], "row 2: empty history")):
        items, splits = tiny_frames()
        splits["train"]["history"] = pd.arrays.ArrowExtensionArray(pa.chunked_array(
            [pa.array([[0], [0, 1]], HISTORY_TYPE), pa.array([bad], HISTORY_TYPE)]))
        with pytest.raises(SidrecError, match=message):
            Dataset.from_frames(items, splits)
    items, splits = tiny_frames()
    splits["train"]["history"] = [[0], ["x"], [2]]
    with pytest.raises(SidrecError, match="split 'train': 'history' must hold lists of integer item ids"):
        Dataset.from_frames(items, splits)
