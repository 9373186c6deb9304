"""Item text assembly and sentence-transformers embeddings."""

from sidrec.embed.encoder import DEFAULT_MODEL, embed_items, encode_texts, load_encoder, resolve_model
from sidrec.embed.text import FIELDS, PLACEHOLDER, clean_text, item_texts

__all__ = ["DEFAULT_MODEL", "FIELDS", "PLACEHOLDER", "clean_text", "embed_items", "encode_texts", "item_texts",
           "load_encoder", "resolve_model"]
