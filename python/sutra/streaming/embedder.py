"""StreamingEmbedder: one text at a time in, batched compute underneath (anyio).

Submissions enter a bounded buffer; one batcher task closes a batch when it holds ``batch_size``
requests or its oldest request has waited ``max_latency_ms`` and a compute worker is free (a full
batch may also queue behind a busy worker, one per worker); the batch runs on a compute thread
(ONNX Runtime and the native core release the GIL) so the event loop stays free, packed without
padding or as forward passes of similar lengths; each waiter gets its own row. Everything but the
compute runs on the event loop, so the queue needs no locks: a compute thread touches only the
inputs it was handed, and hands its result back by scheduling a callback on the event loop.

A server calls this once per HTTP request, and on a small machine the event loop shares the cores
with the compute, so the per-request path avoids anyio's generic helpers where they cost a
backend lookup per call (the clock, events) or a timer per request (timeouts are kept by one
task that sleeps until the earliest deadline).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from .. import _core
from ..backends.base import Backend
from ..tokenization import check_unicode
from .chunking import chunk_text, chunk_token_ids
from .config import CHUNK_UNITS, BufferFullError, StreamingClosedError, StreamingConfig
from .stats import StatsRecorder, StreamingStats

logger = logging.getLogger("sutra.streaming")

# A request's life: QUEUED in the buffer, RUNNING in a batch, then DONE; ABANDONED when its
# caller was cancelled or timed out while it was still queued (the batcher skips it).
_QUEUED, _RUNNING, _DONE, _ABANDONED = range(4)


@dataclass(frozen=True)
class BatchReport:
    """What the batcher tells an ``on_batch`` observer after each batch.

    Attributes:
        size: requests in the batch.
        compute_seconds: time spent computing in the worker thread (not waiting for it).
        error: the exception the batch raised, or ``None``.
    """

    size: int
    compute_seconds: float
    error: BaseException | None


@dataclass(frozen=True)
class ChunkEmbedding:
    """One chunk of a long text and its embedding.

    Attributes:
        index: position of the chunk, from 0.
        start, end: ``[start, end)`` code point offsets of the chunk in the text.
        text: ``text[start:end]``.
        embedding: float32 ``[dim]``.
    """

    index: int
    start: int
    end: int
    text: str
    embedding: np.ndarray


class _Group:
    """The requests of one ``embed_many`` call and the one event their caller waits on."""

    __slots__ = ("requests", "results", "remaining", "error", "done", "abandoned", "submitted",
                 "deadline")

    def __init__(self, size: int, submitted: float, deadline: float, done: Any) -> None:
        self.requests: list[_Request] = []
        self.results: list[np.ndarray | None] = [None] * size
        self.remaining = size
        self.error: BaseException | None = None
        self.done = done
        self.abandoned = False
        self.submitted = submitted
        self.deadline = deadline

    @property
    def settled(self) -> bool:
        """Answered, or given up by its caller: nothing left to time out."""
        return self.abandoned or self.done.is_set()


class _Request:
    __slots__ = ("item", "group", "index", "state")

    def __init__(self, item: str | tuple[int, ...], group: _Group, index: int) -> None:
        self.item = item
        self.group = group
        self.index = index
        self.state = _QUEUED


class _CapacityGate:
    """Admission to the buffer: ``capacity`` slots, FIFO waiters, cancellation-safe.

    A group larger than the capacity is admitted only when no slot is in use.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[list[Any]] = deque()  # [slots, event, granted]

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _fits(self, slots: int) -> bool:
        return self.used == 0 or self.used + slots <= self.capacity

    def try_acquire(self, slots: int) -> bool:
        # Waiters go first: a small late request must not starve a big early one.
        if not self._waiters and self._fits(slots):
            self.used += slots
            return True
        return False

    async def acquire(self, slots: int) -> None:
        waiter = [slots, anyio.Event(), False]
        self._waiters.append(waiter)
        try:
            await waiter[1].wait()
        except BaseException:
            if waiter[2]:  # granted just before the cancellation landed: give the slots back
                self.release(slots)
            else:
                self._waiters.remove(waiter)
                self._grant()  # a removed head may have been blocking smaller waiters
            raise

    def release(self, slots: int) -> None:
        self.used -= slots
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            waiter = self._waiters.popleft()
            self.used += waiter[0]
            waiter[2] = True
            waiter[1].set()


class StreamingEmbedder:
    """Embeds texts submitted one at a time (or a few at a time) by many concurrent tasks, in
    batches. Works under asyncio and trio (anyio).

    Use it as an async context manager; the batcher runs while the context is open::

        async with StreamingEmbedder(StreamingConfig(max_latency_ms=20), "efficient") as stream:
            vector = await stream.embed_stream("a cat on a mat")   # float32 [384]

    Args:
        config: queueing, batching and chunking settings (default :class:`StreamingConfig()`).
        embedder: an :class:`~sutra.Embedder` (or any object with ``encode(texts: list[str],
            show_progress_bar: bool) -> float32 [n, dim]`` and ``dimensions``,
            and ``embed_tokens(list[list[int]])`` for token-id inputs), or what
            :class:`~sutra.Embedder` accepts (a model name, folder or
            :class:`~sutra.EmbedderConfig`; ``None`` is the default model), loaded in a worker
            thread on entry.
        on_batch: called on the event loop after every batch with a :class:`BatchReport` (the
            server feeds its metrics from it); it must not block.

    Entering asks the embedder's backend to prepare for batches of mixed lengths
    (:meth:`~sutra.backends.Backend.prepare_for_mixed_lengths`): sutra's CPU backend on a graph it
    built opens the model's packed graph (a second ONNX Runtime session, so the weights are held
    twice), and batches of mixed lengths then run without padding.

    Cancellation: cancelling a caller (or ``timeout_secs`` expiring) drops its requests from the
    buffer if they are still queued, or discards their rows if their batch is computing; the other
    requests of that batch are unaffected. An exception raised by a batch reaches the callers of
    exactly the requests of that batch.

    Leaving the context finishes every admitted request first; requests submitted after that
    raise :class:`StreamingClosedError`.
    """

    def __init__(self, config: StreamingConfig | None = None, embedder: Any = None, *,
                 on_batch: Callable[[BatchReport], None] | None = None) -> None:
        self.config = config or StreamingConfig()
        if not isinstance(self.config, StreamingConfig):
            raise TypeError(f"config must be a StreamingConfig, got {type(config).__name__}")
        self._embedder = embedder if hasattr(embedder, "encode") else None
        self._embedder_source = embedder
        self._on_batch = on_batch
        self._stats = StatsRecorder()
        self._gate = _CapacityGate(self.config.buffer_size)
        self._queue: deque[_Request] = deque()
        self._queued_live = 0
        self._groups: set[_Group] = set()
        self._changed: anyio.Event | None = None
        self._computing = 0  # batches handed to a worker and not yet answered
        self._task_group: Any = None
        self._running = False
        self._closing = False
        self._stopped = False  # left the context: late batch results have nobody to answer
        self._vocab_size: int | None = None
        self._packs = False
        # Groups waiting for an answer, in submission order, which is deadline order: every
        # request gets the same timeout.
        self._deadlines: deque[_Group] = deque()
        self._deadline_added: Any = None
        self._deadline_scope: anyio.CancelScope | None = None
        self._now: Callable[[], float] = anyio.current_time
        self._new_event: Callable[[], Any] = anyio.Event
        self._call_soon_threadsafe: Callable[..., Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> StreamingEmbedder:
        if self._running or self._closing:
            raise RuntimeError("a StreamingEmbedder can be entered once")
        if self._embedder is None:
            from ..embedder import Embedder

            source = self._embedder_source
            self._embedder = await anyio.to_thread.run_sync(
                lambda: Embedder(source) if source is not None else Embedder()
            )
        self._vocab_size = _vocab_size(self._embedder)
        # Opening the packed graph takes seconds: do it now, not in the first mixed batch.
        self._packs = await anyio.to_thread.run_sync(_prepare_packed, self._embedder)
        self._now, self._new_event, self._call_soon_threadsafe = _event_loop_hooks()
        # At most `workers` batches compute at once, each on a thread of this executor; up to
        # `workers` more full batches wait in its queue (see _batch_loop).
        self._executor = ThreadPoolExecutor(self.config.workers, thread_name_prefix="sutra-stream")
        self._changed = anyio.Event()
        self._deadline_added = self._new_event()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        if self.config.timeout_secs is not None:
            await self._task_group.start(self._deadline_loop)
        self._task_group.start_soon(self._batch_loop)
        self._running = True
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool | None:
        self._closing = True
        self._running = False
        if exc_type is not None:
            # Leaving on an error or cancellation: stop now instead of draining.
            self._task_group.cancel_scope.cancel()
        self._notify()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            self._stopped = True
            self._executor.shutdown(wait=False)
            # Anything still unanswered (the batcher was cancelled mid-way) learns it now.
            for group in list(self._groups):
                self._finish_group(group, StreamingClosedError("the StreamingEmbedder closed"))

    @property
    def embedder(self) -> Any:
        """The underlying embedder (``None`` before entry when it was given by name)."""
        return self._embedder

    @property
    def dimensions(self) -> int:
        """Width of the embeddings."""
        return int(self._embedder.dimensions)

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not yet answered (queued or computing)."""
        return self._gate.used

    # -- submitting --------------------------------------------------------------------------------

    async def embed_stream(self, text: str) -> np.ndarray:
        """The embedding of one text: float32 ``[dim]``.

        Raises:
            TypeError: ``text`` is not a string.
            BufferFullError: the buffer is full and ``overflow="reject"``.
            TimeoutError: no answer within ``timeout_secs``.
            StreamingClosedError: the embedder is not running.
            Whatever the embedder raised for the batch this request was in.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return (await self.embed_many([text]))[0]

    async def embed_many(self, items: Sequence[str | Sequence[int]]) -> np.ndarray:
        """Embeddings of several inputs submitted together: float32 ``[n, dim]`` in input order.

        Each input is a text or a list of token ids (special tokens included, as
        :meth:`~sutra.Embedder.embed_tokens` takes them). The inputs are admitted to the buffer
        together (all or none) and batched individually, with other callers' requests; the call
        fails as a whole if any of its batches fails. ``timeout_secs`` covers the whole call.
        An empty list returns ``[0, dim]`` at once.
        """
        if not self._running:
            raise StreamingClosedError(
                "the StreamingEmbedder is not running; use it inside `async with`"
            )
        prepared = [self._check_item(item, index) for index, item in enumerate(items)]
        if not prepared:
            return np.empty((0, self.dimensions), dtype=np.float32)
        stats = self._stats
        size = len(prepared)
        submitted = self._now()
        stats.total_requests += size
        if stats.first_submission is None:
            stats.first_submission = submitted
        group: _Group | None = None
        timeout = self.config.timeout_secs
        deadline = float("inf") if timeout is None else submitted + timeout
        try:
            if not self._gate.try_acquire(size):
                await self._wait_for_admission(size, deadline)
            group = self._enqueue(prepared, submitted, deadline)
            await group.done.wait()
        except (BufferFullError, TimeoutError):
            raise  # refused or timed out before admission, and counted there
        except BaseException:
            self._give_up(group, size, timed_out=False)
            raise
        if group.error is not None:
            raise _fresh_copy(group.error)
        results = group.results
        if size == 1:  # most streaming calls: a view of the batch's row, not a copy via stack
            return results[0][np.newaxis]  # type: ignore[index]
        return np.stack(results)  # type: ignore[arg-type]

    async def embed_chunks_stream(self, text: str, *, unit: str = "chars",
                                  chunk_size: int | None = None,
                                  chunk_overlap: int | None = None,
                                  late_chunking: bool = False
                                  ) -> AsyncIterator[ChunkEmbedding]:
        """Embed a long text as overlapping chunks, yielding each chunk's embedding in order.

        Args:
            text: the text; an empty text yields nothing.
            unit: ``"chars"``: chunks of at most ``chunk_size`` characters, cut after whitespace
                where possible and never inside a character made of several code points (see
                :func:`~sutra.streaming.chunking.chunk_text`); ``"tokens"``: chunks of at most
                ``chunk_size`` model tokens (capped at the model's maximum sequence length minus
                its special tokens), each embedded from its token ids with the model's special
                tokens around it.
            chunk_size, chunk_overlap: default to the config's.
            late_chunking: embed the whole text at once and pool each chunk's token states
                (:meth:`sutra.Embedder.encode_chunks` with the chunks' character spans), so
                each chunk's vector sees the rest of the text; a chunk may then be longer than
                the model's maximum length. The document holds one buffer slot per chunk
                while it computes on the stream's workers.

        Yields:
            :class:`ChunkEmbedding` in text order. Chunks are submitted ``batch_size`` at a time
            through the same buffer as every other request (with ``late_chunking``: all at
            once, once the whole text is done).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        check_unicode(text, "text")
        if unit not in CHUNK_UNITS:
            raise ValueError(f"unit must be one of {', '.join(CHUNK_UNITS)}; got {unit!r}")
        size = self.config.chunk_size if chunk_size is None else chunk_size
        overlap = self.config.chunk_overlap if chunk_overlap is None else chunk_overlap
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"chunk_size must be a positive int, got {size!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < size:
            raise ValueError(f"chunk_overlap must be an int in 0..{size - 1}, got {overlap!r}")
        if not isinstance(late_chunking, bool):
            raise TypeError(f"late_chunking must be a bool, got {type(late_chunking).__name__}")
        if unit == "chars":
            spans = [(s.start, s.end) for s in chunk_text(text, size, overlap)]
            items: list[str | tuple[int, ...]] = [text[a:b] for a, b in spans]
        else:
            spans, items = await anyio.to_thread.run_sync(self._token_chunks, text, size, overlap)
        if late_chunking:
            if spans:
                vectors = await self._late_chunks(text, spans)
                for index, (start, end) in enumerate(spans):
                    yield ChunkEmbedding(index, start, end, text[start:end], vectors[index])
            return
        step = self.config.batch_size
        for first in range(0, len(items), step):
            vectors = await self.embed_many(items[first:first + step])
            for offset, vector in enumerate(vectors):
                start, end = spans[first + offset]
                yield ChunkEmbedding(first + offset, start, end, text[start:end], vector)

    async def _late_chunks(self, text: str, spans: list[tuple[int, int]]) -> np.ndarray:
        """Late chunking of ``text`` on the stream's workers, admitted like ``len(spans)``
        requests and bound by the same timeout: float32 ``[len(spans), dim]``."""
        if not self._running:
            raise StreamingClosedError(
                "the StreamingEmbedder is not running; use it inside `async with`"
            )
        if not hasattr(self._embedder, "encode_chunks"):
            raise TypeError("late_chunking needs a sutra.Embedder (token states of the whole "
                            f"text), got {type(self._embedder).__name__}")
        slots = len(spans)
        stats = self._stats
        submitted = self._now()
        stats.total_requests += slots
        if stats.first_submission is None:
            stats.first_submission = submitted
        timeout = self.config.timeout_secs
        deadline = float("inf") if timeout is None else submitted + timeout
        if not self._gate.try_acquire(slots):
            await self._wait_for_admission(slots, deadline)
        try:
            future = self._executor.submit(self._embedder.encode_chunks, text, spans=spans)
            with anyio.move_on_after(deadline - self._now()) as scope:
                chunks = await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
            if scope.cancelled_caught:
                future.cancel()  # if it has not started; a running pass finishes unanswered
                stats.timed_out += slots
                raise TimeoutError(f"no answer within timeout_secs={self.config.timeout_secs}")
        except (TimeoutError, anyio.get_cancelled_exc_class()):
            raise
        except BaseException:
            stats.failed += slots
            raise
        finally:
            self._gate.release(slots)
            self._notify()
        finished = self._now()
        for _ in range(slots):
            stats.record_latency(finished - submitted)
        return np.stack([chunk.embedding for chunk in chunks])

    async def get_stats(self) -> StreamingStats:
        """A snapshot of the counters and latency percentiles (see :class:`StreamingStats`)."""
        return self._stats.snapshot(self._now(), self._gate.used)

    # -- internals: admission and queue ----------------------------------------------------------

    def _check_item(self, item: Any, index: int) -> str | tuple[int, ...]:
        if isinstance(item, str):
            # Checked here, not in the batch: a text the tokenizer refuses fails its caller only.
            check_unicode(item, f"item {index}")
            return item
        if isinstance(item, (list, tuple, np.ndarray)):
            ids = tuple(item.tolist() if isinstance(item, np.ndarray) else item)
            if not ids:
                raise ValueError(f"item {index} is an empty token list")
            # Plain ints within the vocabulary, checked at C speed; anything else the slow way,
            # which names the offending token.
            if set(map(type, ids)) == {int} and min(ids) >= 0 and (
                self._vocab_size is None or max(ids) < self._vocab_size
            ):
                return ids
            for token in ids:
                # Checked here, not in the batch, so one bad input cannot fail its neighbours.
                if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
                    raise TypeError(f"item {index} holds {token!r}; token ids must be ints")
                if token < 0 or (self._vocab_size is not None and token >= self._vocab_size):
                    raise ValueError(
                        f"item {index} holds token id {token}, outside [0, {self._vocab_size})"
                    )
            return ids
        raise TypeError(
            f"item {index} is {type(item).__name__}; expected a str or a list of token ids"
        )

    async def _wait_for_admission(self, slots: int, deadline: float) -> None:
        """The buffer had no room for ``slots``: reject, or wait for room until ``deadline``."""
        self._stats.buffer_overflows += 1
        if self.config.overflow == "reject":
            self._stats.rejected += slots
            raise BufferFullError(
                f"the streaming buffer is full ({self._gate.used} of {self._gate.capacity} "
                f"requests pending; this call needs {slots})"
            )
        with anyio.move_on_after(deadline - self._now()) as scope:
            await self._gate.acquire(slots)
        if scope.cancelled_caught:
            self._stats.timed_out += slots
            raise TimeoutError(f"no answer within timeout_secs={self.config.timeout_secs}")

    def _enqueue(self, items: list[str | tuple[int, ...]], submitted: float,
                 deadline: float) -> _Group:
        group = _Group(len(items), submitted, deadline, self._new_event())
        for index, item in enumerate(items):
            request = _Request(item, group, index)
            group.requests.append(request)
            self._queue.append(request)
        was_empty = self._queued_live == 0
        self._queued_live += len(items)
        self._groups.add(group)
        if self._deadline_scope is not None:
            waiting = self._deadlines
            # Answers come roughly in submission order: dropping the answered head here keeps
            # the deque about as long as the requests in flight (the deadline task wakes only
            # once per timeout).
            while waiting and waiting[0].settled:
                waiting.popleft()
            waiting.append(group)
            if len(waiting) == 1:
                self._deadline_added.set()
        limit = self.config.batch_size if self.config.auto_batch else 1
        # The batcher waits for the first request (to start its deadline) or a full batch;
        # a request in between changes nothing for it, so it is not woken.
        if was_empty or self._queued_live >= limit:
            self._notify()
        return group

    def _give_up(self, group: _Group | None, size: int, *, timed_out: bool) -> None:
        """The caller stopped waiting: free what its requests hold, count them, keep the rest."""
        if group is None:  # never admitted; the gate already cleaned up after itself
            unanswered = size
        elif group.abandoned:  # already given up (timed out)
            return
        else:
            unanswered = 0
            group.abandoned = True
            for request in group.requests:
                if request.state == _QUEUED:
                    # Skipped lazily by the batcher; its slot is free from now on.
                    request.state = _ABANDONED
                    self._queued_live -= 1
                    self._gate.release(1)
                    unanswered += 1
                elif request.state == _RUNNING:
                    unanswered += 1  # its row is discarded when the batch returns
            self._groups.discard(group)
            self._notify()
        if timed_out:
            self._stats.timed_out += unanswered
        else:
            self._stats.cancelled += unanswered

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _wait_for_change(self) -> None:
        self._changed = anyio.Event()
        await self._changed.wait()

    async def _deadline_loop(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Answer ``TimeoutError`` to every group whose deadline passes before its answer: one
        task sleeping until the earliest deadline instead of a timer per request."""
        waiting = self._deadlines
        with anyio.CancelScope() as self._deadline_scope:
            task_status.started()
            while True:
                now = self._now()
                while waiting and (waiting[0].settled or waiting[0].deadline <= now):
                    group = waiting.popleft()
                    if not group.settled:
                        self._time_out(group)
                if waiting:
                    # Later groups have later deadlines: nothing to wake this sleep for.
                    await anyio.sleep(waiting[0].deadline - now)
                else:
                    self._deadline_added = self._new_event()
                    await self._deadline_added.wait()

    def _time_out(self, group: _Group) -> None:
        self._give_up(group, len(group.results), timed_out=True)
        group.error = TimeoutError(f"no answer within timeout_secs={self.config.timeout_secs}")
        group.done.set()

    def _oldest_live(self) -> _Request | None:
        while self._queue and self._queue[0].state != _QUEUED:
            self._queue.popleft()
        return self._queue[0] if self._queue else None

    # -- internals: the batcher ------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        config = self.config
        limit = config.batch_size if config.auto_batch else 1
        while True:
            oldest = self._oldest_live()
            if oldest is None:
                # used > 0 with an empty queue: a caller was just admitted and will enqueue, or
                # a batch is still computing.
                if self._closing and self._gate.used == 0 and not self._gate.waiting:
                    if self._deadline_scope is not None:
                        self._deadline_scope.cancel()
                    return
                await self._wait_for_change()
                continue
            if self._computing >= config.workers:
                # Every worker is busy: requests keep queueing, and the batch closes (with all
                # that arrived, up to batch_size) when one frees; but a full batch goes at once
                # to wait in the executor's queue (at most one per worker), so that a worker
                # starts it the moment it finishes instead of waiting for the event loop, which
                # at saturation is busy answering the batch just finished (measured on 2 cores
                # at saturation: median gaps of 4 to 5 ms between batches of about 42 ms before,
                # 0.07 ms after).
                if not (self._computing < 2 * config.workers and self._queued_live >= limit):
                    await self._wait_for_change()
                    continue
            remaining = self._due_in(oldest)
            if remaining > 0:
                with anyio.move_on_after(remaining):
                    await self._wait_for_change()
                continue
            self._start_batch()

    def _due_in(self, oldest: _Request) -> float:
        """Seconds until the batch holding ``oldest`` closes; <= 0 when it closes now (it is
        full, the embedder is closing, or auto-batching is off). The deadline belongs to the
        oldest request, not to the batcher's wait: a request that queued while the previous
        batch computed is not made to wait a second time."""
        config = self.config
        if not config.auto_batch or self._closing or self._queued_live >= config.batch_size:
            return 0.0
        return oldest.group.submitted + config.max_latency_ms / 1e3 - self._now()

    def _start_batch(self) -> None:
        """Take up to ``batch_size`` queued requests and start computing them."""
        limit = self.config.batch_size if self.config.auto_batch else 1
        batch: list[_Request] = []
        while len(batch) < limit and self._queue:
            request = self._queue.popleft()
            if request.state == _QUEUED:
                request.state = _RUNNING
                batch.append(request)
        self._queued_live -= len(batch)
        self._computing += 1
        started = self._now()
        future = self._executor.submit(self._timed_compute, [request.item for request in batch])
        future.add_done_callback(lambda done: self._computed(batch, started, done))

    def _batch_is_due(self) -> bool:
        """Whether the batcher would close a batch right now (a full one, or one whose oldest
        request has waited ``max_latency_ms``) and a worker is free for it."""
        if self._computing >= self.config.workers:
            return False
        oldest = self._oldest_live()
        return oldest is not None and self._due_in(oldest) <= 0

    def _computed(self, batch: list[_Request], started: float, future: Future) -> None:
        """Compute thread: a batch is done; the event loop takes it from here."""
        try:
            self._call_soon_threadsafe(self._finish_batch, batch, started, future)
        except RuntimeError:  # the event loop is gone (closed after a cancellation): no waiters
            pass

    def _finish_batch(self, batch: list[_Request], started: float, future: Future) -> None:
        """Event loop: answer a computed batch's requests, start the next due batch. A callback
        must not raise (under trio that would end the run), so nothing here may."""
        if self._stopped:  # its callers were told StreamingClosedError when the context closed
            return
        error: BaseException | None = None
        vectors: np.ndarray | None = None
        errors: dict[int, BaseException] = {}
        compute_seconds = 0.0
        try:
            vectors, errors, compute_seconds = future.result()
        except BaseException as exc:  # routed to this batch's callers, the batcher carries on
            error = exc
        finished = self._now()
        self._computing -= 1
        self._gate.release(len(batch))
        if self._batch_is_due():
            # Start the next due batch before answering this one: waking this batch's callers
            # queues their responses (JSON, HTTP writes) on the event loop, ahead of anything
            # started after them.
            self._start_batch()
        stats = self._stats
        stats.batches += 1
        stats.batched_requests += len(batch)
        for row, request in enumerate(batch):
            request.state = _DONE
            group = request.group
            if group.abandoned:
                continue
            failure = error if error is not None else errors.get(row)
            if failure is not None:
                stats.failed += 1
                self._finish_group(group, failure)
            else:
                stats.record_latency(finished - group.submitted)
                group.results[request.index] = vectors[row]  # type: ignore[index]
                group.remaining -= 1
                if group.remaining == 0:
                    self._finish_group(group, None)
        self._notify()
        if self._on_batch is not None:
            try:
                self._on_batch(BatchReport(len(batch), compute_seconds or finished - started,
                                           error if error is not None
                                           else next(iter(errors.values()), None)))
            except Exception:  # an observer's bug must not lose the batch's answers
                logger.exception("the on_batch observer raised")

    def _finish_group(self, group: _Group, error: BaseException | None) -> None:
        if group.done.is_set():
            return
        if error is not None:
            group.error = error
        self._groups.discard(group)
        group.done.set()

    def _timed_compute(self, items: list[str | tuple[int, ...]]
                       ) -> tuple[np.ndarray | None, dict[int, BaseException], float]:
        started = time.perf_counter()
        vectors, errors = self._compute(items)
        return vectors, errors, time.perf_counter() - started

    def _compute(self, items: list[str | tuple[int, ...]]
                 ) -> tuple[np.ndarray | None, dict[int, BaseException]]:
        """Runs in the worker thread: texts and token inputs, each in forward passes of similar
        lengths (see :func:`split_by_length`). Returns the rows and, by row, the error of each
        input that failed: a pass that raises is run again in halves, down to the inputs that
        fail alone, so one client's bad input never fails the others batched with it."""
        text_rows = [i for i, item in enumerate(items) if isinstance(item, str)]
        token_rows = [i for i, item in enumerate(items) if not isinstance(item, str)]
        out: list[np.ndarray | None] = [None]
        errors: dict[int, BaseException] = {}
        for rows, is_text in ((text_rows, True), (token_rows, False)):
            if not rows:
                continue
            try:
                groups = self._forward_groups(items, rows, is_text)
            except Exception:  # noqa: BLE001 - lengths unknown: the isolated passes will say why
                groups = [rows]
            for group in groups:
                self._run_isolated(items, group, is_text, out, errors)
        return out[0], errors

    def _run_isolated(self, items: list[str | tuple[int, ...]], group: list[int], is_text: bool,
                      out: list[np.ndarray | None], errors: dict[int, BaseException]) -> None:
        """One forward pass over ``group`` into ``out[0]``; if it raises, each half alone."""
        try:
            vectors = self._run_pass(items, group, is_text)
        except Exception as exc:  # noqa: BLE001 - routed to the input that caused it
            if len(group) == 1:
                errors[group[0]] = exc
                return
            half = len(group) // 2
            self._run_isolated(items, group[:half], is_text, out, errors)
            self._run_isolated(items, group[half:], is_text, out, errors)
            return
        if out[0] is None:
            out[0] = np.empty((len(items), vectors.shape[1]), dtype=np.float32)
        out[0][group] = vectors

    def _run_pass(self, items: list[str | tuple[int, ...]], group: list[int],
                  is_text: bool) -> np.ndarray:
        embedder = self._embedder
        if is_text:
            # The embedder's own batch_size/max_batch_tokens still bound each pass.
            vectors = embedder.encode([items[i] for i in group], show_progress_bar=False)
        else:
            vectors = embedder.embed_tokens([list(items[i]) for i in group])
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(group):
            raise RuntimeError(
                f"the embedder returned shape {vectors.shape} for {len(group)} inputs"
            )
        return vectors

    def _forward_groups(self, items: list[str | tuple[int, ...]], rows: list[int],
                        is_text: bool) -> list[list[int]]:
        """``rows`` grouped into forward passes of similar token lengths.

        Requests arrive in random length order, and one pass over all of them would pad every
        row to the longest: with short sentences that is about half of the compute wasted on
        padding. Lengths come from the token ids, or for texts from the embedder's tokenizer;
        an embedder without one gets a single pass. So does an embedder whose backend packs
        sequences without padding (sutra's CPU backend on a graph it built): it chooses between
        packed and padded passes itself, and packing a whole mixed batch beats splitting it.
        """
        cost = self.config.split_cost_tokens
        if cost is None or len(rows) < 2 or self._packs:
            # An embedder with a packed (padding-free) path plans its passes itself.
            return [rows]
        if is_text:
            tokenizer = getattr(self._embedder, "tokenizer", None)
            if tokenizer is None or not hasattr(tokenizer, "encode"):
                return [rows]
            lengths = [len(ids) for ids in tokenizer.encode([items[i] for i in rows])]
        else:
            lengths = [len(items[i]) for i in rows]
        return [[rows[k] for k in group] for group in split_by_length(lengths, cost)]

    def _token_chunks(self, text: str, size: int, overlap: int
                      ) -> tuple[list[tuple[int, int]], list[tuple[int, ...]]]:
        """Token-unit chunking (worker thread): character spans and token-id inputs."""
        embedder = self._embedder
        tokenizer = getattr(embedder, "tokenizer", None)
        model = getattr(embedder, "model", None)
        if tokenizer is None or model is None:
            raise TypeError("unit='tokens' needs a sutra.Embedder (with a tokenizer and a model)")
        specials = tokenizer.encode([""])[0]
        prefix = specials[: tokenizer.num_prefix_special]
        suffix = specials[len(specials) - tokenizer.num_suffix_special:]
        content_limit = embedder.max_seq_length - len(prefix) - len(suffix)
        size = min(size, content_limit)
        overlap = min(overlap, size - 1)
        source = text.lower() if getattr(model, "do_lower_case", False) else text
        ids, offsets = tokenizer.encode_with_offsets(source)
        spans: list[tuple[int, int]] = []
        items: list[tuple[int, ...]] = []
        for a, b in chunk_token_ids(len(ids), size, overlap):
            spans.append((offsets[a][0], offsets[b - 1][1]))
            items.append(tuple(prefix) + tuple(ids[a:b]) + tuple(suffix))
        return spans, items


def split_by_length(lengths: Sequence[int], pass_cost: float) -> list[list[int]]:
    """Indices of ``lengths`` grouped into forward passes that minimize the padded compute.

    The cost of a pass is modelled as ``pass_cost + rows * longest``, in tokens: a forward pass
    pads every row to its longest one, and each pass has a fixed cost (graph dispatch, thread
    synchronization) worth ``pass_cost`` tokens of compute. The one batch planner
    (:func:`sutra._core.plan_batches` with ``pass_cost_tokens``) finds the optimal partition of
    the length-sorted rows. ``pass_cost=0`` gives one pass per distinct length.

    Returns:
        Groups of indices, shortest rows first, each group in ascending length; every index
        appears exactly once. An empty input gives ``[]``.
    """
    if not len(lengths):
        return []
    sizes = np.asarray(lengths, dtype=np.int32)
    passes = _core.plan_batches(sizes, len(sizes), 2**62, float(pass_cost))
    # The planner lists passes longest first; callers here read them shortest first.
    groups = [sorted(p.order.tolist(), key=lambda i: (sizes[i], i)) for p in passes]
    return groups[::-1]


def _event_loop_hooks() -> tuple[Callable[[], float], Callable[[], Any], Callable[..., Any]]:
    """The running event loop's clock, event type and thread-safe ``call_soon``.

    anyio's own ``current_time()`` and ``Event()`` look the backend up on every call (about 2 us
    each, several times per request); these are bound once, on entry."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:  # trio is imported but this is not a trio run
            pass
        else:
            return trio.current_time, anyio.Event, token.run_sync_soon
    loop = asyncio.get_running_loop()
    return loop.time, asyncio.Event, loop.call_soon_threadsafe


def _prepare_packed(embedder: Any) -> bool:
    """Let the embedder's backend load what makes batches of mixed lengths cheap (worker
    thread); whether such batches now run without padding.

    Only a sutra backend (:class:`~sutra.backends.Backend`) is asked; a backend that fails to
    prepare is not fatal: batches then run padded, split by length."""
    backend = getattr(embedder, "backend", None)
    if not isinstance(backend, Backend):
        return False
    try:
        return backend.prepare_for_mixed_lengths()
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the padded graph
        logger.warning("the packed graph is unavailable (%s: %s); batches run padded",
                       type(exc).__name__, exc)
        return False


def _vocab_size(embedder: Any) -> int | None:
    model_config = getattr(getattr(embedder, "model", None), "config", None)
    if isinstance(model_config, dict) and model_config.get("vocab_size"):
        return int(model_config["vocab_size"])
    size = getattr(getattr(embedder, "tokenizer", None), "vocab_size", None)
    return int(size) if isinstance(size, int) else None


def _fresh_copy(error: BaseException) -> BaseException:
    """A copy per raiser: one exception object raised in several tasks would have its traceback
    and context rewritten by each of them."""
    try:
        clone = copy.copy(error)
    except Exception:  # pragma: no cover - exotic exception types
        return error
    return clone.with_traceback(error.__traceback__)
