"""The HTTP service: micro-batching, validation, A/B routing, the impression log, ab-report, the page in Chromium."""

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from generative_fixtures import NUM_ITEMS, train_toy_sft  # noqa: E402
from sidrec.data import Dataset  # noqa: E402
from sidrec.errors import SidrecError  # noqa: E402
from sidrec.evaluate.metrics import hr_ndcg, target_ranks  # noqa: E402
from sidrec.serve import Recommender  # noqa: E402
from sidrec.serve.ab import (ImpressionLog, Router, ab_report, mean_ci, parse_split, read_impressions,  # noqa: E402
                             user_unit)
from sidrec.serve.app import ServeSettings, create_app, parse_variant  # noqa: E402
from sidrec.serve.batching import MicroBatcher  # noqa: E402

BEAMS = 10
MAX_HISTORY = 20
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data, sids, model_dir = train_toy_sft(root, epochs=15)
    ds = Dataset.load(data)
    return {"root": root, "data": data, "sids": sids, "model": model_dir, "run": root / "sft", "dataset": ds}


@pytest.fixture(scope="module")
def recs(toy):
    # both fp32: the int8 backend quantizes activations with one scale per batch, so its lists depend (slightly) on
    # which requests share a micro-batch, and these tests compare served lists with direct calls exactly
    a = Recommender.load(toy["model"], toy["sids"], toy["data"], beams=BEAMS, device="cpu")
    b = Recommender.load(toy["model"], toy["sids"], toy["data"], beams=BEAMS, device="cpu")
    return {"A": a, "B": b}


class LiveServer:
    """uvicorn in a background thread on a free 127.0.0.1 port."""

    def __init__(self, app):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "the test server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def service(toy, recs, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("log") / "impressions.sqlite"
    log = ImpressionLog(log_path, config={"variants": {"A": {"model": "toy"}, "B": {"model": "toy"}}})
    settings = ServeSettings(max_batch=8, max_wait_ms=20, max_history=MAX_HISTORY)
    app = create_app(recs, shares=[0.5, 0.5], log_to=log, settings=settings)
    with LiveServer(app) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield {"url": server.url, "client": client, "log": log, "log_path": log_path, "app": app}
    log.close()


def post(client, body, path="/recommend"):
    if isinstance(body, (bytes, str)):
        return client.post(path, content=body, headers={"content-type": "application/json"})
    return client.post(path, json=body)


# ---------------------------------------------------------------------------------------------------- routing
def test_router_is_a_stable_sha256_split():
    r = Router(["A", "B"], parse_split("50/50", 2))
    u = int.from_bytes(hashlib.sha256(b"sidrec-ab/user-7").digest()[:8], "big") / 2 ** 64
    assert user_unit("user-7") == u and r.route("user-7") == ("A" if u < 0.5 else "B")
    assert r.route(42) == r.route("42") == Router(["A", "B"]).route(42)  # the same in any process, int or text
    share = np.mean([r.route(f"u{i}") == "A" for i in range(20000)])
    assert abs(share - 0.5) < 0.015
    uneven = Router(["A", "B", "C"], parse_split("20/30/50", 3))
    got = [uneven.route(i) for i in range(20000)]
    assert abs(got.count("C") / 20000 - 0.5) < 0.015 and abs(got.count("A") / 20000 - 0.2) < 0.015
    assert Router(["A", "B"], [1.0, 0.0]).route("anyone") == "A"
    assert Router(["A", "B"], parse_split("50/50", 2), salt="other").route("user-7") in ("A", "B")
    with pytest.raises(SidrecError, match="has 3 shares for 2 variant"):
        parse_split("1/1/1", 2)
    with pytest.raises(SidrecError, match="as numbers"):
        parse_split("half/half", 2)


# ---------------------------------------------------------------------------------------------------- batching
def test_micro_batcher_groups_concurrent_jobs_and_isolates_a_failing_one():
    sizes = []

    def run_batch(jobs):
        sizes.append(len(jobs))
        time.sleep(0.02)
        if "bad" in jobs:
            raise ValueError("bad job")
        return [j * 2 for j in jobs]

    async def main(max_batch, jobs):
        b = MicroBatcher(run_batch, max_batch=max_batch, max_wait_ms=30)
        await b.start()
        try:
            return await asyncio.gather(*(b.submit(j) for j in jobs), return_exceptions=True), dict(b.stats)
        finally:
            await b.stop()

    got, stats = asyncio.run(main(8, list(range(20))))
    assert got == [2 * j for j in range(20)]
    assert sizes == [8, 8, 4] and stats["batches"] == 3 and stats["max_batch_seen"] == 8

    sizes.clear()
    got, _ = asyncio.run(main(1, list(range(5))))
    assert got == [0, 2, 4, 6, 8] and sizes == [1] * 5

    sizes.clear()
    got, stats = asyncio.run(main(8, [1, 2, "bad", 3]))
    assert got[:2] == [2, 4] and got[3] == 6 and isinstance(got[2], ValueError)
    assert sizes == [4, 1, 1, 1, 1] and stats["batch_failures"] == 1  # the batch, then each job alone


# ---------------------------------------------------------------------------------------------------- the service
def test_recommend_matches_the_recommender(toy, recs, service):
    client, test = service["client"], toy["dataset"].splits["test"]
    user, history = int(test["user"].iloc[0]), [int(i) for i in test["history"].iloc[0]]
    res = post(client, {"user_id": user, "history": history, "k": 5})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["user_id"] == user and body["variant"] == Router(["A", "B"]).route(user)
    assert [set(it) for it in body["items"]] == [{"item_id", "title", "score"}] * 5
    ref = recs[body["variant"]].recommend([history], k=5)[0]
    assert [it["item_id"] for it in body["items"]] == [r.item_id for r in ref]
    assert all(it["title"] == f"widget number {it['item_id']}" for it in body["items"])
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True) and np.allclose(scores, [r.score for r in ref], atol=1e-4)
    # k defaults to 10; a string user id works too and is echoed as sent
    res = post(client, {"user_id": "alice", "history": history}).json()
    assert res["user_id"] == "alice" and len(res["items"]) == 10

    compare = post(client, {"history": history, "k": 3}, "/compare").json()
    assert set(compare["variants"]) == {"A", "B"}
    assert [it["item_id"] for it in compare["variants"]["A"]] == [r.item_id for r in ref[:3]]


def test_concurrent_requests_share_micro_batches_and_bad_ones_fail_alone(toy, recs, service):
    client, test = service["client"], toy["dataset"].splits["test"]
    before = service["app"].state.batchers["A"].stats["batches"] + service["app"].state.batchers["B"].stats["batches"]
    bodies = [{"user_id": f"c{i}", "history": [int(x) for x in test["history"].iloc[i % len(test)]], "k": 4}
              for i in range(24)]
    bad = {3: {"user_id": "c3", "history": [1, 99], "k": 4}, 10: {"user_id": "c10", "history": [1], "k": 0},
           17: '{"user_id": "c17", "history": [1, '}
    for i, b in bad.items():
        bodies[i] = b
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(lambda b: post(client, b), bodies))
    for i, (body, res) in enumerate(zip(bodies, results)):
        if i in bad:
            assert res.status_code in (400, 422) and "detail" in res.json()
            continue
        assert res.status_code == 200, res.text
        got = res.json()
        ref = recs[got["variant"]].recommend([body["history"]], k=4)[0]
        assert [it["item_id"] for it in got["items"]] == [r.item_id for r in ref], got["variant"]
    stats = {n: b.stats for n, b in service["app"].state.batchers.items()}
    assert max(s["max_batch_seen"] for s in stats.values()) > 1  # requests did share a model call
    assert sum(s["batches"] for s in stats.values()) - before < 21
    assert all(s["batch_failures"] == 0 for s in stats.values())  # validation kept bad requests out of the batches


@pytest.mark.parametrize("body, status, message", [
    ('{"user_id": 1, "history": [1, 2', 400, "malformed JSON"),
    ("", 400, "malformed JSON"),
    ("[1, 2]", 422, "must be a JSON object, got array"),
    ({"history": [1]}, 422, "'user_id' is required"),
    ({"user_id": True, "history": [1]}, 422, "'user_id' must be a string or an integer, got boolean"),
    ({"user_id": 1.5, "history": [1]}, 422, "got number"),
    ({"user_id": "", "history": [1]}, 422, "1..256 characters"),
    ({"user_id": 1}, 422, "'history' is required"),
    ({"user_id": 1, "history": "1,2"}, 422, "'history' must be a list of item ids, got string"),
    ({"user_id": 1, "history": []}, 422, "'history' is empty"),
    ({"user_id": 1, "history": [1] * (MAX_HISTORY + 1)}, 422, f"has {MAX_HISTORY + 1} items; the limit is {MAX_HISTORY}"),
    ({"user_id": 1, "history": [1, 12, -1, 40]}, 422, r"unknown item id(s) -1, 12, 40 (the catalogue has ids 0..11)"),
    ({"user_id": 1, "history": [1, "3"]}, 422, "'history' item '3' is not an integer"),
    ({"user_id": 1, "history": [1, 3.0]}, 422, "'history' item 3.0 is not an integer"),
    ({"user_id": 1, "history": [True]}, 422, "not an integer"),
    ({"user_id": 1, "history": [1], "k": 0}, 422, "'k'=0 is out of range: 1..10"),
    ({"user_id": 1, "history": [1], "k": BEAMS + 1}, 422, "'k'=11 is out of range: 1..10"),
    ({"user_id": 1, "history": [1], "k": "5"}, 422, "'k' must be an integer, got string"),
    ({"user_id": 1, "history": [1], "topk": 5}, 422, "unknown field(s) 'topk'"),
])
def test_bad_requests_get_clear_4xx_json(service, body, status, message):
    res = post(service["client"], body)
    assert res.status_code == status, res.text
    assert message in res.json()["detail"]


def test_limits_search_and_health(service):
    client = service["client"]
    res = post(client, '{"user_id": 1, "history": [' + ", ".join(["1"] * 400000) + "]}")
    assert res.status_code == 413 and "limit is" in res.json()["detail"]
    found = client.get("/items", params={"query": "NUMBER 1", "limit": 5}).json()
    assert found["total"] == 3 and [it["item_id"] for it in found["items"]] == [1, 10, 11]  # 1, 10, 11
    assert client.get("/items", params={"query": "7"}).json()["items"][0] == {"item_id": 7, "title": "widget number 7"}
    assert client.get("/items", params={"query": "no such thing"}).json() == {"query": "no such thing", "total": 0,
                                                                              "items": []}
    assert len(client.get("/items").json()["items"]) == NUM_ITEMS
    assert client.get("/items", params={"limit": 0}).status_code == 422
    assert "'limit' must be an integer" in client.get("/items", params={"limit": "x"}).json()["detail"]
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["variants"] == ["A", "B"] and health["max_k"] == BEAMS
    assert client.get("/nope").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "<script>" in page.text and "http" not in page.text.split("<script>")[0].lower()


# ---------------------------------------------------------------------------------------------------- A/B log + report
def test_every_impression_is_logged_and_ab_report_scores_them(toy, recs, service, tmp_path):
    from typer.testing import CliRunner

    import sidrec.cli.serve  # noqa: F401  (registers serve and ab-report)
    from sidrec.cli import app

    client, log = service["client"], service["log"]
    test = toy["dataset"].splits["test"]
    start = log.count()
    rows = list(zip(test["user"].tolist(), test["history"].tolist(), test["target"].tolist()))
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda r: post(client, {"user_id": int(r[0]), "history": [int(x) for x in r[1]],
                                                       "k": 10}).json(), rows))
    post(client, {"user_id": "not-in-the-split", "history": [1, 2], "k": 10})
    post(client, {"user_id": int(rows[0][0]), "history": [int(x) for x in rows[0][1]], "k": 10})  # a duplicate
    assert log.count() == start + len(rows) + 2

    # a fresh log holding exactly these impressions, so the report's figures can be checked by hand
    fresh = tmp_path / "ab.sqlite"
    fresh_log = ImpressionLog(fresh, config={"variants": {"A": {"model": "toy"}}})
    from sidrec.serve.ab import Impression
    fresh_log.write([Impression(str(u), res["variant"], [int(x) for x in h], 10,
                                [(it["item_id"], it["score"]) for it in res["items"]])
                     for (u, h, _), res in zip(rows, results)])
    fresh_log.write([Impression("x", "A", [1, 2], 10, [(3, -0.1)])])
    fresh_log.write([Impression(str(rows[0][0]), results[0]["variant"], [int(x) for x in rows[0][1]], 10,
                                [(0, -0.1)])])
    fresh_log.close()
    logged = read_impressions(fresh)
    assert len(logged) == len(rows) + 2 and logged[0]["history"] == [int(x) for x in rows[0][1]]

    report = ab_report(fresh, toy["data"], split="test", k=10)
    assert report["matched"] == len(rows) and report["unmatched"] == 1 and report["duplicates"] == 1
    for name in ("A", "B"):
        mine = [(h, t) for (u, h, t), res in zip(rows, results) if res["variant"] == name]
        preds = [[r.item_id for r in rec] for rec in recs[name].recommend([h for h, _ in mine], k=10)]
        ref = hr_ndcg(target_ranks(preds, [t for _, t in mine]), ks=(10,))
        v = report["variants"][name]
        assert v["rows"] == len(mine) and v["HR@10"] == pytest.approx(ref["HR@10"], abs=1e-9)
        assert v["NDCG@10"] == pytest.approx(ref["NDCG@10"], abs=1e-6)
        lo, hi = v["HR@10_ci95"]
        assert lo <= v["HR@10"] <= hi
    d = report["differences"]["B-A"]
    assert d["HR@10"] == pytest.approx(report["variants"]["B"]["HR@10"] - report["variants"]["A"]["HR@10"])
    assert d["HR@10_ci95"][0] <= d["HR@10"] <= d["HR@10_ci95"][1]
    for method in ("bootstrap", "user-bootstrap"):
        boot = ab_report(fresh, toy["data"], k=10, ci=method, resamples=500)
        v = boot["variants"]["A"]
        assert v["HR@10"] == report["variants"]["A"]["HR@10"] and v["HR@10_ci95"][0] <= v["HR@10"] <= v["HR@10_ci95"][1]
    with pytest.raises(SidrecError, match="--ci 't' is not one of normal, bootstrap, user-bootstrap"):
        ab_report(fresh, toy["data"], ci="t")
    lo, hi = mean_ci(np.array([0.0, 1.0] * 50))
    assert lo == pytest.approx(0.5 - 1.96 * np.std([0.0, 1.0] * 50, ddof=1) / 10, abs=1e-3)

    out = tmp_path / "report.json"
    res = CliRunner().invoke(app, ["ab-report", "--log", str(fresh), "--data", str(toy["data"]), "--k", "10",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["matched"] == len(rows) and "B-A" in res.output


def test_cli_serve_with_two_variants_loses_no_committed_impression_on_kill_9(toy, tmp_path):
    """`sidrec serve --variant ...` in a subprocess; after a kill -9, every answered request is in the log."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path / "kill" / "impressions.sqlite"
    cmd = [sys.executable, "-c", "import sidrec.cli.serve; from sidrec.cli import main; main()", "serve",
           "--variant", f"A={toy['run']}", "--variant", f"B={toy['model']}@{toy['sids']}", "--split", "50/50",
           "--data", str(toy["data"]), "--port", str(port), "--beams", str(BEAMS), "--threads", "1",
           "--max-batch", "4", "--log", str(log_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "sidrec serve did not come up"
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: post(client, {"user_id": f"k{i}", "history": [i % NUM_ITEMS], "k": 3}),
                                    range(30)))
        assert all(a.status_code == 200 for a in answers)
        assert {a.json()["variant"] for a in answers} == {"A", "B"}
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    conn = sqlite3.connect(log_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    logged = conn.execute("SELECT user_id, variant, items FROM impressions").fetchall()
    config = json.loads(conn.execute("SELECT config FROM sessions").fetchone()[0])
    conn.close()
    assert sorted(u for u, _, _ in logged) == sorted(f"k{i}" for i in range(30))
    by_user = {a.json()["user_id"]: a.json() for a in answers}
    for user, variant, items in logged:
        assert variant == by_user[user]["variant"]
        assert [i for i, _ in json.loads(items)] == [it["item_id"] for it in by_user[user]["items"]]
    assert config["variants"]["A"]["sids"] == str(toy["sids"])  # found through the run's manifest
    assert config["shares"] == {"A": 0.5, "B": 0.5}


def test_variant_specs():
    import sidrec.cli.serve
    from sidrec.serve.ab import DEFAULT_SALT

    assert sidrec.cli.serve.DEFAULT_SALT == DEFAULT_SALT
    with pytest.raises(SidrecError, match="write NAME=RUN_OR_MODEL_DIR"):
        parse_variant("runs/exp/e2")
    with pytest.raises(SidrecError, match="neither a model folder"):
        parse_variant("A=/nonexistent")
    with pytest.raises(SidrecError, match="must be 1-32 letters"):
        parse_variant("A B=/x")


# ---------------------------------------------------------------------------------------------------- the page
def test_page_search_add_recommend_in_headless_chromium(service, tmp_path):
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine: `apt-get install -y chromium` (Debian) to run the page test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    shot = tmp_path / "page.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(service["url"] + "/")
            sync_api.expect(page.locator("#status")).to_contain_text("12 items")
            page.fill("#search", "number 3")
            sync_api.expect(page.locator("#results li")).to_have_count(1)
            page.click("#results li button.add")
            page.fill("#search", "number 4")
            sync_api.expect(page.locator("#results li")).to_have_text(["#4widget number 4add"])
            page.click("#results li button.add")
            sync_api.expect(page.locator("#history li")).to_have_count(2)
            page.fill("#k", "5")
            page.click("#recommend")
            for name in ("A", "B"):
                col = page.locator(f'.variant[data-variant="{name}"] li')
                sync_api.expect(col).to_have_count(5)
                assert "widget number" in col.first.inner_text()
            ids = page.locator('.variant[data-variant="A"] li').evaluate_all("els => els.map(e => +e.dataset.itemId)")
            direct = service["client"].post("/compare", json={"history": [3, 4], "k": 5}).json()
            assert ids == [it["item_id"] for it in direct["variants"]["A"]]
            page.screenshot(path=str(shot), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert shot.exists() and shot.stat().st_size > 10_000
    out = os.environ.get("SIDREC_PAGE_SCREENSHOT")
    if out:
        shutil.copy(shot, out)
