import collections
import json

import numpy as np
import pytest
import torch

from generative_fixtures import train_toy_sft
from sidrec.errors import SidrecError
from sidrec.evaluate.generative import load_model_for_inference
from sidrec.sid.io import load_sids
from sidrec.tasks.builders import fit_history
from sidrec.tasks.template import sid_text
from sidrec.train.rewards import (Groups, check_rewards, collaborative_reward, combine, diversity_reward,
                                  in_history, novelty_reward, popularity_reward, prefix_reward, rank_weights, ranking_reward,
                                  recent_popularity, rule_reward, zero_advantage_share)
from sidrec.train.rl import RlConfig, run_rl, shared_prompt_logps



# ------------------------------------------------------------------------------------------------ rewards, by hand
def groups(pred, target, group_size, items=None, histories=None):
    pred, target = np.array(pred), np.array(target)
    return Groups(pred, target, np.array(items if items is not None else range(len(pred))),
                  histories or [[0]] * len(pred), group_size)


def test_rule_ranking_prefix_diversity_by_hand():
    t = [1, 2, 3]
    # group 1 (ranks 0..2): wrong, target, half-right; group 2: no target at all
    g = groups([[9, 9, 9], [1, 2, 3], [1, 2, 0], [1, 0, 0], [1, 5, 5], [7, 7, 7]], [t] * 6, 3)
    assert rule_reward(g).tolist() == [0, 1, 0, 0, 0, 0]
    w = np.array([1, 1 / np.log2(3), 1 / np.log2(4)])
    w = w / w.sum()
    assert np.allclose(rank_weights(3), w)
    # the target's group: wrong items get -w_rank, the target 0; a group without the target gets 0 everywhere
    assert np.allclose(ranking_reward(g), [-w[0], 0, -w[2], 0, 0, 0])
    assert np.allclose(prefix_reward(g), [0, 1, 2 / 3, 1 / 3, 1 / 3, 0])
    # diversity: first codes (9, 1, 1) and (1, 1, 7)
    assert np.allclose(diversity_reward(g), [1, 0.5, 0.5, 0.5, 0.5, 1])
    total, parts = combine(g, {"rule": 1.0, "ranking": 1.0})
    assert np.allclose(total, parts["rule"] + parts["ranking"])
    # MiniOneRec's reward leaves group 2 with zero advantage; prefix credit gives it a signal
    assert zero_advantage_share(total, 3) == 0.5
    assert zero_advantage_share(combine(g, {"rule": 1.0, "prefix": 0.5})[0], 3) == 0.0


def test_collaborative_reward_is_z_scored_per_group():
    class FakeScorer:
        def score(self, histories, candidates):
            assert histories == [[4, 5], [6]]  # one history per group
            return np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])

    g = groups([[0, 0, 0]] * 6, [[0, 0, 0]] * 6, 3, items=[0, 1, 2, 3, 4, 5],
               histories=[[4, 5]] * 3 + [[6]] * 3)
    r = collaborative_reward(g, scorer=FakeScorer())
    assert np.allclose(r[:3], [-1.2247449, 0, 1.2247449]) and np.allclose(r[3:], 0)


def test_collaborative_reward_routes_users_to_a_cross_fitted_scorer():
    class FoldScorer:
        needs_users = True

        def score(self, histories, candidates, users):
            return np.array([[u, 2.0 * u, 0.0] for u in users])  # the user id shows which rows reached it

    g = groups([[0, 0, 0]] * 6, [[0, 0, 0]] * 6, 3, items=range(6))
    with pytest.raises(SidrecError, match="user id"):
        collaborative_reward(g, scorer=FoldScorer())
    g.users = np.array([3, 3, 3, 0, 0, 0])
    r = collaborative_reward(g, scorer=FoldScorer())
    assert np.allclose(r[:3], [0, 1.2247449, -1.2247449]) and np.allclose(r[3:], 0)


def test_novelty_and_popularity_by_hand():
    sid_of_item = np.array([0, 1, 2, 1])  # items 1 and 3 share a SID
    # group 1's history holds items 1 and 2; group 2's is empty
    g = groups([[0, 1], [1, 0], [0, 0], [0, 1], [1, 0], [0, 0]], [[0, 0]] * 6, 3, items=[3, 2, 0, 1, 2, 0],
               histories=[[1, 2]] * 3 + [[]] * 3)
    # item 3 is not in the history but its SID is: a repeat of what the user saw
    assert novelty_reward(g, sid_of_item=sid_of_item).tolist() == [0, 0, 1, 1, 1, 1]
    # targets over time: 0 0 2 1 2 2; the last 4 rows count item 2 three times and item 1 once
    prior = recent_popularity([0, 0, 2, 1, 2, 2], 4, window=4)
    assert np.allclose(prior, np.log1p([0, 1, 3, 0]))
    assert np.allclose(recent_popularity([0, 0, 2, 1, 2, 2], 4, window=None), np.log1p([2, 1, 3, 0]))
    assert np.allclose(popularity_reward(g, item_prior=prior), np.log1p([0, 3, 0, 1, 3, 0]))
    # the same test on listed SIDs, for offline re-rankings: items 1 and 3 share SID 1
    assert in_history(np.array([[1, 0], [2, 2]]), [[3], []], sid_of_item).tolist() == [[True, False], [False, False]]
    with pytest.raises(SidrecError, match="SID codes"):
        novelty_reward(g)
    with pytest.raises(SidrecError, match="item counts"):
        popularity_reward(g)


def test_histories_after_training():
    import pandas as pd

    from sidrec.data.canonical import histories_after

    df = pd.DataFrame({"user": [7, 3, 7, 3, 7, 5], "history": [[1], [2], [1, 4], [2, 6], [1, 4, 8], [9]],
                       "target": [4, 6, 8, 0, 2, 1]})
    after = histories_after(df, max_history=3)
    # one row per user, in the order of their latest rows; the latest target joins the history, oldest items drop
    assert after["user"].tolist() == [3, 7, 5]
    assert after["history"].tolist() == [[2, 6, 0], [4, 8, 2], [9, 1]]


def test_training_rows_all_or_a_seeded_sample():
    import pandas as pd

    from sidrec.train.rl import training_rows

    df = pd.DataFrame({"user": [7, 3, 7, 3, 7, 5], "history": [[1], [2], [1, 4], [2, 6], [1, 4, 8], [9]],
                       "target": [4, 6, 8, 0, 2, 1]})
    assert training_rows(df, RlConfig(sample_train=False)).tolist() == [0, 1, 2, 3, 4, 5]
    assert training_rows(df, RlConfig(sample_train=True, sample_size=10)).tolist() == [0, 1, 2, 3, 4, 5]
    picked = training_rows(df, RlConfig(sample_train=True, sample_size=3, seed=1))
    assert len(picked) == 3 and len(set(picked)) == 3 and (np.diff(picked) > 0).all()
    assert picked.tolist() == training_rows(df, RlConfig(sample_train=True, sample_size=3, seed=1)).tolist()
    assert any(training_rows(df, RlConfig(sample_train=True, sample_size=3, seed=k)).tolist() != picked.tolist()
               for k in range(2, 6))


def test_reward_config_errors():
    with pytest.raises(SidrecError, match="unknown reward.*bogus"):
        check_rewards({"bogus": 1.0}, None)
    with pytest.raises(SidrecError, match="needs rl.scorer"):
        check_rewards({"collaborative": 0.5}, None)
    with pytest.raises(SidrecError, match="every reward weight is 0"):
        check_rewards({"rule": 0.0}, None)
    with pytest.raises(SidrecError, match=r"\['prefix', 'rule'\].*after_train"):
        check_rewards({"rule": 1.0, "prefix": 0.5, "novelty": 1.0}, None, labelled=False)
    check_rewards({"rule": 0.0, "novelty": 1.0, "popularity": 0.3}, None, labelled=False)


# ------------------------------------------------------------------------------------------------- GRPO on a toy
@pytest.fixture(scope="module")
def weak_sft(tmp_path_factory):
    """A barely trained SID model: uncertain enough that GRPO has room to move mass."""
    root = tmp_path_factory.mktemp("rltoy")
    data, sids, model_dir = train_toy_sft(root, epochs=2, eval_steps=100)
    return root, data, sids, model_dir


def rl_config(**kw):
    base = dict(num_generations=8, train_batch_size=32, micro_batch_size=32, sample_train=True, sample_size=96,
                epochs=1, learning_rate=1e-2, beta=0.0, eval_step=0.5, eval_beams=10, max_valid_rows=20,
                keep_best=False, rewards={"rule": 1.0}, prompts="rows", loss="grpo", scale_rewards="group",
                extend_prompts=0, suffix_prompts=0, seed=0)
    return RlConfig(**{**base, **kw})


def sid_log_shares(model_dir, data, sids, rows=64) -> torch.Tensor:
    """(rows, items): log-share of every catalogue SID given each train prompt (the constrained decoder's view)."""
    from sidrec.data import Dataset

    tokenizer, model = load_model_for_inference(model_dir)
    codes, _ = load_sids(sids)
    sid_ids = [tokenizer(sid_text(c), add_special_tokens=False)["input_ids"] for c in codes]
    out = []
    for h in Dataset.load(data).splits["train"]["history"].iloc[:rows]:
        prompt = tokenizer(fit_history("seqrec", list(h), codes, tokenizer, 128)[0], add_special_tokens=False)
        ids = torch.tensor([prompt["input_ids"] + s for s in sid_ids])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[:, -4:-1].log_softmax(-1)
        seq = logp.gather(-1, ids[:, -3:, None]).squeeze(-1).sum(-1)  # log-likelihood of every SID
        out.append(seq - torch.logsumexp(seq, 0))
    return torch.stack(out)


def catalogue_kl(model_dir, ref_dir, data, sids) -> float:
    p, q = sid_log_shares(model_dir, data, sids), sid_log_shares(ref_dir, data, sids)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_shared_prompt_forward_equals_row_by_row(weak_sft):
    _, _, _, model_dir = weak_sft
    _, model = load_model_for_inference(model_dir)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 200, (k,), generator=gen) for k in (9, 6, 3)]
    p, c = 9, 4
    owners = [0, 1, 2, 0, 1, 0, 2, 2, 1, 0]  # groups interleaved, as after TRL's shuffle, unequal sizes
    ids = torch.zeros((len(owners), p + c), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, o in enumerate(owners):
        ids[r, p - len(prompts[o]):p] = prompts[o]
        mask[r, p - len(prompts[o]):] = 1
        ids[r, p:] = torch.randint(300, len(model.get_input_embeddings().weight), (c,), generator=gen)
    logp, entropy = shared_prompt_logps(model, ids, mask, c, compute_entropy=True)
    full = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    ref = full[:, p - 1:-1].float().log_softmax(-1)
    assert torch.allclose(logp, ref.gather(-1, ids[:, p:, None]).squeeze(-1), atol=1e-5)
    assert torch.allclose(entropy, -(ref.exp() * ref).sum(-1), atol=1e-5)
    logp.sum().backward()  # the loss path is differentiable
    assert model.get_input_embeddings().weight.grad is not None


def test_grpo_moves_mass_to_the_rewarded_item(weak_sft, tmp_path):
    """Every train row's target is set to item 5: rule-reward GRPO must raise item 5's share under the decoder."""
    from sidrec.data import Dataset

    root, data, sids, sft_dir = weak_sft
    ds = Dataset.load(data)
    train = ds.splits["train"].copy()
    train["target"] = 5
    Dataset.from_frames(ds.items, {**ds.splits, "train": train}, meta=ds.meta).save(tmp_path / "data5")
    before = float(sid_log_shares(sft_dir, data, sids)[:, 5].mean())
    out = run_rl(rl_config(), sft_dir, tmp_path / "data5", sids, tmp_path / "rl")
    after = float(sid_log_shares(out, data, sids)[:, 5].mean())
    assert after > before + 1.0, (before, after)
    manifest = json.loads((tmp_path / "rl" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["global_step"] == 24
    log = json.loads((tmp_path / "rl" / "train_log.json").read_text())
    assert any("rl/target_in_group" in e and "frac_reward_zero_std" in e for e in log)
    history = json.loads((tmp_path / "rl" / "valid_history.json").read_text())
    assert history[0]["step"] == 0 and history[-1]["step"] == 24


def test_grpo_on_after_train_prompts_learns_a_target_free_reward(weak_sft, tmp_path):
    """No targets: prompts are the users' end-of-training histories and the reward is `popularity` (log counts over
    the latest 40 training targets). GRPO must raise the popularity the model expects, E_pi[log count]."""
    from sidrec.data import Dataset

    root, data, sids, sft_dir = weak_sft
    ds = Dataset.load(data)
    prior = torch.tensor(recent_popularity(ds.splits["train"]["target"], ds.num_items, 40), dtype=torch.float32)
    assert ds.num_items == len(load_sids(sids)[0])  # one SID per item: SID shares are item shares

    def expected_popularity(model_dir):
        return float((sid_log_shares(model_dir, data, sids).exp() * prior).sum(-1).mean())

    before = expected_popularity(sft_dir)
    cfg = rl_config(prompts="after_train", rewards={"popularity": 1.0}, popularity_window=40, sample_train=False)
    out = run_rl(cfg, sft_dir, data, sids, tmp_path / "rl")
    after = expected_popularity(out)
    assert after > before + 0.25 and after <= float(prior.max()) + 1e-6, (before, after)
    manifest = json.loads((tmp_path / "rl" / "manifest.json").read_text())
    assert manifest["num_train_prompts"] == ds.splits["train"]["user"].nunique()
    log = json.loads((tmp_path / "rl" / "train_log.json").read_text())
    assert not any("rl/target_in_group" in e for e in log)  # no target to look for


def test_extended_histories_append_one_of_the_models_beams(weak_sft):
    """`extend_prompts`: each end-of-training history continued by k distinct items from the model's top-G beams."""
    from sidrec.data import Dataset
    from sidrec.data.canonical import histories_after
    from sidrec.evaluate.generative import build_trie, rank_histories
    from sidrec.train.rl import extended_histories

    root, data, sids, sft_dir = weak_sft
    ds = Dataset.load(data)
    codes, _ = load_sids(sids)
    tokenizer, model = load_model_for_inference(sft_dir)
    trie = build_trie(tokenizer, codes)
    base = histories_after(ds.splits["train"], ds.max_history)
    more = extended_histories(model, tokenizer, trie, codes, base, 2, 4, ds.max_history, 120, seed=0)
    assert len(more) == 2 * len(base) and (more["user"].to_numpy() == np.repeat(base["user"].to_numpy(), 2)).all()
    top4, _ = rank_histories(model, tokenizer, trie, codes, [list(h) for h in base["history"]], 4, 120,
                             progress=False)
    sid_of = {int(i): s for s, items in enumerate(trie.items_of_sid) for i in items}
    for r, (h, ext) in enumerate(zip(np.repeat(base["history"].to_numpy(), 2), more["history"])):
        assert ext[:-1] == (list(h) + [ext[-1]])[-ds.max_history:][:-1]  # the history, oldest dropped past the cap
        assert sid_of[ext[-1]] in top4[r // 2]
    pairs = more["history"].map(lambda e: e[-1]).to_numpy().reshape(-1, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()  # two different beams per user
    again = extended_histories(model, tokenizer, trie, codes, base, 2, 4, ds.max_history, 120, seed=0)
    assert more["history"].tolist() == again["history"].tolist()


def test_suffix_histories_cut_each_users_continued_histories():
    """`suffix_prompts`: k short histories per user, each the last 1..max_len items of one of that user's histories."""
    import pandas as pd

    from sidrec.train.rl import suffix_histories

    extended = pd.DataFrame({"user": [7, 7, 7, 3, 3, 5],
                             "history": [[1, 2, 3, 4, 10], [1, 2, 3, 4, 11], [1, 2, 3, 4, 12], [8, 9, 20], [8, 9, 21],
                                         [30]]})
    short = suffix_histories(extended, 2, 3, seed=0)
    assert short["user"].tolist() == [7, 7, 3, 3, 5]  # k per user, fewer when the user has fewer histories
    assert sorted(short["history"].iloc[2:4].map(lambda h: h[-1])) == [20, 21]  # drawn without replacement
    for user, h in zip(short["user"], short["history"]):
        sources = [list(e) for e in extended.loc[extended["user"] == user, "history"]]
        assert 1 <= len(h) <= 3 and any(e[-len(h):] == h for e in sources), (user, h)
    lengths = {len(h) for seed in range(20) for h in suffix_histories(extended, 2, 3, seed)["history"]}
    assert lengths == {1, 2, 3}  # every length up to max_len is drawn
    assert suffix_histories(extended, 2, 3, seed=4)["history"].tolist() == \
        suffix_histories(extended, 2, 3, seed=4)["history"].tolist()
    assert suffix_histories(extended, 0, 3, seed=0).empty


def test_beam_rollout_keeps_each_completions_sid_log_likelihood(weak_sft):
    """`loss: tilted` reads the policy's log-likelihoods from the rollout's beam scores instead of a second forward:
    they must equal the SID tokens' log-probs in the prompt + completion forward the loss uses."""
    from types import SimpleNamespace

    from sidrec.decode import left_pad
    from sidrec.evaluate.generative import build_trie
    from sidrec.train.rl import GroupRollout

    root, data, sids, sft_dir = weak_sft
    codes, _ = load_sids(sids)
    tokenizer, model = load_model_for_inference(sft_dir)
    trie = build_trie(tokenizer, codes)
    g = 4
    heads = [fit_history("seqrec", h, codes, tokenizer, 120)[0] for h in ([0, 1, 2], [3], [4, 5])]
    prompts = [p for p in heads for _ in range(g)]
    trainer = SimpleNamespace(rollout_rows=[{"target": 0}] * len(prompts), model=model,
                              accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                              _metrics={"train": collections.defaultdict(list)})
    rollout = GroupRollout(rl_config(num_generations=g), tokenizer, trie, trie.sid_of_item(len(codes)))
    out = rollout(prompts, trainer)
    sid_logp = torch.tensor(out["sid_logp"])
    assert sid_logp.shape == (len(prompts),)
    c = len(out["completion_ids"][0])
    ids, mask = left_pad([p + comp for p, comp in zip(out["prompt_ids"], out["completion_ids"])],
                         tokenizer.pad_token_id)
    with torch.no_grad():
        token_logp, _ = shared_prompt_logps(model, ids, mask, c)
    assert torch.allclose(sid_logp, token_logp[:, :codes.shape[1]].sum(-1), atol=1e-4)
    assert (sid_logp.view(-1, g).diff(dim=-1) <= 1e-6).all()  # beam order: best first
    rollout.cfg = rl_config(num_generations=g, add_target=True)
    trainer.rollout_rows = trainer.rollout_rows[:g]
    out = rollout([prompts[0]] * g, trainer)
    assert "sid_logp" not in out  # an injected target has no beam score: the loss runs the forward instead
    assert int(trie.sid_of_item(len(codes))[0]) in out["sid"]  # the target is in the group


def test_scale_rewards_none_keeps_the_rewards_scale(weak_sft, tmp_path):
    """A tiny reward (popularity x 0.01) against the KL to the SFT model (beta 0.3): z-scoring within groups blows the
    reward up to unit advantages and the policy moves far; centring only (`scale_rewards: none`) keeps it tiny next
    to the KL, so the policy barely moves. (Adam cancels a common scale of all gradients, not this balance.)"""
    from sidrec.data import Dataset

    root, data, sids, sft_dir = weak_sft
    ds = Dataset.load(data)
    prior = torch.tensor(recent_popularity(ds.splits["train"]["target"], ds.num_items, 40), dtype=torch.float32)

    def rise(scale):
        cfg = rl_config(prompts="after_train", rewards={"popularity": 0.01}, popularity_window=40,
                        sample_train=False, scale_rewards=scale, beta=0.3)
        out = run_rl(cfg, sft_dir, data, sids, tmp_path / scale)
        return float(((sid_log_shares(out, data, sids).exp() - sid_log_shares(sft_dir, data, sids).exp())
                      * prior).sum(-1).mean())

    by_group, centred = rise("group"), rise("none")
    assert by_group > 0.15 and abs(centred) < 0.1 * by_group, (by_group, centred)


def test_kl_to_the_reference_holds_the_policy_back(weak_sft, tmp_path):
    root, data, sids, sft_dir = weak_sft
    free = run_rl(rl_config(beta=0.0), sft_dir, data, sids, tmp_path / "free")
    held = run_rl(rl_config(beta=2.0), sft_dir, data, sids, tmp_path / "held")
    kl_free, kl_held = catalogue_kl(free, sft_dir, data, sids), catalogue_kl(held, sft_dir, data, sids)
    assert kl_held < 0.7 * kl_free, (kl_free, kl_held)


def test_add_target_puts_the_target_in_every_group(weak_sft, tmp_path):
    root, data, sids, sft_dir = weak_sft
    run_rl(rl_config(add_target=True, rewards={"rule": 1.0, "ranking": 1.0}), sft_dir, data, sids, tmp_path / "rl")
    log = json.loads((tmp_path / "rl" / "train_log.json").read_text())
    zero = [e["frac_reward_zero_std"] for e in log if "frac_reward_zero_std" in e]
    assert zero and max(zero) == 0.0  # every group holds the target, so every group has a reward spread


def test_rl_bad_inputs_fail_before_training(weak_sft, tmp_path):
    root, data, sids, sft_dir = weak_sft
    out = tmp_path / "rl"
    with pytest.raises(SidrecError, match="unknown reward"):
        run_rl(rl_config(rewards={"ndcg": 1.0}), sft_dir, data, sids, out)
    with pytest.raises(SidrecError, match="needs rl.scorer"):
        run_rl(rl_config(rewards={"collaborative": 1.0}), sft_dir, data, sids, out)
    with pytest.raises(SidrecError, match="no SASRec checkpoint"):
        run_rl(rl_config(rewards={"collaborative": 1.0}, scorer=str(tmp_path)), sft_dir, data, sids, out)
    with pytest.raises(SidrecError, match="after_train"):
        run_rl(rl_config(prompts="after_train"), sft_dir, data, sids, out)  # rule needs a target
    with pytest.raises(SidrecError, match="extend_prompts"):
        run_rl(rl_config(extend_prompts=1), sft_dir, data, sids, out)
    with pytest.raises(SidrecError, match="suffix_prompts"):
        run_rl(rl_config(prompts="after_train", rewards={"novelty": 1.0}, suffix_prompts=1), sft_dir, data, sids, out)
    with pytest.raises(SidrecError, match="tilted needs beta > 0"):
        run_rl(rl_config(loss="tilted", beta=0.0), sft_dir, data, sids, out)
    with pytest.raises(SidrecError, match="add_target"):
        run_rl(rl_config(prompts="after_train", rewards={"novelty": 1.0}, add_target=True), sft_dir, data, sids, out)
    with pytest.raises(SidrecError, match="larger than the catalogue"):
        run_rl(rl_config(num_generations=16, train_batch_size=32, micro_batch_size=16), sft_dir, data, sids, out)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({str(i): [f"<a_{i + 50}>", "<b_0>", "<c_0>"] for i in range(12)}))
    with pytest.raises(SidrecError, match="no SID tokens"):
        run_rl(rl_config(), sft_dir, data, other, out, allow_mismatch=True)  # refused unless allowed: other SIDs
    with pytest.raises(SidrecError, match="does not exist"):
        run_rl(rl_config(), tmp_path / "nope", data, sids, out)
    assert not (out / "checkpoints").exists()


def test_tilted_advantages_by_hand():
    from sidrec.train.rl import tilted_advantages

    ref = torch.log(torch.tensor([0.5, 0.5, 0.8, 0.2]))
    adv = torch.tensor([0.5, -0.5, 0.0, 0.0])
    # group 1: q = softmax(log .5 + [.5, -.5]) = [.7311, .2689], p = [.5, .5]; group 2: no reward, q = ref = p
    out = tilted_advantages(ref, ref, adv, 1.0, 2)
    assert torch.allclose(out, torch.tensor([0.2311, -0.2311, 0.0, 0.0]), atol=1e-4)
    # beta scales the tilt: beta 0.5 doubles the reward's log-odds, q = softmax([1, -1]) = [.8808, .1192]
    assert torch.allclose(tilted_advantages(ref, ref, adv, 0.5, 2)[:2], torch.tensor([0.3808, -0.3808]), atol=1e-4)
    # a policy already at the optimum gets no push; one past it is pulled back
    at_optimum = ref + torch.tensor([0.5, -0.5, 0.0, 0.0])
    assert torch.allclose(tilted_advantages(at_optimum, ref, adv, 1.0, 2), torch.zeros(4), atol=1e-6)
    assert tilted_advantages(ref + torch.tensor([2.0, -2.0, 0, 0]), ref, adv, 1.0, 2)[0] < 0


def test_tilted_loss_reaches_the_kl_optimum(weak_sft, tmp_path):
    """With G = the whole 12-item catalogue, the optimum of E[popularity] - beta KL(pi || pi_ref) is pi_ref tilted by
    exp(popularity / beta): per prompt, log pi - log pi_ref = popularity / beta + a constant. `loss: tilted` must
    land near that slope (1 = the optimum, 0 = no move); a wrong sign or a missing ref term would miss it."""
    from sidrec.data import Dataset

    root, data, sids, sft_dir = weak_sft
    ds = Dataset.load(data)
    beta = 0.5
    prior = torch.tensor(recent_popularity(ds.splits["train"]["target"], ds.num_items, 40), dtype=torch.float32)
    cfg = rl_config(prompts="after_train", rewards={"popularity": 1.0}, popularity_window=40, sample_train=False,
                    scale_rewards="none", beta=beta, loss="tilted", num_generations=12, train_batch_size=48,
                    micro_batch_size=48, epochs=3, learning_rate=3e-3)
    out = run_rl(cfg, sft_dir, data, sids, tmp_path / "rl")
    shift = sid_log_shares(out, data, sids) - sid_log_shares(sft_dir, data, sids)
    x = (prior / beta).expand_as(shift)
    x, shift = x - x.mean(-1, keepdim=True), shift - shift.mean(-1, keepdim=True)
    slope = float((x * shift).sum() / (x * x).sum())
    assert 0.6 < slope < 1.4, slope
    log = json.loads((tmp_path / "rl" / "train_log.json").read_text())
    kl = [e["rl/kl_to_group_optimum"] for e in log if "rl/kl_to_group_optimum" in e]
    assert kl[-1] < 0.5 * kl[0], kl  # the policy closes in on the group's optimum
