"""The Starlette application of `relex-jax serve`.

  POST /v1/extract  a request (see `schema`) -> {"entities": [...], "relations": [...]}, one list
                    per text, the dicts of `RelexModel.inference` ("relations" left out with
                    "return_relations": false). While the model warms up: 503 with Retry-After.
  GET  /health      200 {"status": "ready", ...} or 503 {"status": "warming up", ...}
  GET  /metrics     Prometheus text format (`metrics.Metrics`)

Every error is a JSON object {"error": message} with a 4xx or 5xx status: 400 a body that is not
JSON, 413 a body over `max_body_bytes`, 422 a request the server refuses (types, values,
limits), 404 / 405 unknown paths and methods, 500 a model call that failed (the other requests of
its batch are run again without it), 503 warming up or shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from relex_jax.host import TextError
from relex_jax.serve.batcher import Batcher, ShuttingDown
from relex_jax.serve.metrics import Metrics
from relex_jax.serve.schema import RequestError, ServeConfig, parse_request

logger = logging.getLogger("relex_jax.serve")

PATHS = ("/v1/extract", "/health", "/metrics")


def create_app(model, config: ServeConfig) -> Starlette:
    """The application serving `model` (a `RelexModel`). Its lifespan starts the model's worker
    thread, which warms the model up while the server already answers (503 until ready), and
    stops it at shutdown once the queued requests are answered."""
    metrics = Metrics()
    batcher = Batcher(model, config, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)

    async def extract(request: Request) -> JSONResponse:
        if not batcher.ready.is_set():
            return _error(503, "warming up: the model's shapes are compiling; retry when GET /health answers 200",
                          headers={"Retry-After": "1"})
        parsed = parse_request(await _read_body(request, config.max_body_bytes), config, model)
        try:
            future = batcher.submit(parsed)
        except ShuttingDown as exc:
            return _error(503, str(exc))
        try:
            entities, relations = await asyncio.wrap_future(future)
        except TextError as exc:  # a text the model cannot take, found only when it is prepared
            return _error(422, str(exc))
        except Exception as exc:
            logger.exception("model call failed")
            return _error(500, f"the model call failed: {type(exc).__name__}: {exc}")
        body = {"entities": entities} if relations is None else {"entities": entities, "relations": relations}
        return JSONResponse(body)

    async def health(request: Request) -> JSONResponse:
        ready = batcher.ready.is_set()
        body = {"status": "ready" if ready else "warming up", "compiled_shapes": len(model.compiled_shapes)}
        if batcher.warmup_error:
            body["warmup_error"] = batcher.warmup_error
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_text(request: Request) -> PlainTextResponse:
        text = metrics.render(batcher.ready.is_set(), len(model.compiled_shapes), *batcher.queued())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, str(exc))

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail, headers=exc.headers)

    app = Starlette(
        routes=[Route("/v1/extract", extract, methods=["POST"]), Route("/health", health, methods=["GET"]),
                Route("/metrics", metrics_text, methods=["GET"])],
        middleware=[Middleware(CountRequests, metrics=metrics)],
        exception_handlers={RequestError: request_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    return app


def _error(status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit` bytes: by its
    Content-Length before reading, or while reading a body sent without one."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body has {declared} bytes, more than this server's limit of {limit} "
                                "(--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body has more than this server's limit of {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


class CountRequests:
    """ASGI middleware: counts every HTTP response by path and status (paths outside `PATHS` as
    "other"), and times /v1/extract."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            path = scope["path"] if scope["path"] in PATHS else "other"
            self.metrics.count_request(path, status, time.perf_counter() - start)
