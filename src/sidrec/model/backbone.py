"""Load or build the causal LM.

- `load_llm`: any Hugging Face causal LM by hub id or local path (production: Qwen/Qwen2.5-0.5B-Instruct). SID
  tokens are added to its tokenizer and the embedding matrix is resized with `mean_resizing=True`: new rows are
  drawn around the mean (and with the covariance) of the existing embeddings, so the new tokens start with typical
  norms and the first softmax is not dominated or starved by them.
- `build_small_model`: a small Qwen2-architecture model from a config, for CPU runs and tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from sidrec.errors import REMAKE, SidrecError, file_problem
from sidrec.model.tokenizer import add_sid_tokens


def build_small_model(tokenizer, cfg, seed: int = 0) -> Qwen2ForCausalLM:
    """`cfg`: the sizes (`sidrec.train.config.SmallModelConfig`; not imported here, the model sits below training)."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
        attention_dropout=cfg.dropout, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = greedy_generation_config(tokenizer)
    return model


def greedy_generation_config(tokenizer) -> GenerationConfig:
    """Explicit deterministic settings, so nothing is inherited from a checkpoint's sampling defaults."""
    return GenerationConfig(do_sample=False, temperature=None, top_k=None, top_p=None, repetition_penalty=1.0,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def load_llm(name_or_path: str, sid_tokens: list[str] | None = None, dtype: str = "auto",
             trust_remote_code: bool = False):
    """Tokenizer and model from a hub id or local folder; safetensors only unless the folder has nothing else."""
    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists()
    if looks_local and not path.exists():
        raise SidrecError(f"{name_or_path}: model folder does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype, use_safetensors=None,
                                                     trust_remote_code=trust_remote_code)
    except OSError as e:
        hint = ("; offline? download it once and pass the local folder" if not looks_local else "")
        raise SidrecError(f"{name_or_path}: cannot load a model ({str(e).splitlines()[0]}){hint}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file is the user's to fix; anything else propagates
        msg = file_problem(e, name_or_path)
        if msg is None and (type(e) is Exception or isinstance(e, KeyError)):  # tokenizers' plain Exception, or a
            # JSON file of the wrong shape: a malformed tokenizer.json / tokenizer_config.json
            msg = f"{name_or_path}: the model files cannot be parsed ({type(e).__name__}: {str(e)[:200]}); {REMAKE}"
        if msg is not None:
            raise SidrecError(msg) from None
        if isinstance(e, ValueError):
            raise SidrecError(f"{name_or_path}: not a causal language model ({str(e).splitlines()[0]})") from None
        raise
    if sid_tokens:
        if add_sid_tokens(tokenizer, sid_tokens):
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.generation_config = greedy_generation_config(tokenizer)
    return tokenizer, model
