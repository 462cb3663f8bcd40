"""Several devices behind one embedder: the original project's ``MultiGPUPool`` names over
sutra's native scheduler.

The scheduler (C++, :class:`sutra._core.DevicePool`) owns one worker thread per device (or
several: ``max_concurrent_per_gpu``), each with its own engine from start to finish; a request's
texts are tokenized once, cut into jobs by tokens, routed by the strategy, retried on another
device when one fails, and merged back in input order. Every figure of :class:`PoolStats` is
measured there (busy time per device, per-request latency), none estimated.

    config = sutra.MultiGPUConfig(load_balancing=sutra.LoadBalancingStrategy.LEAST_LOADED)
    async with sutra.MultiGPUPool(config, sutra.EmbedderConfig(model="efficient")) as pool:
        vectors = await pool.embed_batch_distributed(texts)
        print(await pool.get_stats())

The synchronous form is ``sutra.Embedder(..., devices="all")``. On a machine without a GPU (or
with ``backend="cpu"``) the workers are CPU sessions sharing the cores, which is how the
scheduler is tested in CI.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

import anyio
import numpy as np

from .config import EmbedderConfig
from .embedder import Embedder

# An unhealthy device is probed this often when health checks are off: never, in practice.
_NO_HEALTH_CHECKS_S = 1e9


class LoadBalancingStrategy(str, enum.Enum):
    """How the scheduler picks a device for each job."""

    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"  # fewest queued + running tokens
    PERFORMANCE_BASED = "performance_based"  # earliest expected finish (moving time per token)
    RANDOM = "random"


@dataclass
class MultiGPUConfig:
    """The scheduler's settings.

    Attributes:
        device_ids: the devices to use; empty: every visible GPU.
        load_balancing: a :class:`LoadBalancingStrategy` (or its value).
        max_concurrent_per_gpu: workers per device, each with its own engine and stream.
        enable_health_checks: probe an unhealthy device every ``health_check_interval_secs``
            and take it back when it answers; off: a failed device stays out.
        health_check_interval_secs: seconds between probes of an unhealthy device.
        retry_on_failure: retry a failed job on another device (up to ``max_retries``).
        max_retries: other devices a failed job is tried on before its request fails.
        job_timeout_secs: a job running longer counts as a failure of its device (``None``:
            never).
        queue_capacity: jobs queued at most; a request that would exceed it waits.
        seed: of the ``RANDOM`` strategy.
    """

    device_ids: list[int] = field(default_factory=list)
    load_balancing: LoadBalancingStrategy | str = LoadBalancingStrategy.LEAST_LOADED
    max_concurrent_per_gpu: int = 1
    enable_health_checks: bool = True
    health_check_interval_secs: float = 30.0
    retry_on_failure: bool = True
    max_retries: int = 3
    job_timeout_secs: float | None = None
    queue_capacity: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            self.load_balancing = LoadBalancingStrategy(self.load_balancing)
        except ValueError:
            allowed = ", ".join(repr(s.value) for s in LoadBalancingStrategy)
            raise ValueError(f"load_balancing must be a LoadBalancingStrategy or one of "
                             f"{allowed}; got {self.load_balancing!r}") from None
        for name in ("max_concurrent_per_gpu", "queue_capacity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) \
                or self.max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if not self.health_check_interval_secs > 0:
            raise ValueError("health_check_interval_secs must be > 0, got "
                             f"{self.health_check_interval_secs!r}")
        if self.job_timeout_secs is not None and not self.job_timeout_secs > 0:
            raise ValueError(f"job_timeout_secs must be > 0 or None, got "
                             f"{self.job_timeout_secs!r}")
        for name in ("enable_health_checks", "retry_on_failure"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def devices(self) -> str | list[int]:
        """What :class:`~sutra.EmbedderConfig`'s ``devices`` takes."""
        return list(self.device_ids) if self.device_ids else "all"

    def pool_options(self) -> dict[str, Any]:
        """The keywords of :class:`sutra.backends.pool.PoolBackend` (and
        ``workers_per_device``)."""
        return {
            "workers_per_device": self.max_concurrent_per_gpu,
            "strategy": LoadBalancingStrategy(self.load_balancing).value,
            "max_retries": self.max_retries if self.retry_on_failure else 0,
            "health_check_interval": (self.health_check_interval_secs
                                      if self.enable_health_checks else _NO_HEALTH_CHECKS_S),
            "job_timeout": self.job_timeout_secs,
            "queue_capacity": self.queue_capacity,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class DeviceStats:
    """One worker's measured figures."""

    device: int
    healthy: bool
    busy_fraction: float  # of the wall time since the pool started
    queued_jobs: int
    queued_tokens: int
    batches: int
    tokens: int
    seconds_per_token: float  # the moving average the performance strategy uses


@dataclass(frozen=True)
class PoolStats:
    """The scheduler's measured statistics since it started."""

    requests: int
    embeddings: int
    tokens: int
    retries: int
    failures: int
    latency_mean_s: float
    latency_p50_s: float
    latency_p99_s: float
    throughput_per_s: float  # embeddings per second of wall time
    wall_s: float
    devices: tuple[DeviceStats, ...]

    @classmethod
    def from_native(cls, raw: dict[str, Any]) -> PoolStats:
        names = {f.name for f in fields(DeviceStats)}
        devices = tuple(DeviceStats(**{k: v for k, v in d.items() if k in names})
                        for d in raw["devices"])
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name != "devices"},
                   devices=devices)

    def __str__(self) -> str:
        lines = [(f"{self.requests} requests, {self.embeddings} embeddings, {self.tokens} "
                  f"tokens in {self.wall_s:.1f} s ({self.throughput_per_s:,.0f} embeddings/s); "
                  f"latency mean {self.latency_mean_s * 1e3:.2f} ms, p50 "
                  f"{self.latency_p50_s * 1e3:.2f} ms, p99 {self.latency_p99_s * 1e3:.2f} ms; "
                  f"{self.retries} retries, {self.failures} failures"),
                 "device  health     busy  queued (jobs/tokens)  batches      tokens  us/token"]
        for d in self.devices:
            lines.append(f"{d.device:>6}  {'ok' if d.healthy else 'DOWN':<7} {d.busy_fraction:>6.1%}"
                         f"  {d.queued_jobs:>8} / {d.queued_tokens:<10} {d.batches:>8} "
                         f"{d.tokens:>11,} {d.seconds_per_token * 1e6:>9.3f}")
        return "\n".join(lines)


class MultiGPUPool:
    """An embedder over several devices, for anyio (asyncio or trio) programs.

    Args:
        config: the scheduler's settings (:class:`MultiGPUConfig`); ``None``: the defaults.
        embedder_config: what to load and how (:class:`~sutra.EmbedderConfig`); its
            ``devices`` comes from ``config``.
        **overrides: :class:`~sutra.EmbedderConfig` fields.

    The model is loaded on every device when the pool is made (blocking: make it before the
    event loop's hot path, or in a worker thread). ``embed_batch_distributed`` runs the
    request in a worker thread (the native scheduler releases the GIL while it waits), so the
    event loop stays free; at most ``2 x workers`` requests are in flight at once.
    """

    def __init__(self, config: MultiGPUConfig | None = None,
                 embedder_config: EmbedderConfig | None = None, **overrides: Any) -> None:
        self.config = config or MultiGPUConfig()
        base = embedder_config or EmbedderConfig()
        self.embedder = Embedder(base, devices=self.config.devices,
                                 pool_options=self.config.pool_options(), **overrides)
        self._limiter = anyio.CapacityLimiter(2 * self.embedder.backend.parallel_passes)
        self._closed = False

    @property
    def devices(self) -> list[int]:
        """The device of each worker."""
        return list(self.embedder.backend.devices)

    async def embed_batch_distributed(self, texts: Sequence[str], **encode_kwargs: Any
                                      ) -> np.ndarray:
        """Embeddings of ``texts`` (``[n, dim]``, input order), spread over the devices;
        ``encode_kwargs`` as :meth:`sutra.Embedder.encode` takes them."""
        if self._closed:
            raise RuntimeError("this MultiGPUPool is closed")
        call = partial(self.embedder.encode, list(texts), **encode_kwargs)
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    async def get_stats(self) -> PoolStats:
        """The scheduler's measured statistics (``print`` them for a table)."""
        return self.stats()

    def stats(self) -> PoolStats:
        return PoolStats.from_native(self.embedder.backend.stats())

    def close(self) -> None:
        """Finish the queued work and stop the workers (idempotent)."""
        if not self._closed:
            self._closed = True
            self.embedder.backend.close()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)

    async def __aenter__(self) -> MultiGPUPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
