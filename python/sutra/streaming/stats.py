"""Counters and latency percentiles of a StreamingEmbedder."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

# Percentiles come from the most recent latencies; a bounded window keeps memory constant on a
# long-running server and makes the figures describe current behaviour.
LATENCY_WINDOW = 100_000


@dataclass(frozen=True)
class StreamingStats:
    """A snapshot of a StreamingEmbedder's activity since it started.

    Requests are counted per item (``embed_many`` with 10 texts counts 10). Every admitted request
    ends as exactly one of completed, failed, cancelled or timed_out, or is still ``pending``;
    ``rejected`` requests (``overflow="reject"`` with a full buffer) were never admitted.
    Latencies (ms) are submission to answer for completed requests, admission wait included;
    ``p50``/``p99`` cover the most recent 100,000 of them, ``average`` and ``peak`` all of them;
    all are 0.0 before the first completion. ``throughput_per_sec`` is completed requests per
    second since the first submission.
    """

    total_requests: int
    completed: int
    failed: int
    cancelled: int
    timed_out: int
    rejected: int
    pending: int
    average_latency_ms: float
    p50_latency_ms: float
    p99_latency_ms: float
    peak_latency_ms: float
    throughput_per_sec: float
    buffer_overflows: int
    batches: int
    mean_batch_size: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class StatsRecorder:
    """Mutable counters behind :class:`StreamingStats`; touched only from the event loop."""

    def __init__(self) -> None:
        self.total_requests = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.timed_out = 0
        self.rejected = 0
        self.buffer_overflows = 0
        self.batches = 0
        self.batched_requests = 0
        self.latency_sum_s = 0.0
        self.peak_latency_s = 0.0
        self.first_submission: float | None = None
        self._recent = deque(maxlen=LATENCY_WINDOW)

    def record_latency(self, seconds: float) -> None:
        self.completed += 1
        self.latency_sum_s += seconds
        self.peak_latency_s = max(self.peak_latency_s, seconds)
        self._recent.append(seconds)

    def snapshot(self, now: float, pending: int) -> StreamingStats:
        recent = np.fromiter(self._recent, dtype=np.float64, count=len(self._recent))
        p50, p99 = (np.percentile(recent, [50, 99]) * 1e3).tolist() if len(recent) else (0.0, 0.0)
        elapsed = now - self.first_submission if self.first_submission is not None else 0.0
        return StreamingStats(
            total_requests=self.total_requests,
            completed=self.completed,
            failed=self.failed,
            cancelled=self.cancelled,
            timed_out=self.timed_out,
            rejected=self.rejected,
            pending=pending,
            average_latency_ms=self.latency_sum_s / self.completed * 1e3 if self.completed else 0.0,
            p50_latency_ms=float(p50),
            p99_latency_ms=float(p99),
            peak_latency_ms=self.peak_latency_s * 1e3,
            throughput_per_sec=self.completed / elapsed if elapsed > 0 else 0.0,
            buffer_overflows=self.buffer_overflows,
            batches=self.batches,
            mean_batch_size=self.batched_requests / self.batches if self.batches else 0.0,
        )
