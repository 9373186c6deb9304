"""Parts of the data and evaluation paths whose cost must not follow the catalogue: item text cleaned in chunks,
SID strings made only for the items an evaluation looks at."""

import numpy as np
import polars as pl

from sidrec.data.interactions import _items
from sidrec.evaluate.generative import ItemSids
from sidrec.tasks.template import sid_text


def test_item_table_cleaned_in_chunks_is_the_one_pass_table():
    table = pl.DataFrame({"item_id_col": [str(i) for i in range(7)],
                          "title_col": ["a <b>bolt</b>", "", "nut", None, "gear&amp;co", "x", "  "],
                          "description_col": ["d1", None, "<p>d3</p>", "d4", "", "d6", "d7"],
                          "categories_col": ["A|B", None, "C", "", "D|<i>E</i>", "F", "G"]})
    whole = _items(table, chunk=100)
    assert whole["item"].to_list() == ["0", "2", "4", "5"]  # no title: skipped
    for chunk in (1, 2, 3):
        assert _items(table, chunk=chunk).equals(whole)


def test_item_sids_are_made_on_demand():
    codes = np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3]])
    sids = ItemSids(codes)
    assert len(sids) == 3 and not sids.cache
    assert sids[1] == sid_text([4, 5, 6]) == "<a_4><b_5><c_6>" and sids[2] == sids[0] != sids[1]
    assert sorted(sids.cache) == [0, 1, 2]
