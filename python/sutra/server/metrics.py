"""Prometheus metrics of the server, on a registry of its own (one per app, so several apps in
one process, as in tests, do not collide in the global registry)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
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

    def observe_batch(self, report: BatchReport) -> None:
        self.batch_size.observe(report.size)
        self.batch_duration.observe(report.compute_seconds)
        if report.error is not None:
            self.batch_errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
