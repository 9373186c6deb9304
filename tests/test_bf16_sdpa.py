"""GPU readiness on the CPU: the tree-attention search and the shared-prompt forward under SDPA attention in bf16
(bf16 weights, and fp32 weights under bf16 autocast, the GPU benchmark's setting) agree with fp32 eager attention."""

import itertools

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sidrec.decode import SidTrie, constrained_beam_search
from sidrec.decode.beam import left_pad
from sidrec.train.rl import shared_prompt_logps

VOCAB = 48
LEVEL_TOKENS = [list(range(10, 14)), list(range(20, 24)), list(range(30, 34))]
PROMPTS = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 1, 2, 40, 41]]


def model_pair():
    """The same random weights twice: fp32 with eager attention, and one with SDPA. A wide init makes the
    log-probs decisive (gaps well above bf16's rounding), as a trained model's are."""
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2, tie_word_embeddings=True)
    eager = Qwen2ForCausalLM(Qwen2Config(**cfg, attn_implementation="eager")).eval()
    sdpa = Qwen2ForCausalLM(Qwen2Config(**cfg, attn_implementation="sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    return eager, sdpa


def catalogue(n=20, seed=1):
    rng = np.random.default_rng(seed)
    all_sids = np.array(list(itertools.product(range(4), range(4), range(4))))
    return all_sids[rng.choice(len(all_sids), size=n, replace=False)]


@pytest.mark.parametrize("mode", ["bf16_weights", "bf16_autocast"])
def test_beam_search_under_bf16_sdpa_matches_fp32_eager(mode):
    eager, sdpa = model_pair()
    trie = SidTrie.build(catalogue(), LEVEL_TOKENS)
    ids, mask = left_pad(PROMPTS, pad_id=0)
    want = constrained_beam_search(eager, ids, mask, trie, num_beams=5)
    if mode == "bf16_weights":
        got = constrained_beam_search(sdpa.to(torch.bfloat16), ids, mask, trie, num_beams=5)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = constrained_beam_search(sdpa, ids, mask, trie, num_beams=5)
    assert np.isfinite(want.scores).all() and want.scores.min() < -2  # decisive, not a flat random model
    np.testing.assert_array_equal(got.sid_index, want.sid_index)
    np.testing.assert_allclose(got.scores, want.scores, atol=0.15)  # bf16: ~3 significant digits per log-prob


@pytest.mark.parametrize("mode", ["fp32", "bf16_weights", "bf16_autocast"])
def test_shared_prompt_logps_under_sdpa_match_row_by_row(mode):
    _, model = model_pair()
    gen = torch.Generator().manual_seed(0)
    owners, p, c = [0, 1, 2, 0, 1, 0, 2, 2], 6, 4
    prompts = [torch.tensor(PROMPTS[o]) for o in range(3)]
    ids = torch.zeros((len(owners), p + c), dtype=torch.long)
    attn = torch.zeros_like(ids)
    for r, o in enumerate(owners):
        ids[r, p - len(prompts[o]):p] = prompts[o]
        attn[r, p - len(prompts[o]):] = 1
        ids[r, p:] = torch.randint(10, 34, (c,), generator=gen)
    if mode == "bf16_weights":
        model = model.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16_autocast"), torch.no_grad():
        logp, _ = shared_prompt_logps(model, ids, attn, c)
        full = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    ref = full[:, p - 1:-1].float().log_softmax(-1).gather(-1, ids[:, p:, None]).squeeze(-1)
    assert torch.isfinite(logp).all()
    assert torch.allclose(logp, ref, atol=1e-5 if mode == "fp32" else 0.1), (logp - ref).abs().max()
