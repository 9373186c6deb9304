"""MiniOneRec's index.json lives in `sidrec.data.sid_index` (the data importers read it too); re-exported here."""

from sidrec.data.sid_index import INDEX_FILE, codes_to_tokens, load_sids, sid_tokens, token, write_index  # noqa: F401
