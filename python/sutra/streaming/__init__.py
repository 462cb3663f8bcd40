"""Streaming embeddings on anyio (asyncio or trio): one text at a time in, batches underneath.

- :class:`StreamingEmbedder` with :class:`StreamingConfig`: auto-batching with a latency deadline,
  a bounded buffer with backpressure, cancellation and timeouts per request.
- :meth:`StreamingEmbedder.embed_chunks_stream` and :class:`StreamingAggregator`: long texts as
  overlapping chunks, aggregated into one embedding.
- :class:`WebSocketHandler`: the JSON message protocol the server speaks on ``/v1/stream``.
"""

from __future__ import annotations

from .aggregator import StreamingAggregator
from .chunking import TextSpan, chunk_text, is_safe_boundary
from .config import BufferFullError, StreamingClosedError, StreamingConfig
from .embedder import BatchReport, ChunkEmbedding, StreamingEmbedder
from .stats import StreamingStats
from .websocket import WebSocketHandler, truncate_dimensions

__all__ = [
    "BatchReport",
    "BufferFullError",
    "ChunkEmbedding",
    "StreamingAggregator",
    "StreamingClosedError",
    "StreamingConfig",
    "StreamingEmbedder",
    "StreamingStats",
    "TextSpan",
    "WebSocketHandler",
    "chunk_text",
    "is_safe_boundary",
    "truncate_dimensions",
]
