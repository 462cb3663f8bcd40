"""Prometheus metrics of the server, on a registry of its own (one per app, so several apps in
one process, as in tests, do not collide in the global registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..streaming import BatchReport

# Latency buckets from 1 ms to 10 s: interactive requests land in the low ones, overload in the
# high ones.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The server's counters, histograms and gauges.

    Metrics (all prefixed ``sutra_``): ``requests_total{endpoint,status}``,
    ``request_duration_seconds{endpoint}``, ``batch_duration_seconds`` (compute time per batch),
    ``batch_size``, ``queue_depth`` (requests admitted and not yet answered),
    ``tokens_embedded_total``, ``inputs_embedded_total``, ``ready`` (1 after the warm-up).
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("sutra_requests", "HTTP and WebSocket requests by final status",
                                ["endpoint", "status"], registry=self.registry)
        self.request_duration = Histogram(
            "sutra_request_duration_seconds", "Time from request received to response sent",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_duration = Histogram(
            "sutra_batch_duration_seconds", "Compute time of one batch in the worker thread",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram("sutra_batch_size", "Inputs per computed batch",
                                    buckets=_BATCH_SIZE_BUCKETS, registry=self.registry)
        self.batch_errors = Counter("sutra_batch_errors", "Batches whose compute raised",
                                    registry=self.registry)
        self.queue_depth = Gauge("sutra_queue_depth",
                                 "Requests admitted to the buffer and not yet answered",
                                 registry=self.registry)
        self.tokens = Counter("sutra_tokens_embedded", "Tokens of successfully embedded inputs "
                              "(special tokens included)", registry=self.registry)
        self.inputs = Counter("sutra_inputs_embedded", "Successfully embedded inputs",
                              registry=self.registry)
        self.ready = Gauge("sutra_ready", "1 once the model is loaded and warmed up",
                           registry=self.registry)

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def track_devices(self, stats: Callable[[], dict[str, Any]]) -> None:
        """Export the scheduler's per-device figures (a multi-device embedder), read from
        ``stats()`` (:meth:`sutra.backends.pool.PoolBackend.stats`) at each scrape:
        ``sutra_device_healthy``, ``sutra_device_busy_fraction``, ``sutra_device_queued_tokens``,
        ``sutra_device_tokens``, ``sutra_device_seconds_per_token``, each by ``device`` and
        ``worker``; and ``sutra_pool_retries`` / ``sutra_pool_failures``."""
        self.registry.register(_DeviceCollector(stats))

    def observe_batch(self, report: BatchReport) -> None:
        self.batch_size.observe(report.size)
        self.batch_duration.observe(report.compute_seconds)
        if report.error is not None:
            self.batch_errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DeviceCollector:
    """Per-device gauges from the scheduler's statistics, read when Prometheus scrapes."""

    _FIGURES = (("healthy", "1 while the device takes work"),
                ("busy_fraction", "Share of the wall time the worker was computing"),
                ("queued_tokens", "Tokens queued or running on the worker"),
                ("tokens", "Tokens the worker has embedded"),
                ("seconds_per_token", "Moving average of the worker's time per token"))

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list:
        return []  # collected lazily: the registry must not call stats() at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        for key, text in self._FIGURES:
            family = GaugeMetricFamily(f"sutra_device_{key}", text, labels=["device", "worker"])
            for worker, device in enumerate(stats["devices"]):
                family.add_metric([str(device["device"]), str(worker)], float(device[key]))
            yield family
        for key in ("retries", "failures"):
            yield GaugeMetricFamily(f"sutra_pool_{key}", f"Jobs {key} by the scheduler",
                                    value=float(stats[key]))
