"""Backbones: any HF causal LM with SID tokens added, or a small Qwen2 built from a config with a data tokenizer."""
