"""The inference backends live in `sidrec.decode.backends` (evaluation uses them too); re-exported here."""

from sidrec.decode.backends import BACKENDS, INT8_SKIP, quantize_int8, step_model  # noqa: F401
