"""The ASGI application behind ``sutra serve`` (Starlette on anyio).

Endpoints:
    ``POST /v1/embeddings``  OpenAI-compatible embeddings.
    ``GET  /v1/models``      the served model.
    ``WS   /v1/stream``      the JSON protocol of :class:`~sutra.streaming.WebSocketHandler`.
    ``GET  /health``         200 while the process is up.
    ``GET  /ready``          200 once the model is loaded and a warm-up embedding is done, 503
                             before that and while shutting down.
    ``GET  /metrics``        Prometheus text format.

With an API key configured, ``/v1/*`` needs ``Authorization: Bearer <key>`` (401 otherwise; the
probes and metrics stay open for orchestrators and scrapers). Errors use OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import gc
import hmac
import json
import logging
import os
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..streaming import (
    BufferFullError,
    StreamingClosedError,
    StreamingConfig,
    StreamingEmbedder,
    WebSocketHandler,
    truncate_dimensions,
)
from ..tokenization import check_unicode
from .metrics import ServerMetrics

logger = logging.getLogger("sutra.server")

ENCODING_FORMATS = ("float", "base64")
# OpenAI's own limits: 2048 inputs per request, 8192 tokens per input.
DEFAULT_MAX_ITEMS = 2048
LONG_INPUT_TOKEN_LIMIT = 8192
# Requests with at most this many characters of text are tokenized on the event loop (tens of
# microseconds); larger ones in a worker thread.
INLINE_TOKENIZE_CHARS = 4096
# A text longer than this many characters per token of the limit is refused without tokenizing
# (unless the request asks to truncate): English runs at 4 to 5 characters per WordPiece token.
MAX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class ServerSettings:
    """What ``sutra serve`` enforces and how it batches.

    Attributes:
        model_names: names a request may give in ``model`` for the served model (the first is
            the one reported in responses); an empty ``model`` field is also accepted.
        api_key: the Bearer token ``/v1/*`` requires; ``None`` leaves them open.
        max_body_bytes: larger request bodies get 413.
        max_items: most inputs in one request (400 beyond).
        max_tokens_per_item: most tokens in one input, special tokens included; ``None`` means
            the model's maximum sequence length (or 8192 when the embedder windows long texts).
            A longer input gets 400, or is cut to the limit when the request sets
            ``"truncate": true``.
        streaming: buffer, batching and timeout settings of the shared StreamingEmbedder;
            ``overflow="reject"`` makes a full buffer answer 503 with ``Retry-After``.
        retry_after_s: the ``Retry-After`` value sent with 503.
    """

    model_names: tuple[str, ...]
    api_key: str | None = None
    max_body_bytes: int = 16 * 2**20
    max_items: int = DEFAULT_MAX_ITEMS
    max_tokens_per_item: int | None = None
    streaming: StreamingConfig = field(default_factory=lambda: StreamingConfig(
        buffer_size=1024, batch_size=32, max_latency_ms=5.0, overflow="reject", timeout_secs=30.0,
    ))
    retry_after_s: int = 1


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass
class _EmbeddingRequest:
    items: list[str | list[int]]
    token_counts: list[int]
    dimensions: int | None
    encoding_format: str


def create_app(embedder: Any, settings: ServerSettings) -> Starlette:
    """The Starlette app serving ``embedder`` (a loaded :class:`~sutra.Embedder`).

    The app's lifespan runs the shared :class:`StreamingEmbedder` and a warm-up embedding;
    ``/ready`` turns 200 after it.
    """
    metrics = ServerMetrics()
    pool_stats = getattr(getattr(embedder, "backend", None), "stats", None)
    if callable(pool_stats):  # several devices behind the scheduler: per-device figures
        metrics.track_devices(pool_stats)
    state: dict[str, Any] = {"ready": False, "streaming": None}
    served_name = settings.model_names[0]
    accepted_names = set(settings.model_names)
    # Names for error messages: a model folder's path is accepted but not advertised.
    public_names = [n for n in settings.model_names if not os.path.isabs(n)] or [served_name]
    normalized = bool(getattr(getattr(embedder, "model", None), "normalize", True))
    tokenizer = getattr(embedder, "tokenizer", None)
    max_seq_length = int(getattr(embedder, "max_seq_length", LONG_INPUT_TOKEN_LIMIT))
    windowing = getattr(getattr(embedder, "config", None), "long_text", "truncate") == "window"
    token_limit = settings.max_tokens_per_item or (
        LONG_INPUT_TOKEN_LIMIT if windowing else max_seq_length
    )
    created = int(time.time())
    served_json = json.dumps(served_name, ensure_ascii=False)
    # Texts are tokenized here anyway (limits and usage). Without a default prompt, encode(text)
    # is exactly embed_tokens(those ids), so handing the ids over saves tokenizing twice on the
    # compute thread, the one resource every request shares.
    model = getattr(embedder, "model", None)
    submit_token_ids = tokenizer is not None and getattr(model, "default_prompt_name", None) is None

    @asynccontextmanager
    async def lifespan(app: Starlette):
        async def warm_up(streaming: StreamingEmbedder) -> None:
            # The first forward pass pays for graph optimization and allocations; pay it before
            # /ready says yes. It runs after startup so that /health answers meanwhile.
            await streaming.embed_stream("warm-up")
            # Everything allocated so far (modules, the model, the app) lives as long as the
            # process: moved out of the collector's view, a full collection no longer walks it
            # on the event loop (measured on 2 cores under load: full collections of 30 to 100
            # ms before, stalling every request in flight).
            gc.freeze()
            state["ready"] = True
            metrics.ready.set(1)
            logger.info("ready: %s (%d dimensions)", served_name, streaming.dimensions)

        async with StreamingEmbedder(settings.streaming, embedder,
                                     on_batch=metrics.observe_batch) as streaming:
            state["streaming"] = streaming
            metrics.track_queue_depth(lambda: streaming.queue_depth)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(warm_up, streaming)
                try:
                    yield
                finally:
                    state["ready"] = False
                    metrics.ready.set(0)

    def authorize(authorization: str | None) -> None:
        """Check the ``Authorization`` header's value against the API key (if one is set)."""
        if settings.api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        # Constant-time comparison: response timing must not reveal how much of a guess matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.api_key.encode()
        ):
            raise ApiError(401, "invalid or missing API key; send 'Authorization: Bearer <key>'",
                           type="authentication_error", code="invalid_api_key")

    def running_streaming() -> StreamingEmbedder:
        streaming = state["streaming"]
        if streaming is None or not state["ready"]:
            raise ApiError(503, "the model is not ready yet", type="server_error",
                           code="not_ready", headers={"Retry-After": str(settings.retry_after_s)})
        return streaming

    async def read_json(declared: str | None, receive: Any) -> Any:
        """The request body (``declared``: its Content-Length header) parsed as JSON."""
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise _too_large(int(declared), settings.max_body_bytes)
        # Straight from the ASGI messages (Request.stream() is an async generator: measurable on
        # the event loop at hundreds of requests a second). Chunked bodies have no
        # Content-Length: count while reading and stop at the limit.
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body", False):
            body = bytearray(body)
            while message.get("more_body", False):
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ApiError(400, "the client disconnected while sending the body",
                                   code="client_disconnected")
                body += message.get("body", b"")
                if len(body) > settings.max_body_bytes:
                    raise _too_large(len(body), settings.max_body_bytes)
        if len(body) > settings.max_body_bytes:
            raise _too_large(len(body), settings.max_body_bytes)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}",
                           code="invalid_json") from None
        except RecursionError:  # json recurses once per nesting level
            raise ApiError(400, "the request body is not valid JSON: nested too deeply",
                           code="invalid_json") from None

    async def parse_embedding_request(payload: Any) -> _EmbeddingRequest:
        if not isinstance(payload, dict):
            raise ApiError(400, f"the request body must be a JSON object, got "
                           f"{_json_type(payload)}", code="invalid_type")
        model = payload.get("model")
        if model is not None and not isinstance(model, str):
            raise ApiError(400, f"'model' must be a string, got {_json_type(model)}",
                           param="model", code="invalid_type")
        if model and model not in accepted_names:
            raise ApiError(404, f"the model {model!r} does not exist on this server; it serves "
                           f"{', '.join(public_names)}", param="model",
                           code="model_not_found")
        encoding_format = payload.get("encoding_format") or "float"
        if encoding_format not in ENCODING_FORMATS:
            raise ApiError(400, f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}; "
                           f"got {encoding_format!r}", param="encoding_format",
                           code="invalid_value")
        dimensions = payload.get("dimensions")
        width = int(embedder.dimensions)
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int)
            or not 1 <= dimensions <= width
        ):
            raise ApiError(400, f"'dimensions' must be an integer in 1..{width}, got "
                           f"{dimensions!r}", param="dimensions", code="invalid_value")
        truncate = payload.get("truncate", False)
        if not isinstance(truncate, bool):
            raise ApiError(400, f"'truncate' must be true or false, got {truncate!r}",
                           param="truncate", code="invalid_type")
        items = _normalize_input(payload.get("input", _MISSING))
        if len(items) > settings.max_items:
            raise ApiError(400, f"'input' has {len(items)} items; this server accepts at most "
                           f"{settings.max_items} per request", param="input",
                           code="too_many_inputs")
        texts = [i for i, item in enumerate(items) if isinstance(item, str)]
        char_limit = token_limit * MAX_CHARS_PER_TOKEN
        for index in texts:
            try:
                check_unicode(items[index], f"input[{index}]")
            except ValueError as exc:
                raise ApiError(400, str(exc), param="input", code="invalid_value") from None
            # Refused before tokenizing: a text of megabytes would hold the tokenizer for
            # seconds to learn what its length already says.
            if not truncate and len(items[index]) > char_limit:
                raise ApiError(
                    400, f"input[{index}] has {len(items[index])} characters; this server "
                    f"accepts at most {char_limit} per input ({MAX_CHARS_PER_TOKEN} per token of "
                    f"its {token_limit}-token limit). Shorten it, or send \"truncate\": true to "
                    "have it cut to the limit", param="input", code="input_too_long")
        text_ids: list[list[int]] = []
        cut: list[bool] = []
        if texts and tokenizer is not None:
            lower = bool(getattr(embedder.model, "do_lower_case", False))
            batch = [items[i].lower() if lower else items[i] for i in texts]
            large = sum(map(len, batch)) > INLINE_TOKENIZE_CHARS

            def tokenize() -> tuple[list[list[int]], list[bool]]:
                if truncate:  # cut while tokenizing: a long text is not tokenized whole
                    return tokenizer.encode_cut(batch, token_limit, release_gil=large)
                return tokenizer.encode(batch, release_gil=large), [False] * len(batch)

            if not large:
                # ~20 us for a sentence: cheaper than the thread hand-off it would need.
                text_ids, cut = tokenize()
            else:
                # On a worker thread, in the tokenizer's batch call, which releases the GIL: a
                # large request must not stall the event loop (or /health).
                text_ids, cut = await anyio.to_thread.run_sync(tokenize)
        ids_of_text = dict(zip(texts, text_ids))
        cut_texts = {index for index, was_cut in zip(texts, cut) if was_cut}
        counts: list[int] = []
        for index, item in enumerate(items):
            ids = item if not isinstance(item, str) else ids_of_text.get(index)
            count = len(ids) if ids is not None else 0
            if index in cut_texts:  # cut while tokenizing: the embedder gets the ids
                items[index] = ids
            elif count > token_limit:
                if not truncate:
                    raise ApiError(
                        400, f"input[{index}] has {count} tokens; this server accepts at most "
                        f"{token_limit} per input (the model's maximum sequence length, special "
                        "tokens included). Shorten it, or send \"truncate\": true to have it cut "
                        "to the limit", param="input", code="input_too_long")
                # Cut here, as token ids, so the embedder never sees an over-long input.
                items[index] = tokenizer.truncate(list(ids), token_limit)
                count = token_limit
            elif isinstance(item, str) and ids is not None and submit_token_ids:
                items[index] = ids
            counts.append(count)
        return _EmbeddingRequest(items, counts, dimensions, encoding_format)

    async def embeddings(scope: dict[str, Any], receive: Any) -> bytes:
        """The body of a successful ``POST /v1/embeddings``; :class:`ApiError` otherwise."""
        declared = authorization = None
        for name, value in scope["headers"]:  # lower-case names (ASGI); looked at once
            if name == b"content-length":
                declared = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        authorize(authorization)
        streaming = running_streaming()
        parsed = await parse_embedding_request(await read_json(declared, receive))
        try:
            vectors = await streaming.embed_many(parsed.items)
        except BufferFullError as exc:
            raise ApiError(503, f"the server is overloaded: {exc}; retry after "
                           f"{settings.retry_after_s} s", type="server_error",
                           code="server_overloaded",
                           headers={"Retry-After": str(settings.retry_after_s)}) from None
        except TimeoutError as exc:
            raise ApiError(504, str(exc), type="server_error", code="timeout") from None
        except StreamingClosedError:
            raise ApiError(503, "the server is shutting down", type="server_error",
                           code="shutting_down",
                           headers={"Retry-After": str(settings.retry_after_s)}) from None
        except (TypeError, ValueError) as exc:  # input validation of the streaming layer
            raise ApiError(400, str(exc), param="input", code="invalid_value") from None
        if parsed.dimensions is not None and parsed.dimensions < vectors.shape[1]:
            vectors = truncate_dimensions(vectors, parsed.dimensions, renormalize=normalized)
        total_tokens = int(sum(parsed.token_counts))
        metrics.tokens.inc(total_tokens)
        metrics.inputs.inc(len(parsed.items))
        return _embeddings_body(vectors, parsed.encoding_format, served_json, total_tokens)

    embeddings_counter = _RequestCounter(metrics, "/v1/embeddings")

    async def embeddings_endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # A bare ASGI endpoint: on the success path, which every request of a loaded server
        # takes, no Request or Response object is built (see _App).
        started = time.perf_counter()
        try:
            body = await embeddings(scope, receive)
        except Exception as exc:
            response = _error_response(exc, "/v1/embeddings")
            embeddings_counter.record(response.status_code, started)
            await response(scope, receive, send)
            return
        embeddings_counter.record(200, started)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]})
        await send({"type": "http.response.body", "body": body})

    async def models(request: Request) -> Response:
        authorize(request.headers.get("authorization"))
        return JSONResponse({"object": "list", "data": [
            {"id": served_name, "object": "model", "created": created, "owned_by": "sutra"}
        ]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if state["ready"]:
            return JSONResponse({"status": "ready", "model": served_name})
        return JSONResponse({"status": "not ready"}, status_code=503,
                            headers={"Retry-After": str(settings.retry_after_s)})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    async def stream(websocket: WebSocket) -> None:
        started = time.perf_counter()
        status = "101"
        try:
            authorize(websocket.headers.get("authorization"))
            streaming = running_streaming()
        except ApiError as exc:
            # Closing before accepting makes the server refuse the handshake (HTTP 403).
            status = str(exc.status)
            await websocket.close(code=1008, reason=exc.message[:120])
            metrics.requests.labels("/v1/stream", status).inc()
            return
        await websocket.accept()
        handler = WebSocketHandler(streaming, max_items=settings.max_items, normalized=normalized)
        try:
            await handler.serve_asgi_websocket(websocket)
        finally:
            metrics.requests.labels("/v1/stream", status).inc()
            metrics.request_duration.labels("/v1/stream").observe(time.perf_counter() - started)

    routes = [
        Route("/v1/embeddings", _AsgiEndpoint(embeddings_endpoint), methods=["POST"]),
        Route("/v1/models", _instrumented(models, "/v1/models", metrics), methods=["GET"]),
        WebSocketRoute("/v1/stream", stream),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = _App(routes=routes, lifespan=lifespan,
               exception_handlers={HTTPException: _http_exception})
    app.embeddings_endpoint = embeddings_endpoint
    app.state.metrics = metrics
    return app


class _App(Starlette):
    """Starlette, with ``POST /v1/embeddings`` dispatched straight to its endpoint.

    That endpoint (a bare ASGI function) turns every exception into an OpenAI-shaped response
    itself, so the middleware stack and the router have nothing to add on it; skipping them, and
    Starlette's Request and Response objects on the success path, saves event loop time on every
    request, and on a small machine the event loop shares the cores with the compute. Every
    other request, WebSocket and lifespan event takes the normal path.
    """

    embeddings_endpoint: Any = None

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] == "/v1/embeddings" and self.embeddings_endpoint is not None):
            scope["app"] = self
            await self.embeddings_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _AsgiEndpoint:
    """Makes Starlette's router call a function as a bare ASGI app (it wraps plain functions as
    request/response endpoints)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


class _RequestCounter:
    """Counts an endpoint's requests by final status and observes their durations."""

    def __init__(self, metrics: ServerMetrics, name: str) -> None:
        self._metrics = metrics
        self._name = name
        self._duration = metrics.request_duration.labels(name)
        self._by_status: dict[int, Any] = {}  # labelled children, looked up once per status

    def record(self, status: int, started: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self._metrics.requests.labels(
                self._name, str(status))
        counter.inc()
        self._duration.observe(time.perf_counter() - started)


def _error_response(exc: Exception, name: str) -> Response:
    """The OpenAI-shaped response for an endpoint's exception (500 for an unexpected one)."""
    if isinstance(exc, ApiError):
        return exc.response()
    logger.exception("%s failed", name, exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error",
                    code="internal_error").response()


def _instrumented(endpoint, name: str, metrics: ServerMetrics):
    """Wrap an endpoint: ApiError and unexpected errors become OpenAI-shaped responses, and every
    request is counted once with its final status."""
    counter = _RequestCounter(metrics, name)

    async def wrapper(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = _error_response(exc, name)
        counter.record(response.status_code, started)
        return response

    return wrapper


async def _http_exception(request: Request, exc: HTTPException) -> Response:
    """Routing errors (unknown path 404, wrong method 405) in OpenAI's error shape."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                    code=code, headers=getattr(exc, "headers", None)).response()


_MISSING = object()


def _normalize_input(value: Any) -> list[str | list[int]]:
    """OpenAI's four input forms as a list of texts or token-id lists (400 for anything else)."""
    if value is _MISSING:
        raise ApiError(400, "'input' is required", param="input", code="missing_required_parameter")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'input' must be a string, a non-empty list of strings, a list of "
                       f"token ids or a list of token-id lists; got {_json_type(value)}"
                       + (" (empty)" if value == [] else ""), param="input", code="invalid_type")
    if all(isinstance(v, str) for v in value):
        return list(value)
    if all(_is_token_id(v) for v in value):
        return [list(value)]
    if all(isinstance(v, list) for v in value):
        for index, ids in enumerate(value):
            if not ids or not all(_is_token_id(t) for t in ids):
                raise ApiError(400, f"input[{index}] must be a non-empty list of non-negative "
                               "integer token ids", param="input", code="invalid_type")
        return [list(ids) for ids in value]
    bad = next(i for i, v in enumerate(value) if not isinstance(v, (str, list)) or
               isinstance(v, list) != isinstance(value[0], list))
    raise ApiError(400, f"input[{bad}] is {_json_type(value[bad])}; 'input' must be all strings, "
                   "all token ids, or all token-id lists", param="input", code="invalid_type")


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _embeddings_body(vectors: np.ndarray, encoding_format: str, model_json: str,
                     total_tokens: int) -> bytes:
    """The JSON of an embeddings response, as JSONResponse would write it (compact, keys in
    OpenAI's order), assembled from pieces: the event loop writes one per request, and the
    generic encoder walking a dict per embedding was a measurable part of its time."""
    if encoding_format == "base64":
        # OpenAI's base64 format: the raw little-endian float32 bytes of each vector.
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        encoded = ['"' + base64.b64encode(row.tobytes()).decode("ascii") + '"' for row in rows]
    else:
        # float32 -> Python float: the shortest repr of the float64 value, as json.dumps writes.
        encoded = [json.dumps(row, allow_nan=False, separators=(",", ":"))
                   for row in vectors.tolist()]
    data = ",".join(f'{{"object":"embedding","index":{index},"embedding":{vector}}}'
                    for index, vector in enumerate(encoded))
    return (f'{{"object":"list","data":[{data}],"model":{model_json},"usage":'
            f'{{"prompt_tokens":{total_tokens},"total_tokens":{total_tokens}}}}}').encode()


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"the request body has more than {limit} bytes ({size} read or declared); "
                    f"this server accepts at most {limit}", code="request_too_large")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def accepted_model_names(embedder: Any, requested: str,
                         extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Names a request may use for the served model: ``extra`` first, then the model's full name
    (``sentence-transformers/all-MiniLM-L6-v2``), its last path part, the name given on the
    command line and the registry aliases."""
    model = embedder.model
    names: list[str] = list(extra)
    names.append(model.name)
    names.append(model.name.rsplit("/", 1)[-1])
    names.append(requested)
    spec = getattr(model, "spec", None)
    if spec is not None:
        names.extend(spec.aliases)
    return tuple(dict.fromkeys(n for n in names if n))
