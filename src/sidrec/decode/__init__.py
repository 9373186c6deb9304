"""Constrained decoding: a prefix trie over the catalogue's SIDs and a batched beam search that only walks it.

Loading a model for inference (bound to its SIDs) and ranking histories: `sidrec.decode.inference`, not imported
here (it loads transformers); the backends (torch, int8, onnx): `sidrec.decode.backends`.
"""

from sidrec.decode.beam import BeamResult, constrained_beam_search, constrained_sample, left_pad
from sidrec.decode.trie import SidTrie

__all__ = ["SidTrie", "constrained_beam_search", "constrained_sample", "BeamResult", "left_pad"]
