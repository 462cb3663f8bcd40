"""WebSocketHandler: the JSON message protocol of ``/v1/stream`` over a StreamingEmbedder.

Protocol (one JSON object per text message; ``id`` is a string or a number chosen by the client
and echoed in every answer, so answers may arrive in any order):

Client to server:

- ``{"type": "embed", "id": ID, "input": "text" | ["text", ...], "dimensions": D?}``
  answered by ``{"type": "embedding", "id": ID, "embedding": [float, ...]}`` for a string, or
  ``{"type": "embedding", "id": ID, "embeddings": [[float, ...], ...]}`` for a list.
- ``{"type": "embed_chunks", "id": ID, "input": "long text", "unit": "chars"|"tokens"?,
  "chunk_size": N?, "chunk_overlap": M?, "aggregate": bool?, "late_chunking": bool?}``
  (``late_chunking``: every chunk's vector pools its tokens from one pass over the whole
  text, see :meth:`sutra.Embedder.encode_chunks`)
  answered by one ``{"type": "chunk", "id": ID, "index": i, "start": s, "end": e,
  "embedding": [...]}`` per chunk in order (``start``/``end``: character offsets), then
  ``{"type": "done", "id": ID, "chunks": n}``, which carries ``"embedding"`` (the re-normalized
  mean of the chunks, weighted by their length) when ``aggregate`` is true and there was at
  least one chunk.
- ``{"type": "stats", "id": ID?}`` answered by ``{"type": "stats", "id": ID, "stats": {...}}``
  (the fields of :class:`~sutra.streaming.StreamingStats`).

Errors: ``{"type": "error", "id": ID or null, "error": {"code": CODE, "message": "..."}}`` with
CODE one of ``invalid_json``, ``invalid_message`` (wrong type, missing or ill-typed field),
``buffer_full``, ``timeout``, ``closed`` and ``internal_error``. An error answers one message;
the connection stays open. Embeddings are float32 values written as JSON numbers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import numpy as np

from .. import _core
from .aggregator import StreamingAggregator
from .config import CHUNK_UNITS, BufferFullError, StreamingClosedError
from .embedder import StreamingEmbedder

logger = logging.getLogger("sutra.streaming")

MESSAGE_TYPES = ("embed", "embed_chunks", "stats")


class ProtocolError(ValueError):
    """A message that does not follow the protocol; answered with an ``invalid_message`` error."""


class _PeerGone(Exception):
    """Sending failed: the client closed the connection, and nothing more can reach it."""


class WebSocketHandler:
    """Serves the protocol above for one connection at a time per call.

    Messages of one connection are handled concurrently (each embed request joins the shared
    batches), at most ``max_in_flight`` at once; beyond that the handler stops reading, which
    pushes back on the client through the socket.

    Args:
        streaming: a running :class:`StreamingEmbedder`.
        max_in_flight: messages of one connection handled at the same time.
        max_items: most texts in one ``embed`` message.
        normalized: whether embeddings are unit length (truncating ``dimensions`` re-normalizes
            them then); default: what the embedder's model says, else True.
    """

    def __init__(self, streaming: StreamingEmbedder, *, max_in_flight: int = 256,
                 max_items: int = 2048, normalized: bool | None = None) -> None:
        self.streaming = streaming
        self.max_in_flight = max_in_flight
        self.max_items = max_items
        self._normalized = normalized

    async def serve(self, receive_text: Callable[[], Awaitable[str | None]],
                    send_text: Callable[[str], Awaitable[None]]) -> None:
        """Handle one connection until ``receive_text`` returns ``None`` (the peer closed).

        Requests still in flight when the peer closes are cancelled (their answers have nowhere
        to go). A failing ``send_text`` (peer gone) ends the connection the same way.
        """
        send_lock = anyio.Lock()
        in_flight = anyio.Semaphore(self.max_in_flight)

        async def send(message: dict[str, Any]) -> None:
            text = json.dumps(message)
            # One message at a time on the socket: concurrent sends may interleave frames.
            async with send_lock:
                try:
                    await send_text(text)
                except Exception as exc:  # the transport's own disconnect errors, whatever they are
                    raise _PeerGone() from exc

        async def handle(raw: str) -> None:
            try:
                await self._handle_message(raw, send)
            finally:
                in_flight.release()

        async with anyio.create_task_group() as tasks:
            while True:
                raw = await receive_text()
                if raw is None:
                    tasks.cancel_scope.cancel()
                    break
                await in_flight.acquire()
                tasks.start_soon(_run_guarded, handle, raw, tasks.cancel_scope)

    async def serve_asgi_websocket(self, websocket: Any) -> None:
        """Adapter for an accepted Starlette ``WebSocket`` (reads raw ASGI messages, so binary
        frames holding UTF-8 JSON are accepted too)."""

        async def receive_text() -> str | None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            if message.get("text") is not None:
                return message["text"]
            data = message.get("bytes") or b""
            return data.decode("utf-8", errors="replace")

        await self.serve(receive_text, websocket.send_text)

    # -- messages ----------------------------------------------------------------------------------

    async def _handle_message(self, raw: str, send: Callable[[dict], Awaitable[None]]) -> None:
        message_id: Any = None
        try:
            try:
                message = json.loads(raw)
            except ValueError as exc:
                await send(_error(None, "invalid_json", f"message is not valid JSON: {exc}"))
                return
            except RecursionError:  # json recurses once per nesting level
                await send(_error(None, "invalid_json", "message is not valid JSON: nested too "
                                  "deeply"))
                return
            if not isinstance(message, dict):
                raise ProtocolError(
                    f"a message must be a JSON object, got {type(message).__name__}"
                )
            message_id = message.get("id")
            if message_id is not None and (
                isinstance(message_id, bool) or not isinstance(message_id, (str, int, float))
            ):
                message_id = None
                raise ProtocolError("id must be a string or a number")
            kind = message.get("type")
            if kind not in MESSAGE_TYPES:
                raise ProtocolError(
                    f"type must be one of {', '.join(MESSAGE_TYPES)}; got {kind!r}"
                )
            if kind == "stats":
                stats = await self.streaming.get_stats()
                await send({"type": "stats", "id": message_id, "stats": stats.as_dict()})
                return
            if message_id is None:
                raise ProtocolError(f"a {kind!r} message needs an id (a string or a number)")
            if kind == "embed":
                await self._embed(message, message_id, send)
            else:
                await self._embed_chunks(message, message_id, send)
        except ProtocolError as exc:
            await send(_error(message_id, "invalid_message", str(exc)))
        except (TypeError, ValueError) as exc:  # the streaming layer's input validation
            await send(_error(message_id, "invalid_message", str(exc)))
        except BufferFullError as exc:
            await send(_error(message_id, "buffer_full", str(exc)))
        except TimeoutError as exc:
            await send(_error(message_id, "timeout", str(exc)))
        except StreamingClosedError as exc:
            await send(_error(message_id, "closed", str(exc)))
        except _PeerGone:
            raise  # not a failure of the message: the connection ends (see _run_guarded)
        except Exception as exc:
            logger.exception("websocket message %r failed", message_id)
            await send(_error(message_id, "internal_error", f"{type(exc).__name__}: {exc}"))

    async def _embed(self, message: dict, message_id: Any, send) -> None:
        payload = message.get("input")
        single = isinstance(payload, str)
        if single:
            texts = [payload]
        elif isinstance(payload, list) and payload and all(isinstance(t, str) for t in payload):
            texts = payload
        else:
            raise ProtocolError("input must be a string or a non-empty list of strings")
        if len(texts) > self.max_items:
            raise ProtocolError(f"input has {len(texts)} texts; the limit is {self.max_items}")
        dimensions = _optional_int(message, "dimensions")
        vectors = await self.streaming.embed_many(texts)
        vectors = self._truncate(vectors, dimensions)
        if single:
            await send({"type": "embedding", "id": message_id, "embedding": vectors[0].tolist()})
        else:
            await send({"type": "embedding", "id": message_id, "embeddings": vectors.tolist()})

    async def _embed_chunks(self, message: dict, message_id: Any, send) -> None:
        text = message.get("input")
        if not isinstance(text, str):
            raise ProtocolError("input must be a string")
        unit = message.get("unit", "chars")
        if unit not in CHUNK_UNITS:
            raise ProtocolError(f"unit must be one of {', '.join(CHUNK_UNITS)}; got {unit!r}")
        aggregate = message.get("aggregate", False)
        if not isinstance(aggregate, bool):
            raise ProtocolError("aggregate must be true or false")
        late = message.get("late_chunking", False)
        if not isinstance(late, bool):
            raise ProtocolError("late_chunking must be true or false")
        aggregator = StreamingAggregator() if aggregate else None
        count = 0
        async for chunk in self.streaming.embed_chunks_stream(
            text, unit=unit, chunk_size=_optional_int(message, "chunk_size"),
            chunk_overlap=_optional_int(message, "chunk_overlap", minimum=0), late_chunking=late,
        ):
            if aggregator is not None:
                aggregator.add(chunk.embedding, weight=max(chunk.end - chunk.start, 1))
            await send({"type": "chunk", "id": message_id, "index": chunk.index,
                        "start": chunk.start, "end": chunk.end,
                        "embedding": chunk.embedding.tolist()})
            count += 1
        done: dict[str, Any] = {"type": "done", "id": message_id, "chunks": count}
        if aggregator is not None and count:
            done["embedding"] = aggregator.aggregate().tolist()
        await send(done)

    def _truncate(self, vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
        if dimensions is None:
            return vectors
        width = vectors.shape[1]
        if dimensions > width:
            raise ProtocolError(f"dimensions must be in 1..{width}, got {dimensions}")
        normalized = self._normalized
        if normalized is None:
            model = getattr(self.streaming.embedder, "model", None)
            normalized = bool(getattr(model, "normalize", True))
        return truncate_dimensions(vectors, dimensions, renormalize=normalized)


def truncate_dimensions(vectors: np.ndarray, dimensions: int, *, renormalize: bool) -> np.ndarray:
    """Keep the first ``dimensions`` columns of float32 ``[n, dim]`` (Matryoshka), re-normalized
    to unit length when ``renormalize`` (as :meth:`~sutra.Embedder.encode` does with
    ``truncate_dim`` for a normalizing model): the native core's one
    :func:`~sutra._core.truncate_and_normalize`. Returns float32 ``[n, dimensions]``."""
    return _core.truncate_and_normalize(np.ascontiguousarray(vectors, dtype=np.float32),
                                        dimensions, renormalize)


def _optional_int(message: dict, field: str, *, minimum: int = 1) -> int | None:
    value = message.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProtocolError(f"{field} must be an int >= {minimum}, got {value!r}")
    return value


def _error(message_id: Any, code: str, text: str) -> dict[str, Any]:
    return {"type": "error", "id": message_id, "error": {"code": code, "message": text}}


async def _run_guarded(handle, raw: str, connection_scope) -> None:
    """Run one message; a failure to send (the peer is gone) ends the whole connection."""
    try:
        await handle(raw)
    except _PeerGone:
        logger.info("a websocket client closed the connection before its answers were sent; "
                    "the rest of them are dropped")
        connection_scope.cancel()
    except Exception:
        logger.debug("websocket send failed; closing the connection", exc_info=True)
        connection_scope.cancel()
