"""The HTTP service: a FastAPI app over one or more `Recommender`s (A/B variants), micro-batched, with an impression log.

    app = create_app({"A": rec_a, "B": rec_b}, shares=[0.5, 0.5], log=ImpressionLog("impressions.sqlite"))
    uvicorn.run(app, host="127.0.0.1", port=8000)      # or `sidrec serve ...`

Endpoints
- `POST /recommend {"user_id": str|int, "history": [item ids, oldest first], "k": 10}`
  -> `{"user_id", "variant", "items": [{"item_id", "title", "score"}, ...]}` (best first; score = log P(SID | history)).
  The user's variant comes from `sidrec.serve.ab.Router` (a stable hash of user_id); the impression is logged and
  committed before the response is sent.
- `POST /compare {"history": [...], "k": 10}` -> `{"variants": {name: [items]}}`: every variant's list for one
  history, for the page; not an impression, not logged.
- `GET /items?query=TEXT&limit=20` -> `{"query", "total", "items": [{"item_id", "title"}]}`: case-insensitive
  substring search over titles, in item-id order (a query that is an item id also finds that item first).
- `GET /healthz` -> status, variants, catalogue size, limits, queue lengths and batching counters.
- `GET /` -> a self-contained page (`page.html`): search items, build a history, see every variant's list.

Every request is validated before it joins a micro-batch, so one bad request never fails the others of its batch.
Errors are JSON `{"detail": "..."}`: 400 malformed JSON, 413 body too large, 422 a field that is missing, of the
wrong type or out of range (unknown item ids, a history longer than `max_history`, k outside 1..max_k), 503 when the
queue is full or the service is stopping, 500 for a bug (the service keeps running).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from sidrec.errors import SidrecError
from sidrec.serve.ab import DEFAULT_SALT, Impression, ImpressionLog, Router
from sidrec.serve.batching import Closed, MicroBatcher, Overloaded

log = logging.getLogger("sidrec.serve")

PAGE = Path(__file__).with_name("page.html")
MAX_USER_ID_CHARS = 256
REQUEST_KEYS = {"user_id", "history", "k"}
COMPARE_KEYS = {"history", "k"}


@dataclass
class ServeSettings:
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_history: int = 100  # longest history a request may send (the model only sees what fits its prompt)
    max_k: int | None = None  # default: the smallest beam width of the variants (and the catalogue size)
    default_k: int = 10
    max_queue: int = 4096  # queued requests per variant before 503
    max_body_bytes: int = 1 << 20
    max_search_limit: int = 200
    salt: str = DEFAULT_SALT
    info: dict = field(default_factory=dict)  # shown by /healthz (model paths, backend, ...)


@dataclass(frozen=True)
class Job:
    user_id: str | None
    history: list[int]
    k: int
    log: bool


class BadRequest(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _is_int(x) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _type_name(x) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", float: "number", int: "integer",
            type(None): "null"}.get(type(x), type(x).__name__)


def create_app(variants: Mapping[str, object], *, shares: Sequence[float] | None = None,
               log_to: ImpressionLog | None = None, settings: ServeSettings | None = None,
               close_log: bool = False) -> FastAPI:
    """A FastAPI app serving `variants` (name -> `Recommender`, all on the same catalogue).

    `close_log`: close `log_to` when the app shuts down (after the last batch), as `sidrec serve` does: uvicorn
    re-raises SIGTERM/SIGINT once it has shut down, so code after `uvicorn.run` may never run."""
    settings = settings or ServeSettings()
    if not variants:
        raise SidrecError("create_app needs at least one variant")
    names = list(variants)
    recs = [variants[n] for n in names]
    num_items = recs[0].num_items
    for name, rec in zip(names, recs):
        if rec.num_items != num_items:
            raise SidrecError(f"variant {name} has {rec.num_items} items, variant {names[0]} {num_items}: the "
                              f"variants must share one catalogue (one --data)")
    if settings.max_batch < 1 or settings.max_wait_ms < 0 or settings.max_history < 1:
        raise SidrecError("max_batch and max_history must be >= 1 and max_wait_ms >= 0")
    max_k = min([num_items] + [r.beams for r in recs])
    if settings.max_k is not None:
        if settings.max_k < 1 or settings.max_k > max_k:
            raise SidrecError(f"--max-k {settings.max_k} must be in 1..{max_k} (beam width and catalogue size)")
        max_k = settings.max_k
    default_k = min(settings.default_k, max_k)
    router = Router(names, shares, salt=settings.salt)
    titles = recs[0].titles
    lowered = [t.lower() if isinstance(t, str) else "" for t in titles]
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidrec-model")  # one model call at a time

    def make_runner(name: str, rec):
        def run_batch(jobs: list[Job]):
            kmax = max(j.k for j in jobs)
            lists = rec.recommend([j.history for j in jobs], k=kmax)
            out = [[(r.item_id, r.score) for r in recs_[: j.k]] for recs_, j in zip(lists, jobs)]
            if log_to is not None:
                log_to.write([Impression(j.user_id, name, j.history, j.k, items)
                              for j, items in zip(jobs, out) if j.log])
            return out
        return run_batch

    batchers = {name: MicroBatcher(make_runner(name, rec), max_batch=settings.max_batch,
                                   max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue,
                                   executor=executor, name=f"batch-{name}")
                for name, rec in zip(names, recs)}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for b in batchers.values():
            await b.start()
        try:
            yield
        finally:
            for b in batchers.values():
                await b.stop()
            executor.shutdown(wait=True)
            if close_log and log_to is not None:
                log_to.close()

    app = FastAPI(title="sidrec", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.router, app.state.batchers, app.state.settings = router, batchers, settings

    # ------------------------------------------------------------------ validation
    async def read_body(request: Request, allowed: set[str]) -> dict:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, f"request body is {declared} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():  # stop reading at the limit, whatever the header said
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, f"request body is over {limit} bytes; the limit is {limit}")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(400, f"malformed JSON: {e}") from None
        if not isinstance(data, dict):
            raise BadRequest(422, f"the body must be a JSON object, got {_type_name(data)}")
        extra = sorted(set(data) - allowed)
        if extra:
            raise BadRequest(422, f"unknown field(s) {', '.join(map(repr, extra))}; allowed: {', '.join(sorted(allowed))}")
        return data

    def check_history(data: dict) -> list[int]:
        if "history" not in data:
            raise BadRequest(422, "field 'history' is required: a list of item ids, oldest first")
        history = data["history"]
        if not isinstance(history, list):
            raise BadRequest(422, f"'history' must be a list of item ids, got {_type_name(history)}")
        if not history:
            raise BadRequest(422, "'history' is empty: at least one item id is needed to recommend")
        if len(history) > settings.max_history:
            raise BadRequest(422, f"'history' has {len(history)} items; the limit is {settings.max_history}")
        bad = [x for x in history if not _is_int(x)]
        if bad:
            raise BadRequest(422, f"'history' item {bad[0]!r} is not an integer item id")
        unknown = sorted({x for x in history if not 0 <= x < num_items})
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
            raise BadRequest(422, f"unknown item id(s) {shown} (the catalogue has ids 0..{num_items - 1})")
        return [int(x) for x in history]

    def check_k(data: dict) -> int:
        k = data.get("k", default_k)
        if not _is_int(k):
            raise BadRequest(422, f"'k' must be an integer, got {_type_name(k)} {k!r}")
        if not 1 <= k <= max_k:
            raise BadRequest(422, f"'k'={k} is out of range: 1..{max_k}")
        return int(k)

    def check_user(data: dict) -> str:
        if "user_id" not in data:
            raise BadRequest(422, "field 'user_id' is required (a string or an integer)")
        user = data["user_id"]
        if _is_int(user):
            return str(int(user))
        if not isinstance(user, str):
            raise BadRequest(422, f"'user_id' must be a string or an integer, got {_type_name(user)}")
        if not user or len(user) > MAX_USER_ID_CHARS:
            raise BadRequest(422, f"'user_id' must have 1..{MAX_USER_ID_CHARS} characters, got {len(user)}")
        return user

    def items_json(items) -> list[dict]:
        return [{"item_id": int(i), "title": titles[i], "score": s if math.isfinite(s) else None} for i, s in items]

    async def run_job(name: str, job: Job):
        try:
            return await batchers[name].submit(job)
        except Overloaded as e:
            raise BadRequest(503, f"overloaded: {e}") from None
        except Closed as e:
            raise BadRequest(503, str(e)) from None
        except SidrecError as e:
            raise BadRequest(422, str(e)) from None
        except Exception as e:  # noqa: BLE001  (a bug: answer 500, keep serving)
            log.exception("variant %s failed", name)
            raise BadRequest(500, f"internal error in variant {name}: {type(e).__name__}: {e}") from None

    # ------------------------------------------------------------------ endpoints
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return _error(exc.status, exc.detail)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):  # pragma: no cover (last resort)
        log.exception("unhandled error")
        return _error(500, f"internal error: {type(exc).__name__}")

    @app.post("/recommend")
    async def recommend(request: Request):
        data = await read_body(request, REQUEST_KEYS)
        user, history, k = check_user(data), check_history(data), check_k(data)
        variant = router.route(user)
        items = await run_job(variant, Job(user, history, k, log=True))
        return {"user_id": data["user_id"], "variant": variant, "items": items_json(items)}

    @app.post("/compare")
    async def compare(request: Request):
        data = await read_body(request, COMPARE_KEYS)
        history, k = check_history(data), check_k(data)
        lists = await asyncio.gather(*(run_job(n, Job(None, history, k, log=False)) for n in names))
        return {"variants": {n: items_json(items) for n, items in zip(names, lists)}}

    @app.get("/items")
    async def items(request: Request):
        params = request.query_params
        query = params.get("query", "")
        if len(query) > 200:
            raise BadRequest(422, f"'query' has {len(query)} characters; the limit is 200")
        raw = params.get("limit", "20")
        try:
            limit = int(raw)
        except ValueError:
            raise BadRequest(422, f"'limit' must be an integer, got {raw!r}") from None
        if not 1 <= limit <= settings.max_search_limit:
            raise BadRequest(422, f"'limit'={limit} is out of range: 1..{settings.max_search_limit}")
        q = query.strip().lower()
        hits = [i for i, t in enumerate(lowered) if q in t]
        if q.isdigit() and int(q) < num_items:
            hits = [int(q)] + [i for i in hits if i != int(q)]
        return {"query": query, "total": len(hits),
                "items": [{"item_id": i, "title": titles[i]} for i in hits[:limit]]}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "variants": names, "split": dict(zip(names, router.shares)), "num_items": num_items,
                "max_k": max_k, "max_history": settings.max_history, "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms, "logging": log_to is not None,
                "queued": {n: b.queued for n, b in batchers.items()},
                "batches": {n: dict(b.stats) for n, b in batchers.items()},
                "info": settings.info, "time": time.time()}

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return app


# ---------------------------------------------------------------------------------------------------- from the CLI
VARIANT_NAME = r"[A-Za-z0-9_.-]{1,32}"


def resolve_model(path: str | Path, sids: str | Path | None = None) -> tuple[Path, Path]:
    """(model folder, SID folder) for a model folder or a run folder (one with model/ inside).

    The SIDs are `sids` when given, else those the run was trained with (its manifest.json's inputs.sids.path)."""
    path = Path(path)
    if (path / "config.json").is_file():
        model, run = path, path.parent
    elif (path / "model" / "config.json").is_file():
        model, run = path / "model", path
    else:
        raise SidrecError(f"{path}: neither a model folder (config.json) nor a run folder (model/config.json)")
    if sids is None:
        from sidrec.io import read_manifest

        manifest = read_manifest(run) or {}
        recorded = ((manifest.get("inputs") or {}).get("sids") or {}).get("path")
        if recorded and Path(recorded).exists():
            sids = Path(recorded)
        else:
            raise SidrecError(f"{path}: no SIDs given and none recorded in {run / 'manifest.json'}"
                              + (f" ({recorded} does not exist here)" if recorded else "")
                              + "; pass --sids DIR or NAME=PATH@SIDS")
    return model, Path(sids)


def parse_variant(spec: str, default_sids: str | Path | None = None) -> tuple[str, Path, Path]:
    """'NAME=RUN_OR_MODEL_DIR[@SIDS]' -> (name, model folder, SID folder)."""
    import re

    name, sep, rest = spec.partition("=")
    if not sep or not rest:
        raise SidrecError(f"--variant {spec!r}: write NAME=RUN_OR_MODEL_DIR (optionally @SIDS_DIR), e.g. A=runs/exp/e2")
    if not re.fullmatch(VARIANT_NAME, name):
        raise SidrecError(f"--variant {spec!r}: the name {name!r} must be 1-32 letters, digits, '_', '.' or '-'")
    path, at, sids = rest.partition("@")
    model, sids_dir = resolve_model(path, sids if at else default_sids)
    return name, model, sids_dir


def load_variants(specs: Sequence[tuple[str, Path, Path]], data: str | Path, *, backend: str = "torch",
                  beams: int = 50, cutoff_len: int = 256, batch_size: int = 32, threads: int | None = None,
                  allow_mismatch: bool = False) -> dict:
    from sidrec.serve.recommender import Recommender

    return {name: Recommender.load(model, sids, data, backend=backend, device="cpu" if backend != "torch" else None,
                                   beams=beams, cutoff_len=cutoff_len, batch_size=batch_size, threads=threads,
                                   allow_mismatch=allow_mismatch)
            for name, model, sids in specs}
