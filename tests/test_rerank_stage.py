"""Hybrid ranking as part of the product: a `Recommender` that re-ranks its beams with a SASRec scorer (as
`sidrec rerank` does), the fused score in the HTTP response, and one-line errors for a bad scorer or λ.
(The pipeline's `rerank` stage is covered by tests/test_pipeline.py's end-to-end run.)"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from generative_fixtures import make_toy, train_toy_sft
from sidrec.baselines import SasrecConfig, run_sasrec
from sidrec.cli import app as cli
from sidrec.errors import SidrecError
from sidrec.evaluate.fusion import rerank_beams
from sidrec.serve import Recommender

BEAMS = 8
FAST = dict(hidden=32, blocks=1, heads=1, dropout=0.1, lr=3e-3, batch_size=128, max_epochs=6, patience=3, threads=1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank_serve")
    data, sids, model = train_toy_sft(root, epochs=3)
    run_sasrec(data, root / "sasrec", SasrecConfig(**FAST), progress=False)
    out = root / "eval"  # a rerank folder, as `sidrec rerank` (and the pipeline's stage) writes it
    res = CliRunner().invoke(cli, ["eval", "--model", str(model), "--data", str(data), "--sids", str(sids), "--out",
                                   str(out), "--beams", str(BEAMS), "--rerank", str(root / "sasrec"),
                                   "--rerank-weight", "1.5"])
    assert res.exit_code == 0, res.output
    from sidrec.data import Dataset

    histories = [list(h) for h in Dataset.load(data).splits["test"]["history"]]
    return {"root": root, "data": data, "sids": sids, "model": model, "rerank": out / "rerank",
            "histories": histories}


@pytest.fixture(scope="module")
def plain(toy):
    return Recommender.load(toy["model"], toy["sids"], toy["data"], beams=BEAMS, device="cpu")


@pytest.fixture(scope="module")
def fused(toy):
    return Recommender.load(toy["model"], toy["sids"], toy["data"], beams=BEAMS, device="cpu", rerank=toy["rerank"])


def test_recommender_reranks_as_rerank_beams_does(toy, plain, fused):
    assert fused.rerank_info["weight"] == 1.5 and fused.rerank_info["paths"] == [str(toy["root"] / "sasrec")]
    histories = toy["histories"]
    beams = plain.rank(histories)
    want_sids, want_fused = rerank_beams(histories, beams.sid_index, beams.scores, fused.scorer, 1.5,
                                         plain.trie.first_items())
    got = fused.recommend(histories, k=BEAMS)
    own = plain.recommend(histories, k=BEAMS)
    items_of, sid_of = plain.trie.items_of_sid, plain.trie.sid_of_item(plain.num_items)
    moved = 0
    for r, (row, base) in enumerate(zip(got, own)):
        want_items = [it for s in want_sids[r] if s >= 0 for it in items_of[s]][:BEAMS]
        assert [x.item_id for x in row] == want_items
        f = [x.fused_score for x in row]
        assert f == sorted(f, reverse=True)
        fused_of_sid = dict(zip(want_sids[r].tolist(), want_fused[r].tolist()))
        assert np.allclose(f, [fused_of_sid[sid_of[x.item_id]] for x in row], atol=1e-6)
        # each item keeps the model's own score (that of the unfused list)
        base_score = {x.item_id: x.score for x in base}
        assert all(x.score == pytest.approx(base_score[x.item_id], abs=1e-4) for x in row if x.item_id in base_score)
        moved += [x.item_id for x in row] != [x.item_id for x in base]
    assert moved > 0  # λ = 1.5 changes some lists: the test can tell re-ranked from plain
    assert all(x.fused_score is None for row in own for x in row)
    # the rerank folder's test predictions are the served lists (the same beams, fused the same way)
    preds = [json.loads(line)["predictions"][:BEAMS]
             for line in (toy["rerank"] / "predictions.jsonl").read_text().splitlines()]
    assert preds == [[x.item_id for x in row] for row in got]
    # a weight given with the scorer runs instead of the folder; 0 keeps the model's order
    zero = Recommender.load(toy["model"], toy["sids"], toy["data"], beams=BEAMS, device="cpu",
                            rerank=[toy["root"] / "sasrec"], rerank_weight=0)
    assert [[x.item_id for x in row] for row in zero.recommend(histories, k=5)] == \
        [[x.item_id for x in row[:5]] for row in own]


def test_http_response_carries_the_fused_score(toy, plain, fused):
    from fastapi.testclient import TestClient

    from sidrec.serve.app import ServeSettings, create_app

    api = create_app({"A": fused, "B": plain}, shares=[1.0, 0.0], settings=ServeSettings(allowed_hosts=["*"]))
    history = toy["histories"][0]
    with TestClient(api) as client:
        r = client.post("/recommend", json={"user_id": "u1", "history": history, "k": 5})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        want = fused.recommend([history], k=5)[0]
        assert [i["item_id"] for i in items] == [x.item_id for x in want]
        assert [i["fused_score"] for i in items] == pytest.approx([x.fused_score for x in want], abs=1e-9)
        assert [i["score"] for i in items] == pytest.approx([x.score for x in want], abs=1e-9)
        both = client.post("/compare", json={"history": history, "k": 5}).json()["variants"]
        assert all(i["fused_score"] is not None for i in both["A"])
        assert all(set(i) == {"item_id", "title", "score"} for i in both["B"])  # a plain variant: as it always was
        schema = client.get("/openapi.json").json()["components"]["schemas"]["ScoredItem"]["properties"]
        assert "fused_score" in schema and "scorer" in schema["fused_score"]["description"]


def test_bad_scorer_or_weight_is_a_one_line_error(toy, tmp_path):
    other_data, _ = make_toy(tmp_path / "other", seed=1)  # same 12 items, other rows
    run_sasrec(other_data, tmp_path / "other_sasrec", SasrecConfig(**{**FAST, "max_epochs": 1}), progress=False)
    load = lambda **kw: Recommender.load(toy["model"], toy["sids"], toy["data"], beams=BEAMS, **kw)  # noqa: E731
    cases = [
        (dict(rerank=[tmp_path / "other_sasrec"], rerank_weight=1.0), "trained on another dataset"),
        (dict(rerank=toy["rerank"], rerank_weight=-1), "out of range"),
        (dict(rerank=[toy["root"] / "sasrec"]), "not a rerank folder"),
        (dict(rerank_weight=1.0), "needs a scorer"),
    ]
    for kw, message in cases:
        with pytest.raises(SidrecError, match=message) as e:
            load(**kw)
        assert "\n" not in str(e.value)
    # the command line refuses them before loading any model, in one line
    base = ["serve", "--data", str(toy["data"]), "--model", str(tmp_path / "no_model"), "--sids", str(toy["sids"])]
    for extra, message in ((["--rerank", str(toy["rerank"]), "--rerank-weight", "-2"], "out of range"),
                           (["--rerank-weight", "1"], "needs --rerank"),
                           (["--rerank", str(toy["rerank"]), "--rerank-scorer", str(toy["root"] / "sasrec")],
                            "not both")):
        res = CliRunner().invoke(cli, base + extra)
        assert isinstance(res.exception, SidrecError) and message in str(res.exception), res.output


def test_cli_serve_with_a_rerank_folder(toy, fused, monkeypatch):
    from fastapi.testclient import TestClient

    import sidrec.cli.serve  # noqa: F401

    served = {}
    monkeypatch.setattr("uvicorn.run", lambda api, host, port, **kw: served.update(api=api))
    res = CliRunner().invoke(cli, ["serve", "--data", str(toy["data"]), "--model", str(toy["model"]), "--sids",
                                   str(toy["sids"]), "--beams", str(BEAMS), "--no-log", "--allow-host", "testserver",
                                   "--rerank", str(toy["rerank"])])
    assert res.exit_code == 0, res.output
    assert "re-ranking every variant with λ = 1.5" in res.output
    history = toy["histories"][1]
    with TestClient(served["api"]) as client:
        items = client.post("/recommend", json={"user_id": 7, "history": history, "k": 4}).json()["items"]
        health = client.get("/healthz").json()
    want = fused.recommend([history], k=4)[0]
    assert [(i["item_id"], i["fused_score"]) for i in items] == [(x.item_id, pytest.approx(x.fused_score)) for x in want]
    assert health["info"]["variants"]["A"]["rerank"]["weight"] == 1.5


def test_page_shows_the_fused_score_beside_the_models(toy, plain, fused):
    from test_serve import CHROMIUM, LiveServer

    from sidrec.serve.app import ServeSettings, create_app

    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine: `apt-get install -y chromium` (Debian) to run the page test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    api = create_app({"A": fused, "B": plain}, shares=[1.0, 0.0], settings=ServeSettings())
    with LiveServer(api) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#search", "number 3")
            sync_api.expect(page.locator("#results li")).to_have_count(1)
            page.click("#results li button.add")
            sync_api.expect(page.locator("#history li")).to_have_count(1)
            page.fill("#k", "5")
            page.click("#recommend")
            fused_col = page.locator('.variant[data-variant="A"] li .score')
            sync_api.expect(fused_col).to_have_count(5)
            import httpx

            history = page.locator("#history li").evaluate_all("els => els.map(e => +e.dataset.itemId)")
            assert history == [3]
            want = httpx.post(server.url + "/compare", json={"history": history, "k": 5}).json()["variants"]
            assert fused_col.all_inner_texts() == [f"{x['fused_score']:.3f} (model {x['score']:.3f})"
                                                   for x in want["A"]]
            plain_col = page.locator('.variant[data-variant="B"] li .score')
            assert plain_col.all_inner_texts() == [f"{x['score']:.3f}" for x in want["B"]]
        finally:
            browser.close()


def test_recommender_applies_the_recorded_transition_prior(toy, plain, tmp_path):
    """A rerank folder that records τ: serving adds τ · the transition prior, counted over every labelled row."""
    import shutil

    from sidrec.data import Dataset
    from sidrec.evaluate.fusion import transition_counts

    folder = tmp_path / "rerank"
    shutil.copytree(toy["rerank"], folder)
    results = json.loads((folder / "results.json").read_text())
    results["rerank"]["transition"] = {"weight": 3.0, "grid": [0.0, 3.0]}
    (folder / "results.json").write_text(json.dumps(results))
    served = Recommender.load(toy["model"], toy["sids"], toy["data"], beams=BEAMS, device="cpu", rerank=folder)
    assert served.rerank_info["transition_weight"] == 3.0
    histories = toy["histories"]
    beams = plain.rank(histories)
    table = transition_counts(Dataset.load(toy["data"]), None)
    want, want_fused = rerank_beams(histories, beams.sid_index, beams.scores, served.scorer, 1.5,
                                    plain.trie.first_items(), transitions=table, transition_weight=3.0)
    _, without = rerank_beams(histories, beams.sid_index, beams.scores, served.scorer, 1.5, plain.trie.first_items())
    items_of = plain.trie.items_of_sid
    got = served.recommend(histories, k=BEAMS)
    assert [[x.item_id for x in row] for row in got] == [[it for s in row if s >= 0 for it in items_of[s]][:BEAMS]
                                                         for row in want]
    got_fused = np.array([[x.fused_score for x in row] for row in got])
    np.testing.assert_allclose(got_fused, want_fused[:, :BEAMS], atol=1e-6)
    # the toy's next item is always the last + 1: the prior (3 · log(1 + its count)) lifts that beam's fused score
    assert (np.abs(want_fused.max(1) - without.max(1)) > 1.0).mean() > 0.5
