"""The one prompt template, used by SFT, RL and evaluation alike.

MiniOneRec phrases the same sequential-recommendation question three ways (SFT, RL, evaluation); a model evaluated
on wording it was not trained on loses accuracy. Here every stage calls `render_prompt`, and the response that
follows the prompt is the target SID's tokens (or a title) followed by the tokenizer's EOS.
"""

from __future__ import annotations

from typing import Sequence

from sidrec.sid.io import token as sid_token

PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n### Input:\n{input}\n### Response:\n"
HISTORY_SEP = ", "

TASKS = {
    # history SIDs -> next item's SID: the recommendation task itself
    "seqrec": "Given the items the user bought, in order, predict the next item.",
    # item text -> SID and back: ties the new SID tokens to language (MiniOneRec's alignment tasks)
    "title2sid": "Which item has this title?",
    "sid2title": "What is the title of this item?",
    # history SIDs -> next item's title: recommendation in words
    "history2title": "Given the items the user bought, in order, name the next item.",
}


def level_tokens(codes) -> list[list[str]]:
    """Every SID token per level, for codes 0..max used (tokenizers get all of them; the trie allows only real SIDs)."""
    return [[sid_token(l, c) for c in range(int(codes[:, l].max()) + 1)] for l in range(codes.shape[1])]


def sid_text(codes: Sequence[int]) -> str:
    return "".join(sid_token(level, c) for level, c in enumerate(codes))


def render_prompt(task: str, input_text: str) -> str:
    return PROMPT_TEMPLATE.format(instruction=TASKS[task], input=input_text)


def history_text(history_codes: Sequence[Sequence[int]]) -> str:
    return HISTORY_SEP.join(sid_text(c) for c in history_codes)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """A prompt's token ids as every stage feeds them to the model: with the BOS token first when the tokenizer adds
    one by default (Llama), so a pretrained model sees the sequence start it was trained with; nothing else added."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and tokenizer("x")["input_ids"][:1] == [bos]:
        ids = [bos] + ids
    return ids
