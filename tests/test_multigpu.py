"""Several devices behind one embedder (sutra.multigpu, backends/pool.py) on CPU workers: what CI
can run. The scheduler itself (strategies, faults, retries, backpressure) is tested in
tests/test_scheduler.py; here its Python faces: ``Embedder(devices=...)``, ``MultiGPUPool``
under asyncio and trio, the configuration's checks, the statistics, ``sutra serve --devices``
and the per-device metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sutra
from sutra.backends.pool import PoolBackend

# Some fixture texts are longer than the model's 256 tokens: cut, as by the single Embedder.
pytestmark = pytest.mark.filterwarnings("ignore::sutra.LongTextTruncatedWarning")

TEXTS = json.loads((Path(__file__).parent / "fixtures" / "texts.json").read_text("utf-8"))[:120]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def single(efficient_folder) -> sutra.Embedder:
    return sutra.Embedder(efficient_folder, backend="cpu")


@pytest.fixture(scope="module")
def expected(single) -> np.ndarray:
    return single.encode(TEXTS)


@pytest.fixture(scope="module")
def pooled(efficient_folder) -> sutra.Embedder:
    # Jobs of at least MIN_JOB_TOKENS: a request this small is one job; the tests that need it
    # spread submit several requests at once.
    embedder = sutra.Embedder(efficient_folder, backend="cpu", devices=[0, 1],
                              pool_options={"strategy": "round_robin"})
    yield embedder
    embedder.backend.close()


def test_cpu_workers_give_the_single_embedders_vectors(pooled, expected):
    assert isinstance(pooled.backend, PoolBackend)
    assert pooled.backend.devices == [0, 1] and pooled.backend.worker_backend == "cpu"
    got = pooled.encode(TEXTS)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)
    stats = pooled.backend.stats()
    assert stats["embeddings"] >= len(TEXTS) and stats["requests"] >= 1
    assert len(stats["devices"]) == 2


def test_requests_from_threads_keep_their_order_and_use_both_workers(pooled, single):
    from concurrent.futures import ThreadPoolExecutor

    parts = [TEXTS[i::6] for i in range(6)]
    before = [d["batches"] for d in pooled.backend.stats()["devices"]]
    with ThreadPoolExecutor(6) as threads:
        results = list(threads.map(pooled.encode, parts))
    for part, got in zip(parts, results, strict=True):
        np.testing.assert_allclose(got, single.encode(part), rtol=1e-5, atol=2e-6)
    after = [d["batches"] for d in pooled.backend.stats()["devices"]]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


@pytest.mark.anyio
async def test_multigpu_pool_embeds_concurrently_under_anyio(efficient_folder, expected):
    import anyio

    config = sutra.MultiGPUConfig(device_ids=[0, 1],
                                  load_balancing=sutra.LoadBalancingStrategy.LEAST_LOADED)
    embedder_config = sutra.EmbedderConfig(model=efficient_folder, backend="cpu")
    results: dict[int, np.ndarray] = {}
    async with sutra.MultiGPUPool(config, embedder_config) as pool:
        assert pool.devices == [0, 1]

        async def one(index: int) -> None:
            results[index] = await pool.embed_batch_distributed(TEXTS[index::4])

        async with anyio.create_task_group() as tasks:
            for index in range(4):
                tasks.start_soon(one, index)
        stats = await pool.get_stats()
    for index in range(4):
        np.testing.assert_allclose(results[index], expected[index::4], rtol=1e-5, atol=2e-6)
    assert stats.requests == 4 and stats.embeddings == len(TEXTS)
    assert stats.tokens > stats.embeddings and 0 < stats.latency_p50_s <= stats.latency_p99_s
    assert all(0.0 <= d.busy_fraction <= 1.0 and d.healthy for d in stats.devices)
    assert sum(d.tokens for d in stats.devices) == stats.tokens
    text = str(stats)
    assert "4 requests" in text and "device" in text and text.count("\n") == 3
    with pytest.raises(RuntimeError, match="closed"):
        await pool.embed_batch_distributed(["after close"])


def test_the_strategy_reaches_the_scheduler(efficient_folder):
    for strategy in sutra.LoadBalancingStrategy:
        pool = sutra.MultiGPUPool(sutra.MultiGPUConfig(device_ids=[3], load_balancing=strategy),
                                  sutra.EmbedderConfig(model=efficient_folder, backend="cpu"))
        try:
            assert pool.embedder.backend.pool.strategy == strategy.value
            assert pool.devices == [3]  # on the cpu backend, worker ids
        finally:
            pool.close()


@pytest.mark.parametrize(("fields", "message"), [
    ({"load_balancing": "fastest"}, "load_balancing must be a LoadBalancingStrategy or one of"),
    ({"max_retries": -1}, "max_retries must be an int >= 0"),
    ({"max_concurrent_per_gpu": 0}, "max_concurrent_per_gpu must be an int >= 1"),
    ({"health_check_interval_secs": 0}, "health_check_interval_secs must be > 0"),
    ({"job_timeout_secs": -2}, "job_timeout_secs must be > 0 or None"),
    ({"retry_on_failure": "yes"}, "retry_on_failure must be True or False"),
])
def test_multigpu_config_names_the_bad_field(fields, message):
    with pytest.raises(ValueError, match=message):
        sutra.MultiGPUConfig(**fields)


def test_the_config_turns_into_the_schedulers_options():
    options = sutra.MultiGPUConfig(retry_on_failure=False, enable_health_checks=False,
                                   max_concurrent_per_gpu=2, job_timeout_secs=5.0).pool_options()
    assert options["max_retries"] == 0 and options["workers_per_device"] == 2
    assert options["health_check_interval"] >= 1e6 and options["job_timeout"] == 5.0
    assert sutra.MultiGPUConfig().devices == "all"
    assert sutra.MultiGPUConfig(device_ids=[1, 0]).devices == [1, 0]


@pytest.mark.parametrize(("devices", "message"), [
    ("some", "devices must be 'all' or a list of device indices"),
    ([], "non-empty list"),
    ([0, -1], "non-empty list of device indices"),
    ([0, True], "non-empty list of device indices"),
    ([1, 1], "lists a device twice"),
])
def test_bad_devices_are_refused_by_name(devices, message):
    with pytest.raises(ValueError, match=message):
        sutra.EmbedderConfig(devices=devices)


def test_device_and_devices_together_are_refused():
    with pytest.raises(ValueError, match="give device .* or devices"):
        sutra.EmbedderConfig(device=1, devices=[0, 1])


def test_cuda_devices_without_a_gpu_say_why(efficient_folder, monkeypatch):
    from sutra import backends

    monkeypatch.setattr(backends, "cuda_status", lambda: (False, "no CUDA GPU is visible"))
    with pytest.raises(sutra.BackendUnavailableError, match="no CUDA GPU is visible"):
        sutra.Embedder(efficient_folder, backend="cuda", devices="all")


def test_serve_and_embed_take_devices():
    from sutra.cli import _devices

    assert _devices("all") == "all" and _devices("0,2") == [0, 2]
    with pytest.raises(Exception, match="comma-separated device indices"):
        _devices("zero")


def test_metrics_export_each_devices_figures():
    from sutra.server.metrics import ServerMetrics

    metrics = ServerMetrics()
    figures = {"healthy": True, "busy_fraction": 0.25, "queued_tokens": 7, "tokens": 900,
               "seconds_per_token": 1e-6}
    metrics.track_devices(lambda: {"retries": 2, "failures": 1, "devices": [
        {"device": 0, **figures}, {"device": 1, **figures, "healthy": False}]})
    text = metrics.render().decode()
    assert 'sutra_device_busy_fraction{device="0",worker="0"} 0.25' in text
    assert 'sutra_device_healthy{device="1",worker="1"} 0.0' in text
    assert "sutra_pool_retries 2.0" in text and "sutra_pool_failures 1.0" in text


def test_batch_size_bounds_each_workers_pass(pooled, expected):
    """encode(batch_size=8) over the pool: jobs (and so passes) of at most 8 texts."""
    before = sum(d["batches"] for d in pooled.backend.stats()["devices"])
    got = pooled.encode(TEXTS, batch_size=8)
    after = sum(d["batches"] for d in pooled.backend.stats()["devices"])
    assert after - before == -(-len(TEXTS) // 8)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)


def test_one_worker_is_not_cut_by_tokens(efficient_folder, expected):
    """With one worker a request is cut only by batch_size (jobs of consecutive texts; the
    direct call groups texts by length, so float32 rounding may differ): on the GPU engine,
    whose passes are the same as a direct call's then, the vectors are the same bit for bit
    (tests/test_scheduler.py's GPU test)."""
    embedder = sutra.Embedder(efficient_folder, backend="cpu", devices=[0])
    try:
        assert embedder.backend.job_tokens(10**6) == 0
        np.testing.assert_allclose(embedder.encode(TEXTS), expected, rtol=1e-5, atol=1e-7)
    finally:
        embedder.backend.close()
