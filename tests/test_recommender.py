import json

import numpy as np
import pytest
import torch

from generative_fixtures import NUM_ITEMS, toy_codes, train_toy_sft
from sidrec.data import Dataset
from sidrec.decode import SidTrie, constrained_beam_search
from sidrec.errors import SidrecError
from sidrec.evaluate.generative import evaluate_generative
from sidrec.serve import Recommendation, Recommender
from sidrec.serve.onnx_backend import OnnxStepModel
from sidrec.tasks.template import sid_text

BEAMS = 10


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data, sids, model_dir = train_toy_sft(root, epochs=15)
    test = Dataset.load(data).splits["test"]
    return {"root": root, "data": data, "sids": sids, "model": model_dir,
            "histories": [list(h) for h in test["history"]], "targets": test["target"].tolist()}


@pytest.fixture(scope="module")
def fp32(toy):
    return Recommender.load(toy["model"], toy["sids"], toy["data"], beams=BEAMS, device="cpu")


def test_recommend_returns_catalogue_items_with_titles_and_descending_scores(toy, fp32):
    recs = fp32.recommend(toy["histories"], k=5)
    assert len(recs) == len(toy["histories"])
    codes = toy_codes()
    for row in recs:
        assert len(row) == 5 and all(isinstance(r, Recommendation) for r in row)
        ids = [r.item_id for r in row]
        assert len(set(ids)) == 5 and all(0 <= i < NUM_ITEMS for i in ids)
        assert all(r.title == f"widget number {r.item_id}" and r.sid == sid_text(codes[r.item_id]) for r in row)
        scores = [r.score for r in row]
        assert all(np.isfinite(scores)) and all(s <= 0 for s in scores) and scores == sorted(scores, reverse=True)
    # the toy's rule (item i is followed by i + 1) is learned: the target is ranked first most of the time
    top1 = [row[0].item_id for row in recs]
    assert np.mean([p == t for p, t in zip(top1, toy["targets"])]) >= 0.3  # chance: 1/12
    assert fp32.recommend([], k=3) == []
    # numpy ints and a lone history work; k=1 gives the first of the k=5 list (the score up to float noise: another
    # batch, other padding)
    one = fp32.recommend([list(np.array(toy["histories"][0], dtype=np.int64))], k=1)
    assert len(one[0]) == 1 and one[0][0].item_id == recs[0][0].item_id
    assert one[0][0].score == pytest.approx(recs[0][0].score, abs=1e-4)


def test_recommend_equals_evaluation_ranking(toy, fp32, tmp_path):
    res = evaluate_generative(toy["model"], toy["data"], toy["sids"], tmp_path / "eval", beams=BEAMS)
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    recs = fp32.recommend(toy["histories"], k=BEAMS)
    assert len(rows) == res["num_samples"] == len(recs)
    for row, rec in zip(rows, recs):
        assert [r.item_id for r in rec] == row["predictions"][:BEAMS]
        assert np.allclose([r.score for r in rec], row["scores"][:BEAMS], atol=1e-4)


def test_backends_agree_with_fp32(toy, fp32, tmp_path):
    ref = fp32.recommend(toy["histories"], k=5)
    onnx = Recommender.load(toy["model"], toy["sids"], toy["data"], backend="onnx", beams=BEAMS,
                            onnx_dir=tmp_path / "onnx")
    assert (tmp_path / "onnx" / "step.onnx").exists()
    got = onnx.recommend(toy["histories"], k=5)
    assert [[r.item_id for r in row] for row in got] == [[r.item_id for r in row] for row in ref]
    assert np.allclose([[r.score for r in row] for row in got], [[r.score for r in row] for row in ref], atol=1e-4)

    int8 = Recommender.load(toy["model"], toy["sids"], toy["data"], backend="int8", beams=BEAMS)
    quantized = {n for n, m in int8.step_model.model.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)}
    assert "lm_head" in quantized and "model.layers.0.self_attn.q_proj" in quantized
    assert "model.layers.0.mlp.down_proj" not in quantized  # kept fp32 (see sidrec.serve.backends)
    got = int8.recommend(toy["histories"], k=5)
    top1 = np.mean([g[0].item_id == r[0].item_id for g, r in zip(got, ref)])
    overlap = np.mean([len({x.item_id for x in g} & {x.item_id for x in r}) / 5 for g, r in zip(got, ref)])
    assert top1 >= 0.85 and overlap >= 0.8, (top1, overlap)

    # evaluation runs on a backend through the same path
    res = evaluate_generative(toy["model"], toy["data"], toy["sids"], tmp_path / "eval", beams=BEAMS, backend="onnx")
    assert res["backend"] == "onnx" and res["valid_sid_rate"] == 1.0


def test_onnx_step_model_matches_the_torch_search_with_padding(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64)).eval()
    codes = np.array([[a, b, c] for a in range(4) for b in range(4) for c in range(4)])[::3]
    trie = SidTrie.build(codes, [list(range(10, 14)), list(range(20, 24)), list(range(30, 34))])
    ids = torch.tensor([[0, 0, 0, 1, 2], [3, 4, 5, 6, 7], [0, 0, 0, 0, 9]])
    mask = (torch.arange(5) >= torch.tensor([[3], [0], [4]])).long()
    ref = constrained_beam_search(model, ids, mask, trie, num_beams=8)
    got = constrained_beam_search(OnnxStepModel.from_model(model, tmp_path), ids, mask, trie, num_beams=8)
    assert (got.sid_index == ref.sid_index).all()
    assert np.allclose(got.scores, ref.scores, atol=1e-5)


def test_bad_inputs_name_the_bad_value(toy, fp32):
    h = toy["histories"][:2]
    with pytest.raises(SidrecError, match=r"history 1: unknown item id 12 \(the catalogue has ids 0..11\)"):
        fp32.recommend([h[0], [3, 12]])
    with pytest.raises(SidrecError, match="unknown item id -1"):
        fp32.recommend([[-1]])
    with pytest.raises(SidrecError, match="item id '3' is not an integer"):
        fp32.recommend([["3"]])
    with pytest.raises(SidrecError, match="history 1 is empty"):
        fp32.recommend([h[0], []])
    with pytest.raises(SidrecError, match="history 0 is 5, not a list"):
        fp32.recommend([5, 6])
    with pytest.raises(SidrecError, match="k=0 must be a positive integer"):
        fp32.recommend(h, k=0)
    with pytest.raises(SidrecError, match=f"k=11 is more than the beam width {BEAMS}"):
        fp32.recommend(h, k=11)
    with pytest.raises(SidrecError, match="k=13 is more than the catalogue's 12 items"):
        fp32.recommend(h, k=13)
    with pytest.raises(SidrecError, match="backend='tensorrt' is not one of torch, int8, onnx"):
        Recommender.load(toy["model"], toy["sids"], toy["data"], backend="tensorrt")
    with pytest.raises(SidrecError, match="device='cuda'"):
        Recommender.load(toy["model"], toy["sids"], toy["data"], backend="onnx", device="cuda")
    with pytest.raises(SidrecError, match="--beams 13 is larger than the catalogue's 12 distinct SIDs"):
        Recommender.load(toy["model"], toy["sids"], toy["data"], beams=13)
    with pytest.raises(SidrecError, match="beams=0"):
        Recommender.load(toy["model"], toy["sids"], toy["data"], beams=0)
