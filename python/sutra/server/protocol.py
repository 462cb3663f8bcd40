"""uvicorn's HTTP protocols with the limits a server open to any client needs.

uvicorn (0.54) holds a connection whose request headers never finish for as long as the client
likes, bounds header size only under h11, and answers a malformed request with a plain-text 400.
``GuardedHttpToolsProtocol`` (the httptools parser, uvicorn's default on Linux) adds:

- a header read timeout: a connection that has not finished a request's headers within
  ``header_timeout_s`` of opening (or of its request's first byte) gets 408 and is closed;
- a header size bound: more than ``max_header_bytes`` of request line and headers gets 431;
- malformed HTTP answered 400 in OpenAI's error shape, like every other error of the server.

``GuardedH11Protocol`` (``--http h11``) adds the same (h11 itself bounds only headers that arrive
in pieces).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def error_bytes(status: int, reason: str, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 response with an OpenAI-shaped error body; the connection closes."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "param": None, "code": code}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode("ascii")
    return head + body


class _HeaderGuard:
    """The timer and the refusals both protocols share (``self.loop`` and ``self.transport``
    are uvicorn's)."""

    header_timeout_s: float = 10.0  # set by guarded_protocol
    max_header_bytes: int = 64 * 1024
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _header_timer: asyncio.TimerHandle | None = None
    _refused = False

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        self._refuse(408, "Request Timeout",
                     f"the request headers did not arrive within {self.header_timeout_s:g} s",
                     "request_timeout")

    def _refuse_headers_too_large(self) -> None:
        self._refuse(431, "Request Header Fields Too Large",
                     f"the request line and headers exceed {self.max_header_bytes} bytes",
                     "headers_too_large")

    def _refuse(self, status: int, reason: str, message: str, code: str) -> None:
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, reason, message, code))
            self.transport.close()


class GuardedHttpToolsProtocol(_HeaderGuard, HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with a header read timeout, a header size bound and
    OpenAI-shaped parse errors (see the module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refused:  # answered already (408 or 431); the parser stopped on our error
            return
        self._refuse(400, "Bad Request", "the request is not valid HTTP/1.1", "invalid_http")

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._refuse_headers_too_large()
            raise httptools.HttpParserError("headers too large")  # stops the parser

    def _header_timeout(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            # Not inside a request the app is answering: a connection that never sent its
            # headers (or the next request's) in time.
            super()._header_timeout()


class GuardedH11Protocol(_HeaderGuard, H11Protocol):
    """:class:`H11Protocol` with the header read timeout, the size bound and OpenAI-shaped parse
    errors. The timer runs from the connection's start and from the end of each response until
    the next request's headers are parsed (a new request cycle)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timed_cycle: Any = None
        self._head = b""  # the start of the request being received, up to the bound
        self._in_headers = True
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            # h11 bounds only headers that arrive in pieces: measure them here too.
            self._head += data[: self.max_header_bytes + 4 - len(self._head)]
            end = self._head.find(b"\r\n\r\n")
            if end > self.max_header_bytes or (end < 0 and len(self._head) > self.max_header_bytes):
                self._refuse_headers_too_large()
                return
            if end >= 0:
                self._in_headers = False
        super().data_received(data)
        if (self.cycle is not None and self.cycle is not self._timed_cycle) or (
                self.transport.get_protocol() is not self):
            self._disarm()  # a new request's headers are in, or a WebSocket took the connection

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._timed_cycle = self.cycle
            self._head, self._in_headers = b"", True
            self._arm()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad Request", "the request is not valid HTTP/1.1", "invalid_http")


def guarded_protocol(header_timeout_s: float, max_header_bytes: int, parser: str = "httptools"
                     ) -> Any:
    """A subclass of :class:`GuardedHttpToolsProtocol` (``parser="httptools"``) or
    :class:`GuardedH11Protocol` (``"h11"``) with these limits (uvicorn takes a class)."""
    base = GuardedHttpToolsProtocol if parser == "httptools" else GuardedH11Protocol
    return type("SutraHttpProtocol", (base,),
                {"header_timeout_s": float(header_timeout_s),
                 "max_header_bytes": int(max_header_bytes)})
