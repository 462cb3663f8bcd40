"""``sutra serve``: an OpenAI-compatible embeddings server with WebSocket streaming and metrics.

Needs the server dependencies (Starlette, uvicorn, prometheus-client, websockets), installed with
sutra. See :mod:`sutra.server.app` for the endpoints, and the README section "Serving".
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from typing import Any

from ..streaming import StreamingConfig
from .app import ApiError, ServerSettings, accepted_model_names, create_app
from .metrics import ServerMetrics

__all__ = ["ApiError", "ServerMetrics", "ServerSettings", "bind_socket", "create_app", "run",
           "serve_from_args"]

API_KEY_ENV = "SUTRA_API_KEY"
# A client has this long to finish a request's headers, and this much room for them.
HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 64 * 1024

logger = logging.getLogger("sutra.server")


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info",
        access_log: bool = False, graceful_timeout_s: float | None = None,
        loop: str = "auto", http: str = "auto", sock: socket.socket | None = None,
        header_timeout_s: float = HEADER_TIMEOUT_S, max_header_bytes: int = MAX_HEADER_BYTES
        ) -> int:
    """Serve ``app`` with uvicorn until SIGTERM or SIGINT; return the exit status.

    The listening socket is bound here, so ``port=0`` picks a free port; the address is printed
    to standard error as ``sutra serve: listening on http://HOST:PORT``. On SIGTERM the server
    stops accepting connections, finishes the requests in flight (at most
    ``graceful_timeout_s``; ``None`` waits for all), closes WebSockets, and returns 0.

    ``sock``: a socket already listening (:func:`bind_socket`), used instead of binding
    ``host:port``. ``loop`` (``"auto"``, ``"asyncio"``, ``"uvloop"``) and ``http`` (``"auto"``, ``"h11"``,
    ``"httptools"``): ``"auto"`` takes uvloop and httptools when they are installed (sutra
    depends on both on Linux and macOS): they cut the event loop's CPU time per request, which
    on a small machine competes with the compute for the same cores. With httptools, a request
    whose headers are not complete within ``header_timeout_s`` gets 408, headers over
    ``max_header_bytes`` get 431 and malformed HTTP gets an OpenAI-shaped 400
    (:mod:`sutra.server.protocol`), with either parser.
    """
    import uvicorn

    for name, value, module in (("loop", loop, "uvloop"), ("http", http, "httptools")):
        if value == module and not _importable(module):
            raise ValueError(f"{name}={value!r} but {module} is not installed "
                             f"(pip install {module}), or use {name}='auto'")
    if sock is None:
        sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    family = sock.family
    from .protocol import guarded_protocol

    parser = "httptools" if http == "httptools" or (
        http == "auto" and _importable("httptools")) else "h11"
    protocol = guarded_protocol(header_timeout_s, max_header_bytes, parser)
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=graceful_timeout_s, loop=loop,
                            http=protocol, h11_max_incomplete_event_size=max_header_bytes)
    server = uvicorn.Server(config)
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"sutra serve: listening on http://{shown_host}:{bound_port}", file=sys.stderr,
          flush=True)
    # uvicorn re-raises the signal it caught once it has shut down; with Python's default
    # SIGTERM disposition that would kill the process after a clean shutdown. A no-op handler
    # turns it into a normal return (exit 0). SIGINT keeps its KeyboardInterrupt (exit 130).
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    return 0 if server.started else 1


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that declare it, and
    # without it Nagle's algorithm meets delayed ACKs and every response waits ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listen now: clients that connect before uvicorn has started wait in the backlog instead of
    # being refused.
    sock.listen(2048)
    return sock


# `sutra serve`'s batching defaults per backend (the command line overrides each).
_CPU_STREAMING = {"batch_size": 16, "max_latency_ms": 5.0, "buffer_size": 1024}
_GPU_STREAMING = {"batch_size": 256, "max_latency_ms": 2.0, "buffer_size": 8192}


def batching_settings(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """``batch_size``, ``max_latency_ms`` and ``buffer_size`` for a server on ``backend``: the
    command line's where given, else the backend's defaults. The GPU engine runs a pass of 256
    short texts in well under a millisecond, so it gets larger batches and a larger queue than
    the CPU (bench/results/streaming_gpu_*.md, H200: with these, the server's event loop rather
    than the engine set the limit)."""
    defaults = _GPU_STREAMING if backend == "cuda" else _CPU_STREAMING
    return {name: default if getattr(args, name, None) is None else getattr(args, name)
            for name, default in defaults.items()}


def serve_from_args(args: argparse.Namespace) -> int:
    """``sutra serve`` with the parsed command line (see ``sutra serve --help``)."""
    from ..embedder import Embedder

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # Bound before the model loads: a port in use fails in a second, in one line.
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    overrides: dict[str, Any] = {"backend": args.backend, "long_text": args.long_text,
                                 "dtype": args.dtype, "device": args.device}
    if args.dimensions is not None:
        overrides["dimensions"] = args.dimensions
    if getattr(args, "devices", None) is not None:  # several devices through the scheduler
        overrides["devices"] = args.devices
    # On CPU, `--threads` compute threads (default: every core) each compute batches of their own
    # on a single-threaded ONNX Runtime session: a server's batches are small, and splitting one
    # over threads costs more in synchronization than it gains (measured on 2 cores with 64
    # closed-loop clients: 637 requests/s this way, 552 with one batch over both cores). The GPU
    # engine has no such threads (backend="auto" leaves the setting to the cpu backend).
    if args.backend != "cuda":
        overrides["num_threads"] = 1
    # Loaded before the port opens: a wrong model name fails here with a clear message.
    embedder = Embedder(args.model, **overrides)
    # As many batches side by side as the backend can run (one per core on CPU).
    workers = args.threads or embedder.backend.parallel_passes
    chosen = batching_settings(args, getattr(embedder.backend, "worker_backend",
                                             embedder.backend.name))
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    settings = ServerSettings(
        model_names=accepted_model_names(embedder, args.model, args.served_model_name or ()),
        api_key=api_key,
        max_body_bytes=args.max_body_bytes,
        max_items=args.max_items,
        max_tokens_per_item=args.max_tokens_per_item,
        streaming=StreamingConfig(
            buffer_size=chosen["buffer_size"], batch_size=chosen["batch_size"],
            max_latency_ms=chosen["max_latency_ms"], timeout_secs=args.timeout,
            overflow="reject", workers=workers,
        ),
    )
    logger.info("serving %s as %s%s", embedder, settings.model_names[0],
                " (API key required)" if api_key else "")
    app = create_app(embedder, settings)
    return run(app, args.host, args.port, log_level=args.log_level,
               access_log=args.access_log, graceful_timeout_s=args.graceful_timeout,
               loop=getattr(args, "loop", "auto"), http=getattr(args, "http", "auto"), sock=sock,
               header_timeout_s=getattr(args, "header_timeout", HEADER_TIMEOUT_S))
