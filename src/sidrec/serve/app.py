"""The HTTP service: a FastAPI app over one or more `Recommender`s (A/B variants), micro-batched, with an impression log.

    app = create_app({"A": rec_a, "B": rec_b}, shares=[0.5, 0.5], log=ImpressionLog("impressions.sqlite"))
    uvicorn.run(app, host="127.0.0.1", port=8000)      # or `sidrec serve ...`

Endpoints (request and response models: the OpenAPI page at /docs, the schema at /openapi.json)
- `POST /recommend {"user_id": str|int, "history": [item ids, oldest first], "k": 10}`
  -> `{"user_id", "variant", "items": [{"item_id", "title", "score"}, ...]}` (best first; score = log P(SID | history);
  when the variant re-ranks with a collaborative scorer (`sidrec serve --rerank`) each item also has `fused_score`,
  the hybrid ranking's score, which orders the list).
  The user's variant comes from `sidrec.serve.ab.Router` (a stable hash of user_id); the impression is logged and
  committed before the response is sent.
- `POST /compare {"history": [...], "k": 10}` -> `{"variants": {name: [items]}}`: every variant's list for one
  history, for the page; not an impression, not logged.
- `GET /items?query=TEXT&limit=20` -> `{"query", "total", "items": [{"item_id", "title"}]}`: case-insensitive
  substring search over titles, in item-id order (a query that is an item id also finds that item first).
- `GET /healthz` -> status, variants, catalogue size, limits, queue lengths and batching counters (file names only,
  never absolute paths).
- `GET /` -> a self-contained page (`page.html`): search items, build a history, see every variant's list.

Every request is validated before it joins a micro-batch, so one bad request never fails the others of its batch.
Before any parsing, a guard (`Guard`) checks the Host header against an allow-list (loopback names and the bound
host by default: a DNS-rebinding page names its own host and is refused), refuses POSTs whose Origin is neither the
service's own nor an allowed one (so no web page can write impressions into the A/B log), caps the body size and its
JSON nesting depth, and parses it with bounded integers and no NaN/Infinity. The pydantic models then check fields,
types and ranges. Errors are JSON `{"detail": "..."}` (one line): 400 malformed JSON (or nested too deep, an integer
too long, a Host not allowed), 403 a foreign Origin, 413 body too large, 422 a field that is missing, of the wrong
type or out of range (unknown item ids, a history longer than `max_history`, k outside 1..max_k, a user id that is
not valid Unicode), 503 when the queue is full or the service is stopping, 500 for a bug (the service keeps running).
"""

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Mapping, Sequence, Union
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, WithJsonSchema, field_validator

from sidrec.errors import SidrecError
from sidrec.serve.ab import DEFAULT_SALT, Impression, ImpressionLog, Router
from sidrec.serve.batching import Closed, MicroBatcher, Overloaded

log = logging.getLogger("sidrec.serve")

PAGE = Path(__file__).with_name("page.html")
MAX_USER_ID_CHARS = 256
MAX_QUERY_CHARS = 200
MAX_JSON_DEPTH = 16  # a valid body nests 2 deep (object > history list)
MAX_INT_DIGITS = 32  # longer integers are refused while parsing (Python's own limit, 4,300 digits, raised a 500)
INT64 = 2 ** 63
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


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
    info: dict = field(default_factory=dict)  # shown by /healthz (file names only: absolute paths are cut)
    # Host header names accepted (port ignored); "*" accepts any (no DNS-rebinding protection). `allowed_hosts()`
    # adds the bound host, as `sidrec serve` does.
    allowed_hosts: list[str] = field(default_factory=lambda: list(LOOPBACK_HOSTS))
    # Origins (scheme://host[:port]) besides the service's own that may POST; "*" any
    allowed_origins: list[str] = field(default_factory=list)


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


def _type_name(x) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", float: "number", int: "integer",
            type(None): "null", bytes: "bytes"}.get(type(x), type(x).__name__)


def _short(x, n: int = 40) -> str:
    text = repr(x)
    return text if len(text) <= n else text[:n] + "..."


# ---------------------------------------------------------------------------------------------------- Host / Origin
def _host_name(value: str) -> str:
    """'Example.com:8000' -> 'example.com', '[::1]:80' -> '[::1]', '::1' -> '[::1]'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    if value.count(":") > 1:  # a bare IPv6 address
        return f"[{value}]"
    return value.split(":", 1)[0]


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name may resolve anywhere


def allowed_hosts(bind_host: str, extra: Sequence[str] = ()) -> list[str]:
    """The Host names `sidrec serve` accepts: the loopback names, the bound host and `extra` ('*': any)."""
    names = [*LOOPBACK_HOSTS, bind_host, *extra]
    return list(dict.fromkeys("*" if n.strip() == "*" else _host_name(n) for n in names if n.strip()))


def bind_warning(host: str, port: int, hosts: Sequence[str]) -> str | None:
    """A warning for a non-loopback bind address (None for loopback)."""
    if is_loopback(host):
        return None
    named = "any Host" if "*" in hosts else "Host " + ", ".join(hosts)
    return (f"warning: --host {host} is not a loopback address: anyone who can reach this machine on port {port} "
            f"can get recommendations and write impressions into the A/B log (there is no authentication). Requests "
            f"must name {named}; add --allow-host NAME for the name clients use, and put an authenticating proxy in "
            f"front for real traffic.")


# ---------------------------------------------------------------------------------------------------- JSON bodies
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays/objects more than `limit` deep (strings ignored), without parsing it."""
    depth = 0
    for c in _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS):
        depth += 1 if c in b"[{" else -1
        if depth > limit:
            return True
    return False


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"an integer with {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes):
    """Parse a request body, or raise BadRequest(400): depth and integer length bounded, no NaN/Infinity."""
    if json_too_deep(body):
        raise BadRequest(400, f"malformed JSON: nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(body, parse_int=_bounded_int, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest(400, f"malformed JSON: {e}") from None


class Guard:
    """ASGI middleware run before routing: Host allow-list, Origin check on POSTs, body size/depth/int limits.

    A body that passes is handed on unchanged (FastAPI parses it again for the pydantic models)."""

    SAFE = ("GET", "HEAD", "OPTIONS")

    def __init__(self, app, settings: ServeSettings):
        self.app, self.settings = app, settings
        self.hosts = {"*" if h == "*" else _host_name(h) for h in settings.allowed_hosts}
        self.origins = {o.strip().rstrip("/").lower() for o in settings.allowed_origins}

    def check(self, scope) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if "*" not in self.hosts and _host_name(host) not in self.hosts:
            raise BadRequest(400, f"Host {host!r} is not allowed (allowed: {', '.join(sorted(self.hosts))}); start "
                                  f"the service with --allow-host NAME to serve it under that name")
        origin = headers.get("origin")
        if scope["method"] not in self.SAFE and origin is not None and "*" not in self.origins:
            same = urlsplit(origin).netloc.lower() == host.lower() and origin.lower() != "null"
            if not same and origin.rstrip("/").lower() not in self.origins:
                raise BadRequest(403, f"Origin {origin!r} may not POST here (only the service's own page may); "
                                      f"start the service with --allow-origin ORIGIN to allow it")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            raise BadRequest(413, f"request body is {declared} bytes; the limit is {self.settings.max_body_bytes}")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            self.check(scope)
            if scope["method"] in self.SAFE:
                return await self.app(scope, receive, send)
            body = await self.read(receive)
            parse_json(body)
        except BadRequest as e:
            return await _error(e.status, e.detail)(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def read(self, receive) -> bytes:
        limit, chunks, size = self.settings.max_body_bytes, [], 0
        while True:  # stop reading at the limit, whatever the header said
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, f"request body is over {limit} bytes; the limit is {limit}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


# ---------------------------------------------------------------------------------------------------- models
class ErrorDetail(BaseModel):
    detail: str = Field(description="what was wrong, in one line")


class ScoredItem(BaseModel):
    item_id: int
    title: str | None
    score: float | None = Field(description="log P(SID | history); null when not finite")
    fused_score: float | None = Field(None, description="only when the variant re-ranks with a collaborative scorer: "
                                                        "log P(SID | history) + λ · z(scorer logit within the "
                                                        "request's beams), the list's order; null when not finite")


class RecommendResponse(BaseModel):
    user_id: Union[str, int] = Field(description="as sent")
    variant: str = Field(description="the A/B variant that served this user")
    items: list[ScoredItem] = Field(description="best first")


class CompareResponse(BaseModel):
    variants: dict[str, list[ScoredItem]]


class CatalogueItem(BaseModel):
    item_id: int
    title: str | None


class ItemsResponse(BaseModel):
    query: str
    total: int = Field(description="matching items in all (items holds at most `limit`)")
    items: list[CatalogueItem]


class Health(BaseModel):
    status: str
    variants: list[str]
    split: dict[str, float]
    num_items: int
    max_k: int
    max_history: int
    max_batch: int
    max_wait_ms: float
    logging: bool
    queued: dict[str, int]
    batches: dict[str, dict[str, int]]
    info: dict
    time: float


# pydantic refuses strings that are not valid Unicode (a lone surrogate such as "\ud800", which SQLite cannot store)
UserId = Union[Annotated[StrictStr, Field(min_length=1, max_length=MAX_USER_ID_CHARS)],
               Annotated[StrictInt, Field(ge=-INT64, lt=INT64)]]


def request_models(num_items: int, max_history: int, max_k: int, default_k: int) -> tuple[type, type]:
    """(RecommendRequest, CompareRequest) with this service's bounds, so /openapi.json documents them."""
    item_id = Annotated[StrictInt, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": num_items - 1})]
    history_field = Field(min_length=1, max_length=max_history,
                          description=f"item ids (0..{num_items - 1}), oldest first")
    k_field = Field(default_k, ge=1, le=max_k, description="how many items to return")

    def known(history: list[int]) -> list[int]:
        unknown = sorted({x for x in history if not 0 <= x < num_items})
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
            raise ValueError(f"has unknown item id(s) {shown} (the catalogue has ids 0..{num_items - 1})")
        return history

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_id: UserId = Field(description=f"a string (1..{MAX_USER_ID_CHARS} characters) or a 64-bit integer; "
                                            f"it picks the A/B variant")
        history: list[item_id] = history_field
        k: StrictInt = k_field
        _known = field_validator("history")(known)

    class CompareRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: list[item_id] = history_field
        k: StrictInt = k_field
        _known = field_validator("history")(known)

    return RecommendRequest, CompareRequest


EXPECTED = {"user_id": "a string or an integer", "history": "a list of item ids", "k": "an integer",
            "limit": "an integer", "query": "a string"}
EMPTY_HINT = {"history": "at least one item id is needed to recommend"}
TYPE_ERRORS = ("_type", "_parsing", "int_from_float")


def describe_errors(errors: Sequence[dict], allowed: Sequence[str], ranges: Mapping[str, tuple],
                    lengths: Mapping[str, tuple]) -> str:
    """pydantic's errors as one line, e.g. "'k'=0 is out of range: 1..10; field 'user_id' is required".

    Of a field's errors, a constraint beats a type error (a union such as user_id reports one per member)."""
    by_field: dict[str, list[dict]] = {}
    for err in errors:
        loc = list(err["loc"])
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        by_field.setdefault(str(loc[0]) if loc else "", []).append({**err, "loc": loc})
    out = []
    extra = [name for name, errs in by_field.items() if errs[0]["type"] == "extra_forbidden"]
    if extra:
        out.append(f"unknown field(s) {', '.join(map(repr, extra))}; allowed: {', '.join(sorted(allowed))}")
    for name, errs in by_field.items():
        if name in extra:
            continue
        specific = [e for e in errs if not e["type"].endswith(TYPE_ERRORS)]
        for err in specific or errs[:1]:
            out.append(_describe(name, err, ranges, lengths))
    return "; ".join(list(dict.fromkeys(out))[:3])


def _describe(name: str, err: dict, ranges: Mapping[str, tuple], lengths: Mapping[str, tuple]) -> str:
    kind, value, ctx, loc = err["type"], err.get("input"), err.get("ctx") or {}, err["loc"]
    if not name:  # the body itself
        if kind == "missing":
            return "the body is empty: send a JSON object"
        if isinstance(value, (bytes, str)):
            return "the body must be a JSON object sent with Content-Type: application/json"
        return f"the body must be a JSON object, got {_type_name(value)}"
    if kind == "missing":
        return f"field '{name}' is required" + (f" ({EXPECTED[name]})" if name in EXPECTED else "")
    if len(loc) > 1 and isinstance(loc[1], int):
        return f"'{name}' item {_short(value)} is not an integer item id"
    if kind in ("string_too_short", "string_too_long"):
        lo, hi = lengths.get(name, (ctx.get("min_length", 0), ctx.get("max_length", "")))
        return f"'{name}' must have {lo}..{hi} characters, got {len(value)}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return f"'{name}' is empty" + (f": {EMPTY_HINT[name]}" if name in EMPTY_HINT else "")
    if kind == "too_long":
        return f"'{name}' has {ctx.get('actual_length', len(value))} items; the limit is {ctx['max_length']}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = (f"{ranges[name][0]}..{ranges[name][1]}" if name in ranges else
                 {"greater_than_equal": ">= {ge}", "greater_than": "> {gt}", "less_than_equal": "<= {le}",
                  "less_than": "< {lt}"}[kind].format(**ctx))
        return f"'{name}'={value[:40] if isinstance(value, str) else _short(value)} is out of range: {bound}"
    if kind == "string_unicode":
        return f"'{name}' is not valid Unicode text (a lone surrogate?)"
    if kind == "value_error":
        return f"'{name}' {err['msg'].removeprefix('Value error, ')}"
    if kind.endswith(TYPE_ERRORS):
        return f"'{name}' must be {EXPECTED.get(name, 'of another type')}, got {_type_name(value)} {_short(value)}"
    return f"'{name}': {err['msg']}"


def _public(obj):
    """`obj` with every absolute path cut to its last component (/healthz must not map the server's disk)."""
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_public(v) for v in obj]
    if isinstance(obj, str) and (os.path.isabs(obj) or obj.startswith("~")):
        return Path(obj).name
    return obj


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
    titles = [t if isinstance(t, str) else None for t in recs[0].titles]
    lowered = [t.lower() if t is not None else "" for t in titles]
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidrec-model")  # one model call at a time
    RecommendRequest, CompareRequest = request_models(num_items, settings.max_history, max_k, default_k)
    ranges = {"k": (1, max_k), "limit": (1, settings.max_search_limit)}
    lengths = {"user_id": (1, MAX_USER_ID_CHARS), "query": (0, MAX_QUERY_CHARS)}
    fields = {"/recommend": list(RecommendRequest.model_fields), "/compare": list(CompareRequest.model_fields)}

    def make_runner(name: str, rec):
        def run_batch(jobs: list[Job]):
            kmax = max(j.k for j in jobs)
            lists = rec.recommend([j.history for j in jobs], k=kmax)
            out = [[(r.item_id, r.score, getattr(r, "fused_score", None)) for r in recs_[: j.k]]
                   for recs_, j in zip(lists, jobs)]
            if log_to is not None:
                log_to.write([Impression(j.user_id, name, j.history, j.k, [(i, s) for i, s, _ in items])
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

    app = FastAPI(title="sidrec", summary="Generative recommendation with semantic IDs: recommend, compare A/B "
                                          "variants, search the catalogue.", lifespan=lifespan, redoc_url=None)
    app.add_middleware(Guard, settings=settings)
    app.state.router, app.state.batchers, app.state.settings = router, batchers, settings
    errors = {code: {"model": ErrorDetail, "description": text} for code, text in
              [(400, "malformed JSON, or a Host that is not allowed"), (403, "a foreign Origin"),
               (413, "body too large"), (422, "a field missing, of the wrong type or out of range"),
               (503, "overloaded or stopping")]}

    def items_json(items) -> list[dict]:
        finite = lambda x: x if math.isfinite(x) else None  # noqa: E731
        return [{"item_id": int(i), "title": titles[i], "score": finite(s)} | ({} if f is None else
                                                                              {"fused_score": finite(f)})
                for i, s, f in items]

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
            raise BadRequest(500, f"internal error in variant {name}: {type(e).__name__}") from None

    # ------------------------------------------------------------------ errors
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return _error(exc.status, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(422, describe_errors(exc.errors(), fields.get(request.url.path, ()), ranges, lengths))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):  # pragma: no cover (last resort)
        log.exception("unhandled error")
        return _error(500, f"internal error: {type(exc).__name__}")

    # ------------------------------------------------------------------ endpoints
    # exclude_unset: fused_score only where a variant re-ranks, so a plain variant's answer is as it always was
    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_unset=True, responses=errors)
    async def recommend(body: RecommendRequest) -> dict:
        """The user's variant's top-k items for the history; the impression is logged before the answer."""
        user = str(body.user_id)
        variant = router.route(user)
        items = await run_job(variant, Job(user, list(body.history), body.k, log=True))
        return {"user_id": body.user_id, "variant": variant, "items": items_json(items)}

    @app.post("/compare", response_model=CompareResponse, response_model_exclude_unset=True, responses=errors)
    async def compare(body: CompareRequest) -> dict:
        """Every variant's top-k items for one history (for the page; not logged)."""
        history = list(body.history)
        lists = await asyncio.gather(*(run_job(n, Job(None, history, body.k, log=False)) for n in names))
        return {"variants": {n: items_json(items) for n, items in zip(names, lists)}}

    @app.get("/items", response_model=ItemsResponse, responses=errors)
    async def items(query: Annotated[str, Query(max_length=MAX_QUERY_CHARS, description="a piece of the title (any "
                                                                                       "case) or an item id")] = "",
                    limit: Annotated[int, Query(ge=1, le=settings.max_search_limit)] = 20) -> dict:
        """Catalogue search by title, in item-id order."""
        q = query.strip().lower()
        hits = [i for i, t in enumerate(lowered) if q in t]
        if q.isdigit() and len(q) < 20 and int(q) < num_items:
            hits = [int(q)] + [i for i in hits if i != int(q)]
        return {"query": query, "total": len(hits),
                "items": [{"item_id": i, "title": titles[i]} for i in hits[:limit]]}

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict:
        """Status, limits, queue lengths and batching counters."""
        return {"status": "ok", "variants": names, "split": dict(zip(names, router.shares)), "num_items": num_items,
                "max_k": max_k, "max_history": settings.max_history, "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms, "logging": log_to is not None,
                "queued": {n: b.queued for n, b in batchers.items()},
                "batches": {n: dict(b.stats) for n, b in batchers.items()},
                "info": _public(settings.info), "time": time.time()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
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
                  allow_mismatch: bool = False, rerank=None, rerank_weight: float | None = None) -> dict:
    """name -> `Recommender`; `rerank`/`rerank_weight` (`Recommender.load`) re-rank every variant."""
    from sidrec.serve.recommender import Recommender

    return {name: Recommender.load(model, sids, data, backend=backend, device="cpu" if backend != "torch" else None,
                                   beams=beams, cutoff_len=cutoff_len, batch_size=batch_size, threads=threads,
                                   allow_mismatch=allow_mismatch, rerank=rerank, rerank_weight=rerank_weight)
            for name, model, sids in specs}
