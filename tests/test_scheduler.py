"""The C++ device pool (sutra._core.DevicePool) on CPU workers written in Python.

The test engines compute real rows from their input (row = f(the sequence's ids), so a row in
the wrong place shows) and are steered with threading events: they block, fail, hang or recover
when a test says so. Waits carry generous upper bounds only; no test sleeps to order events.
"""

from __future__ import annotations

import concurrent.futures
import gc
import threading
import time
import weakref

import numpy as np
import pytest
from sutra import _core

DIM = 4
WAIT = 10.0  # upper bound on any wait; a correct run takes milliseconds


def rows_of(ids: np.ndarray, cu_seqlens: np.ndarray) -> np.ndarray:
    """float32 [B, DIM]: length, sum, position-weighted sum and first id of each sequence."""
    out = np.empty((len(cu_seqlens) - 1, DIM), np.float32)
    for b in range(len(cu_seqlens) - 1):
        seq = ids[cu_seqlens[b] : cu_seqlens[b + 1]].astype(np.float64)
        weights = np.arange(1, len(seq) + 1)
        out[b] = [len(seq), seq.sum(), (seq * weights).sum(), seq[0] if len(seq) else -1]
    return out


def make_batch(rng: np.random.Generator, sequences: int, longest: int = 12):
    lengths = rng.integers(1, longest + 1, size=sequences)
    cu = np.zeros(sequences + 1, np.int32)
    cu[1:] = np.cumsum(lengths)
    ids = rng.integers(1, 1000, size=int(cu[-1])).astype(np.int32)
    return ids, cu


def one_token_each(first: int, count: int):
    """`count` one-token sequences with ids first, first + 1, ...: each job is one sequence."""
    ids = np.arange(first, first + count, dtype=np.int32)
    return ids, np.arange(count + 1, dtype=np.int32)


class Engine:
    """A CPU engine: records what it saw; `hook(call)` runs before each call and may block or
    raise; `probe_hook()` likewise for probes."""

    def __init__(self, work: int = 0):
        self.lock = threading.Lock()
        self.calls = 0
        self.seen: list[np.ndarray] = []  # ids of each completed call
        self.hook = None
        self.probe_hook = None
        self.probes = 0
        self.probed = threading.Event()
        self.work = work  # extra real work per token (numpy loops that release the GIL)

    def encode(self, ids: np.ndarray, cu_seqlens: np.ndarray) -> np.ndarray:
        with self.lock:
            call = self.calls
            self.calls += 1
        if self.hook is not None:
            self.hook(call)
        if self.work:
            x = np.arange(100_000, dtype=np.float64)
            for _ in range(self.work * len(ids)):
                x = np.sqrt(x + 1.0)
        rows = rows_of(ids, cu_seqlens)
        with self.lock:
            self.seen.append(ids.copy())
        return rows

    def probe(self) -> None:
        with self.lock:
            self.probes += 1
        if self.probe_hook is not None:
            self.probe_hook()
        self.probed.set()

    def worker(self, device: int) -> _core.PoolWorker:
        return _core.PoolWorker.python(device, self.encode, DIM, self.probe)

    def seen_ids(self) -> list[int]:
        with self.lock:
            return sorted(int(i) for ids in self.seen for i in ids)


def make_pool(engines: list[Engine], **options) -> _core.DevicePool:
    return _core.DevicePool([e.worker(d) for d, e in enumerate(engines)], **options)


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def blocking_hook(release: threading.Event, started: threading.Event | None = None):
    def hook(call: int) -> None:
        if started is not None:
            started.set()
        assert release.wait(WAIT)

    return hook


def test_results_equal_a_direct_call_in_order_from_several_threads():
    engines = [Engine() for _ in range(3)]
    rng = np.random.default_rng(0)
    batches = [make_batch(rng, int(rng.integers(1, 20))) for _ in range(48)]
    budgets = [int(rng.integers(0, 30)) if i % 2 else 0 for i in range(len(batches))]
    with make_pool(engines, strategy="least_loaded") as pool:
        assert pool.num_workers == 3 and pool.strategy == "least_loaded" and pool.output_dim == DIM
        futures: dict[int, _core.PoolFuture] = {}

        def submit(start: int) -> None:
            for i in range(start, len(batches), 4):
                ids, cu = batches[i]
                futures[i] = pool.submit(ids, cu, max_job_tokens=budgets[i])

        threads = [threading.Thread(target=submit, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        for i, (ids, cu) in enumerate(batches):
            got = futures[i].result(timeout=WAIT)
            assert got.dtype == np.float32 and got.shape == (len(cu) - 1, DIM)
            np.testing.assert_array_equal(got, rows_of(ids, cu))
            assert futures[i].result() is got  # the same array each call
        stats = pool.stats()
    total_tokens = sum(len(ids) for ids, _ in batches)
    assert stats["requests"] == len(batches)
    assert stats["embeddings"] == sum(len(cu) - 1 for _, cu in batches)
    assert stats["tokens"] == total_tokens == sum(d["tokens"] for d in stats["devices"])
    assert stats["retries"] == 0 and stats["failures"] == 0
    assert 0 < stats["latency_p50_s"] <= stats["latency_p99_s"]
    assert stats["latency_mean_s"] > 0 and stats["throughput_per_s"] > 0 and stats["wall_s"] > 0
    for d in stats["devices"]:
        assert 0 <= d["busy_fraction"] <= 1
        assert d["healthy"] and d["queued_jobs"] == 0 and d["queued_tokens"] == 0
        assert d["batches"] == len(engines[d["device"]].seen)
        if d["tokens"]:
            assert d["seconds_per_token"] > 0


def test_round_robin_alternates():
    engines = [Engine() for _ in range(3)]
    with make_pool(engines, strategy="round_robin") as pool:
        ids, cu = one_token_each(0, 9)
        np.testing.assert_array_equal(pool.submit(ids, cu, max_job_tokens=1).result(WAIT), rows_of(ids, cu))
    assert [e.seen_ids() for e in engines] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_least_loaded_counts_tokens_not_jobs():
    engines = [Engine(), Engine()]
    release = threading.Event()
    for e in engines:
        e.hook = blocking_hook(release)
    with make_pool(engines, strategy="least_loaded") as pool:
        long_ids = np.full(50, 7, np.int32)
        big = pool.submit(long_ids, np.array([0, 50], np.int32))  # both idle: worker 0
        ids, cu = one_token_each(100, 4)
        small = pool.submit(ids, cu, max_job_tokens=1)  # 1, 2, 3, 4 tokens < 50: all worker 1
        one = pool.submit(np.array([500], np.int32), np.array([0, 1], np.int32))
        stats = pool.stats()["devices"]
        # Worker 1 holds five jobs of one token (one may be running), worker 0 one of 50.
        assert stats[1]["queued_jobs"] >= 4 > stats[0]["queued_jobs"]
        release.set()
        for f in (big, small, one):
            f.result(WAIT)
    assert engines[0].seen_ids() == [7] * 50
    assert engines[1].seen_ids() == [100, 101, 102, 103, 500]


def test_performance_based_sends_less_to_a_slower_worker():
    slow, fast = Engine(work=20), Engine()
    with make_pool([slow, fast], strategy="performance_based") as pool:
        ids, cu = one_token_each(1, 4)
        # One after the other: the untried workers are measured first, then the faster wins.
        for _ in range(12):
            np.testing.assert_array_equal(pool.submit(ids, cu).result(WAIT), rows_of(ids, cu))
        assert len(slow.seen) == 1 and len(fast.seen) == 11
        # A burst: queued tokens push some work to the slow worker, but less of it.
        burst = [pool.submit(ids, cu) for _ in range(40)]
        for f in burst:
            np.testing.assert_array_equal(f.result(WAIT), rows_of(ids, cu))
        stats = pool.stats()["devices"]
    assert stats[0]["batches"] < stats[1]["batches"]
    assert stats[0]["seconds_per_token"] > stats[1]["seconds_per_token"]


def random_assignment(seed: int) -> list[list[int]]:
    engines = [Engine() for _ in range(3)]
    with make_pool(engines, strategy="random", seed=seed) as pool:
        ids, cu = one_token_each(0, 60)
        np.testing.assert_array_equal(pool.submit(ids, cu, max_job_tokens=1).result(WAIT), rows_of(ids, cu))
    return [e.seen_ids() for e in engines]


def test_random_is_reproducible_with_a_seed_and_uses_every_worker():
    first = random_assignment(7)
    assert random_assignment(7) == first
    assert all(first) and sorted(i for ids in first for i in ids) == list(range(60))
    assert random_assignment(8) != first


def test_split_by_token_budget_and_merged_in_order():
    engine = Engine()
    lengths = [3, 4, 2, 11, 1, 5, 5, 9]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = np.arange(1, cu[-1] + 1, dtype=np.int32)
    with make_pool([engine]) as pool:
        np.testing.assert_array_equal(pool.submit(ids, cu, max_job_tokens=10).result(WAIT), rows_of(ids, cu))
        # Greedy whole sequences: [3, 4, 2] [11 alone, over budget] [1, 5] [5] [9].
        assert [len(s) for s in engine.seen] == [9, 11, 6, 5, 9]
        np.testing.assert_array_equal(pool.submit(ids, cu).result(WAIT), rows_of(ids, cu))
        assert len(engine.seen[-1]) == cu[-1]  # 0: one job
        empty = pool.submit(np.zeros(0, np.int32), np.zeros(1, np.int32)).result(WAIT)
        assert empty.shape == (0, DIM)
        # A bound on sequences (a caller's batch_size), alone and with the token budget.
        np.testing.assert_array_equal(pool.submit(ids, cu, max_job_sequences=3).result(WAIT),
                                      rows_of(ids, cu))
        assert [len(s) for s in engine.seen[-3:]] == [9, 17, 14]  # [3, 4, 2] [11, 1, 5] [5, 9]
        np.testing.assert_array_equal(
            pool.submit(ids, cu, max_job_tokens=10, max_job_sequences=2).result(WAIT),
            rows_of(ids, cu))
        assert [len(s) for s in engine.seen[-6:]] == [7, 2, 11, 6, 5, 9]
        with pytest.raises(ValueError, match="max_job_sequences must be >= 0"):
            pool.submit(ids, cu, max_job_sequences=-1)


def test_backpressure_blocks_the_submitter_until_a_job_is_taken():
    engine = Engine()
    release, started = threading.Event(), threading.Event()
    engine.hook = blocking_hook(release, started)
    with make_pool([engine], queue_capacity=1) as pool:
        ids, cu = one_token_each(1, 1)
        running = pool.submit(ids, cu)
        assert started.wait(WAIT)
        queued = pool.submit(ids, cu)  # the one queue slot
        submitted = threading.Event()
        third: list[_core.PoolFuture] = []

        def submit() -> None:
            third.append(pool.submit(ids, cu))
            submitted.set()

        thread = threading.Thread(target=submit)
        thread.start()
        # A negative check needs some wait; the positive one below is bounded by WAIT.
        assert not submitted.wait(0.2), "submit returned although the queue was full"
        assert pool.stats()["devices"][0]["queued_jobs"] == 1
        release.set()
        assert submitted.wait(WAIT)
        thread.join(WAIT)
        for f in (running, queued, third[0]):
            np.testing.assert_array_equal(f.result(WAIT), rows_of(ids, cu))


def test_a_failed_batch_is_retried_elsewhere_and_the_worker_readmitted():
    flaky, steady = Engine(), Engine()
    recover = threading.Event()

    def fail_second_call(call: int) -> None:
        if call == 1:
            raise RuntimeError("injected failure on the second batch")

    flaky.hook = fail_second_call
    flaky.probe_hook = lambda: recover.wait(WAIT)
    rng = np.random.default_rng(1)
    batches = [make_batch(rng, 3) for _ in range(6)]
    with make_pool([flaky, steady], strategy="round_robin", health_check_interval=0.01) as pool:
        # Sequentially, so that round robin sends requests 0, 2, 4 to the flaky worker.
        results = [pool.submit(ids, cu).result(WAIT) for ids, cu in batches[:3]]
        for (ids, cu), got in zip(batches, results):
            np.testing.assert_array_equal(got, rows_of(ids, cu))
        stats = pool.stats()
        assert stats["retries"] == 1 and stats["failures"] == 0
        assert not stats["devices"][0]["healthy"] and stats["devices"][0]["failures"] == 1
        assert flaky.probed.wait(0) is False  # the probe is held until `recover`
        recover.set()
        assert flaky.probed.wait(WAIT)
        wait_until(lambda: pool.stats()["devices"][0]["healthy"], "re-admission after the probe")
        for ids, cu in batches[3:]:
            np.testing.assert_array_equal(pool.submit(ids, cu).result(WAIT), rows_of(ids, cu))
        stats = pool.stats()
    # Requests 0, 3 and 5 ran there; request 2 failed there and ran on the steady worker.
    assert len(flaky.seen) == 3 and flaky.calls == 4
    assert stats["requests"] == 6
    assert stats["tokens"] == sum(d["tokens"] for d in stats["devices"])


def always_failing(name: str):
    def hook(call: int) -> None:
        raise ValueError(f"{name} is broken")

    return hook


def test_retries_exhausted_name_the_devices_and_the_error():
    engines = [Engine(), Engine(), Engine()]
    engines[0].hook = always_failing("engine 0")
    engines[1].hook = always_failing("engine 1")
    engines[0].probe_hook = engines[1].probe_hook = always_failing("probe")
    with make_pool(engines, strategy="round_robin", max_retries=1, health_check_interval=0.01) as pool:
        ids, cu = one_token_each(1, 2)
        future = pool.submit(ids, cu)
        with pytest.raises(_core.SutraError, match=r"failed 2 times \(max_retries=1\) on devices 0 and 1"
                           r".*device 1: ValueError: engine 1 is broken"):
            future.result(WAIT)
        error = future.exception(WAIT)
        assert isinstance(error, _core.SutraError) and "engine 1 is broken" in str(error)
        # The healthy third worker still serves.
        np.testing.assert_array_equal(pool.submit(ids, cu).result(WAIT), rows_of(ids, cu))
        stats = pool.stats()
    assert stats["failures"] == 1 and stats["retries"] == 1 and stats["requests"] == 1


def test_no_healthy_worker_is_a_clear_error_not_a_hang():
    engine = Engine()
    engine.hook = always_failing("the only engine")
    engine.probe_hook = always_failing("its probe")
    with make_pool([engine], health_check_interval=0.01) as pool:
        ids, cu = one_token_each(1, 3)
        future = pool.submit(ids, cu)
        with pytest.raises(_core.SutraError, match="no healthy device.*the only engine is broken"):
            future.result(WAIT)
        with pytest.raises(_core.SutraError, match="no healthy device"):
            pool.submit(ids, cu)
        assert pool.stats()["failures"] == 1


def test_a_hung_job_is_retried_after_the_timeout_and_its_late_result_discarded():
    hanging, steady = Engine(), Engine()
    unhang, hung = threading.Event(), threading.Event()

    def hang_first(call: int) -> None:
        if call == 0:
            hung.set()
            assert unhang.wait(WAIT)

    def return_after_the_late_call(call: int) -> None:
        # The retry finishes only after the hung call has returned and been dealt with (its
        # worker probes only then), so a late result that were kept would be seen first.
        unhang.set()
        assert hanging.probed.wait(WAIT)

    hanging.hook = hang_first
    steady.hook = return_after_the_late_call
    pool = make_pool([hanging, steady], strategy="round_robin", job_timeout=0.3,
                     health_check_interval=0.01)
    ids, cu = make_batch(np.random.default_rng(2), 5)
    np.testing.assert_array_equal(pool.submit(ids, cu).result(WAIT), rows_of(ids, cu))
    assert hung.is_set()
    stats = pool.stats()
    assert stats["retries"] == 1 and stats["devices"][1]["batches"] == 1
    pool.shutdown()
    stats = pool.stats()
    assert len(hanging.seen) == 1 and hanging.probes >= 1  # the call did finish ...
    assert stats["devices"][0]["batches"] == 0 and stats["devices"][0]["tokens"] == 0  # ... unused
    assert stats["tokens"] == len(ids) == stats["devices"][1]["tokens"]


@pytest.mark.parametrize("cancel_pending", [False, True])
def test_shutdown_under_load_completes_or_cancels_every_future(cancel_pending: bool):
    engines = [Engine(), Engine()]
    release = threading.Event()
    started = [threading.Event(), threading.Event()]
    for e, s in zip(engines, started):
        e.hook = blocking_hook(release, s)
    rng = np.random.default_rng(3)
    batches = [make_batch(rng, 4) for _ in range(20)]
    pool = make_pool(engines, strategy="round_robin")
    futures = [pool.submit(ids, cu) for ids, cu in batches]
    assert all(s.wait(WAIT) for s in started)
    stopper = threading.Thread(target=pool.shutdown, kwargs={"cancel_pending": cancel_pending})
    stopper.start()
    if cancel_pending:
        wait_until(lambda: sum(f.done() for f in futures) == 18, "the queued requests to be cancelled")
    extra: list[_core.PoolFuture] = []  # accepted before shutdown began: they must run too

    def refused() -> bool:
        try:
            extra.append(pool.submit(*batches[0]))
            return False
        except _core.SutraError as error:
            assert "shut down" in str(error)
            return True

    wait_until(refused, "submit to refuse after shutdown")
    assert not (cancel_pending and extra)
    release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert all(f.done() for f in futures)
    cancelled = 0
    for f, (ids, cu) in zip(futures, batches):
        try:
            np.testing.assert_array_equal(f.result(0), rows_of(ids, cu))
            assert f.exception(0) is None
        except concurrent.futures.CancelledError as error:
            assert "shut down before this request ran" in str(error)
            assert isinstance(f.exception(0), concurrent.futures.CancelledError)
            cancelled += 1
    assert cancelled == (18 if cancel_pending else 0)
    for f in extra:
        np.testing.assert_array_equal(f.result(0), rows_of(*batches[0]))
    assert pool.stats()["requests"] == 20 - cancelled + len(extra)
    pool.shutdown()  # again: nothing to do


def test_done_callbacks_run_exactly_once_with_the_future(capsys: pytest.CaptureFixture[str]):
    engines = [Engine(), Engine()]
    release = threading.Event()
    for e in engines:
        e.hook = blocking_hook(release)
    calls: list[tuple[int, object]] = []
    lock = threading.Lock()
    all_called = threading.Event()
    with make_pool(engines) as pool:
        ids, cu = one_token_each(1, 2)
        futures = [pool.submit(ids, cu) for _ in range(8)]

        def callback(i: int):
            def fn(future: _core.PoolFuture) -> None:
                assert future.done()
                with lock:
                    calls.append((i, future))
                    if len(calls) == len(futures):
                        all_called.set()
                raise RuntimeError("a callback's error is printed, not raised")

            return fn

        for i, f in enumerate(futures):
            f.add_done_callback(callback(i))
        release.set()
        assert all_called.wait(WAIT)
        for f in futures:
            f.result(WAIT)
        late: list[object] = []
        futures[0].add_done_callback(late.append)  # done already: called at once, here
        assert late == [futures[0]]
    assert sorted(i for i, _ in calls) == list(range(8))
    assert all(f is futures[i] for i, f in calls)
    assert "a callback's error is printed, not raised" in capsys.readouterr().err


def test_input_and_engine_output_are_checked():
    engine = Engine()
    with make_pool([engine]) as pool:
        ids, cu = one_token_each(1, 3)
        with pytest.raises(ValueError, match="ids must be a C-contiguous numpy.ndarray of dtype int32"):
            pool.submit(ids.astype(np.int64), cu)
        with pytest.raises(ValueError, match="cu_seqlens must hold at least one value"):
            pool.submit(ids, np.zeros(0, np.int32))
        with pytest.raises(ValueError, match=r"cu_seqlens\[-1\] must be the token count 3, got 2"):
            pool.submit(ids, np.array([0, 1, 2], np.int32))
        with pytest.raises(ValueError, match="cu_seqlens must be nondecreasing"):
            pool.submit(ids, np.array([0, 2, 1, 3], np.int32))
        with pytest.raises(ValueError, match="max_job_tokens must be >= 0"):
            pool.submit(ids, cu, max_job_tokens=-1)
    with pytest.raises(ValueError, match="strategy must be 'round_robin'"):
        make_pool([Engine()], strategy="fastest")
    with pytest.raises(ValueError, match="workers must be at least one worker"):
        _core.DevicePool([])
    wrong = _core.PoolWorker.python(0, lambda ids, cu: np.zeros((1, DIM + 1), np.float32), DIM)
    pool = _core.DevicePool([wrong], health_check_interval=0.01)
    with pytest.raises(_core.SutraError, match=r"encode\(\) result must be .* with shape \(3, 4\)"):
        pool.submit(ids, cu).result(WAIT)
    pool.shutdown()


def test_a_submitter_waiting_for_room_is_cancelled_by_shutdown():
    engine = Engine()
    release, started = threading.Event(), threading.Event()
    engine.hook = blocking_hook(release, started)
    pool = make_pool([engine], queue_capacity=1)
    ids, cu = one_token_each(1, 2)
    # Two jobs per request: the second waits for room once the first fills the queue.
    running = pool.submit(ids, cu)
    assert started.wait(WAIT)
    waiting: list[_core.PoolFuture] = []
    thread = threading.Thread(target=lambda: waiting.append(pool.submit(ids, cu, max_job_tokens=1)))
    thread.start()
    wait_until(lambda: pool.stats()["devices"][0]["queued_jobs"] == 1, "the first job to queue")
    stopper = threading.Thread(target=pool.shutdown, kwargs={"cancel_pending": True})
    stopper.start()
    thread.join(WAIT)
    assert waiting, "the blocked submit did not return on shutdown"
    with pytest.raises(concurrent.futures.CancelledError):
        waiting[0].result(WAIT)
    release.set()
    stopper.join(WAIT)
    np.testing.assert_array_equal(running.result(0), rows_of(ids, cu))


def test_engine_worker_needs_an_encoder():
    with pytest.raises(ValueError, match="encoder must be a GpuEncoder, got None"):
        _core.PoolWorker.engine(None)


@pytest.mark.gpu
def test_the_gpu_engine_as_a_worker_matches_a_direct_call(request):
    import json
    import os
    from pathlib import Path

    import sutra

    # A GPU machine without network points SUTRA_TEST_MINILM at all-MiniLM-L6-v2.
    folder = os.environ.get("SUTRA_TEST_MINILM") or request.getfixturevalue("efficient_folder")
    embedder = sutra.Embedder(folder, backend="cuda")
    encoder = embedder.backend.engine
    texts = json.loads((Path(__file__).parent / "fixtures" / "texts.json").read_text("utf-8"))
    sequences = [np.asarray(s[:128], np.int32) for s in embedder.tokenizer.encode(texts[:64])]
    cu = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int32)
    ids = np.concatenate(sequences)
    direct, _ = encoder.encode(ids, cu)
    # Two workers on the one device, sharing the encoder (its calls are serialized).
    workers = [_core.PoolWorker.engine(encoder), _core.PoolWorker.engine(encoder)]
    assert workers[0].device == encoder.device and workers[0].output_dim == encoder.output_dim
    with _core.DevicePool(workers) as pool:
        np.testing.assert_array_equal(pool.submit(ids, cu).result(60), direct)
        split = pool.submit(ids, cu, max_job_tokens=512).result(60)
        stats = pool.stats()
    # Other pass shapes may round differently in float16; rows are per sequence all the same.
    cosine = (split * direct).sum(1) / np.linalg.norm(split, axis=1) / np.linalg.norm(direct, axis=1)
    assert cosine.min() > 0.9999, cosine.min()
    assert stats["requests"] == 2 and stats["tokens"] == 2 * len(ids)


def test_the_last_reference_dropped_in_a_done_callback_shuts_the_pool_down():
    engine = Engine()
    release = threading.Event()
    engine.hook = blocking_hook(release)
    gone = weakref.ref(engine)
    owner = {"pool": make_pool([engine])}
    del engine
    ids, cu = one_token_each(1, 2)
    future = owner["pool"].submit(ids, cu)
    called = threading.Event()

    def drop_the_pool(f: _core.PoolFuture) -> None:
        owner.clear()  # on the worker's thread: that thread cannot join itself
        called.set()

    future.add_done_callback(drop_the_pool)
    release.set()
    assert called.wait(WAIT)
    np.testing.assert_array_equal(future.result(WAIT), rows_of(ids, cu))
    # The pool finished shutting down elsewhere and let go of its engine.
    wait_until(lambda: gc.collect() is not None and gone() is None, "the engine to be freed")
