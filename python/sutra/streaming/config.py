"""StreamingConfig and the streaming layer's errors."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .._errors import SutraError

OVERFLOW_POLICIES = ("wait", "reject")
CHUNK_UNITS = ("chars", "tokens")


class BufferFullError(SutraError):
    """The streaming buffer holds ``buffer_size`` requests and the policy is ``overflow="reject"``.

    The request was not queued; retrying later is safe (the server answers 503 with Retry-After).
    """


class StreamingClosedError(SutraError):
    """A request was submitted to a :class:`StreamingEmbedder` that is not running (not entered
    with ``async with``, or already closing)."""


@dataclass(frozen=True)
class StreamingConfig:
    """How a :class:`~sutra.streaming.StreamingEmbedder` queues, batches and chunks.

    Attributes:
        buffer_size: at most this many requests are admitted and not yet answered (queued or in
            a computing batch). A group larger than the buffer (one call of ``embed_many``) is
            admitted only when the buffer is empty, so it can always run eventually.
        chunk_size: chunk length for :meth:`~StreamingEmbedder.embed_chunks_stream`, in the
            chunking unit (characters by default). With ``unit="tokens"`` it is capped at what
            the model accepts (maximum sequence length minus its special tokens).
        chunk_overlap: units shared by consecutive chunks, ``0 <= chunk_overlap < chunk_size``.
        batch_size: most requests per forward pass.
        timeout_secs: a request that has no answer after this many seconds (admission wait,
            queue and compute together) raises ``TimeoutError``; ``None`` waits forever.
        auto_batch: group concurrent requests into batches. ``False`` runs every request alone.
        max_latency_ms: a batch closes when it has ``batch_size`` requests or when its oldest
            request has waited this long, whichever comes first (measured from that request's
            submission, so a request never waits longer than this for its batch to close while
            a compute worker is free).
        overflow: ``"wait"``: a submitter waits for room in the buffer; ``"reject"``: it gets
            :class:`BufferFullError` at once. Both count a buffer overflow.
        workers: batches computed at the same time, each in its own worker thread. 1 suits an
            embedder that spreads one batch over every core; with a single-threaded embedder
            (``num_threads=1``), one worker per core computes batches side by side, which on
            small CPUs avoids the synchronization cost of splitting a small batch over threads.
            While every worker is busy, up to ``workers`` full batches wait for them, so a worker
            goes on to the next batch without waiting for the event loop.
        split_cost_tokens: a closed batch is computed in forward passes of similar lengths,
            so that short requests are not padded to the longest one; this is the fixed cost of
            one more forward pass, in tokens of compute, that the split weighs against the
            padding it saves (see :func:`~sutra.streaming.embedder.split_by_length`; for
            all-MiniLM-L6-v2 on ONNX Runtime CPU, throughput is flat from 8 to 16 and drops
            beyond 32). ``None``: one pass per batch.
            Needs the lengths: token-id inputs, or texts with an embedder that has a
            ``tokenizer``. Not used with an embedder whose backend packs sequences without
            padding (sutra's CPU backend on a graph it built): it gets the whole batch and plans
            its own passes.
    """

    buffer_size: int = 100
    chunk_size: int = 512
    chunk_overlap: int = 64
    batch_size: int = 8
    timeout_secs: float | None = 30.0
    auto_batch: bool = True
    max_latency_ms: float = 100.0
    overflow: str = "wait"
    workers: int = 1
    split_cost_tokens: float | None = 16.0

    def __post_init__(self) -> None:
        for name in ("buffer_size", "chunk_size", "batch_size", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        overlap = self.chunk_overlap
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not (
            0 <= overlap < self.chunk_size
        ):
            raise ValueError(
                f"chunk_overlap must be an int in 0..chunk_size-1 ({self.chunk_size - 1}), "
                f"got {overlap!r}"
            )
        if self.timeout_secs is not None and not (
            isinstance(self.timeout_secs, (int, float)) and self.timeout_secs > 0
        ):
            raise ValueError(f"timeout_secs must be a positive number or None, got "
                             f"{self.timeout_secs!r}")
        if not isinstance(self.max_latency_ms, (int, float)) or self.max_latency_ms < 0:
            raise ValueError(f"max_latency_ms must be a number >= 0, got {self.max_latency_ms!r}")
        cost = self.split_cost_tokens
        if cost is not None and (
            isinstance(cost, bool) or not isinstance(cost, (int, float)) or not cost >= 0
        ):
            raise ValueError(f"split_cost_tokens must be a number >= 0 or None, got {cost!r}")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(
                f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}; got {self.overflow!r}"
            )

    def with_overrides(self, **overrides: Any) -> StreamingConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **overrides)
