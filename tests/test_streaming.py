"""StreamingEmbedder: batching deadlines, backpressure, cancellation, error routing, chunking,
statistics and the WebSocket protocol, under asyncio and trio.

The core tests run twice: on a deterministic fake embedder and on the real CPU backend
(all-MiniLM-L6-v2), both behind the same instrumented wrapper, which can hold a batch at a gate,
fail batches containing a marker, and records every batch with its start time.
"""

from __future__ import annotations

import json
import random
import threading
import time
import unicodedata
from pathlib import Path

import anyio
import numpy as np
import pytest

from sutra.backends import Backend
from sutra.streaming import (
    BufferFullError,
    StreamingAggregator,
    StreamingClosedError,
    StreamingConfig,
    StreamingEmbedder,
    WebSocketHandler,
    chunk_text,
    is_safe_boundary,
)
from sutra.streaming.embedder import split_by_length
from sutra.streaming.stats import StatsRecorder

GATE_TIMEOUT_S = 10.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


class InstrumentedEmbedder:
    """Wraps a real embedder (or stands in for one) for tests of the streaming layer.

    ``hold`` is a gate: while it is cleared, every batch blocks in the worker thread. ``batches``
    lists the texts of each batch and ``batch_starts`` their ``time.monotonic()`` start times.
    A batch with a text containing ``fail_on`` raises ``ValueError``.
    """

    def __init__(self, inner=None, dimensions: int = 8) -> None:
        self.inner = inner
        self.dimensions = inner.dimensions if inner is not None else dimensions
        self.batches: list[list[str]] = []
        self.batch_starts: list[float] = []
        self.hold = threading.Event()
        self.hold.set()
        self.computing = threading.Event()
        self.active = 0  # batches inside encode right now, and the most at once
        self.peak_active = 0
        self._active_lock = threading.Lock()
        self.fail_on: str | None = None
        self.gate_timeout = GATE_TIMEOUT_S

    def encode(self, texts, batch_size=None, show_progress_bar=False):
        self.batch_starts.append(time.monotonic())
        self.batches.append(list(texts))
        with self._active_lock:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
        self.computing.set()
        try:
            if not self.hold.wait(self.gate_timeout):
                raise RuntimeError("the test never opened the gate")
            if self.fail_on is not None and any(self.fail_on in t for t in texts):
                raise ValueError(f"boom: a batch of {len(texts)} containing {self.fail_on!r}")
            if self.inner is not None:
                return self.inner.encode(list(texts), batch_size=batch_size,
                                         show_progress_bar=False)
            return np.stack([self.reference(t) for t in texts])
        finally:
            with self._active_lock:
                self.active -= 1
                if self.active == 0:
                    self.computing.clear()

    def reference(self, text: str) -> np.ndarray:
        """What one text embeds to when computed alone."""
        if self.inner is not None:
            return self.inner.encode([text], show_progress_bar=False)[0]
        seed = int.from_bytes(text.encode("utf-8")[:16].ljust(16, b"\0"), "little") ^ len(text)
        vector = np.random.default_rng(seed).standard_normal(self.dimensions)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def batch_of(self, text: str) -> int:
        return next(i for i, batch in enumerate(self.batches) if text in batch)


@pytest.fixture(params=["fake", "minilm"])
def embedder(request: pytest.FixtureRequest) -> InstrumentedEmbedder:
    if request.param == "fake":
        return InstrumentedEmbedder()
    return InstrumentedEmbedder(request.getfixturevalue("minilm"))


def assert_same_embedding(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to the float noise of batch composition (padding changes the summation order)."""
    assert actual.shape == expected.shape and actual.dtype == np.float32
    cosine = float(actual @ expected / (np.linalg.norm(actual) * np.linalg.norm(expected)))
    assert cosine > 0.99999, cosine
    np.testing.assert_allclose(actual, expected, atol=1e-4)


async def wait_until(condition, timeout: float = GATE_TIMEOUT_S) -> None:
    """Poll ``condition()`` on the event loop (each poll yields for 1 ms)."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.001)


async def wait_for_compute(embedder: InstrumentedEmbedder) -> None:
    """Wait until a batch is inside the (held) compute."""
    await wait_until(embedder.computing.is_set)


class Results:
    """Collects what each concurrent submission got: its embedding or its exception."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    async def submit(self, stream: StreamingEmbedder, text: str) -> None:
        try:
            self.values[text] = await stream.embed_stream(text)
        except Exception as exc:
            self.values[text] = exc


# -- batching ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_requests_are_batched_and_each_gets_its_own_embedding(embedder):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'the sea'}" for i in range(20)]
    config = StreamingConfig(batch_size=8, max_latency_ms=50)
    results = Results()
    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            for text in texts:
                tasks.start_soon(results.submit, stream, text)
        stats = await stream.get_stats()
    for text in texts:
        assert_same_embedding(results.values[text], embedder.reference(text))
    sizes = [len(batch) for batch in embedder.batches]
    assert sum(sizes) == 20 and max(sizes) == 8, sizes
    assert stats.completed == 20 and stats.total_requests == 20 and stats.pending == 0
    assert stats.batches == len(sizes) and stats.mean_batch_size == pytest.approx(20 / len(sizes))


@pytest.mark.anyio
async def test_auto_batch_off_runs_every_request_alone(embedder):
    texts = [f"text {i}" for i in range(6)]
    results = Results()
    async with StreamingEmbedder(StreamingConfig(auto_batch=False), embedder) as stream:
        async with anyio.create_task_group() as tasks:
            for text in texts:
                tasks.start_soon(results.submit, stream, text)
    assert [len(batch) for batch in embedder.batches] == [1] * 6
    for text in texts:
        assert_same_embedding(results.values[text], embedder.reference(text))


@pytest.mark.anyio
async def test_batch_closes_when_its_oldest_request_has_waited_max_latency(embedder):
    """Requests trickle in below batch_size: every one waits at most max_latency_ms (plus slack
    for a loaded machine) for its batch to close, counted from its own submission. A batcher that
    restarted the timer on each arrival would make the first request wait 380 ms here."""
    max_latency = 0.2
    config = StreamingConfig(batch_size=64, max_latency_ms=max_latency * 1e3)
    submitted: dict[str, float] = {}

    async def submit(stream, text):
        submitted[text] = time.monotonic()
        await stream.embed_stream(text)

    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            for i in range(5):  # arrivals at 0, 60, 120, 180, 240 ms
                tasks.start_soon(submit, stream, f"arrival {i}")
                await anyio.sleep(0.06)
    delays = {text: embedder.batch_starts[embedder.batch_of(text)] - t
              for text, t in submitted.items()}
    print("queueing delays (ms):", {k: round(v * 1e3, 1) for k, v in delays.items()})
    # The first batch waited for its deadline instead of closing early, and collected arrivals.
    assert delays["arrival 0"] >= 0.9 * max_latency
    assert len(embedder.batches[0]) >= 2
    assert max(delays.values()) <= 1.5 * max_latency


@pytest.mark.anyio
async def test_request_that_queued_during_a_batch_is_not_made_to_wait_again(embedder):
    """B queues while A computes for longer than max_latency_ms: B's deadline has passed when the
    worker frees up, so B's batch starts at once, not max_latency_ms after A finished."""
    max_latency = 0.2
    config = StreamingConfig(batch_size=64, max_latency_ms=max_latency * 1e3)
    embedder.hold.clear()
    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stream.embed_stream, "request A")
            await wait_for_compute(embedder)
            tasks.start_soon(stream.embed_stream, "request B")
            await anyio.sleep(max_latency * 1.25)
            released = time.monotonic()
            embedder.hold.set()
    start_b = embedder.batch_starts[embedder.batch_of("request B")]
    print(f"B started {1e3 * (start_b - released):.1f} ms after A was released")
    assert embedder.batch_of("request B") == 1
    assert start_b - released < 0.5 * max_latency


@pytest.mark.anyio
async def test_event_loop_stays_responsive_while_a_batch_computes(embedder):
    """The batch is held inside compute; if compute ran on the event loop, nothing else could run
    until the gate's timeout and the ticks below would not happen while it computes."""
    embedder.gate_timeout = 3.0
    embedder.hold.clear()
    ticks_during_compute = 0
    async with StreamingEmbedder(StreamingConfig(max_latency_ms=0), embedder) as stream:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stream.embed_stream, "a long computation")
            await wait_for_compute(embedder)
            for _ in range(20):
                await anyio.sleep(0.001)
                ticks_during_compute += embedder.computing.is_set()
            embedder.hold.set()
    assert ticks_during_compute == 20


@pytest.mark.anyio
@pytest.mark.parametrize("workers", [1, 2])
async def test_workers_bound_how_many_batches_compute_at_once(embedder, workers):
    """With every batch held in compute, ``workers`` batches start and the rest stay queued."""
    config = StreamingConfig(batch_size=1, max_latency_ms=0, workers=workers)
    embedder.hold.clear()
    results = Results()
    texts = [f"request {i}" for i in range(workers + 1)]
    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            for text in texts:
                tasks.start_soon(results.submit, stream, text)
            await wait_until(lambda: len(embedder.batches) == workers)
            await anyio.sleep(0.05)  # room for a batch that should not start
            assert len(embedder.batches) == workers and stream.queue_depth == workers + 1
            embedder.hold.set()
    assert embedder.peak_active == workers and len(embedder.batches) == workers + 1
    for text in texts:
        assert_same_embedding(results.values[text], embedder.reference(text))


class LengthAwareEmbedder:
    """The real embedder with its tokenizer, recording the inputs of every forward pass."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.dimensions = inner.dimensions
        self.model = inner.model
        self.passes: list[list] = []

    def encode(self, texts, batch_size=None, show_progress_bar=False):
        self.passes.append(list(texts))
        return self.inner.encode(list(texts), show_progress_bar=False)

    def embed_tokens(self, token_ids):
        self.passes.append([tuple(ids) for ids in token_ids])
        return self.inner.embed_tokens(token_ids)


LONG_TEXT = " ".join(f"word{i} and some more filler text" for i in range(16))


async def _submit_one_by_one(config, embedder, items):
    """Each item as its own concurrent request; the answers by index, and the final stats."""
    values: dict[int, np.ndarray] = {}

    async def submit(stream, index):
        values[index] = (await stream.embed_many([items[index]]))[0]

    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            for index in range(len(items)):
                tasks.start_soon(submit, stream, index)
        stats = await stream.get_stats()
    return values, stats


@pytest.mark.anyio
@pytest.mark.parametrize("as_token_ids", [False, True])
async def test_a_batch_of_mixed_lengths_runs_as_passes_of_similar_lengths(minilm, as_token_ids):
    """Three short inputs and a long one close as one batch; the long one gets a forward pass of
    its own instead of making the short ones pad to its length, and every answer equals the
    embedding computed alone."""
    texts = ["a cat", "the sea is calm", "stocks fell", LONG_TEXT]
    recorder = LengthAwareEmbedder(minilm)
    config = StreamingConfig(batch_size=4, max_latency_ms=60_000, split_cost_tokens=16)
    items = minilm.tokenizer.encode(texts) if as_token_ids else texts
    values, stats = await _submit_one_by_one(config, recorder, items)
    assert stats.batches == 1 and stats.completed == 4
    long_item = tuple(items[3]) if as_token_ids else LONG_TEXT
    assert [long_item] in recorder.passes and len(recorder.passes) == 2, recorder.passes
    for index, text in enumerate(texts):
        assert_same_embedding(values[index], minilm.encode(text))


@pytest.mark.anyio
async def test_split_cost_none_keeps_one_pass_per_batch(minilm):
    recorder = LengthAwareEmbedder(minilm)
    config = StreamingConfig(batch_size=4, max_latency_ms=60_000, split_cost_tokens=None)
    texts = ["a cat", "the sea is calm", "stocks fell", LONG_TEXT]
    async with StreamingEmbedder(config, recorder) as stream:
        vectors = await stream.embed_many(texts)
    assert len(recorder.passes) == 1
    for vector, text in zip(vectors, texts):
        assert_same_embedding(vector, minilm.encode(text))


class PackingRecorder(LengthAwareEmbedder):
    """The real embedder, backend included (it packs mixed lengths without padding)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.backend = inner.backend


@pytest.mark.anyio
@pytest.mark.parametrize("as_token_ids", [False, True])
async def test_an_embedder_that_packs_gets_the_whole_mixed_batch(minilm, as_token_ids):
    """With a backend that packs sequences without padding, the batch is not split by length:
    the embedder gets it whole (and packs it), and every answer equals the embedding alone."""
    assert minilm.backend.supports_packed
    texts = ["a cat", "the sea is calm", "stocks fell", LONG_TEXT]
    recorder = PackingRecorder(minilm)
    config = StreamingConfig(batch_size=4, max_latency_ms=60_000, split_cost_tokens=16)
    items = minilm.tokenizer.encode(texts) if as_token_ids else texts
    values, stats = await _submit_one_by_one(config, recorder, items)
    assert stats.batches == 1 and stats.completed == 4
    assert len(recorder.passes) == 1 and len(recorder.passes[0]) == 4, recorder.passes
    for index, text in enumerate(texts):
        assert_same_embedding(values[index], minilm.encode(text))


class _BrokenPackedBackend(Backend):
    """A backend whose packed graph cannot open (the contract's prepare step raises)."""

    name = "broken"
    parallel_passes = 1

    def encode_rows(self, batch, limits, **kwargs):
        raise AssertionError("never called: the recorder encodes through the real embedder")

    def prepare_for_mixed_lengths(self) -> bool:
        raise OSError("no space left on device")


@pytest.mark.anyio
async def test_a_packed_graph_that_cannot_open_falls_back_to_passes_of_similar_lengths(
        minilm, caplog):
    recorder = LengthAwareEmbedder(minilm)
    recorder.backend = _BrokenPackedBackend()
    texts = ["a cat", "the sea is calm", "stocks fell", LONG_TEXT]
    config = StreamingConfig(batch_size=4, max_latency_ms=60_000, split_cost_tokens=16)
    with caplog.at_level("WARNING", logger="sutra.streaming"):
        async with StreamingEmbedder(config, recorder) as stream:
            vectors = await stream.embed_many(texts)
    assert "packed graph is unavailable" in caplog.text
    assert [LONG_TEXT] in recorder.passes and len(recorder.passes) == 2, recorder.passes
    for vector, text in zip(vectors, texts):
        assert_same_embedding(vector, minilm.encode(text))


def _padded_cost(lengths, groups, pass_cost):
    return sum(pass_cost + len(g) * max(lengths[i] for i in g) for g in groups)


def test_split_by_length_is_an_optimal_partition_of_every_index():
    rng = random.Random(20261125)
    for trial in range(300):
        n = rng.randint(0, 9)
        lengths = [rng.choice([rng.randint(3, 12), rng.randint(3, 80)]) for _ in range(n)]
        pass_cost = rng.choice([0, 1, 5, 16, 64, 1e9])
        case = f"trial {trial}: lengths={lengths} pass_cost={pass_cost}"
        groups = split_by_length(lengths, pass_cost)
        assert sorted(i for g in groups for i in g) == list(range(n)), case
        in_order = [lengths[i] for g in groups for i in g]
        assert in_order == sorted(lengths), case
        if n == 0:
            assert groups == [], case
            continue
        # Exhaustive search over cuts between distinct lengths (equal lengths never gain from a
        # cut, see split_by_length): the plan is optimal.
        ordered = sorted(range(n), key=lengths.__getitem__)
        cuts = [k for k in range(1, n) if lengths[ordered[k]] != lengths[ordered[k - 1]]]
        best = min(
            _padded_cost(lengths, [ordered[a:b] for a, b in zip((0, *chosen), (*chosen, n))],
                         pass_cost)
            for mask in range(2 ** len(cuts))
            for chosen in [tuple(c for bit, c in enumerate(cuts) if mask >> bit & 1)]
        )
        assert _padded_cost(lengths, groups, pass_cost) == pytest.approx(best), case
    assert split_by_length([7, 7, 7], 0) == [[0, 1, 2]]
    assert split_by_length([3, 30, 4], 1e9) == [[0, 2, 1]]
    assert split_by_length([3, 30, 4], 0) == [[0], [2], [1]]


def test_config_checks_workers_and_split_cost():
    with pytest.raises(ValueError, match="workers"):
        StreamingConfig(workers=0)
    with pytest.raises(ValueError, match="split_cost_tokens"):
        StreamingConfig(split_cost_tokens=-1)
    assert StreamingConfig(split_cost_tokens=None).split_cost_tokens is None


# -- backpressure --------------------------------------------------------------------------------


async def _fill_buffer(stream: StreamingEmbedder, tasks, results: Results, count: int) -> None:
    """Submit ``count`` requests one after another (a deterministic order on trio too)."""
    for i in range(count):
        tasks.start_soon(results.submit, stream, f"queued {i}")
        await wait_until(lambda: stream.queue_depth == i + 1)


@pytest.mark.anyio
async def test_full_buffer_rejects_with_buffer_full_error_and_counts_the_overflow(embedder):
    config = StreamingConfig(buffer_size=4, batch_size=2, max_latency_ms=0, overflow="reject")
    embedder.hold.clear()
    results = Results()
    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            await _fill_buffer(stream, tasks, results, 4)
            with pytest.raises(BufferFullError):
                await stream.embed_stream("one too many")
            embedder.hold.set()
        stats = await stream.get_stats()
        after = await stream.embed_stream("room again")  # the buffer drained
    assert stats.buffer_overflows == 1 and stats.rejected == 1 and stats.completed == 4
    assert "one too many" not in sum(embedder.batches, [])
    for i in range(4):
        assert_same_embedding(results.values[f"queued {i}"], embedder.reference(f"queued {i}"))
    assert_same_embedding(after, embedder.reference("room again"))


@pytest.mark.anyio
async def test_full_buffer_makes_the_submitter_wait_until_there_is_room(embedder):
    config = StreamingConfig(buffer_size=4, batch_size=2, max_latency_ms=0, overflow="wait")
    embedder.hold.clear()
    results = Results()
    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            await _fill_buffer(stream, tasks, results, 4)
            tasks.start_soon(results.submit, stream, "waits for room")
            with anyio.fail_after(GATE_TIMEOUT_S):
                while (await stream.get_stats()).buffer_overflows == 0:
                    await anyio.sleep(0.001)
            assert stream.queue_depth == 4 and "waits for room" not in results.values
            embedder.hold.set()
        stats = await stream.get_stats()
    assert stats.buffer_overflows == 1 and stats.rejected == 0 and stats.completed == 5
    for text in [f"queued {i}" for i in range(4)] + ["waits for room"]:
        assert_same_embedding(results.values[text], embedder.reference(text))


# -- cancellation, timeouts, errors ---------------------------------------------------------------


@pytest.mark.anyio
async def test_cancelled_queued_request_leaves_the_buffer_and_never_computes(embedder):
    config = StreamingConfig(batch_size=2, max_latency_ms=0)
    embedder.hold.clear()
    results = Results()
    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(results.submit, stream, "running")
            await wait_for_compute(embedder)
            with anyio.CancelScope() as doomed:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(results.submit, stream, "cancelled while queued")
                    await wait_until(lambda: stream.queue_depth == 2)
                    doomed.cancel()
            tasks.start_soon(results.submit, stream, "queued after")
            await wait_until(lambda: stream.queue_depth == 2)
            embedder.hold.set()
        stats = await stream.get_stats()
    assert "cancelled while queued" not in sum(embedder.batches, [])
    assert "cancelled while queued" not in results.values
    assert stats.cancelled == 1 and stats.completed == 2 and stats.pending == 0
    for text in ("running", "queued after"):
        assert_same_embedding(results.values[text], embedder.reference(text))


@pytest.mark.anyio
async def test_cancelled_request_in_a_computing_batch_does_not_disturb_the_others(embedder):
    config = StreamingConfig(batch_size=3, max_latency_ms=60_000)  # closes only when full
    embedder.hold.clear()
    results = Results()
    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(results.submit, stream, "first")
            with anyio.CancelScope() as doomed:
                async with anyio.create_task_group() as inner:
                    await wait_until(lambda: stream.queue_depth == 1)
                    inner.start_soon(results.submit, stream, "cancelled mid-batch")
                    await wait_until(lambda: stream.queue_depth == 2)
                    tasks.start_soon(results.submit, stream, "third")
                    await wait_for_compute(embedder)
                    doomed.cancel()
            embedder.hold.set()
        stats = await stream.get_stats()
    assert embedder.batches[0] == ["first", "cancelled mid-batch", "third"]
    assert "cancelled mid-batch" not in results.values
    assert stats.cancelled == 1 and stats.completed == 2 and stats.pending == 0
    for text in ("first", "third"):
        assert_same_embedding(results.values[text], embedder.reference(text))


@pytest.mark.anyio
async def test_timed_out_request_raises_timeout_error_and_the_next_ones_still_work(embedder):
    config = StreamingConfig(max_latency_ms=0, timeout_secs=0.2)
    embedder.hold.clear()
    async with StreamingEmbedder(config, embedder) as stream:
        with pytest.raises(TimeoutError, match="timeout_secs=0.2"):
            await stream.embed_stream("stuck behind the gate")
        embedder.hold.set()
        after = await stream.embed_stream("after the timeout")
        stats = await stream.get_stats()
    assert_same_embedding(after, embedder.reference("after the timeout"))
    assert stats.timed_out == 1 and stats.completed == 1 and stats.pending == 0


@pytest.mark.anyio
async def test_an_exception_reaches_only_the_input_that_caused_it(embedder):
    """A batch whose pass raises is run again in halves: the input that fails alone gets the
    exception, its neighbours in the batch (other clients) get their embeddings (issue 19)."""
    config = StreamingConfig(batch_size=2, max_latency_ms=60_000)  # batches close when full
    embedder.fail_on = "boom"
    embedder.hold.clear()
    results = Results()
    texts = ["innocent neighbour", "boom", "next batch one", "next batch two"]
    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            for i, text in enumerate(texts):
                tasks.start_soon(results.submit, stream, text)
                await wait_until(lambda: stream.queue_depth == i + 1)
            embedder.hold.set()
        stats = await stream.get_stats()
    # The failing pass, then each half alone, then the next batch.
    assert embedder.batches == [texts[:2], [texts[0]], [texts[1]], texts[2:]]
    error = results.values["boom"]
    assert isinstance(error, ValueError) and "boom: a batch of 1" in str(error)
    for text in ("innocent neighbour", *texts[2:]):
        assert_same_embedding(results.values[text], embedder.reference(text))
    assert stats.failed == 1 and stats.completed == 3


@pytest.mark.anyio
async def test_a_text_that_is_not_unicode_is_refused_before_it_joins_a_batch(embedder):
    """A lone surrogate (valid JSON: "\\udc00") would make the tokenizer fail the whole batch;
    it is refused when submitted, naming the item and the position."""
    config = StreamingConfig(batch_size=4, max_latency_ms=20)
    async with StreamingEmbedder(config, embedder) as stream:
        with pytest.raises(ValueError, match=r"item 1 holds a lone surrogate U\+DC00 at position 2"):
            await stream.embed_many(["fine", "ab\udc00c"])
        with pytest.raises(ValueError, match="text holds a lone surrogate"):
            async for _ in stream.embed_chunks_stream("x" * 10 + "\ud800"):
                pass
        vector = await stream.embed_stream("still serving")
    assert_same_embedding(vector, embedder.reference("still serving"))
    assert all("\udc00" not in t for batch in embedder.batches for t in batch)


@pytest.mark.anyio
async def test_leaving_the_context_finishes_admitted_requests_then_refuses_new_ones(embedder):
    results = Results()
    stream = StreamingEmbedder(StreamingConfig(max_latency_ms=60_000, batch_size=64), embedder)
    async with anyio.create_task_group() as tasks:
        async with stream:
            for i in range(3):
                tasks.start_soon(results.submit, stream, f"in flight {i}")
            await wait_until(lambda: stream.queue_depth == 3)
        # The context closed without waiting for the 60 s deadline: it flushed the queue.
    for i in range(3):
        assert_same_embedding(results.values[f"in flight {i}"],
                              embedder.reference(f"in flight {i}"))
    with pytest.raises(StreamingClosedError):
        await stream.embed_stream("too late")


@pytest.mark.anyio
async def test_invalid_inputs_are_refused_before_they_reach_a_batch(embedder):
    async with StreamingEmbedder(StreamingConfig(max_latency_ms=0), embedder) as stream:
        with pytest.raises(TypeError, match="text must be a str"):
            await stream.embed_stream(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="item 1"):
            await stream.embed_many(["fine", 3.5])  # type: ignore[list-item]
        empty = await stream.embed_many([])
    assert empty.shape == (0, embedder.dimensions)
    assert embedder.batches == []


@pytest.mark.anyio
async def test_token_id_inputs_are_checked_token_by_token(minilm):
    vocab = minilm.tokenizer.vocab_size
    good = minilm.tokenizer.encode(["a token-id input"])[0]
    async with StreamingEmbedder(StreamingConfig(max_latency_ms=0), minilm) as stream:
        for bad, error, message in (
            ([101, True, 102], TypeError, r"item 1 holds True; token ids must be ints"),
            ([101, 7.0, 102], TypeError, r"item 1 holds 7.0"),
            ([101, -1, 102], ValueError, rf"item 1 holds token id -1, outside \[0, {vocab}\)"),
            ([101, vocab, 102], ValueError, rf"token id {vocab}, outside"),
            ([], ValueError, r"item 1 is an empty token list"),
        ):
            with pytest.raises(error, match=message):
                await stream.embed_many([good, bad])
        # numpy integers take the slow path of the check and are accepted.
        vectors = await stream.embed_many([good, np.asarray(good, dtype=np.int32),
                                           [np.int64(t) for t in good]])
        stats = await stream.get_stats()
    reference = minilm.embed_tokens([good])[0]
    for vector in vectors:
        assert_same_embedding(vector, reference)
    assert stats.total_requests == 3 and stats.completed == 3


@pytest.mark.anyio
async def test_timeout_also_bounds_the_wait_for_room_in_the_buffer(embedder):
    # One batch of two, held in the compute: a computing batch keeps its buffer slots (even
    # after its callers time out) until it returns.
    config = StreamingConfig(buffer_size=2, batch_size=2, max_latency_ms=60_000,
                             overflow="wait", timeout_secs=0.2)
    embedder.hold.clear()
    results = Results()
    async with StreamingEmbedder(config, embedder) as stream:
        async with anyio.create_task_group() as tasks:
            await _fill_buffer(stream, tasks, results, 2)
            await wait_for_compute(embedder)
            with pytest.raises(TimeoutError, match="timeout_secs=0.2"):
                await stream.embed_stream("never admitted")
            assert stream.queue_depth == 2  # the held batch; nothing leaked from the third
            embedder.hold.set()
    stats = await stream.get_stats()  # after the held batch has returned
    # The two held requests also passed their deadline while the test waited for the third.
    assert embedder.batches == [["queued 0", "queued 1"]]
    assert all(isinstance(results.values[f"queued {i}"], TimeoutError) for i in range(2))
    assert stats.timed_out == 3 and stats.buffer_overflows == 1 and stats.pending == 0


@pytest.mark.anyio
async def test_an_observer_that_raises_loses_no_answer(embedder):
    reports = []

    def observer(report):
        reports.append(report)
        raise RuntimeError("a broken metrics hook")

    async with StreamingEmbedder(StreamingConfig(max_latency_ms=0), embedder,
                                 on_batch=observer) as stream:
        first = await stream.embed_stream("first")
        second = await stream.embed_stream("second")
    assert len(reports) == 2 and all(r.error is None for r in reports)
    assert_same_embedding(first, embedder.reference("first"))
    assert_same_embedding(second, embedder.reference("second"))


# -- statistics ----------------------------------------------------------------------------------


def test_stats_percentiles_come_from_the_recorded_latencies():
    recorder = StatsRecorder()
    recorder.first_submission = 0.0
    latencies = [(i + 1) / 1e3 for i in range(100)]  # 1..100 ms, shuffled
    random.Random(7).shuffle(latencies)
    for latency in latencies:
        recorder.record_latency(latency)
    stats = recorder.snapshot(now=10.0, pending=0)
    assert stats.p50_latency_ms == pytest.approx(50.5)
    assert stats.p99_latency_ms == pytest.approx(99.01)
    assert stats.peak_latency_ms == pytest.approx(100.0)
    assert stats.average_latency_ms == pytest.approx(50.5)
    assert stats.throughput_per_sec == pytest.approx(10.0)


@pytest.mark.anyio
async def test_stats_describe_the_requests_served(embedder):
    async with StreamingEmbedder(StreamingConfig(max_latency_ms=5), embedder) as stream:
        empty = await stream.get_stats()
        async with anyio.create_task_group() as tasks:
            for i in range(12):
                tasks.start_soon(stream.embed_stream, f"stat {i}")
        stats = await stream.get_stats()
    assert empty.completed == 0 and empty.p99_latency_ms == 0.0
    assert stats.total_requests == stats.completed == 12
    assert 0 < stats.p50_latency_ms <= stats.p99_latency_ms <= stats.peak_latency_ms
    assert stats.throughput_per_sec > 0 and stats.batches >= 2  # batch_size 8 < 12


# -- chunking --------------------------------------------------------------------------------------

TRICKY = [
    "e\u0301",  # e + combining acute
    "\U0001F468\u200d\U0001F469\u200d\U0001F467",  # family ZWJ sequence
    "\U0001F44D\U0001F3FD",  # thumbs up, medium skin tone
    "\U0001F1EB\U0001F1F7",  # flag of France
    "\u2764\ufe0f",  # heart with variation selector
    "\r\n",
    "\u0915\u094d\u0937",  # Devanagari conjunct with virama
    "\u00e9", "\u4e2d\u6587", "a", " ", "\t",
]


def _random_text(rng: random.Random, length: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "épée", "naïve", "日本語", "résumé"]
    parts = []
    while sum(map(len, parts)) < length:
        parts.append(rng.choice(TRICKY) if rng.random() < 0.4 else rng.choice(words))
        if rng.random() < 0.5:
            parts.append(" ")
    return "".join(parts)


def test_is_safe_boundary_keeps_multi_code_point_characters_whole():
    assert not is_safe_boundary("e\u0301", 1)
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    assert [is_safe_boundary(family, i) for i in range(1, len(family))] == [False] * 4
    flags = "\U0001F1EB\U0001F1F7\U0001F1E9\U0001F1EA"
    assert [is_safe_boundary(flags, i) for i in range(5)] == [True, False, True, False, True]
    assert not is_safe_boundary("\U0001F44D\U0001F3FD", 1)
    assert not is_safe_boundary("a\r\nb", 2)
    assert is_safe_boundary("ab", 1) and is_safe_boundary("", 0)


@pytest.mark.parametrize("seed", range(6))
def test_character_chunks_cover_the_text_without_splitting_characters(seed):
    rng = random.Random(seed)
    text = _random_text(rng, rng.randint(50, 400))
    size = rng.randint(12, 60)
    overlap = rng.randint(0, size // 2)
    print(f"seed={seed} size={size} overlap={overlap} text={text!r}")
    spans = chunk_text(text, size, overlap)
    assert spans[0].start == 0 and spans[-1].end == len(text)
    for previous, span in zip(spans, spans[1:]):
        assert previous.start < span.start <= previous.end
    for span in spans:
        assert 0 < span.end - span.start <= size
        assert is_safe_boundary(text, span.start) and is_safe_boundary(text, span.end)
        piece = text[span.start:span.end]
        assert piece.encode("utf-8").decode("utf-8") == piece
        assert unicodedata.category(piece[0]) not in ("Mn", "Mc", "Me")
    # Stitching the non-overlapping parts gives back the text.
    stitched = "".join(text[s.start:(n.start if n else s.end)]
                       for s, n in zip(spans, spans[1:] + [None]))
    assert stitched == text


def test_character_chunks_end_after_whitespace_and_overlap_on_word_starts():
    text = " ".join(f"word{i:03d}" for i in range(80))  # 8-character words
    spans = chunk_text(text, 50, 12)
    for span in spans[:-1]:
        assert text[span.end - 1] == " ", text[span.start:span.end]
    for span in spans[1:]:
        assert text[span.start - 1] == " " and text[span.start] == "w"
    assert all(previous.end - span.start >= 1 for previous, span in zip(spans, spans[1:]))
    assert chunk_text("", 10, 2) == [] and len(chunk_text("short", 10, 2)) == 1


@pytest.mark.anyio
async def test_embed_chunks_stream_yields_chunks_in_order_with_their_embeddings(embedder):
    text = "The tide came in slowly. " * 12 + "Gulls \U0001F426 circled the harbour, naïvely."
    config = StreamingConfig(chunk_size=64, chunk_overlap=16, batch_size=4, max_latency_ms=5)
    async with StreamingEmbedder(config, embedder) as stream:
        chunks = [chunk async for chunk in stream.embed_chunks_stream(text)]
    expected = chunk_text(text, 64, 16)
    assert [(c.start, c.end) for c in chunks] == [(s.start, s.end) for s in expected]
    assert [c.index for c in chunks] == list(range(len(expected)))
    for chunk in chunks:
        assert chunk.text == text[chunk.start:chunk.end]
        assert_same_embedding(chunk.embedding, embedder.reference(chunk.text))


@pytest.mark.anyio
async def test_token_chunks_respect_the_token_budget_and_embed_their_text(minilm):
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 30)  # 270 content tokens
    content_ids = minilm.tokenizer.encode([text])[0][1:-1]
    async with StreamingEmbedder(StreamingConfig(max_latency_ms=5), minilm) as stream:
        chunks = [c async for c in stream.embed_chunks_stream(
            text, unit="tokens", chunk_size=100, chunk_overlap=20)]
        whole = [c async for c in stream.embed_chunks_stream("a short text", unit="tokens")]
    assert len(content_ids) == 270
    assert len(chunks) == 4  # windows start at 0, 80, 160, 240
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for chunk in chunks:
        ids = minilm.tokenizer.encode([chunk.text])[0]
        assert len(ids) - 2 <= 100  # the chunk's text re-tokenizes within the budget
        # Chunks cut at whole words here, so the chunk's text embeds to the same vector.
        assert_same_embedding(chunk.embedding, minilm.encode(chunk.text))
    assert len(whole) == 1 and whole[0].text == "a short text"
    assert_same_embedding(whole[0].embedding, minilm.encode("a short text"))


# -- aggregator ----------------------------------------------------------------------------------


def test_aggregator_is_the_renormalized_weighted_mean():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((5, 16)).astype(np.float32)
    weights = [1.0, 2.0, 0.5, 3.0, 0.0]
    aggregator = StreamingAggregator()
    for vector, weight in zip(vectors, weights):
        aggregator.add(vector, weight=weight)
    expected = (np.asarray(weights)[:, None] * vectors).sum(0) / sum(weights)
    expected /= np.linalg.norm(expected)
    result = aggregator.aggregate()
    assert result.dtype == np.float32 and result.shape == (16,)
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)
    unweighted = StreamingAggregator()
    for vector in vectors:
        unweighted.add(vector)
    mean = vectors.mean(0)
    np.testing.assert_allclose(unweighted.aggregate(), mean / np.linalg.norm(mean), atol=1e-6)


def test_aggregator_refuses_what_has_no_mean():
    aggregator = StreamingAggregator()
    with pytest.raises(ValueError, match="at least one"):
        aggregator.aggregate()
    aggregator.add(np.ones(4), weight=0)
    with pytest.raises(ValueError, match="every weight is zero"):
        aggregator.aggregate()
    with pytest.raises(ValueError, match="earlier ones had 4"):
        aggregator.add(np.ones(3))
    with pytest.raises(ValueError, match="weight"):
        aggregator.add(np.ones(4), weight=-1)


# -- WebSocket protocol ----------------------------------------------------------------------------


class FakeSocket:
    """Both ends of an in-memory connection for WebSocketHandler.serve."""

    def __init__(self) -> None:
        self.to_server_send, self.to_server = anyio.create_memory_object_stream(100)
        self.to_client, self.from_server = anyio.create_memory_object_stream(100)

    async def receive_text(self) -> str | None:
        try:
            return await self.to_server.receive()
        except anyio.EndOfStream:
            return None

    async def send(self, message) -> None:
        await self.to_server_send.send(message if isinstance(message, str) else json.dumps(message))

    async def receive(self) -> dict:
        with anyio.fail_after(GATE_TIMEOUT_S):
            return json.loads(await self.from_server.receive())

    async def aclose(self) -> None:
        for stream in (self.to_server_send, self.to_server, self.to_client, self.from_server):
            await stream.aclose()


@pytest.mark.anyio
async def test_websocket_protocol_round_trip(embedder):
    socket = FakeSocket()
    config = StreamingConfig(max_latency_ms=5, chunk_size=40, chunk_overlap=8)
    long_text = "waves fold over the rocks and pull back " * 4
    async with StreamingEmbedder(config, embedder) as stream:
        handler = WebSocketHandler(stream)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(handler.serve, socket.receive_text, socket.to_client.send)

            await socket.send({"type": "embed", "id": 1, "input": "hello there"})
            answer = await socket.receive()
            assert answer["type"] == "embedding" and answer["id"] == 1
            assert_same_embedding(np.asarray(answer["embedding"], np.float32),
                                  embedder.reference("hello there"))

            await socket.send({"type": "embed", "id": "two", "input": ["a", "b"]})
            answer = await socket.receive()
            assert answer["id"] == "two" and len(answer["embeddings"]) == 2

            await socket.send("{not json")
            error = await socket.receive()
            assert error["type"] == "error" and error["id"] is None
            assert error["error"]["code"] == "invalid_json"
            await socket.send({"type": "embed", "id": 3, "input": 42})
            error = await socket.receive()
            assert error["id"] == 3 and error["error"]["code"] == "invalid_message"
            await socket.send({"type": "teleport", "id": 4})
            assert (await socket.receive())["error"]["code"] == "invalid_message"
            await socket.send({"type": "embed", "input": "no id"})
            assert (await socket.receive())["error"]["code"] == "invalid_message"

            # The connection survived the errors: chunks stream in order, then done.
            await socket.send({"type": "embed_chunks", "id": 5, "input": long_text,
                               "aggregate": True})
            expected = chunk_text(long_text, 40, 8)
            chunk_messages = [await socket.receive() for _ in expected]
            done = await socket.receive()
            assert [m["type"] for m in chunk_messages] == ["chunk"] * len(expected)
            assert [m["index"] for m in chunk_messages] == list(range(len(expected)))
            assert [(m["start"], m["end"]) for m in chunk_messages] == [
                (s.start, s.end) for s in expected]
            assert done == {**done, "type": "done", "id": 5, "chunks": len(expected)}
            aggregator = StreamingAggregator()
            for m in chunk_messages:
                aggregator.add(np.asarray(m["embedding"]), weight=m["end"] - m["start"])
            np.testing.assert_allclose(done["embedding"], aggregator.aggregate(), atol=1e-6)

            await socket.send({"type": "stats", "id": 6})
            stats = await socket.receive()
            assert stats["type"] == "stats" and stats["id"] == 6
            assert stats["stats"]["completed"] == 3 + len(expected)

            await socket.to_server_send.aclose()  # the peer closes: serve() returns
    await socket.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("unit, size, overlap", [("chars", 120, 20), ("tokens", 24, 4)])
async def test_late_chunking_pools_one_pass_over_the_whole_text(minilm, unit, size, overlap):
    """late_chunking=True: the same chunks as without it, each vector the one
    Embedder.encode_chunks gives for the chunk's span (the document read at once), not the
    chunk's text embedded alone; the buffer is free again afterwards."""
    text = " ".join(json.loads((Path(__file__).parent / "fixtures" / "texts.json").read_text(
        encoding="utf-8"))[:12])
    config = StreamingConfig(chunk_size=size, chunk_overlap=overlap, batch_size=4,
                             max_latency_ms=5)
    async with StreamingEmbedder(config, minilm) as stream:
        late = [c async for c in stream.embed_chunks_stream(text, unit=unit, late_chunking=True)]
        alone = [c async for c in stream.embed_chunks_stream(text, unit=unit)]
        assert stream.queue_depth == 0
        stats = await stream.get_stats()
    assert [(c.start, c.end) for c in late] == [(c.start, c.end) for c in alone]
    assert len(late) > 3 and stats.completed == stats.total_requests
    expected = minilm.encode_chunks(text, spans=[(c.start, c.end) for c in late])
    for got, want, single in zip(late, expected, alone):
        np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-6)
        assert float(got.embedding @ single.embedding) < 0.9999  # context changed it


@pytest.mark.anyio
async def test_late_chunking_needs_an_embedder_with_token_states():
    async with StreamingEmbedder(StreamingConfig(), InstrumentedEmbedder()) as stream:
        with pytest.raises(TypeError, match="late_chunking needs a sutra.Embedder"):
            [c async for c in stream.embed_chunks_stream("some text", late_chunking=True)]
        with pytest.raises(TypeError, match="late_chunking must be a bool, got str"):
            [c async for c in stream.embed_chunks_stream("some text", late_chunking="yes")]
