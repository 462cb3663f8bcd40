"""sutra.ops.flash_attention against a float32 reference on the GPU, plus CPU-side API checks.

The GPU tests compare with torch math attention on upcast (float32) inputs and bound the kernel's
max error by 2x the error of the same computation done in the input dtype (plus a tiny atol), over
dtype x head dim x lengths (uniform and packed varlen) x causal / window / ALiBi / relative bias.
Outputs are poisoned with NaN first, so an element the kernel never wrote fails. Every GPU test
runs three times: with path="auto" (what users get) and forced onto each kernel family, "sm80"
(mma.sync) and "sm90" (wgmma + TMA; skipped where the device or build has no such path; head_dim
32, which has no sm90 kernel, is skipped or, inside a loop over head dims, left on auto).

Sanitizer (manual, on a GPU machine):
    compute-sanitizer --tool memcheck python -m pytest tests/test_attention.py -k "small" -x
    compute-sanitizer --tool racecheck python -m pytest tests/test_attention.py -k "small" -x
racecheck also reports hazards inside cuBLAS's nvjet_sm90_* GEMM kernels, which torch runs for the
fp16 reference of the d=128 cases; only hazards in flash_fwd_kernel are sutra's. (Restricting it
with --kernel-name kns=flash_fwd_kernel made compute-sanitizer of CUDA 13.0 crash inside the
unchecked cuBLAS kernel.)
"""

from __future__ import annotations

import functools
import math
import random

import pytest

from sutra import _core
from sutra._errors import SutraError
from sutra.ops import FlashAttentionConfig, FlashAttentionOptimizer, flash_attention

_flash_attention = flash_attention  # the module's own name is rebound per path (_attention_path)

LENGTHS = (1, 17, 127, 128, 129, 1000, 4097)
HEAD_DIMS = (32, 64, 128)
DTYPES = ("float16", "bfloat16")
ATOL = {"float16": 2e-4, "bfloat16": 2e-3}  # declared once per dtype; added to the 2x bound


# ------------------------------------------------------------------------------ CPU-side tests


class _FakeDeviceArray:
    """Has only __cuda_array_interface__: enough to pass argument checks without a GPU."""

    def __init__(self, shape, typestr="<f2", ptr=1 << 20):
        self.__cuda_array_interface__ = {
            "shape": shape, "typestr": typestr, "data": (ptr, False), "version": 3,
            "strides": None, "stream": None,
        }


def _has_cuda_build() -> bool:
    return bool(_core.build_info()["cuda"])


@pytest.mark.skipif(_has_cuda_build(), reason="CPU-only builds only")
def test_cpu_only_build_raises_clear_error():
    q = _FakeDeviceArray((1, 8, 2, 64))
    with pytest.raises(SutraError, match="no CUDA support"):
        flash_attention(q, q, q)


@pytest.mark.skipif(not _has_cuda_build(), reason="needs a CUDA build")
def test_argument_validation_names_the_argument():
    import numpy as np

    q = _FakeDeviceArray((2, 8, 2, 64))
    with pytest.raises(ValueError, match="^q must be a CUDA device array"):
        flash_attention(np.zeros((2, 8, 2, 64), np.float16), q, q)
    with pytest.raises(ValueError, match="^k must have q's shape"):
        flash_attention(q, _FakeDeviceArray((2, 9, 2, 64)), q)
    with pytest.raises(ValueError, match="^v must have q's dtype"):
        flash_attention(q, q, _FakeDeviceArray((2, 8, 2, 64), "<f4"))
    with pytest.raises(ValueError, match="head_dim must be one of"):
        q48 = _FakeDeviceArray((2, 8, 2, 48))
        flash_attention(q48, q48, q48)
    with pytest.raises(ValueError, match="^q must be \\[total_tokens"):
        flash_attention(q, q, q, cu_seqlens=_FakeDeviceArray((3,), "<i4"), max_seqlen=8)
    q3 = _FakeDeviceArray((16, 2, 64))
    with pytest.raises(ValueError, match="^cu_seqlens must be a contiguous int32"):
        flash_attention(q3, q3, q3, cu_seqlens=_FakeDeviceArray((3,), "<i8"), max_seqlen=8)
    with pytest.raises(ValueError, match="^max_seqlen"):
        flash_attention(q3, q3, q3, cu_seqlens=_FakeDeviceArray((3,), "<i4"))
    with pytest.raises(ValueError, match="^window bounds"):
        flash_attention(q, q, q, window=(-2, 4))
    with pytest.raises(ValueError, match="^alibi_slopes must be"):
        flash_attention(q, q, q, alibi_slopes=_FakeDeviceArray((3,), "<f4"))
    with pytest.raises(ValueError, match="^rel_bias must be"):
        flash_attention(q, q, q, rel_bias=_FakeDeviceArray((2, 32), "<f2"))
    with pytest.raises(ValueError, match="^out must be"):
        flash_attention(q, q, q, out=_FakeDeviceArray((2, 8, 2, 32)))
    with pytest.raises(ValueError, match="^pack_sequences=True needs cu_seqlens"):
        flash_attention(q, q, q, out=_FakeDeviceArray((2, 8, 2, 64)), pack_sequences=True)
    misaligned = _FakeDeviceArray((2, 8, 2, 64), ptr=(1 << 20) + 2)
    with pytest.raises(ValueError, match="^k must be 16-byte aligned"):
        flash_attention(q, misaligned, q)


@pytest.mark.skipif(not _has_cuda_build(), reason="needs a CUDA build")
def test_no_gpu_raises_sutra_error():
    if _core.cuda_device_count() > 0:
        pytest.skip("a GPU is visible")
    q = _FakeDeviceArray((1, 8, 2, 64))
    with pytest.raises(SutraError):
        flash_attention(q, q, q, out=_FakeDeviceArray((1, 8, 2, 64)))


def test_config_and_optimizer_are_honest_without_gpu():
    with pytest.raises(ValueError, match="use_efficient_memory"):
        FlashAttentionConfig(use_efficient_memory=False)
    assert [FlashAttentionConfig(enable_flash_v2=v).path for v in (None, True, False)] == [
        "auto", "sm90", "sm80"]
    opt = FlashAttentionOptimizer(FlashAttentionConfig(sequence_threshold=256))
    stats = opt.get_stats(1024)
    if _core.cuda_device_count() == 0:
        assert stats["available"] is False and stats["reason"]
        assert opt.should_enable(4096) is False
    else:
        assert stats["available"] and stats["tile"][0] > 0 and stats["smem_bytes"] > 0
        assert stats["flops"] == 4 * 12 * 1024 * 1024 * 64
        assert opt.should_enable(255) is False and opt.should_enable(256) is True


# ------------------------------------------------------------------------------ GPU reference


def _ref(q, k, v, scale, left, right, bias_fn, upcast):
    """Math attention of one sequence: q, k, v [L, H, D]; float32 when upcast, else q's dtype."""
    import torch

    dt = torch.float32 if upcast else q.dtype
    qh, kh, vh = (t.to(dt).transpose(0, 1) for t in (q, k, v))  # [H, L, D]
    s = torch.matmul(qh, kh.transpose(1, 2)) * scale
    length = q.shape[0]
    i = torch.arange(length, device=q.device)[:, None]
    j = torch.arange(length, device=q.device)[None, :]
    if bias_fn is not None:
        s = s + bias_fn(j - i).to(dt)
    mask = torch.zeros((length, length), dtype=torch.bool, device=q.device)
    if left >= 0:
        mask |= (j - i) < -left
    if right >= 0:
        mask |= (j - i) > right
    s = s.masked_fill(mask, float("-inf"))
    p = torch.softmax(s.float(), dim=-1).to(dt)
    p = torch.nan_to_num(p, nan=0.0)
    o = torch.matmul(p, vh)  # [H, L, D]
    lse = torch.logsumexp(s.float(), dim=-1)
    return o.transpose(0, 1), lse


def _bias_fn(kind, heads, device, num_buckets=32, max_distance=128):
    import torch

    from sutra.ops import mpnet_relative_position_bucket

    if kind == "alibi":
        slopes = torch.tensor([2 ** (-8 * (h + 1) / heads) for h in range(heads)],
                              dtype=torch.float32, device=device)
        return slopes, None, lambda rel: -slopes[:, None, None] * rel.abs()[None].float()
    if kind == "rel":
        table = torch.randn(heads, num_buckets, dtype=torch.float32, device=device)

        def fn(rel):
            b = mpnet_relative_position_bucket(rel.cpu(), num_buckets, max_distance).to(device)
            return table[:, b]

        return None, table, fn
    return None, None, None


def _check(out, ref32, ref_lp, what):
    err = (out.float() - ref32).abs().max().item()
    ref_err = (ref_lp.float() - ref32).abs().max().item()
    atol = ATOL["bfloat16" if str(out.dtype) == "torch.bfloat16" else "float16"]
    assert not math.isnan(err), f"{what}: NaN in the output (an element was not written?)"
    assert err <= 2 * ref_err + atol, f"{what}: err {err:.3g} > 2 x ref err {ref_err:.3g} + {atol}"


def _run_case(dtype, d, lengths, varlen, causal=False, window=(-1, -1), bias=None, heads=3,
              lse=True, seed=None, pack=False):
    import torch

    seed = random.randrange(1 << 30) if seed is None else seed
    what = (f"dtype={dtype} d={d} lengths={lengths} varlen={varlen} causal={causal} "
            f"window={window} bias={bias} pack={pack} seed={seed}")
    torch.manual_seed(seed)
    tdt = getattr(torch, dtype)
    dev = "cuda"
    slopes, table, fn = _bias_fn(bias, heads, dev)
    left, right = window
    if causal:
        right = 0 if right < 0 else min(right, 0)
    scale = 1.0 / math.sqrt(d)
    if varlen:
        total = sum(lengths)
        q, k, v = (torch.randn(total, heads, d, dtype=tdt, device=dev) for _ in range(3))
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                          device=dev)
        out = torch.full_like(q, float("nan"))
        res = flash_attention(q, k, v, cu_seqlens=cu, max_seqlen=max(lengths), causal=causal,
                              window=window, alibi_slopes=slopes, rel_bias=table,
                              return_lse=lse, out=out, pack_sequences=pack)
        seqs = [(int(cu[b]), lengths[b]) for b in range(len(lengths))]
    else:
        (length,) = set(lengths)
        b = len(lengths)
        q, k, v = (torch.randn(b, length, heads, d, dtype=tdt, device=dev) for _ in range(3))
        out = torch.full_like(q, float("nan"))
        res = flash_attention(q, k, v, causal=causal, window=window, alibi_slopes=slopes,
                              rel_bias=table, return_lse=lse, out=out)
    o, lse_t = res if lse else (res, None)
    assert o is out
    torch.cuda.synchronize()
    for b, length in enumerate(lengths):
        if varlen:
            s0 = seqs[b][0]
            sl = slice(s0, s0 + length)
            qs, ks, vs, os_ = q[sl], k[sl], v[sl], o[sl]
        else:
            qs, ks, vs, os_ = q[b], k[b], v[b], o[b]
        r32, lse32 = _ref(qs, ks, vs, scale, left, right, fn, True)
        rlp, _ = _ref(qs, ks, vs, scale, left, right, fn, False)
        _check(os_, r32, rlp, what + f" seq={b}")
        if lse:
            got = lse_t[:, sl] if varlen else lse_t[b]
            torch.testing.assert_close(got, lse32, atol=2e-3, rtol=1e-3,
                                       msg=lambda m: what + " lse: " + m)


gpu = pytest.mark.gpu


def _sm90_reason() -> str | None:
    """Why the sm90 path cannot run here, or None."""
    try:
        _core.flash_attention_kernel_info(64, path="sm90")
    except (ValueError, SutraError) as e:
        return str(e)
    return None


@pytest.fixture(autouse=True, params=("auto", "sm80", "sm90"))
def _attention_path(request, monkeypatch):
    """Runs each GPU test on every path by rebinding this module's flash_attention."""
    if request.node.get_closest_marker("gpu") is None:
        if request.param != "auto":
            pytest.skip("CPU-side test: one run is enough")
        return
    if request.param == "sm90":
        reason = _sm90_reason()
        if reason is not None:
            pytest.skip(reason)
        params = getattr(request.node, "callspec", None)
        if params is not None and params.params.get("d") == 32:
            pytest.skip("head_dim 32 has no sm90 kernel")

        def forced(q, *args, **kwargs):  # a head_dim 32 call inside a d-loop stays on auto
            shape = getattr(q, "shape", None) or q.__cuda_array_interface__["shape"]
            path = "sm90" if shape[-1] in (64, 128) else "auto"
            return _flash_attention(q, *args, path=path, **kwargs)

        monkeypatch.setitem(globals(), "flash_attention", forced)
        return
    monkeypatch.setitem(globals(), "flash_attention",
                        functools.partial(_flash_attention, path=request.param))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("length", (1, 17, 127, 128, 129, 1000))
@pytest.mark.parametrize("causal", (False, True))
def test_uniform_small(dtype, d, length, causal):
    _run_case(dtype, d, [length] * 2, varlen=False, causal=causal)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("causal", (False, True))
def test_varlen(dtype, d, causal):
    lengths = list(LENGTHS)
    random.shuffle(lengths)
    _run_case(dtype, d, lengths, varlen=True, causal=causal, heads=2)


# Sentence-like batches: runs of short sequences with the odd long one, so packed row tiles hold
# many sequences, straddle sequence ends, and begin or end inside a sequence longer than a tile.
PACKED_LENGTHS = (1, 2, 3, 5, 7, 9, 10, 11, 13, 16, 17, 31, 33, 64, 65, 127, 128, 129, 300)


def _packed_lengths(count=120):
    return [random.choice(PACKED_LENGTHS[:12]) if i % 9 else random.choice(PACKED_LENGTHS)
            for i in range(count)]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("causal", (False, True))
def test_varlen_packed_tiles(dtype, d, causal):
    _run_case(dtype, d, _packed_lengths(), varlen=True, causal=causal, heads=2, pack=True)


@gpu
@pytest.mark.parametrize("d", HEAD_DIMS)
def test_varlen_packed_tiles_long_and_single(d):
    """Lengths of the per-sequence test (up to 4097) and a batch of one, packed."""
    _run_case("float16", d, list(LENGTHS), varlen=True, heads=2, pack=True)
    _run_case("float16", d, [77], varlen=True, heads=2, pack=True)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", ("alibi", "rel"))
@pytest.mark.parametrize("window", ((-1, -1), (4, 4), (0, 0), (16, 0), (64, 64)))
def test_varlen_packed_tiles_bias_window(dtype, bias, window):
    """MPNet's relative bias and ModernBERT-style windows inside packed tiles: the distances are
    token offsets of the packed stream, equal to the in-sequence ones for visible keys."""
    for d in (32, 64):
        _run_case(dtype, d, _packed_lengths(60), varlen=True, window=window, bias=bias, heads=2,
                  pack=True)


@gpu
def test_packed_tiles_leave_rows_past_the_batch_alone():
    """q has more rows than cu_seqlens covers: packed tiles must not write the rows after
    cu_seqlens[batch] (the per-sequence layout never touches them either)."""
    import torch

    q, k, v = (torch.randn(300, 2, 64, dtype=torch.float16, device="cuda") for _ in range(3))
    cu = torch.tensor([0, 5, 17, 100], dtype=torch.int32, device="cuda")
    out = torch.full_like(q, float("nan"))
    flash_attention(q, k, v, cu_seqlens=cu, max_seqlen=83, out=out, pack_sequences=True)
    torch.cuda.synchronize()
    assert not out[:100].isnan().any()
    assert out[100:].isnan().all()


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", HEAD_DIMS)
def test_uniform_4097(dtype, d):
    _run_case(dtype, d, [4097], varlen=False, heads=2)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", (64, 128))
@pytest.mark.parametrize("bias", (None, "alibi", "rel"))
def test_padded_batch_with_more_tiles_than_sms(dtype, d, bias):
    """A padded batch without a window runs on sm90 as one block per SM that walks many work
    tiles (sm90_grid_blocks): the barriers' phases run on across tiles, the row statistics start
    afresh per tile and the relative-bias table is reloaded when the head changes. 8 sequences
    of 1000 tokens, 24 heads: 1,152 or more tiles for at most 144 SMs, each sequence's last rows
    in a partial tile."""
    _run_case(dtype, d, [1000] * 8, varlen=False, bias=bias, heads=24)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("causal", (False, True))
def test_growing_scores(dtype, d, causal):
    """Key norms grow 1x -> 15x along the sequence, so the row max keeps jumping far past the
    stale max that the lazy rescale exponentiates against: P values near its bound and the
    fall-back (recompute, new max, rescale) path both run, for early and late key tiles."""
    import torch

    seed = random.randrange(1 << 30)
    what = f"growing scores dtype={dtype} d={d} causal={causal} seed={seed}"
    torch.manual_seed(seed)
    tdt = getattr(torch, dtype)
    length, heads = 1500, 2
    ramp = torch.linspace(1.0, 15.0, length, device="cuda")[None, :, None, None]
    q, v = (torch.randn(1, length, heads, d, dtype=tdt, device="cuda") for _ in range(2))
    k = (torch.randn(1, length, heads, d, device="cuda") * ramp).to(tdt)
    out = torch.full_like(q, float("nan"))
    o, lse = flash_attention(q, k, v, causal=causal, return_lse=True, out=out)
    right = 0 if causal else -1
    r32, lse32 = _ref(q[0], k[0], v[0], 1 / math.sqrt(d), -1, right, None, True)
    rlp, _ = _ref(q[0], k[0], v[0], 1 / math.sqrt(d), -1, right, None, False)
    _check(o[0], r32, rlp, what)
    torch.testing.assert_close(lse[0], lse32, atol=2e-3, rtol=1e-3, msg=lambda m: what + ": " + m)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("window", ((64, 64), (0, 0), (16, 0), (300, -1), (-1, 5), (200, 3)))
def test_window_small(dtype, d, window):
    _run_case(dtype, d, [1, 129, 1000, 17], varlen=True, window=window)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("bias", ("alibi", "rel"))
@pytest.mark.parametrize("causal", (False, True))
def test_bias_small(dtype, d, bias, causal):
    _run_case(dtype, d, [1, 129, 1000, 17, 300], varlen=True, causal=causal, bias=bias)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", ((64, 64), (256, 256), (257, 256), (0, 64), (64, 0)))
def test_window_tile_padded(dtype, window):
    # At d=64, two-sided windows with left + right <= 512 run the 64-row window tile, (257, 256)
    # just misses it: both sides of the switch, padded form, a length that is no tile multiple.
    _run_case(dtype, 64, [4097, 4097], varlen=False, window=window, heads=2)


@gpu
@pytest.mark.parametrize("bias", ("alibi", "rel"))
def test_bias_with_window_small(bias):
    _run_case("float16", 64, [1000, 4097], varlen=True, window=(64, 64), bias=bias, heads=2)


@gpu
def test_window_equals_full_attention_on_sliced_keys():
    import torch

    torch.manual_seed(1)
    length, heads, d, left, right = 700, 2, 64, 37, 11
    x = [torch.randn(length, heads, d, dtype=torch.float16, device="cuda") for _ in range(3)]
    win = flash_attention(*x, cu_seqlens=torch.tensor([0, length], dtype=torch.int32,
                                                      device="cuda"),
                          max_seqlen=length, window=(left, right))
    rows = [0, 5, 36, 37, 38, 300, 688, 689, 699]
    slices = [(max(0, i - left), min(length, i + right + 1)) for i in rows]
    packed = [torch.cat([t[a:b] for a, b in slices]) for t in x]
    lens = [b - a for a, b in slices]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32,
                      device="cuda")
    full = flash_attention(*packed, cu_seqlens=cu, max_seqlen=max(lens))
    for n, (i, (a, _)) in enumerate(zip(rows, slices)):
        got = full[int(cu[n]) + (i - a)]
        torch.testing.assert_close(win[i], got, atol=2e-3, rtol=2e-3)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_sequence_alone_equals_packed(dtype):
    import torch

    torch.manual_seed(2)
    tdt = getattr(torch, dtype)
    lengths = [5, 333, 1, 1000]
    total = sum(lengths)
    q, k, v = (torch.randn(total, 4, 64, dtype=tdt, device="cuda") for _ in range(3))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                      device="cuda")
    packed = flash_attention(q, k, v, cu_seqlens=cu, max_seqlen=max(lengths), causal=True)
    a, b = int(cu[1]), int(cu[2])
    alone = flash_attention(q[a:b][None].contiguous(), k[a:b][None].contiguous(),
                            v[a:b][None].contiguous(), causal=True)
    assert torch.equal(packed[a:b], alone[0])


@gpu
def test_runs_on_callers_stream_and_non_contiguous_heads():
    import torch

    torch.manual_seed(3)
    qkv = torch.randn(2, 300, 3, 4, 64, dtype=torch.float16, device="cuda")
    q, k, v = qkv.unbind(2)  # strided views: no copy is made
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        o = flash_attention(q, k, v)
    s.synchronize()
    for b in range(2):
        r32, _ = _ref(q[b], k[b], v[b], 1 / 8, -1, -1, None, True)
        rlp, _ = _ref(q[b], k[b], v[b], 1 / 8, -1, -1, None, False)
        _check(o[b], r32, rlp, "strided")


@gpu
def test_cupy_input():
    cupy = pytest.importorskip("cupy")
    import torch

    q, k, v = (cupy.random.standard_normal((1, 200, 2, 32)).astype(cupy.float16)
               for _ in range(3))
    o = flash_attention(q, k, v)
    assert isinstance(o, cupy.ndarray)
    cupy.cuda.get_current_stream().synchronize()
    tq, tk, tv = (torch.as_tensor(x, device="cuda") for x in (q, k, v))
    r32, _ = _ref(tq[0], tk[0], tv[0], 1 / math.sqrt(32), -1, -1, None, True)
    rlp, _ = _ref(tq[0], tk[0], tv[0], 1 / math.sqrt(32), -1, -1, None, False)
    _check(torch.as_tensor(o, device="cuda")[0], r32, rlp, "cupy")


@gpu
def test_bf16_tensors_on_a_side_stream_through_dlpack():
    """torch bf16 tensors have no __cuda_array_interface__: the binding reads them through
    DLPack, asking torch to order its work before the stream the kernel runs on."""
    import torch

    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 300, 4, 64, dtype=torch.bfloat16, device="cuda") for _ in range(3))
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        scaled = q * 1.0  # produced on the side stream just before the call
        o = flash_attention(scaled, k, v)
    s.synchronize()
    for b in range(2):
        r32, _ = _ref(q[b], k[b], v[b], 1 / 8, -1, -1, None, True)
        rlp, _ = _ref(q[b], k[b], v[b], 1 / 8, -1, -1, None, False)
        _check(o[b], r32, rlp, f"bf16 dlpack side stream seq={b}")


@gpu
def test_relative_bias_table_wider_than_mpnet_buckets():
    """MPNet buckets with 32 buckets whatever its table's width; a wider table's extra columns
    are never read (the old API derived the bucket count from the width)."""
    import torch

    from sutra.ops import mpnet_relative_position_bucket

    torch.manual_seed(5)
    heads, length = 4, 700
    q, k, v = (torch.randn(length, heads, 64, dtype=torch.float16, device="cuda") for _ in range(3))
    table = torch.randn(heads, 40, dtype=torch.float32, device="cuda")
    cu = torch.tensor([0, length], dtype=torch.int32, device="cuda")
    o = flash_attention(q, k, v, cu_seqlens=cu, max_seqlen=length, rel_bias=table)

    def bias(rel):
        return table[:, mpnet_relative_position_bucket(rel.cpu(), 32, 128).to("cuda")]

    r32, _ = _ref(q, k, v, 1 / 8, -1, -1, bias, True)
    rlp, _ = _ref(q, k, v, 1 / 8, -1, -1, bias, False)
    _check(o, r32, rlp, "rel_bias width 40")
    with pytest.raises(ValueError, match="^rel_bias must be"):
        flash_attention(q, k, v, cu_seqlens=cu, max_seqlen=length, rel_bias=table[:, :16])


@gpu
def test_cuda_array_interface_only_objects():
    """Objects with nothing but __cuda_array_interface__ (numba-style) are read zero copy."""
    cupy = pytest.importorskip("cupy")
    import torch

    class Interface:
        def __init__(self, array):
            self.__cuda_array_interface__ = array.__cuda_array_interface__

    q, k, v = (cupy.random.standard_normal((2, 257, 2, 32)).astype(cupy.float16)
               for _ in range(3))
    out = cupy.full_like(q, cupy.nan)
    flash_attention(Interface(q), Interface(k), Interface(v), out=Interface(out))
    cupy.cuda.get_current_stream().synchronize()
    tq, tk, tv, to = (torch.as_tensor(x, device="cuda") for x in (q, k, v, out))
    for b in range(2):
        r32, _ = _ref(tq[b], tk[b], tv[b], 1 / math.sqrt(32), -1, -1, None, True)
        rlp, _ = _ref(tq[b], tk[b], tv[b], 1 / math.sqrt(32), -1, -1, None, False)
        _check(to[b], r32, rlp, f"cai seq={b}")
    with pytest.raises(ValueError, match="^out must be"):
        flash_attention(Interface(q), Interface(k), Interface(v))  # nothing to allocate with


@gpu
def test_a_tensor_that_requires_grad_is_refused_by_name():
    import torch

    q = torch.randn(1, 16, 2, 64, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="^q must be a readable device array"):
        flash_attention(q.clone().requires_grad_(), q, q)


@gpu
def test_bucket_function_matches_transformers():
    import torch

    transformers = pytest.importorskip("transformers")
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    from sutra.ops import mpnet_relative_position_bucket

    rel = torch.arange(-600, 601)
    ours = mpnet_relative_position_bucket(rel, 32, 128)
    theirs = MPNetEncoder.relative_position_bucket(rel, 32, 128)
    assert torch.equal(ours, theirs), transformers.__version__


def test_visible_pairs_counts_the_window():
    import numpy as np

    from sutra.flash_attention import _visible_pairs

    for length in (1, 2, 17, 300):
        i = np.arange(length)[:, None]
        j = np.arange(length)[None, :]
        for left, right in ((-1, -1), (-1, 0), (0, 0), (5, 3), (64, 64), (400, -1), (-1, 2)):
            visible = np.ones((length, length), bool)
            if left >= 0:
                visible &= j >= i - left
            if right >= 0:
                visible &= j <= i + right
            assert _visible_pairs(length, left, right) == visible.sum(), (length, left, right)


@gpu
def test_stats_follow_the_dispatched_tile():
    opt = FlashAttentionOptimizer()
    full = opt.get_stats(4096)
    narrow = opt.get_stats(4096, batch=2, window=(64, 64))
    wide = opt.get_stats(4096, window=(257, 256))
    dense = _core.flash_attention_kernel_info(64)["block_m"]  # 128 on sm80, 192 on sm90
    # auto keeps two-sided windows on the sm80 kernels, whose wide windows run the dense tile
    sm80 = _core.flash_attention_kernel_info(64, path="sm80")["block_m"]
    assert narrow["tile"][0] == 64 and full["tile"][0] == dense and wide["tile"][0] == sm80
    assert narrow["window"] == (64, 64)
    pairs = sum(min(4095, i + 64) - max(0, i - 64) + 1 for i in range(4096))
    assert narrow["flops"] == 4 * 2 * 12 * pairs * 64
    causal = opt.get_stats(100, causal=True)
    assert causal["flops"] == 4 * 12 * (100 * 101 // 2) * 64 and causal["window"] == (-1, 0)


@gpu
def test_optimizer_measures():
    stats = FlashAttentionOptimizer().get_stats(1024, batch=2, measure=True, repeats=5)
    assert stats["time_ms"] > 0 and stats["tflops"] > 0


@gpu
def test_path_choice_is_reported_and_forced_paths_refuse_what_they_cannot_run():
    sm80 = _core.flash_attention_kernel_info(128, path="sm80")
    assert sm80["path"].startswith("sm80")
    reason = _sm90_reason()
    auto = _core.flash_attention_kernel_info(128)
    assert auto["path"].startswith("sm90" if reason is None else "sm80")
    # Two-sided windows stay on sm80 on auto (measured faster there).
    assert _core.flash_attention_kernel_info(64, False, 64, 64)["path"].startswith("sm80")
    if reason is None:
        import torch

        q = torch.zeros((1, 8, 2, 32), dtype=torch.float16, device="cuda")
        with pytest.raises(ValueError, match="head_dim 32"):
            _flash_attention(q, q, q, path="sm90")
        stats = FlashAttentionOptimizer(FlashAttentionConfig(enable_flash_v2=True)).get_stats(
            4096, head_dim=128)
        assert stats["hopper_path"] is True and stats["tile"] == (128, 128)
    with pytest.raises(ValueError, match="path must be"):
        _core.flash_attention_kernel_info(64, path="sm100")
