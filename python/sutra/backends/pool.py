"""A backend over several devices: the native scheduler (:class:`sutra._core.DevicePool`) runs
one worker per device (or several), each owning its own backend from start to finish.

A GPU worker is the CUDA engine itself (:meth:`sutra._core.PoolWorker.engine`: the scheduler's
thread calls it without Python); any other backend (the CPU one, or a test's) is a worker that
calls back into Python, taking the GIL only for the call. A request's sequences are cut into jobs
by tokens, spread over the workers by the pool's strategy, retried on another device when one
fails, and merged back in input order; statistics are measured by the scheduler (:meth:`stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _core
from .base import Backend, EncodedRows, PassCallback, PassLimits, TokenBatch

STRATEGIES = ("round_robin", "least_loaded", "performance_based", "random")
# A job holds at least this many tokens (smaller ones cost more in per-call overhead than they
# gain in spreading), and a request is cut into about this many jobs per worker so that a slow
# device does not hold up the end of it.
MIN_JOB_TOKENS = 4096
JOBS_PER_WORKER = 2


def _python_worker(device: int, backend: Backend) -> Any:
    """``backend`` as a pool worker that the scheduler calls back (GIL taken for the call)."""
    limits = backend.pass_limits(None, "auto")
    probe_batch = TokenBatch.from_sequences([[0, 0]])

    def encode(ids: np.ndarray, cu_seqlens: np.ndarray) -> np.ndarray:
        # A job is cut to the caller's sequences per pass already (PoolBackend.encode_rows):
        # one pass for all of it, within the backend's token budget.
        job = PassLimits(max(1, len(cu_seqlens) - 1), limits.max_tokens, limits.pass_cost_tokens)
        return backend.encode_rows(TokenBatch(ids, cu_seqlens), job).embeddings

    def probe() -> None:
        backend.encode_rows(probe_batch, limits)

    # The width of the pipeline's output (after any Dense module), from one tiny pass.
    width = encode(probe_batch.ids, probe_batch.cu_seqlens).shape[1]
    return _core.PoolWorker.python(device, encode, int(width), probe)


class PoolBackend(Backend):
    """Runs the model on every backend of ``backends`` (one per device) through the scheduler.

    Args:
        backends: the per-device backends, all of the same model.
        devices: the device index of each backend (statistics report them).
        strategy: ``"round_robin"``, ``"least_loaded"`` (queued tokens), ``"performance_based"``
            (a moving average of each device's time per token) or ``"random"``.
        max_retries: how many other devices a failed job is tried on before it fails.
        health_check_interval: seconds between probes of an unhealthy device.
        job_timeout: seconds after which a running job counts as a failure of its device
            (``None``: never).
        queue_capacity: jobs queued at most; a request that would exceed it waits
            (backpressure).
    """

    name = "pool"

    def __init__(self, backends: Sequence[Backend], devices: Sequence[int], *,
                 strategy: str = "least_loaded", max_retries: int = 3,
                 health_check_interval: float = 30.0, job_timeout: float | None = None,
                 queue_capacity: int = 256, seed: int = 0) -> None:
        if not backends or len(backends) != len(devices):
            raise ValueError(f"a pool needs one device index per backend; got {len(backends)} "
                             f"backends and {len(devices)} devices")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}; "
                             f"got {strategy!r}")
        self.backends = list(backends)
        self.devices = list(devices)
        self.first = self.backends[0]
        workers = [_core.PoolWorker.engine(b.engine) if getattr(b, "name", "") == "cuda"
                   else _python_worker(d, b) for b, d in zip(self.backends, self.devices,
                                                            strict=True)]
        self.pool = _core.DevicePool(
            workers, strategy=strategy, max_retries=max_retries, queue_capacity=queue_capacity,
            health_check_interval=health_check_interval, job_timeout=job_timeout or 0.0,
            seed=seed)

    @property
    def worker_backend(self) -> str:
        """The name of the backends the workers run (``"cuda"``, ``"cpu"``)."""
        return self.first.name

    @property
    def parallel_passes(self) -> int:
        return len(self.backends)

    @property
    def packs_mixed_lengths(self) -> bool:
        return self.first.packs_mixed_lengths

    @property
    def pipelines_tokenization(self) -> bool:
        return self.first.pipelines_tokenization

    @property
    def max_tokens(self) -> int:
        """Tokens one request's jobs are cut to at most: what one worker's pass holds."""
        return int(getattr(self.first, "max_tokens", 16384))

    def pass_limits(self, batch_size: int | None, max_batch_tokens: int | str) -> PassLimits:
        return self.first.pass_limits(batch_size, max_batch_tokens)

    def job_tokens(self, total_tokens: int) -> int:
        """Tokens per job for a request of ``total_tokens``: about JOBS_PER_WORKER jobs per
        worker, none smaller than MIN_JOB_TOKENS; 0 (one job: the passes a direct call would
        run) with a single worker, which gains nothing from cutting."""
        if len(self.backends) == 1:
            return 0
        share = -(-total_tokens // (JOBS_PER_WORKER * len(self.backends)))
        return max(MIN_JOB_TOKENS, share)

    def encode_rows(self, batch: TokenBatch, limits: PassLimits, *, want_tokens: bool = False,
                    prompt_lengths: np.ndarray | None = None,
                    on_pass: PassCallback | None = None) -> EncodedRows:
        """See :meth:`sutra.backends.base.Backend.encode_rows`. Jobs hold at most
        ``limits.max_sequences`` sequences (0: any number). Token states and pooling that leaves
        a prompt out need more than a job's rows: those requests run on the first device
        alone."""
        if want_tokens or prompt_lengths is not None:
            return self.first.encode_rows(batch, limits, want_tokens=want_tokens,
                                          prompt_lengths=prompt_lengths, on_pass=on_pass)
        total = int(batch.cu_seqlens[-1])
        # The caller's batch_size bounds the sequences of each job, so of each worker's passes.
        future = self.pool.submit(np.ascontiguousarray(batch.ids, dtype=np.int32),
                                  np.ascontiguousarray(batch.cu_seqlens, dtype=np.int32),
                                  max_job_tokens=self.job_tokens(total),
                                  max_job_sequences=limits.max_sequences)
        embeddings = future.result()
        if on_pass is not None:
            on_pass(1, 1)
        return EncodedRows(embeddings)

    def segment_means(self, batch: TokenBatch, segments: np.ndarray,
                      limits: PassLimits) -> np.ndarray:
        return self.first.segment_means(batch, segments, limits)

    def stats(self) -> dict[str, Any]:
        """The scheduler's measured statistics (see :class:`sutra.multigpu.PoolStats`)."""
        return self.pool.stats()

    def describe(self) -> dict[str, object]:
        return {"devices": self.devices, "workers": len(self.backends),
                "strategy": self.pool.strategy, "worker_backend": self.worker_backend}

    def close(self) -> None:
        """Finish the queued work and stop the workers."""
        self.pool.shutdown()
