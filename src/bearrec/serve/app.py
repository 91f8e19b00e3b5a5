"""The HTTP API (FastAPI): recommendations, catalog look-up, health, metrics, OpenAPI docs and the page at /.

Every error is JSON: {"status", "errors": [{"field", "message"}], "run"} (422 bad input, 413 body too large, 503
queue full with Retry-After, 504 past the request deadline, 404/405 unknown routes). Every response carries the
run in the headers X-Bearrec-Run and X-Bearrec-Model, and every JSON body of the API in its "run" field.

(No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations, and the request models are
local to `create_app`.)
"""
import asyncio
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator, Sequence

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from .. import __version__
from .batcher import Batcher, Job, QueueFull
from .config import ServeConfig
from .engine import SEARCHES, Engine, FieldError
from .metrics import Metrics
from .schemas import (BatchResponse, ErrorResponse, InfoResponse, ItemsResponse, RecommendResponse,
                      request_models)

log = logging.getLogger("bearrec.serve")
ERRORS = {code: {"model": ErrorResponse} for code in (413, 422, 503, 504)}
CLIENT_CLOSED = 499  # the status recorded for a client that left before its answer (nginx's convention)


def create_app(config: ServeConfig, engine: Engine) -> FastAPI:
    """The app serving `engine` with the options of `config` (its batcher starts with the app's lifespan)."""
    metrics = Metrics()
    batcher = Batcher(lambda key, payloads: engine.decode(key[0], payloads), config.max_batch_size,
                      config.max_wait_ms / 1000, config.max_queue, metrics)
    run = engine.run.as_dict()
    max_k = config.num_beams
    RecommendRequest, BatchRequest = request_models(max_k, min(10, max_k), config.max_history,
                                                    config.max_batch_histories)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="bearrec", version=_version(), lifespan=lifespan,
                  description=f"Recommendations of the run {run['name']} (model {run['model_id']}): trie-constrained "
                              "beam search (or exact top-K) over its catalog, concurrent requests batched.")
    app.state.engine, app.state.batcher, app.state.metrics = engine, batcher, metrics
    app.add_middleware(Guard, max_body=config.max_body_bytes, metrics=metrics, run=run)

    def error(status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None,
              **extra: Any) -> JSONResponse:
        return JSONResponse({"status": status, "errors": errors, "run": run, **extra}, status_code=status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if request.method == "POST" and kind and "json" not in kind:
            return error(422, [{"field": "body", "message": f"the body must be JSON, sent as Content-Type "
                                                            f"application/json (got {kind}). Fix: send it so."}])
        return error(422, [describe(e) for e in exc.errors()])

    @app.exception_handler(FieldError)
    async def wrong(request: Request, exc: FieldError) -> JSONResponse:
        return error(422, [{"field": exc.field, "message": exc.message}], **exc.extra)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, [{"field": getattr(exc, "field", None), "message": str(exc.detail)}],
                     headers=exc.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return error(500, [{"field": None, "message": f"internal error: {type(exc).__name__}: {exc}"}])

    def beams(search: str) -> int | None:
        return config.num_beams if search == "beam" else None

    async def decode(request: Request, payloads: Sequence[tuple[list[str], int, str]], search: str,
                     k: int) -> list[list[dict]] | None:
        """Each payload's recommendations through the batcher; None when the client left first."""
        try:
            jobs = batcher.submit(payloads, engine.batch_key(search, k))
        except QueueFull as e:
            raise HTTPException(503, f"the server is busy ({batcher.depth} histories queued). Fix: retry after "
                                     f"{e.retry_after} s.", headers={"Retry-After": str(e.retry_after)}) from None
        return await wait_for_jobs(request, batcher, jobs, config.request_timeout_s)

    @app.post("/v1/recommend", response_model=RecommendResponse, response_model_exclude_none=True, responses=ERRORS,
              summary="Top-k titles for one history")
    async def recommend(body: RecommendRequest, request: Request) -> Any:  # type: ignore[valid-type]
        search = body.search or config.search
        history = engine.check_history(body.history, "history")
        found = await decode(request, [(history, body.k, "history")], search, body.k)
        if found is None:
            return Response(status_code=CLIENT_CLOSED)
        return {"run": run, "search": search, "k": body.k, "num_beams": beams(search), "recommendations": found[0]}

    @app.post("/v1/recommend:batch", response_model=BatchResponse, response_model_exclude_none=True,
              responses=ERRORS, summary="Top-k titles for each of several histories")
    async def recommend_batch(body: BatchRequest, request: Request) -> Any:  # type: ignore[valid-type]
        search = body.search or config.search
        payloads = [(engine.check_history(h, f"histories[{n}]"), body.k, f"histories[{n}]")
                    for n, h in enumerate(body.histories)]
        found = await decode(request, payloads, search, body.k)
        if found is None:
            return Response(status_code=CLIENT_CLOSED)
        return {"run": run, "search": search, "k": body.k, "num_beams": beams(search), "results": found}

    @app.get("/v1/items", response_model=ItemsResponse, responses=ERRORS, summary="Catalog items by title")
    async def items(query: str = Query("", max_length=200, description="words the title holds (any case), or an "
                                                                        "item id"),
                    limit: int = Query(20, ge=1, le=200)) -> Any:
        total, found = engine.find(query, limit)
        return {"run": run, "query": query, "total": total, "items": found}

    @app.get("/v1/info", response_model=InfoResponse, summary="The run and the server's settings")
    async def info() -> Any:
        return {"run": run, "items": len(engine.items), "num_beams": config.num_beams, "max_k": max_k,
                "default_k": min(10, max_k), "searches": list(SEARCHES), "default_search": config.search,
                "max_batch_size": config.max_batch_size, "device": engine.device}

    @app.get("/healthz", summary="The process answers")
    async def healthz() -> Any:
        return {"status": "alive", "run": run}

    @app.get("/readyz", summary="The model is loaded and checked, and the decoding loop runs")
    async def readyz() -> Any:
        if not batcher.running:
            return error(503, [{"field": None, "message": "the decoding loop is not running"}])
        return {"status": "ready", "run": run, "queue_depth": batcher.depth}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8"))

    return app


async def wait_for_jobs(request: Request, batcher: Batcher, jobs: list[Job], timeout: float) -> list[Any] | None:
    """The jobs' results; None when the client disconnected first; HTTPException 504 past `timeout` seconds.

    Either way the jobs whose batch has not started are taken out of the queue."""
    every = asyncio.gather(*(j.future for j in jobs))
    gone = asyncio.ensure_future(disconnected(request))
    done, _ = await asyncio.wait({every, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if every in done:
        return every.result()
    reason = "disconnected" if gone in done else "deadline"
    for job in jobs:
        batcher.drop(job, reason)
    every.cancel()
    if reason == "disconnected":
        return None
    raise HTTPException(504, f"no answer within the request deadline of {timeout:g} s. Fix: retry later, or start "
                             "the server with a longer --request-timeout.")


async def disconnected(request: Request) -> None:
    """Returns when the client has closed the connection (the body is read already, so only that message is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


HINTS = {"history": 'Fix: send a list of item ids, oldest first, e.g. ["15", "42"].',
         "histories": 'Fix: send a list of histories, e.g. [["15"], ["42", "7"]].',
         "k": "Fix: send an integer within the bounds (GET /v1/info gives max_k).",
         "search": 'Fix: send "beam" or "exact", or leave it out.',
         "limit": "Fix: send an integer from 1 to 200.", "query": "Fix: send a shorter query."}


def describe(error: dict[str, Any]) -> dict[str, Any]:
    """A pydantic error as {field, message}: the field as history[2], the message in words with a fix."""
    loc = list(error.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path", "header"):  # where the value was, not its name
        loc = loc[1:]
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    kind, message = error.get("type", ""), error.get("msg", "invalid")
    if kind == "json_invalid":
        return {"field": "body", "message": f"the body is not valid JSON ({error.get('ctx', {}).get('error', '')}, "
                                            f"at character {loc[0] if loc else '?'}). Fix: send a JSON object."}
    if not field:
        what = "a JSON body is required" if kind == "missing" else message
        return {"field": "body", "message": f"{what}. Fix: send a JSON object such as {{\"history\": [\"15\"], "
                                            f"\"k\": 10}}."}
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind == "extra_forbidden":
        return {"field": field, "message": f"{field}: unknown field. Fix: leave it out (GET /docs lists the fields)."}
    hint = HINTS.get(str(loc[0]), "")
    return {"field": field, "message": f"{field}: {message}. {hint}".strip()}


class Guard:
    """ASGI middleware: refuses bodies over `max_body` bytes (413), names the run in every response's headers, and
    counts every request by endpoint and status with its latency."""

    def __init__(self, app: Any, *, max_body: int, metrics: Metrics, run: dict[str, Any]):
        self.app, self.max_body, self.metrics = app, max_body, metrics
        self.headers = [(b"x-bearrec-run", run["name"].encode("latin-1", "replace")),
                        (b"x-bearrec-model", str(run["model_id"]).encode())]
        self.run = run

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_named(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        received = 0

        async def receive_counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise self.too_large()
            return message

        try:
            length = dict(scope.get("headers", [])).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                exc = self.too_large()
                await JSONResponse({"status": 413, "errors": [{"field": "body", "message": exc.detail}],
                                    "run": self.run}, status_code=413)(scope, receive, send_named)
            else:
                await self.app(scope, receive_counted, send_named)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def too_large(self) -> HTTPException:
        exc = HTTPException(413, f"the body is over {self.max_body} bytes. Fix: send fewer histories per call "
                                 "(or start the server with a larger limit).")
        exc.field = "body"  # type: ignore[attr-defined]  # named in the answer (see http_error)
        return exc


def _version() -> str:
    return __version__
