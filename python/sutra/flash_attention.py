"""Flash attention on CUDA device tensors: sutra's own kernels (``cuda/attention/``).

``flash_attention`` takes torch tensors or any object with ``__cuda_array_interface__`` (CuPy),
zero copy, and runs on the caller's current stream. ``FlashAttentionConfig`` and
``FlashAttentionOptimizer`` decide when to use it and report what the chosen kernel does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from ._errors import SutraError

__all__ = [
    "FlashAttentionConfig",
    "FlashAttentionOptimizer",
    "flash_attention",
    "mpnet_relative_position_bucket",
]

_HEAD_DIMS = (32, 64, 128)
_MAX_REL_DISTANCE = 512  # kAttnMaxRelDistance in cpp/include/sutra/attention.h
_NO_CUDA = "this build of sutra has no CUDA support"


@dataclass
class _View:
    """What the kernel needs to know about one device array."""

    obj: Any
    lib: str  # "torch" or "cai"
    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # elements
    dtype: str  # "float16", "bfloat16", "float32", "int32", ...
    device: int


_CAI_TYPES = {"<f2": "float16", "<f4": "float32", "<i4": "int32", "<i8": "int64", "|u1": "uint8"}
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "int32": 4, "int64": 8, "uint8": 1}


def _view(name: str, x: Any) -> _View:
    """Describes `x` without copying it; ValueError when it is not a CUDA device array."""
    mod = type(x).__module__
    if mod.startswith("torch") and hasattr(x, "data_ptr"):
        if not x.is_cuda:
            raise ValueError(f"{name} must be a CUDA tensor, got a tensor on {x.device}")
        dtype = str(x.dtype).removeprefix("torch.")
        return _View(x, "torch", x.data_ptr(), tuple(x.shape), tuple(x.stride()), dtype,
                     x.device.index)
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is None:
        raise ValueError(
            f"{name} must be a CUDA device array (torch tensor or an object with "
            f"__cuda_array_interface__), got {type(x).__name__}")
    typestr = cai["typestr"]
    if typestr not in _CAI_TYPES:
        raise ValueError(f"{name} has unsupported dtype {typestr!r}")
    dtype = _CAI_TYPES[typestr]
    shape = tuple(int(s) for s in cai["shape"])
    item = _ITEMSIZE[dtype]
    if cai.get("strides") is None:
        strides, acc = [], 1
        for s in reversed(shape):
            strides.append(acc)
            acc *= s
        strides = tuple(reversed(strides))
    else:
        if any(s % item for s in cai["strides"]):
            raise ValueError(f"{name} has strides that are not whole elements")
        strides = tuple(int(s) // item for s in cai["strides"])
    device = getattr(getattr(x, "device", None), "id", 0)
    return _View(x, "cai", int(cai["data"][0]), shape, strides, dtype, int(device))


def _stream_of(v: _View) -> int:
    """The caller's current stream for the library `v` comes from."""
    if v.lib == "torch":
        import torch

        return int(torch.cuda.current_stream(v.device).cuda_stream)
    try:  # CuPy: its current stream
        import cupy

        if isinstance(v.obj, cupy.ndarray):
            return int(cupy.cuda.get_current_stream().ptr)
    except ImportError:
        pass
    stream = v.obj.__cuda_array_interface__.get("stream")
    # CAI v3: 1 = legacy default stream, 2 = per-thread default stream, None/absent = unknown.
    if stream in (None, 1):
        return 0
    return 2 if stream == 2 else int(stream)


def _empty_like(v: _View, shape: tuple[int, ...], dtype: str) -> Any:
    if v.lib == "torch":
        import torch

        return torch.empty(shape, dtype=getattr(torch, dtype), device=v.obj.device)
    import cupy

    with cupy.cuda.Device(v.device):
        return cupy.empty(shape, dtype=dtype)


def _check_rows(name: str, v: _View, head_dim: int) -> None:
    if v.strides[-1] != 1:
        raise ValueError(f"{name} must have a contiguous last (head_dim) dimension, "
                         f"got strides {v.strides}")
    if any(s % 8 for s in v.strides[:-1]) or v.ptr % 16:
        raise ValueError(f"{name} must be 16-byte aligned with strides that are multiples of 8 "
                         f"elements, got strides {v.strides}")


def mpnet_relative_position_bucket(relative_position: Any, num_buckets: int = 32,
                                   max_distance: int = 128) -> Any:
    """MPNet's (T5-style, bidirectional) bucket of ``relative_position = j - i``.

    The same arithmetic as ``transformers.models.mpnet.modeling_mpnet.MPNetAttention.
    relative_position_bucket`` (float32 log, truncation); takes and returns a torch tensor when
    given one, else numpy int64.
    """
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        rp = torch.as_tensor(relative_position)
        ret = 0
        n = -rp
        num_buckets //= 2
        ret += (n < 0).to(torch.long) * num_buckets
        n = torch.abs(n)
        max_exact = num_buckets // 2
        is_small = n < max_exact
        val_if_large = max_exact + (
            torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).to(torch.long)
        val_if_large = torch.min(val_if_large, torch.full_like(val_if_large, num_buckets - 1))
        ret += torch.where(is_small, n, val_if_large)
        return ret

    rp = np.asarray(relative_position, dtype=np.int64)
    n = -rp
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        large = np.log(n.astype(np.float32) / np.float32(max_exact)) / np.float32(
            math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = max_exact + np.where(np.isfinite(large), large, 0).astype(np.int64)
    large = np.minimum(large, half - 1)
    return ret + np.where(n < max_exact, n, large)


def flash_attention(q: Any, k: Any, v: Any, cu_seqlens: Any = None, max_seqlen: int | None = None,
                    softmax_scale: float | None = None, causal: bool = False,
                    window: tuple[int, int] = (-1, -1), rel_bias: Any = None,
                    alibi_slopes: Any = None, return_lse: bool = False, *,
                    rel_max_distance: int = 128, out: Any = None) -> Any:
    """Exact softmax attention ``softmax(q k^T * scale + bias) v`` without an N x N buffer.

    Shapes (fp16 or bf16, one dtype for q, k, v; head_dim 32, 64 or 128, last dim contiguous):

    - padded: q, k, v ``[batch, seqlen, heads, head_dim]``; lse ``[batch, heads, seqlen]``.
    - packed varlen: q, k, v ``[total_tokens, heads, head_dim]`` with ``cu_seqlens`` int32
      ``[batch + 1]`` (offsets, starting at 0) and ``max_seqlen`` (int, >= every length; not
      checked on the device). lse ``[heads, total_tokens]``.

    Keys and queries are the same sequence (self-attention: k, v shaped like q).
    ``window=(left, right)``: key j is visible from query i iff ``i - left <= j <= i + right``,
    bounds inclusive, -1 unbounded; ``causal=True`` is ``right = 0``. Key tiles outside the
    window are skipped. ``alibi_slopes`` float32 ``[heads]`` adds ``-slope * |j - i|``.
    ``rel_bias`` float32 ``[heads, num_buckets]`` adds ``rel_bias[h, bucket(j - i)]`` with
    MPNet's bucketing (``mpnet_relative_position_bucket``, ``max_distance=rel_max_distance``).
    A query row that sees no key returns zeros (lse ``-inf``).

    The output is written to ``out`` (same shape and dtype as q) when given, else allocated with
    q's library (``torch.empty`` / ``cupy.empty``) on q's device. The kernel runs on the
    caller's current stream (torch: ``torch.cuda.current_stream()``; CuPy: its current stream)
    and is not synchronized. Returns ``out`` or ``(out, lse)`` with float32 natural-log lse.

    Raises ValueError naming the argument for a wrong dtype, shape, device or layout (nothing is
    copied or converted), SutraError in a build without CUDA or on a device older than sm_80.
    """
    if not _core.build_info()["cuda"]:
        raise SutraError(_NO_CUDA)
    qv, kv, vv = _view("q", q), _view("k", k), _view("v", v)
    if qv.dtype not in ("float16", "bfloat16"):
        raise ValueError(f"q must be float16 or bfloat16, got {qv.dtype}")
    for name, t in (("k", kv), ("v", vv)):
        if t.dtype != qv.dtype:
            raise ValueError(f"{name} must have q's dtype {qv.dtype}, got {t.dtype}")
        if t.shape != qv.shape:
            raise ValueError(f"{name} must have q's shape {qv.shape}, got {t.shape}")
        if t.device != qv.device or t.lib != qv.lib:
            raise ValueError(f"{name} must live on q's device (cuda:{qv.device}, {qv.lib}), "
                             f"got cuda:{t.device} ({t.lib})")
    varlen = cu_seqlens is not None
    if varlen:
        if len(qv.shape) != 3:
            raise ValueError(f"q must be [total_tokens, heads, head_dim] with cu_seqlens, "
                             f"got shape {qv.shape}")
        total, heads, head_dim = qv.shape
        cv = _view("cu_seqlens", cu_seqlens)
        if cv.dtype != "int32" or len(cv.shape) != 1 or cv.shape[0] < 1 or cv.strides[0] != 1:
            raise ValueError(f"cu_seqlens must be a contiguous int32 [batch + 1] array, got "
                             f"{cv.dtype} shape {cv.shape}")
        if cv.device != qv.device:
            raise ValueError(f"cu_seqlens must be on cuda:{qv.device}, got cuda:{cv.device}")
        if max_seqlen is None or int(max_seqlen) < 0:
            raise ValueError(f"max_seqlen (int >= 0) is required with cu_seqlens, got {max_seqlen}")
        batch, max_len = cv.shape[0] - 1, int(max_seqlen)
        if max_len > total:
            raise ValueError(f"max_seqlen must be <= total_tokens {total}, got {max_len}")
    else:
        if len(qv.shape) != 4:
            raise ValueError(f"q must be [batch, seqlen, heads, head_dim] (or pass cu_seqlens), "
                             f"got shape {qv.shape}")
        batch, max_len, heads, head_dim = qv.shape
        if max_seqlen is not None and int(max_seqlen) != max_len:
            raise ValueError(f"max_seqlen must be the padded seqlen {max_len} or None, "
                             f"got {max_seqlen}")
    if head_dim not in _HEAD_DIMS:
        raise ValueError(f"q's head_dim must be one of {_HEAD_DIMS}, got {head_dim}")
    for name, t in (("q", qv), ("k", kv), ("v", vv)):
        _check_rows(name, t, head_dim)

    left, right = _window_bounds(window, causal)
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else float(softmax_scale)
    if not scale > 0.0 or not math.isfinite(scale):
        raise ValueError(f"softmax_scale must be a finite number > 0, got {softmax_scale}")

    params: dict[str, Any] = {}
    if alibi_slopes is not None and rel_bias is not None:
        raise ValueError("alibi_slopes and rel_bias cannot be combined")
    if alibi_slopes is not None:
        av = _view("alibi_slopes", alibi_slopes)
        if av.dtype != "float32" or av.shape != (heads,) or av.strides != (1,):
            raise ValueError(f"alibi_slopes must be contiguous float32 [{heads}], got {av.dtype} "
                             f"shape {av.shape}")
        if av.device != qv.device:
            raise ValueError(f"alibi_slopes must be on cuda:{qv.device}, got cuda:{av.device}")
        params["alibi_slopes"] = av.ptr
    if rel_bias is not None:
        rv = _view("rel_bias", rel_bias)
        if (rv.dtype != "float32" or len(rv.shape) != 2 or rv.shape[0] != heads
                or not 2 <= rv.shape[1] <= 256 or rv.strides != (rv.shape[1], 1)):
            raise ValueError(f"rel_bias must be contiguous float32 [{heads}, num_buckets<=256], "
                             f"got {rv.dtype} shape {rv.shape}")
        if rv.device != qv.device:
            raise ValueError(f"rel_bias must be on cuda:{qv.device}, got cuda:{rv.device}")
        if not 0 <= rel_max_distance <= _MAX_REL_DISTANCE:
            raise ValueError(f"rel_max_distance must be in [0, {_MAX_REL_DISTANCE}], "
                             f"got {rel_max_distance}")
        nb = rv.shape[1]
        buckets = mpnet_relative_position_bucket(
            list(range(-rel_max_distance, rel_max_distance + 1)), nb, rel_max_distance)
        params.update(rel_bias=rv.ptr, rel_num_buckets=nb, rel_max_distance=rel_max_distance,
                      rel_bucket=[int(b) for b in buckets.tolist()])

    if out is None:
        out = _empty_like(qv, qv.shape, qv.dtype)
    ov = _view("out", out)
    if ov.shape != qv.shape or ov.dtype != qv.dtype or ov.device != qv.device:
        raise ValueError(f"out must be {qv.dtype} {qv.shape} on cuda:{qv.device}, got {ov.dtype} "
                         f"{ov.shape} on cuda:{ov.device}")
    _check_rows("out", ov, head_dim)
    lse = None
    if return_lse:
        lse_shape = (heads, qv.shape[0]) if varlen else (batch, heads, max_len)
        lse = _empty_like(qv, lse_shape, "float32")

    def strides(t: _View) -> list[int]:
        return [0, *t.strides[:2]] if varlen else list(t.strides[:3])

    params.update(
        q=qv.ptr, k=kv.ptr, v=vv.ptr, o=ov.ptr,
        lse=None if lse is None else _view("lse", lse).ptr,
        cu_seqlens=_view("cu_seqlens", cu_seqlens).ptr if varlen else None,
        q_strides=strides(qv), k_strides=strides(kv), v_strides=strides(vv), o_strides=strides(ov),
        lse_batch_stride=0 if varlen else heads * max_len,
        lse_head_stride=qv.shape[0] if varlen else max_len,
        batch=batch, heads=heads, head_dim=head_dim, max_seqlen=max_len, softmax_scale=scale,
        window_left=left, window_right=right, dtype=qv.dtype, device=qv.device,
        stream=_stream_of(qv),
    )
    _core.flash_attention_forward(params)
    return (out, lse) if return_lse else out


# ---------------------------------------------------------------------------------------------


@dataclass
class FlashAttentionConfig:
    """When to use sutra's flash attention.

    sequence_threshold: sequences at least this long use it (shorter ones gain little).
    use_efficient_memory: must stay True (the kernel never builds an N x N buffer).
    enable_flash_v2: the Hopper (wgmma/TMA) path; None = auto. This build has no such path yet:
        True raises, None and False both run the sm_80 mma.sync kernel (also on sm_90).
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
        if self.enable_flash_v2:
            raise ValueError("enable_flash_v2=True: the sm_90 wgmma/TMA path is not implemented "
                             "in this build; use None (auto) for the sm_80 kernel")


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
        info = dict(_core.flash_attention_kernel_info(head_dim, False, left, right))
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
            "hopper_path": False,
        }
        if measure:
            import torch

            shape = (batch, seq_len, heads, head_dim)
            q, k, v = (torch.randn(shape, dtype=getattr(torch, dtype), device="cuda")
                       for _ in range(3))
            for _ in range(3):
                flash_attention(q, k, v, window=(left, right))
            times = []
            for _ in range(repeats):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                flash_attention(q, k, v, window=(left, right))
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
