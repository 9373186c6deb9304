import itertools

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from sidrec.decode import SidTrie, constrained_beam_search, constrained_sample
from sidrec.errors import SidrecError

VOCAB = 40
# SID tokens: level a -> ids 10..13, level b -> 20..23, level c -> 30..33
LEVEL_TOKENS = [list(range(10, 14)), list(range(20, 24)), list(range(30, 34))]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = Qwen2ForCausalLM(cfg).eval()
    # a checkpoint that ships sampling defaults (as Qwen2.5-Instruct does) must not change our search
    model.generation_config = GenerationConfig(do_sample=True, top_p=0.8, top_k=20, repetition_penalty=1.05,
                                               temperature=0.7)
    return model


def catalogue(n=13, seed=1):
    rng = np.random.default_rng(seed)
    all_sids = np.array(list(itertools.product(range(4), range(4), range(4))))
    codes = all_sids[rng.choice(len(all_sids), size=n, replace=False)]
    codes = np.vstack([codes, codes[:1]])  # item n shares item 0's SID (a collision)
    return codes


def brute_force(model, prompt, codes):
    """Score every distinct catalogue SID by teacher forcing; exact ranking."""
    sids = list(dict.fromkeys(map(tuple, codes.tolist())))
    seqs = torch.tensor([prompt + [LEVEL_TOKENS[l][c] for l, c in enumerate(s)] for s in sids])
    with torch.no_grad():
        lp = torch.log_softmax(model(seqs).logits.float(), -1)
    p = len(prompt)
    scores = sum(lp[torch.arange(len(sids)), p - 1 + l, seqs[:, p + l]] for l in range(3))
    order = torch.argsort(scores, descending=True, stable=True)
    return [sids[i] for i in order.tolist()], scores[order].numpy()


def left_pad(prompts, pad=0):
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def test_beam_search_matches_exhaustive_ranking_with_padding():
    model, codes = tiny_model(), catalogue()
    trie = SidTrie.build(codes, LEVEL_TOKENS)
    assert trie.num_sids == 13 and trie.items_of_sid[0] == [0, 13]
    prompts = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 1, 2]]
    ids, mask = left_pad(prompts)
    res = constrained_beam_search(model, ids, mask, trie, num_beams=13)  # width >= every level's prefixes: exact
    for b, prompt in enumerate(prompts):
        want, want_scores = brute_force(model, prompt, codes)
        got = [tuple(trie.sids[s]) for s in res.sid_index[b]]
        assert got == want
        np.testing.assert_allclose(res.scores[b], want_scores, atol=1e-4)
    items = res.items(trie)
    assert all(len(r) == len(set(r)) == 14 for r in items)  # every item once; the collided pair adjacent
    i0 = items[0].index(0)
    assert items[0][i0 + 1] == 13


def test_trie_maps_items_and_sids_both_ways():
    codes = np.array([[0, 1, 2], [1, 0, 0], [0, 1, 2], [2, 2, 1]])  # items 0 and 2 collide
    trie = SidTrie.build(codes, LEVEL_TOKENS)
    assert trie.first_items().tolist() == [0, 1, 3]
    assert trie.sid_of_item(5).tolist() == [0, 1, 0, 2, -1]  # item 4 is not in the trie
    sids = ([0, 1, 2], [1, 0, 0], [2, 2, 1])
    want = [[LEVEL_TOKENS[lvl][c] for lvl, c in enumerate(sid)] + [99] for sid in sids]
    assert trie.completion_tokens(99).tolist() == want


def test_narrow_beam_returns_unique_valid_sids():
    model, codes = tiny_model(3), catalogue(n=40, seed=5)
    trie = SidTrie.build(codes, LEVEL_TOKENS)
    ids, mask = left_pad([[1, 2, 3], [4]])
    res = constrained_beam_search(model, ids, mask, trie, num_beams=5)
    valid = set(map(tuple, codes.tolist()))
    for b in range(2):
        got = [tuple(trie.sids[s]) for s in res.sid_index[b]]
        assert len(set(got)) == 5 and set(got) <= valid
        assert np.all(np.diff(res.scores[b]) <= 1e-6)


def exact_sampling_probs(model, prompt, codes):
    """P(SID) when each level's code is drawn from the softmax over the trie's allowed children, by teacher forcing."""
    sids = list(dict.fromkeys(map(tuple, codes.tolist())))
    seqs = torch.tensor([prompt + [LEVEL_TOKENS[l][c] for l, c in enumerate(s)] for s in sids])
    with torch.no_grad():
        logits = model(seqs).logits.float()
    probs = {}
    for i, sid in enumerate(sids):
        p = 1.0
        for level in range(3):
            allowed = sorted({s[level] for s in sids if s[:level] == sid[:level]})
            row = logits[i, len(prompt) - 1 + level, [LEVEL_TOKENS[level][c] for c in allowed]]
            p *= torch.softmax(row, -1)[allowed.index(sid[level])].item()
        probs[sid] = p
    return probs


def uncached_sample(model, ids, mask, trie, num_samples, generator):
    """The plain definition: re-run prompt + sampled prefix at every level, one multinomial per level."""
    ids, mask = ids.repeat_interleave(num_samples, 0), mask.repeat_interleave(num_samples, 0)
    nodes = torch.zeros(len(ids), dtype=torch.long)
    for level in range(trie.levels):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
        logits = logits[:, trie.level_token_ids[level]].masked_fill(~trie.allowed[level][nodes], float("-inf"))
        code = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
        nodes = trie.child[level][nodes, code]
        ids = torch.cat([ids, trie.level_token_ids[level][code][:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return nodes.view(-1, num_samples).numpy()


def test_constrained_sample_draws_from_the_trie_restricted_softmax():
    model, codes = tiny_model(4), catalogue()
    with torch.no_grad():  # sharpen the random model so that a wrong conditional would show
        model.lm_head.weight.mul_(20)
    trie = SidTrie.build(codes, LEVEL_TOKENS)
    prompts = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 1, 2]]
    ids, mask = left_pad([p for p in prompts for _ in range(4)])  # each prompt 4 times: 4,000 draws per prompt
    got = constrained_sample(model, ids, mask, trie, 1000, torch.Generator().manual_seed(0))
    assert got.shape == (12, 1000) and got.min() >= 0
    again = constrained_sample(model, ids, mask, trie, 1000, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(got, again)  # seeded
    # the shared-cache tree attention gives the same conditionals as re-running every prefix: the same draws
    np.testing.assert_array_equal(got, uncached_sample(model, ids, mask, trie, 1000, torch.Generator().manual_seed(0)))
    for b, prompt in enumerate(prompts):
        want = exact_sampling_probs(model, prompt, codes)
        assert max(want.values()) > 0.3  # the sharpened model is far from uniform
        draws = got[4 * b: 4 * b + 4].reshape(-1)
        freq = {tuple(trie.sids[s]): float((draws == s).mean()) for s in range(trie.num_sids)}
        tv = 0.5 * sum(abs(freq[s] - want[s]) for s in want)
        assert tv < 0.05, (prompt, tv)


def test_bad_beams():
    trie = SidTrie.build(catalogue(), LEVEL_TOKENS)
    ids, mask = left_pad([[1, 2]])
    with pytest.raises(SidrecError, match="larger than the catalogue"):
        constrained_beam_search(tiny_model(), ids, mask, trie, num_beams=50)
    with pytest.raises(SidrecError, match="outside"):
        SidTrie.build(np.array([[0, 0, 9]]), LEVEL_TOKENS)
