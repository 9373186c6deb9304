"""Trust faults of the service and the supply chain: malformed bodies, Host/Origin checks, the OpenAPI page, /healthz
without paths, the public-bind warning, checksummed downloads and the pinned embedding model revision.

The service runs over a fake recommender (no model), through FastAPI's TestClient (the whole ASGI stack)."""

import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from sidrec.errors import SidrecError  # noqa: E402
from sidrec.serve.ab import ImpressionLog  # noqa: E402
from sidrec.serve.app import (MAX_JSON_DEPTH, ServeSettings, allowed_hosts, bind_warning, create_app,  # noqa: E402
                              json_too_deep)

NUM_ITEMS, BEAMS, MAX_HISTORY = 12, 10, 20
BASE = "http://127.0.0.1:8000"


@dataclass
class Rec:
    item_id: int
    score: float


class FakeRecommender:
    num_items, beams = NUM_ITEMS, BEAMS
    titles = [f"widget number {i}" for i in range(NUM_ITEMS)]

    def recommend(self, histories, k):
        return [[Rec((h[-1] + j) % NUM_ITEMS, -float(j)) for j in range(k)] for h in histories]


def make_app(tmp_path, **settings):
    log = ImpressionLog(tmp_path / "impressions.sqlite")
    settings = ServeSettings(max_history=MAX_HISTORY, **settings)
    return create_app({"A": FakeRecommender(), "B": FakeRecommender()}, log_to=log, settings=settings), log


@pytest.fixture
def service(tmp_path):
    app, log = make_app(tmp_path, info={"data": str(tmp_path / "data"), "variants": {"A": {"model": str(tmp_path / "m"),
                                                                                         "sids": "runs/sids"}}})
    with TestClient(app, base_url=BASE) as client:
        yield client, log, app
    log.close()


def post(client, body, path="/recommend", **headers):
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, content=content, headers={"content-type": "application/json", **headers})


# ---------------------------------------------------------------------------------------------------- bodies
@pytest.mark.parametrize("body, status, message", [
    ('{"user_id": %s, "history": [1]}' % ("9" * 5000), 400, "an integer with 5000 digits"),
    ('{"user_id": 1, "history": [%s]}' % ("1" * 5000), 400, "an integer with 5000 digits"),
    ('{"user_id": 1, "history": [1], "k": -%s}' % ("7" * 4301), 400, "an integer with 4301 digits"),
    ({"user_id": 10 ** 30, "history": [1]}, 422, "'user_id'=1000000000000000000000000000000 is out of range"),
    ({"user_id": 1, "history": [10 ** 25]}, 422, "unknown item id(s) 10000000000000000000000000"),
    ({"user_id": 1, "history": [1], "k": 10 ** 20}, 422, "is out of range: 1..10"),
    ('{"user_id": "\\ud800", "history": [1]}', 422, "'user_id' is not valid Unicode text"),
    ('{"user_id": "a\\udfffb", "history": [1]}', 422, "not valid Unicode"),
    ("[" * 100_000 + "]" * 100_000, 400, f"nested more than {MAX_JSON_DEPTH} levels deep"),
    ('{"user_id": 1, "history": [1], "x": ' + "{" * 100_000 + "}" * 100_000 + "}", 400, "nested more than"),
    ('{"user_id": 1, "history": [1], "k": NaN}', 400, "NaN is not JSON"),
    ('{"user_id": 1, "history": [1], "k": 1e999}', 422, "'k' must be an integer, got number inf"),
    (b'{"user_id": "\xff", "history": [1]}', 400, "malformed JSON"),
    ({"user_id": "u" * 257, "history": [1]}, 422, "'user_id' must have 1..256 characters, got 257"),
])
def test_malformed_bodies_get_4xx_and_never_reach_the_log(service, body, status, message):
    client, log, app = service
    before = log.count()
    res = post(client, body)
    assert res.status_code == status, res.text
    assert message in res.json()["detail"]
    assert log.count() == before
    assert all(b.stats["batch_failures"] == 0 for b in app.state.batchers.values())
    assert post(client, {"user_id": "ok", "history": [1, 2], "k": 3}).status_code == 200  # still serving
    assert log.count() == before + 1


def test_compare_and_items_bounds(service):
    client = service[0]
    assert post(client, "[" * 50 + "]" * 50, "/compare").status_code == 400
    assert "'k' must be an integer" in post(client, {"history": [1], "k": "3"}, "/compare").json()["detail"]
    res = client.post("/compare", content='{"history": [1]}', headers={"content-type": "text/plain"})
    assert res.status_code == 422 and "Content-Type: application/json" in res.json()["detail"]
    assert "'query' must have 0..200 characters" in client.get("/items", params={"query": "q" * 201}).json()["detail"]
    assert client.get("/items", params={"limit": "9" * 5000}).status_code == 422
    assert client.get("/items", params={"query": "9" * 5000}).status_code == 422
    assert client.get("/items", params={"query": "9" * 100}).json()["total"] == 0


def test_depth_scan_ignores_brackets_in_strings():
    assert not json_too_deep(b'{"a": "' + b"[" * 1000 + b'\\" {{{{"}')
    assert json_too_deep(b'{"a": ' + b"[" * (MAX_JSON_DEPTH + 1))
    assert not json_too_deep(b'{"user_id": 1, "history": [1, 2]}')


# ---------------------------------------------------------------------------------------------------- Host / Origin
def test_foreign_host_is_refused(service, tmp_path):
    client = service[0]
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "0.0.0.0:8000"):
        res = client.get("/healthz", headers={"host": host})
        assert res.status_code == 400 and "is not allowed" in res.json()["detail"], host
        assert post(client, {"user_id": 1, "history": [1]}, host=host).status_code == 400
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000"):
        assert client.get("/healthz", headers={"host": host}).status_code == 200, host

    hosts = allowed_hosts("0.0.0.0", ["box.example", "::2"])
    assert hosts == ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "box.example", "[::2]"]
    app, log = make_app(tmp_path / "wide", allowed_hosts=hosts)
    with TestClient(app, base_url=BASE) as wide:
        assert wide.get("/healthz", headers={"host": "box.example:8000"}).status_code == 200
        assert wide.get("/healthz", headers={"host": "[::2]:8000"}).status_code == 200
        assert wide.get("/healthz", headers={"host": "other.example"}).status_code == 400
    log.close()
    app, log = make_app(tmp_path / "any", allowed_hosts=allowed_hosts("127.0.0.1", ["*"]))
    with TestClient(app, base_url=BASE) as anyhost:
        assert anyhost.get("/healthz", headers={"host": "other.example"}).status_code == 200
    log.close()


def test_foreign_origin_may_not_post(service, tmp_path):
    client, log, _ = service
    body = {"user_id": "web", "history": [1], "k": 2}
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8000.evil.example"):
        res = post(client, body, origin=origin)
        assert res.status_code == 403 and "may not POST" in res.json()["detail"], origin
        assert post(client, {"history": [1]}, "/compare", origin=origin).status_code == 403
    assert log.count() == 0
    assert post(client, body, origin=BASE).status_code == 200  # the page itself: its fetch() sends its own Origin
    page = client.get("/")
    assert page.status_code == 200 and 'api("/compare"' in page.text
    res = post(client, {"history": [3, 4], "k": 5}, "/compare", origin=BASE)
    assert res.status_code == 200 and [len(v) for v in res.json()["variants"].values()] == [5, 5]
    assert post(client, body).status_code == 200  # no Origin: not a browser
    assert client.get("/items", headers={"origin": "http://evil.example"}).status_code == 200  # reads stay open
    assert log.count() == 2

    app, log2 = make_app(tmp_path / "o", allowed_origins=["http://app.example:3000/"])
    with TestClient(app, base_url=BASE) as other:
        assert post(other, body, origin="http://app.example:3000").status_code == 200
        assert post(other, body, origin="http://app.example:3001").status_code == 403
    log2.close()


# ---------------------------------------------------------------------------------------------------- docs, health
def test_openapi_documents_the_models(service):
    client = service[0]
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("RecommendRequest", "CompareRequest", "RecommendResponse", "CompareResponse", "ItemsResponse",
                 "Health", "ErrorDetail", "ScoredItem"):
        assert name in schemas, name
    req = schemas["RecommendRequest"]
    assert set(req["required"]) == {"user_id", "history"} and req["additionalProperties"] is False
    assert req["properties"]["k"]["maximum"] == BEAMS and req["properties"]["k"]["minimum"] == 1
    assert req["properties"]["history"]["maxItems"] == MAX_HISTORY
    assert req["properties"]["history"]["items"] == {"type": "integer", "minimum": 0, "maximum": NUM_ITEMS - 1}
    body = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/RecommendRequest")
    limit = next(p for p in spec["paths"]["/items"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 200
    assert client.get("/docs").status_code == 200


def test_healthz_shows_no_absolute_path(service, tmp_path):
    res = service[0].get("/healthz")
    assert res.status_code == 200
    assert str(tmp_path) not in res.text

    def strings(x):
        if isinstance(x, dict):
            return [s for v in x.values() for s in strings(v)]
        if isinstance(x, list):
            return [s for v in x for s in strings(v)]
        return [x] if isinstance(x, str) else []

    info = res.json()["info"]
    assert info["variants"]["A"] == {"model": "m", "sids": "runs/sids"} and info["data"] == "data"
    assert not [s for s in strings(res.json()) if s.startswith("/")]


# ---------------------------------------------------------------------------------------------------- public bind
def test_public_bind_warning(monkeypatch, tmp_path):
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert bind_warning(host, 8000, allowed_hosts(host)) is None, host
    for host in ("0.0.0.0", "::", "192.168.1.7", "box.example"):
        text = bind_warning(host, 8000, allowed_hosts(host))
        assert text and "not a loopback address" in text and "--allow-host" in text, host

    # `sidrec serve --host 0.0.0.0` says so before serving (model loading and uvicorn faked)
    from typer.testing import CliRunner

    import sidrec.cli.serve  # noqa: F401
    import sidrec.serve.app as serve_app
    from sidrec.cli import app as cli

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    served = {}
    monkeypatch.setattr(serve_app, "load_variants",
                        lambda specs, data, **kw: {name: FakeRecommender() for name, _, _ in specs})
    monkeypatch.setattr("uvicorn.run", lambda api, host, port, **kw: served.update(api=api, host=host))
    args = ["serve", "--model", str(model), "--sids", str(tmp_path), "--data", str(tmp_path), "--no-log"]
    res = CliRunner().invoke(cli, args + ["--host", "0.0.0.0", "--allow-host", "box.example"])
    assert res.exit_code == 0, res.output
    assert "warning: --host 0.0.0.0 is not a loopback address" in res.output
    settings = served["api"].state.settings
    assert settings.allowed_hosts == ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "box.example"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "warning" not in res.output


# ---------------------------------------------------------------------------------------------------- supply chain
PAYLOAD = bytes(range(256)) * 64


@pytest.fixture
def file_server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/f.json.gz"
    srv.shutdown()
    srv.server_close()


def test_download_with_wrong_checksum_leaves_nothing(file_server, tmp_path):
    from sidrec.data.download import download, recorded_sha256

    dest = tmp_path / "cache" / "f.json.gz"
    with pytest.raises(SidrecError, match=r"sha256 [0-9a-f]{64} does not match the expected 0{64}.*deleted"):
        download(file_server, dest, sha256="0" * 64, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []

    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert download(file_server, dest, sha256=good.upper(), progress=False).read_bytes() == PAYLOAD
    assert recorded_sha256(dest) == good


def test_download_records_the_first_sha256_and_checks_reuse(file_server, tmp_path):
    from sidrec.data.download import download, recorded_sha256, sha256_record

    dest = tmp_path / "f.json.gz"
    download(file_server, dest, progress=False)  # no published checksum: trust on first use
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert recorded_sha256(dest) == good
    assert sha256_record(dest).read_text() == f"{good}  f.json.gz\n"
    assert download(file_server, dest, progress=False) == dest  # reuse, checked
    dest.write_bytes(PAYLOAD[:-1] + b"x")  # the cached file changed afterwards
    with pytest.raises(SidrecError, match="does not match the expected"):
        download(file_server, dest, progress=False)
    assert not dest.exists() and not sha256_record(dest).exists()
    assert download(file_server, dest, progress=False).read_bytes() == PAYLOAD  # fetched afresh

    sha256_record(dest).unlink()  # a file from before records: recorded on its next use
    download(file_server, dest, progress=False)
    assert recorded_sha256(dest) == good


def test_embedding_model_revision_is_pinned_and_passed_on(monkeypatch, tmp_path):
    import inspect

    import sentence_transformers

    from sidrec.embed.encoder import DEFAULT_MODEL, PINNED_REVISIONS, embed_items, load_encoder
    from sidrec.sid.config import EmbedConfig

    assert len(PINNED_REVISIONS[DEFAULT_MODEL]) == 40
    calls = []

    class FakeST:
        def __init__(self, path, **kw):
            calls.append((path, kw))

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", FakeST)
    load_encoder(DEFAULT_MODEL)
    assert calls[-1] == (DEFAULT_MODEL, {"device": None, "local_files_only": True,
                                         "revision": PINNED_REVISIONS[DEFAULT_MODEL]})
    load_encoder("org/other-model", revision="abc123")
    assert calls[-1][1]["revision"] == "abc123"
    load_encoder("org/other-model")
    assert calls[-1][1]["revision"] is None
    load_encoder(str(tmp_path))  # a local folder: no revision
    assert calls[-1] == (str(tmp_path), {"device": None})
    assert EmbedConfig().revision is None and EmbedConfig(revision="abc").revision == "abc"
    assert set(EmbedConfig().model_dump()) <= set(inspect.signature(embed_items).parameters)  # all reach embed_items
