"""Flash attention on CUDA device tensors: sutra's own kernels (``cuda/attention/``).

``flash_attention`` takes torch tensors, CuPy arrays or any object with ``__dlpack__`` or
``__cuda_array_interface__``, zero copy, and runs on the caller's current stream. The binding
(``_core.flash_attention_forward``, ``cpp/bindings/attention_bindings.cc``) reads and checks the
arrays; this module finds the stream and allocates missing outputs with the input's library.
``FlashAttentionConfig`` and ``FlashAttentionOptimizer`` decide when to use it and report what
the chosen kernel does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core

__all__ = [
    "FlashAttentionConfig",
    "FlashAttentionOptimizer",
    "flash_attention",
    "mpnet_relative_position_bucket",
]

_NO_CUDA = "this build of sutra has no CUDA support"


def _library(x: Any) -> str | None:
    """'torch' for a CUDA torch tensor, 'cupy' for a CuPy array, else None (no import needed)."""
    mod = type(x).__module__
    if mod.startswith("torch") and getattr(x, "is_cuda", False):
        return "torch"
    if mod.startswith("cupy"):
        return "cupy"
    return None


def _stream_of(lib: str | None, x: Any) -> int:
    """The caller's current stream (a cudaStream_t as an int) for the library `x` comes from."""
    if lib == "torch":
        import torch

        return int(torch.cuda.current_stream(x.device).cuda_stream)
    if lib == "cupy":
        import cupy

        return int(cupy.cuda.get_current_stream().ptr)
    cai = getattr(x, "__cuda_array_interface__", None)
    stream = cai.get("stream") if isinstance(cai, dict) else None
    # CAI v3: 1 = legacy default stream, 2 = per-thread default stream, None/absent = unknown.
    if stream in (None, 1):
        return 0
    return int(stream)


def _empty(lib: str, like: Any, shape: tuple[int, ...], dtype: str | None = None) -> Any:
    """An uninitialized array with `like`'s library on `like`'s device; dtype None is like's."""
    if lib == "torch":
        import torch

        dt = like.dtype if dtype is None else getattr(torch, dtype)
        return torch.empty(shape, dtype=dt, device=like.device)
    import cupy

    with cupy.cuda.Device(like.device.id):
        return cupy.empty(shape, dtype=like.dtype if dtype is None else dtype)


def mpnet_relative_position_bucket(relative_position: Any, num_buckets: int = 32,
                                   max_distance: int = 128) -> Any:
    """MPNet's (T5-style, bidirectional) bucket of ``relative_position = j - i`` (key - query).

    The same arithmetic as ``transformers``' ``MPNetEncoder.relative_position_bucket`` (float32
    log, truncation), computed by the core (``_core.mpnet_relative_buckets``, the one
    implementation). Any shape; returns int64 of the same shape: a torch tensor on the input's
    device when given a torch tensor (computed on the CPU), else a numpy array. MPNet itself
    always buckets with ``num_buckets=32, max_distance=128``.
    """
    if type(relative_position).__module__.startswith("torch"):
        import torch

        rp = np.asarray(relative_position.detach().cpu().numpy(), dtype=np.int64, order="C")
        buckets = _core.mpnet_relative_buckets(rp, num_buckets, max_distance)
        return torch.from_numpy(buckets).to(relative_position.device)
    rp = np.asarray(relative_position, dtype=np.int64, order="C")
    return _core.mpnet_relative_buckets(rp, num_buckets, max_distance)


def flash_attention(q: Any, k: Any, v: Any, cu_seqlens: Any = None, max_seqlen: int | None = None,
                    softmax_scale: float | None = None, causal: bool = False,
                    window: tuple[int, int] = (-1, -1), rel_bias: Any = None,
                    alibi_slopes: Any = None, return_lse: bool = False, *,
                    rel_max_distance: int = 128, out: Any = None,
                    pack_sequences: bool = False, path: str = "auto") -> Any:
    """Exact softmax attention ``softmax(q k^T * scale + bias) v`` without an N x N buffer.

    Shapes (fp16 or bf16, one dtype for q, k, v; head_dim 32, 64 or 128, last dim contiguous,
    other strides multiples of 8 elements, 16-byte aligned data):

    - padded: q, k, v ``[batch, seqlen, heads, head_dim]``; lse ``[batch, heads, seqlen]``.
    - packed varlen: q, k, v ``[total_tokens, heads, head_dim]`` with ``cu_seqlens`` int32
      ``[batch + 1]`` (offsets, starting at 0) and ``max_seqlen`` (int, >= every length; not
      checked on the device). lse ``[heads, total_tokens]``.

    Keys and queries are the same sequence (self-attention: k, v shaped like q).
    ``window=(left, right)``: key j is visible from query i iff ``i - left <= j <= i + right``,
    bounds inclusive, -1 unbounded; ``causal=True`` is ``right = 0``. Key tiles outside the
    window are skipped. ``alibi_slopes`` float32 ``[heads]`` adds ``-slope * |j - i|``.
    ``rel_bias`` float32 ``[heads, num_buckets >= 32]`` adds ``rel_bias[h, bucket(j - i)]`` with
    MPNet's bucketing: 32 buckets and ``max_distance=rel_max_distance`` (9..512), as
    transformers' MPNet does whatever the table width (``mpnet_relative_position_bucket``).
    A query row that sees no key returns zeros (lse ``-inf``). An empty batch writes nothing.
    ``pack_sequences=True`` (varlen only) computes the same result with row tiles that span
    sequences: a block takes 128 (64) consecutive tokens of the packed batch, whatever sequences
    they belong to, each row masked to its own sequence's keys. Much faster when most sequences
    are far shorter than a tile (sentences); slower for long ones (the GPU engine picks per pass).
    ``path``: ``"auto"`` runs the Hopper kernels (wgmma + TMA, head_dim 64 and 128) on a compute
    capability 9.0 GPU when this build has sm_90a code, unless the call has a two-sided window
    or packed tiles (where sm80 is measured faster), and the sm_80 kernels (mma.sync)
    everywhere else; ``"sm80"`` / ``"sm90"`` force one
    (``"sm90"`` raises ValueError where it cannot run). Same results either way.

    Arrays are read through DLPack when they offer it (torch, CuPy; the producer is asked to order
    its pending work before the kernel's stream), else through ``__cuda_array_interface__``.
    The output is written to ``out`` (same shape and dtype as q) when given, else allocated with
    q's library (``torch.empty`` / ``cupy.empty``) on q's device; other array types must pass
    ``out`` (and cannot ask for lse). The kernel runs on the caller's current stream (torch:
    ``torch.cuda.current_stream()``; CuPy: its current stream; otherwise the
    ``__cuda_array_interface__`` stream of q) and is not synchronized. Returns ``out`` or
    ``(out, lse)`` with float32 natural-log lse.

    Raises ValueError naming the argument for a wrong dtype, shape, device or layout (nothing is
    copied or converted), SutraError in a build without CUDA or on a device older than sm_80.
    """
    try:
        left, right = (int(w) for w in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be a pair of ints (left, right), got {window!r}") from None
    lib = _library(q)
    if out is None and lib is not None:
        out = _empty(lib, q, tuple(q.shape))
    lse = None
    if return_lse:
        if lib is None:
            raise ValueError("return_lse=True needs q to be a CUDA torch tensor or a CuPy array "
                             f"(lse is allocated with q's library), got {type(q).__name__}")
        ndim = len(q.shape)
        if cu_seqlens is not None and ndim == 3:
            lse = _empty(lib, q, (q.shape[1], q.shape[0]), "float32")
        elif cu_seqlens is None and ndim == 4:
            lse = _empty(lib, q, (q.shape[0], q.shape[2], q.shape[1]), "float32")
        # else: the binding rejects q's shape before it looks at lse
    packed_bounds = None
    if pack_sequences:
        if cu_seqlens is None:
            raise ValueError("pack_sequences=True needs cu_seqlens (a varlen batch)")
        if lib is None:
            raise ValueError("pack_sequences=True needs q to be a CUDA torch tensor or a CuPy "
                             "array (its per-token scratch is allocated with q's library), got "
                             f"{type(q).__name__}")
        if len(q.shape) == 3:  # else the binding rejects q's shape first
            packed_bounds = _empty(lib, q, (2, q.shape[0]), "int32")
    _core.flash_attention_forward(
        q, k, v, out, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, softmax_scale=softmax_scale,
        causal=causal, window_left=left, window_right=right, alibi_slopes=alibi_slopes,
        rel_bias=rel_bias, rel_max_distance=rel_max_distance, lse=lse,
        packed_bounds=packed_bounds, path=path, stream=_stream_of(lib, q),
        # torch and CuPy queue their own work on the stream found above: nothing to order, when
        # every array comes from q's library.
        stream_is_producers=lib is not None and all(
            _library(t) == lib for t in (k, v, out, cu_seqlens, alibi_slopes, rel_bias)
            if t is not None))
    return (out, lse) if return_lse else out


# ---------------------------------------------------------------------------------------------


@dataclass
class FlashAttentionConfig:
    """When to use sutra's flash attention.

    sequence_threshold: sequences at least this long use it (shorter ones gain little).
    use_efficient_memory: must stay True (the kernel never builds an N x N buffer).
    enable_flash_v2: the Hopper (wgmma/TMA) path. None: auto (sm_90a kernels on a compute
        capability 9.0 GPU where they apply); True: always (get_stats raises where it cannot run);
        False: the sm_80 mma.sync kernels.
    block_size: None to take the kernel's own tile (block_m x block_n from the traits); an int
        is checked against it, since the tiles are compile-time constants.
    """

    sequence_threshold: int = 512
    use_efficient_memory: bool = True
    enable_flash_v2: bool | None = None
    block_size: int | None = None

    def __post_init__(self) -> None:
        if self.sequence_threshold < 0:
            raise ValueError(f"sequence_threshold must be >= 0, got {self.sequence_threshold}")
        if not self.use_efficient_memory:
            raise ValueError("use_efficient_memory=False is not supported: the kernel is O(N)")

    @property
    def path(self) -> str:
        """The ``path`` argument of :func:`flash_attention` that ``enable_flash_v2`` means."""
        return {None: "auto", True: "sm90", False: "sm80"}[self.enable_flash_v2]


class FlashAttentionOptimizer:
    """Decides whether to use flash attention and reports the kernel it would run."""

    def __init__(self, config: FlashAttentionConfig | None = None) -> None:
        self.config = config or FlashAttentionConfig()

    @staticmethod
    def _gpu_reason() -> str | None:
        if not _core.build_info()["cuda"]:
            return _NO_CUDA
        if _core.cuda_device_count() == 0:
            return "no CUDA GPU is visible on this machine"
        major = _core.cuda_devices()[0]["major"]
        if major < 8:
            return f"device 0 is sm_{major}x; the kernel needs sm_80 or newer"
        return None

    def should_enable(self, seq_len: int) -> bool:
        """True when a GPU can run the kernel and seq_len >= sequence_threshold."""
        return seq_len >= self.config.sequence_threshold and self._gpu_reason() is None

    def get_stats(self, seq_len: int, *, batch: int = 1, heads: int = 12, head_dim: int = 64,
                  dtype: str = "float16", causal: bool = False,
                  window: tuple[int, int] = (-1, -1), measure: bool = False,
                  repeats: int = 20) -> dict[str, Any]:
        """The kernel chosen for this shape and window: tiles, shared memory, FLOPs and bytes, and
        with ``measure=True`` the median time of ``repeats`` calls (CUDA events; needs torch).

        ``window`` and ``causal`` mean what they mean in :func:`flash_attention` (narrow windows
        at head_dim 64 run a shorter query tile, reported here). FLOPs count the two matmuls over
        the visible (i, j) pairs: 4 * B * H * pairs * d. Bytes are the HBM floor: q, k, v read
        once and o written once. On a machine without a usable GPU:
        {'available': False, 'reason': ...}.
        """
        reason = self._gpu_reason()
        if reason is not None:
            return {"available": False, "reason": reason, "seq_len": seq_len}
        left, right = _window_bounds(window, causal)
        path = self.config.path
        info = dict(_core.flash_attention_kernel_info(head_dim, False, left, right, path))
        block = info["block_m"]
        if self.config.block_size not in (None, block):
            raise ValueError(f"block_size {self.config.block_size} differs from the compiled tile "
                             f"block_m={block} for head_dim {head_dim}")
        pairs = _visible_pairs(seq_len, left, right)
        flops = 4 * batch * heads * pairs * head_dim
        nbytes = 4 * batch * seq_len * heads * head_dim * 2
        stats: dict[str, Any] = {
            "available": True, "enabled": self.should_enable(seq_len), "seq_len": seq_len,
            "batch": batch, "heads": heads, "head_dim": head_dim, "dtype": dtype,
            "causal": causal, "window": (left, right), "kernel": info, "tile": (info["block_m"], info["block_n"]),
            "smem_bytes": info["smem_bytes"], "flops": flops, "hbm_bytes": nbytes,
            "hopper_path": info["path"].startswith("sm90"),
        }
        if measure:
            import torch

            shape = (batch, seq_len, heads, head_dim)
            q, k, v = (torch.randn(shape, dtype=getattr(torch, dtype), device="cuda")
                       for _ in range(3))
            for _ in range(3):
                flash_attention(q, k, v, window=(left, right), path=path)
            times = []
            for _ in range(repeats):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                flash_attention(q, k, v, window=(left, right), path=path)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            ms = sorted(times)[len(times) // 2]
            stats.update(time_ms=ms, tflops=flops / ms / 1e9)
        return stats


def _window_bounds(window: Any, causal: bool) -> tuple[int, int]:
    """(left, right) inclusive key bounds from ``window`` (-1 unbounded), with ``causal`` folded
    in as right <= 0; ValueError for anything but a pair of ints >= -1."""
    try:
        left, right = (int(w) for w in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be a pair of ints (left, right), got {window!r}") from None
    if left < -1 or right < -1:
        raise ValueError(f"window bounds must be >= 0 or -1 (unbounded), got {window!r}")
    if causal:
        right = 0 if right < 0 else min(right, 0)
    return left, right


def _visible_pairs(seq_len: int, left: int, right: int) -> int:
    """Number of (query i, key j) pairs with i - left <= j <= i + right in one sequence."""
    i = np.arange(seq_len, dtype=np.int64)
    lo = np.maximum(0, i - left) if left >= 0 else np.zeros_like(i)
    hi = np.minimum(seq_len - 1, i + right) if right >= 0 else np.full_like(i, seq_len - 1)
    return int(np.maximum(hi - lo + 1, 0).sum())
