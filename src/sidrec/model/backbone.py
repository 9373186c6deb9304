"""Load or build the causal LM.

- `load_llm`: any Hugging Face causal LM by local path or hub id (production: Qwen/Qwen2.5-0.5B-Instruct); a hub id
  not in the local cache fails at once, naming the local-folder alternative, when the hub is offline. SID
  tokens are added to its tokenizer and the embedding matrix is resized with `mean_resizing=True`: new rows are
  drawn around the mean (and with the covariance) of the existing embeddings, so the new tokens start with typical
  norms and the first softmax is not dominated or starved by them (a checkpoint's spare padded rows are cut first,
  see `resize_for_new_tokens`). A tokenizer without EOS is an error; one without a pad token pads with EOS.
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


def locate_model(name_or_path: str) -> tuple[str, bool]:
    """(what to load, local): a local folder, or a hub id with local=True when it is in the Hugging Face cache
    (then nothing is asked of the hub). Fails fast, naming the local-folder alternative, when it is neither a
    folder nor cached and the hub is offline (HF_HUB_OFFLINE) or unreachable, instead of waiting on retries."""
    import huggingface_hub
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SidrecError(f"{name_or_path}: not a Hugging Face model folder (no config.json)")
        return str(path), True
    download = (f"download it once where the hub is reachable (`hf download {name_or_path} --local-dir "
                f"models/{Path(name_or_path).name}`) and pass that folder as base_model")
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise SidrecError(f"{name_or_path}: model folder does not exist; pass the path of a local Hugging Face "
                          f"model folder (config.json, weights, tokenizer) or a hub id like "
                          f"Qwen/Qwen2.5-0.5B-Instruct") from None
    if isinstance(huggingface_hub.try_to_load_from_cache(name_or_path, "config.json"), str):
        return name_or_path, True
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise SidrecError(f"{name_or_path}: no such local folder (it does not exist), and not in the Hugging Face "
                          f"cache while the hub is offline (HF_HUB_OFFLINE=1); {download}")
    try:
        huggingface_hub.model_info(name_or_path, timeout=10)
    except huggingface_hub.errors.RepositoryNotFoundError:
        raise SidrecError(f"{name_or_path}: no such local folder or hub model; check the id, or pass a local "
                          f"folder") from None
    except Exception as e:  # network errors: the hub cannot be reached from here
        raise SidrecError(f"{name_or_path}: no such local folder, and the Hugging Face hub cannot be reached "
                          f"({type(e).__name__}); {download}") from None
    return name_or_path, False


def check_special_tokens(tokenizer, name: str) -> None:
    """An EOS token ends every SID response, so it is required; a missing pad token falls back to EOS (padding is
    masked out of attention and loss, so which id pads does not matter), with a note."""
    if tokenizer.eos_token_id is None:
        raise SidrecError(f"{name}: the tokenizer has no EOS token, which ends every response; set \"eos_token\" in "
                          f"its tokenizer_config.json (e.g. \"<|im_end|>\" for Qwen2.5-Instruct, \"<|end_of_text|>\" "
                          f"for Llama 3)")
    if tokenizer.pad_token_id is None:
        print(f"[sidrec] {name}: the tokenizer has no pad token; padding with its EOS token {tokenizer.eos_token!r}")
        tokenizer.pad_token = tokenizer.eos_token


def check_context_length(model, cutoff_len: int, field: str) -> None:
    """Error before training when `cutoff_len` tokens do not fit the model's position embeddings."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and cutoff_len > limit:
        raise SidrecError(f"{field}={cutoff_len} is longer than the model's max_position_embeddings={limit}; set "
                          f"{field} to at most {limit}")


def resize_for_new_tokens(model, old_len: int, new_len: int) -> None:
    """Embedding rows for tokens old_len..new_len-1, each drawn around the existing rows' mean (`mean_resizing`).

    Checkpoints often carry more rows than their tokenizer has tokens (Qwen2.5: 151,936 rows for 151,665 tokens,
    padded for the GPU); new tokens would take those never-trained rows. They are cut first, so every new token
    starts like the others. Tied heads stay tied; an untied head gets its new rows the same way."""
    if model.get_input_embeddings().weight.shape[0] > old_len:
        model.resize_token_embeddings(old_len)
    model.resize_token_embeddings(new_len, mean_resizing=True)


def load_llm(name_or_path: str, sid_tokens: list[str] | None = None, dtype: str = "auto",
             trust_remote_code: bool = False):
    """Tokenizer and model from a hub id or local folder; safetensors only unless the folder has nothing else."""
    source, local = locate_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                  local_files_only=local)
        torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, use_safetensors=None,
                                                     trust_remote_code=trust_remote_code, local_files_only=local)
    except OSError as e:
        raise SidrecError(f"{name_or_path}: cannot load a model ({str(e).splitlines()[0]})") from None
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
    check_special_tokens(tokenizer, name_or_path)
    if sid_tokens:
        old_len = len(tokenizer)
        if add_sid_tokens(tokenizer, sid_tokens):
            resize_for_new_tokens(model, old_len, len(tokenizer))
    model.generation_config = greedy_generation_config(tokenizer)
    return tokenizer, model
