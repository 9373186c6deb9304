"""Constrained decoding: a prefix trie over the catalogue's SIDs and a batched beam search that only walks it."""

from sidrec.decode.beam import BeamResult, constrained_beam_search, constrained_sample, left_pad
from sidrec.decode.trie import SidTrie

__all__ = ["SidTrie", "constrained_beam_search", "constrained_sample", "BeamResult", "left_pad"]
