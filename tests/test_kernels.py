"""The encoder engine's LayerNorm, activation and pooling kernels against torch in float32.

Outputs are poisoned with NaN first, so an element a kernel never wrote fails. The error bound is
2x the error of the same computation done by torch in the input dtype, plus a small atol declared
once per dtype (as for the attention kernels). The argument checks run without a GPU.
"""

from __future__ import annotations

import itertools
import random

import pytest

from sutra import _core

ATOL = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-6}
HIDDENS = (1, 32, 128, 384, 768, 1000, 1024, 8192)  # warp rows: multiples of 128 to 1024


class _FakeDeviceArray:
    """Has only __cuda_array_interface__: enough for the argument checks without a GPU."""

    def __init__(self, shape, typestr="<f2", ptr=1 << 20):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False),
                                         "version": 3, "strides": None, "stream": None}


@pytest.mark.skipif(not _core.build_info()["cuda"], reason="needs a CUDA build")
def test_arguments_are_checked_by_name():
    x = _FakeDeviceArray((4, 8))
    h = _FakeDeviceArray((8,))
    with pytest.raises(ValueError, match=r"^gamma must be a contiguous \[hidden\] array"):
        _core.add_layernorm(x, None, None, _FakeDeviceArray((9,)), h, x, eps=1e-5)
    with pytest.raises(ValueError, match=r"^residual must be a contiguous \[tokens, hidden\]"):
        _core.add_layernorm(x, None, _FakeDeviceArray((3, 8)), h, h, x, eps=1e-5)
    with pytest.raises(ValueError, match="^bias must have x's dtype float16, got float32"):
        _core.add_layernorm(x, _FakeDeviceArray((8,), "<f4"), None, h, h, x, eps=1e-5)
    with pytest.raises(ValueError, match="^x must be float16 or bfloat16, got float32"):
        _core.add_layernorm(_FakeDeviceArray((4, 8), "<f4"), None, None, h, h, x, eps=1e-5)
    ids = _FakeDeviceArray((4,), "<i4")
    table = _FakeDeviceArray((10, 8))
    with pytest.raises(ValueError, match=r"^positions must be a contiguous int32 \[4\] array"):
        _core.embedding_layernorm(ids, _FakeDeviceArray((4,), "<i8"), table, table, None, h, h, x,
                                  eps=1e-12)
    with pytest.raises(ValueError, match=r"^word_embeddings must be a contiguous \[vocab, hidden\]"):
        _core.embedding_layernorm(ids, ids, _FakeDeviceArray((10, 9)), table, None, h, h, x,
                                  eps=1e-12)


def _check(out, ref32, ref_lp, what):
    import torch

    assert not torch.isnan(out).any(), f"{what}: NaN in the output (an element was not written?)"
    err = (out.float() - ref32).abs().max().item()
    ref_err = (ref_lp.float() - ref32).abs().max().item()
    atol = ATOL[str(out.dtype).removeprefix("torch.")]
    assert err <= 2 * ref_err + atol, f"{what}: err {err:.3g} > 2 x ref err {ref_err:.3g} + {atol}"


def _stream():
    import torch

    return int(torch.cuda.current_stream().cuda_stream)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("hidden", HIDDENS)
@pytest.mark.parametrize("inputs", ["bias+residual", "residual", "none", "in place"])
def test_add_layernorm_matches_torch(dtype, hidden, inputs):
    import torch
    import torch.nn.functional as F

    seed = random.randrange(1 << 30)
    torch.manual_seed(seed)
    what = f"dtype={dtype} hidden={hidden} inputs={inputs} seed={seed}"
    dt = getattr(torch, dtype)
    tokens, eps = 1003, 1e-5
    x = (torch.randn(tokens, hidden, device="cuda") * 3 + 1).to(dt)
    residual = torch.randn(tokens, hidden, device="cuda").to(dt)
    bias = torch.randn(hidden, device="cuda").to(dt)
    gamma = (1 + 0.2 * torch.randn(hidden, device="cuda")).to(dt)
    beta = (0.1 * torch.randn(hidden, device="cuda")).to(dt)
    use_bias = inputs == "bias+residual" or inputs == "in place"
    use_residual = inputs != "none"
    total32 = x.float() + (bias.float() if use_bias else 0) + (residual.float() if use_residual else 0)
    total_lp = (x + (bias if use_bias else 0) + (residual if use_residual else 0)).to(dt)
    ref32 = F.layer_norm(total32, (hidden,), gamma.float(), beta.float(), eps)
    ref_lp = F.layer_norm(total_lp, (hidden,), gamma, beta, eps)
    if inputs == "in place":
        out = residual.clone()
        residual_arg = out
    else:
        out = torch.full_like(x, float("nan"))
        residual_arg = residual if use_residual else None
    _core.add_layernorm(x, bias if use_bias else None, residual_arg, gamma, beta, out, eps=eps,
                        stream=_stream(), stream_is_producers=True)
    torch.cuda.synchronize()
    _check(out, ref32, ref_lp, what)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("hidden", (32, 384, 768, 1000, 1024))
@pytest.mark.parametrize("token_type", [True, False])
def test_embedding_layernorm_matches_torch(dtype, hidden, token_type):
    import torch
    import torch.nn.functional as F

    seed = random.randrange(1 << 30)
    torch.manual_seed(seed)
    what = f"dtype={dtype} hidden={hidden} token_type={token_type} seed={seed}"
    dt = getattr(torch, dtype)
    vocab, positions_n, tokens, eps = 3001, 514, 777, 1e-12
    word = torch.randn(vocab, hidden, device="cuda").to(dt)
    position = torch.randn(positions_n, hidden, device="cuda").to(dt)
    type_row = torch.randn(hidden, device="cuda").to(dt)
    gamma = (1 + 0.2 * torch.randn(hidden, device="cuda")).to(dt)
    beta = (0.1 * torch.randn(hidden, device="cuda")).to(dt)
    ids = torch.randint(0, vocab, (tokens,), device="cuda", dtype=torch.int32)
    # positions of packed sequences: each restarts at 0 (an offset, as for RoBERTa, is the host's)
    lengths = [1, 256, 20, 500]
    pos = torch.cat([torch.arange(n, device="cuda") for n in lengths]).to(torch.int32) + 2
    total32 = word.float()[ids.long()] + position.float()[pos.long()]
    total_lp = word[ids.long()] + position[pos.long()]
    if token_type:
        total32 = total32 + type_row.float()
        total_lp = total_lp + type_row
    ref32 = F.layer_norm(total32, (hidden,), gamma.float(), beta.float(), eps)
    ref_lp = F.layer_norm(total_lp.to(dt), (hidden,), gamma, beta, eps)
    out = torch.full((tokens, hidden), float("nan"), device="cuda", dtype=dt)
    _core.embedding_layernorm(ids, pos, word, position, type_row if token_type else None, gamma,
                              beta, out, eps=eps, stream=_stream(), stream_is_producers=True)
    torch.cuda.synchronize()
    _check(out, ref32, ref_lp, what)


@pytest.mark.gpu
def test_empty_batch_and_a_side_stream():
    import torch
    import torch.nn.functional as F

    hidden = 64
    gamma = torch.ones(hidden, device="cuda", dtype=torch.float16)
    beta = torch.zeros(hidden, device="cuda", dtype=torch.float16)
    empty = torch.empty(0, hidden, device="cuda", dtype=torch.float16)
    _core.add_layernorm(empty, None, None, gamma, beta, empty, eps=1e-5, stream=_stream(),
                        stream_is_producers=True)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.randn(300, hidden, device="cuda", dtype=torch.float16)
        out = torch.full_like(x, float("nan"))
        _core.add_layernorm(x, None, None, gamma, beta, out, eps=1e-5, stream=_stream(),
                            stream_is_producers=True)
    side.synchronize()
    ref = F.layer_norm(x.float(), (hidden,), eps=1e-5)
    assert (out.float() - ref).abs().max().item() < 2e-3


POOL_MODES = ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("mode", POOL_MODES)
@pytest.mark.parametrize("hidden", (32, 384, 1000))
def test_device_pooling_is_the_core_pooling(dtype, mode, hidden):
    """The device pooling against the native core's pool_tokens (the one pooling semantics,
    itself checked against sentence-transformers' formulas), on the same fp16/bf16 values."""
    import numpy as np
    import torch

    seed = random.randrange(1 << 30)
    torch.manual_seed(seed)
    what = f"dtype={dtype} mode={mode} hidden={hidden} seed={seed}"
    lengths = [1, 7, 300, 2, 129, 600]
    prompts = [0, 3, 10, 2, 0, 600]  # a prompt covering a whole sequence included
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device="cuda")
    tokens = torch.randn(sum(lengths), hidden, device="cuda").to(getattr(torch, dtype))
    host = np.ascontiguousarray(tokens.float().cpu().numpy())
    cu_host = cu.cpu().numpy()
    # With scratch, this batch of 6 is split over token ranges (the few-long-documents path).
    scratch = torch.full((_core.pool_scratch_floats(hidden),), float("nan"), device="cuda")
    for prompt_lengths, split in itertools.product(
            (None, torch.tensor(prompts, dtype=torch.int32, device="cuda")), (None, scratch)):
        expected = _core.pool_tokens(host, cu_host, mode, None if prompt_lengths is None
                                     else prompt_lengths.cpu().numpy())
        for normalize in (False, True):
            out = torch.full((len(lengths), hidden), float("nan"), device="cuda")
            _core.pool_tokens_device(tokens, cu, out, mode=mode, prompt_lengths=prompt_lengths,
                                     normalize=normalize, scratch=split, stream=_stream(),
                                     stream_is_producers=True)
            torch.cuda.synchronize()
            want = expected
            if normalize:
                norms = np.linalg.norm(expected.astype(np.float64), axis=1, keepdims=True)
                with np.errstate(invalid="ignore"):
                    want = (expected / np.maximum(norms, 1e-12)).astype(np.float32)
            np.testing.assert_allclose(out.cpu().numpy(), want, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{what} prompts={prompt_lengths is not None} "
                                       f"normalize={normalize} split={split is not None}")


ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "tanh", "sigmoid", "identity")


def _activate(name, x):
    """torch's activation of that name, in x's dtype."""
    import torch
    import torch.nn.functional as F

    return {"gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
            "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
            "identity": lambda v: v}[name](x)


@pytest.mark.skipif(not _core.build_info()["cuda"], reason="needs a CUDA build")
def test_activation_arguments_are_checked_by_name():
    x = _FakeDeviceArray((4, 8))
    with pytest.raises(ValueError, match="^activation must be one of 'gelu', 'gelu_tanh'"):
        _core.bias_activation(x, None, activation="swish")
    with pytest.raises(ValueError, match=r"^bias must be a contiguous \[cols\] array"):
        _core.bias_activation(x, _FakeDeviceArray((9,)), activation="gelu")
    with pytest.raises(ValueError, match="^x must be float16 or bfloat16, got int32"):
        _core.bias_activation(_FakeDeviceArray((4, 8), "<i4"), None, activation="gelu")
    with pytest.raises(ValueError, match=r"^x must be \[rows, 2 \* cols\]"):
        _core.gated_activation(_FakeDeviceArray((4, 7)), x, activation="gelu")
    with pytest.raises(ValueError, match=r"^out must be a contiguous \[rows, cols\] array"):
        _core.gated_activation(x, x, activation="gelu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 1), (3001, 1000), (1003, 1001), (4099, 3072)])
def test_bias_activation_matches_torch(dtype, activation, shape):
    """Against torch in float64 (float32 rows: the Dense head's) or float32; the shapes take the
    grid-stride loop over several steps, with 16-byte vectors (cols % 8 == 0) and without."""
    import torch

    seed = random.randrange(1 << 30)
    torch.manual_seed(seed)
    what = f"dtype={dtype} activation={activation} shape={shape} seed={seed}"
    dt = getattr(torch, dtype)
    ref_dt = torch.float64 if dtype == "float32" else torch.float32
    rows, cols = shape
    x = (torch.randn(rows, cols, device="cuda") * 3).to(dt)
    for bias in (None, torch.randn(cols, device="cuda").to(dt)):
        total_ref = x.to(ref_dt) + (0 if bias is None else bias.to(ref_dt))
        total_lp = x + (0 if bias is None else bias)
        ref = _activate(activation, total_ref)
        ref_lp = _activate(activation, total_lp)
        out = x.clone()
        _core.bias_activation(out, bias, activation=activation, stream=_stream(),
                              stream_is_producers=True)
        torch.cuda.synchronize()
        _check(out, ref, ref_lp, f"{what} bias={bias is not None}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
@pytest.mark.parametrize("shape", [(1, 8), (3001, 1152), (1003, 1001)])
def test_gated_activation_matches_torch(dtype, activation, shape):
    """out = act(a) * b per row a | b (ModernBERT's GeGLU with gelu), against torch in float32;
    outputs poisoned with NaN first."""
    import torch

    seed = random.randrange(1 << 30)
    torch.manual_seed(seed)
    what = f"dtype={dtype} activation={activation} shape={shape} seed={seed}"
    dt = getattr(torch, dtype)
    rows, cols = shape
    x = (torch.randn(rows, 2 * cols, device="cuda") * 3).to(dt)
    a, b = x[:, :cols], x[:, cols:]
    ref = _activate(activation, a.float()) * b.float()
    ref_lp = _activate(activation, a) * b
    out = torch.full((rows, cols), float("nan"), device="cuda", dtype=dt)
    _core.gated_activation(x, out, activation=activation, stream=_stream(),
                           stream_is_producers=True)
    torch.cuda.synchronize()
    _check(out, ref, ref_lp, what)
