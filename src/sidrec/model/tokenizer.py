"""Tokenizers that treat every SID token (`<a_12>`) as one atomic token.

The small CPU model's tokenizer is a byte-level BPE learned from the item text, with Qwen2's pre-tokenizer (split
pattern + byte-level, NFC). Being the same *kind* of tokenizer as Qwen2's matters: `AutoTokenizer.from_pretrained`
on a folder whose config says `model_type: qwen2` returns `Qwen2Tokenizer`, which rebuilds Qwen's byte-level
pre-tokenizer whatever the saved one was; a word-level vocabulary would then encode SIDs to nothing, silently.
`tests/test_model.py` reloads the folder with AutoTokenizer and checks the round trip.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from sidrec.errors import SidrecError

# Qwen2's pre-tokenizer split pattern (numbers one digit at a time, words with one leading non-letter).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
EOS = "<|endoftext|>"


def build_data_tokenizer(texts: Iterable[str], sid_tokens: list[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    add_sid_tokens(fast, sid_tokens)
    return fast


def add_sid_tokens(tokenizer, sid_tokens: list[str]) -> int:
    """Add SID tokens as atomic tokens; returns how many were new. Fails loudly if one does not encode to one id."""
    added = tokenizer.add_tokens(list(sid_tokens))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for t in sid_tokens[:3] + sid_tokens[-3:]:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise SidrecError(f"tokenizer encodes SID token {t} as {ids}, not one id")
    return added


def sid_token_ids(tokenizer, level_tokens: list[list[str]]) -> list[list[int]]:
    """Vocabulary id of every code at every level; error if the tokenizer lacks any (an SFT folder without SIDs)."""
    vocab = tokenizer.get_vocab()
    missing = [t for level in level_tokens for t in level if t not in vocab]
    if missing:
        raise SidrecError(f"the model's tokenizer has no SID tokens like {missing[:3]} ({len(missing)} missing); was it "
                          f"trained with these SIDs (`sidrec sft --sids ...`)?")
    return [[vocab[t] for t in level] for level in level_tokens]
