"""The pipeline after the encoder, run on the host from token states: the one pooling (C++), the
Dense modules and the normalization.

sutra's own ONNX graphs carry this part inside the graph. This path serves what a graph cannot:
a model's own ONNX file that stops at the last hidden state, and a Pooling with
``include_prompt=False`` while a prompt is in use (which tokens are the prompt is known per call).
"""

from __future__ import annotations

import math

import numpy as np

from .. import _core
from ..models.spec import Pipeline

_erf = np.frompyfunc(math.erf, 1, 1)


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "identity":
        return x
    if activation == "tanh":
        return np.tanh(x)
    if activation == "relu":
        return np.maximum(x, 0.0)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    # torch.nn.GELU(): the exact erf form (the Dense output is [B, D], small)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(x.dtype))


class PipelineHead:
    """Pooling -> Dense... -> Normalize of a :class:`~sutra.models.spec.Pipeline` in numpy and
    the native core. The Dense weights (small) are read when it is made; :meth:`apply` is
    thread-safe."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._dense = [(*module.load(), module.activation) for module in pipeline.dense]

    def apply(self, token_states: np.ndarray, cu_seqlens: np.ndarray,
              prompt_lengths: np.ndarray | None = None) -> np.ndarray:
        """float32 ``[B, D]`` from token states, packed float32 ``[T, H]`` or right-padded
        ``[B, L, H]``, with int32 ``cu_seqlens [B + 1]`` and optional int32
        ``prompt_lengths [B]`` (honoured when the Pooling has ``include_prompt=False``)."""
        pooling = self.pipeline.pooling
        if pooling.include_prompt:
            prompt_lengths = None
        x = _core.pool_tokens(np.ascontiguousarray(token_states, dtype=np.float32),
                              np.ascontiguousarray(cu_seqlens, dtype=np.int32), pooling.mode,
                              None if prompt_lengths is None
                              else np.ascontiguousarray(prompt_lengths, dtype=np.int32))
        return self.finish(x)

    def finish(self, pooled: np.ndarray) -> np.ndarray:
        """The modules after the pooling: float32 ``[B, D]`` from pooled ``[B, H]``."""
        x = pooled
        for weight, bias, activation in self._dense:
            x = x @ weight.T
            if bias is not None:
                x += bias
            x = _activate(x, activation).astype(np.float32, copy=False)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.pipeline.normalize and len(x):
            x = _core.l2_normalize_rows(x)
        return x
