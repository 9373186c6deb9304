"""Resumable verified download, against a local HTTP server in a thread."""

import gzip
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sidrec.data.amazon18 import preprocess_amazon18
from sidrec.data.download import download
from sidrec.errors import SidrecError

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


class Handler(BaseHTTPRequestHandler):
    files: dict = {}
    log: list = []
    honour_range = True
    extra_length = 0  # announce more bytes than are sent (a connection that drops early)

    def do_GET(self):
        type(self).log.append((self.path, self.headers.get("Range")))
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start + self.extra_length))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("H", (Handler,), {"files": {"/f.bin": PAYLOAD}, "log": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield handler, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_full_download_then_cache_hit(server, tmp_path):
    handler, url = server
    dest = tmp_path / "cache" / "f.bin"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert download(url + "/f.bin", dest, sha256=sha, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "cache" / "f.bin.part").exists()
    download(url + "/f.bin", dest, sha256=sha, progress=False)
    assert len(handler.log) == 1  # the second call never touched the network


def test_resume_from_part(server, tmp_path):
    handler, url = server
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:1000])
    download(url + "/f.bin", dest, progress=False)
    assert handler.log == [("/f.bin", "bytes=1000-")]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts(server, tmp_path):
    handler, url = server
    handler.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"junk")
    download(url + "/f.bin", tmp_path / "f.bin", progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_complete_part_gets_416_and_restarts(server, tmp_path):
    _, url = server
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD + b"more")
    download(url + "/f.bin", tmp_path / "f.bin", progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_size_mismatch_keeps_part_for_resume(server, tmp_path):
    handler, url = server
    handler.extra_length = 10
    dest = tmp_path / "f.bin"
    with pytest.raises(SidrecError, match=r"/f.bin: (size mismatch: received 102400 bytes but the server announced "
                                          r"102410|download interrupted)"):
        download(url + "/f.bin", dest, progress=False)
    assert not dest.exists() and (tmp_path / "f.bin.part").stat().st_size == len(PAYLOAD)


def test_sha256_mismatch_and_http_error(server, tmp_path):
    _, url = server
    with pytest.raises(SidrecError, match="sha256 .* does not match the expected 00"):
        download(url + "/f.bin", tmp_path / "f.bin", sha256="00" * 32, progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    with pytest.raises(SidrecError, match="/missing.bin: HTTP 404"):
        download(url + "/missing.bin", tmp_path / "m.bin", progress=False)


def test_preprocess_downloads_missing_files(server, tmp_path):
    handler, url = server
    day = 86_400
    reviews = [{"reviewerID": f"u{u}", "asin": "AB"[(u + i) % 2], "unixReviewTime": 1_500_000_000 + (10 * u + i) * day}
               for u in range(4) for i in range(3)]
    meta = [{"asin": "A", "title": "Alpha item"}, {"asin": "B", "title": "Beta item"}]
    handler.files["/categoryFilesSmall/Tools_5.json.gz"] = gzip.compress("\n".join(map(json.dumps, reviews)).encode())
    handler.files["/metaFiles2/meta_Tools.json.gz"] = gzip.compress("\n".join(map(json.dumps, meta)).encode())
    ds = preprocess_amazon18("Tools", tmp_path / "out", start=None, end=None, user_k=2, item_k=2,
                             cache_dir=tmp_path / "cache", base_url=url + "/", progress=False)
    assert ds.counts()["num_train"] + ds.counts()["num_valid"] + ds.counts()["num_test"] == 8
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["Tools_5.json.gz", "Tools_5.json.gz.sha256",
                                                                    "meta_Tools.json.gz", "meta_Tools.json.gz.sha256"]
