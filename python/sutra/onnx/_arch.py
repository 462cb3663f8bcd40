"""The encoder as the graph builder consumes it: arrays by canonical name, laid out for ONNX.

The architecture itself (sizes, activation, positions, canonical weight names) is described once,
in :mod:`sutra.models.architecture`; this module only fetches the arrays it names and lays them out
the way the graph multiplies them ([in, out], Q|K|V stacked, whether the checkpoint stores them
apart or fused).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from .. import _core
from ..models.architecture import (
    MPNET_MAX_DISTANCE,
    MPNET_NUM_BUCKETS,
    EncoderArchitecture,
    describe_encoder,
    supported_architectures,
)

__all__ = ["EncoderSpec", "LayerWeights", "mpnet_relative_buckets", "parse_encoder",
           "supported_architectures"]


@dataclass
class LayerWeights:
    """One encoder layer; matrices are already [in, out] (transposed from torch's Linear).

    A bias or norm the architecture lacks is ``None`` (ModernBERT: no biases by default, no
    attention norm in layer 0); ``ln1`` is the attention sublayer's norm and ``ln2`` the
    feed-forward's, after their sublayer or before it as ``arch.norm_position`` says.
    """

    qkv_w: np.ndarray  # [H, 3H], Q|K|V stacked on axis 1
    qkv_b: np.ndarray | None  # [3H]
    out_w: np.ndarray  # [H, H]
    out_b: np.ndarray | None  # [H]
    ln1_g: np.ndarray | None
    ln1_b: np.ndarray | None
    ffn_in_w: np.ndarray  # [H, I], or [H, 2I] for a gated feed-forward (activated half first)
    ffn_in_b: np.ndarray | None  # [I] or [2I]
    ffn_out_w: np.ndarray  # [I, H]
    ffn_out_b: np.ndarray | None  # [H]
    ln2_g: np.ndarray
    ln2_b: np.ndarray | None


@dataclass
class EncoderSpec:
    arch: EncoderArchitecture
    word_embeddings: np.ndarray  # [V, H]
    # [P, H]; token-type row 0 is folded in (single-sentence inputs have token_type_ids == 0).
    # None for rotary positions (no table).
    position_embeddings: np.ndarray | None
    emb_ln_g: np.ndarray
    emb_ln_b: np.ndarray | None
    relative_bias: np.ndarray | None  # [num_buckets, heads], MPNet only
    _weights: Mapping[str, np.ndarray]

    def tensor(self, canonical: str) -> np.ndarray:
        name = self.arch.weight_names[canonical]
        return _f32(name, self._weights[name])

    def optional(self, canonical: str) -> np.ndarray | None:
        """The tensor, or ``None`` when the architecture has none of that name (a bias it
        turns off, layer 0's missing norm)."""
        return self.tensor(canonical) if canonical in self.arch.weight_names else None

    def layers(self) -> Iterator[LayerWeights]:
        """Layers one at a time, so only one layer's transposed copies are alive while building."""
        for i in range(self.arch.num_layers):
            yield self._layer(f"layers.{i}.")

    def _layer(self, prefix: str) -> LayerWeights:
        t = lambda part: self.tensor(prefix + part)
        o = lambda part: self.optional(prefix + part)
        if prefix + "attention.qkv.weight" in self.arch.weight_names:
            qkv_w, qkv_b = t("attention.qkv.weight").T, o("attention.qkv.bias")
        else:
            q, k, v = (t(f"attention.{n}.weight") for n in "qkv")
            qkv_w = np.concatenate([q.T, k.T, v.T], axis=1)
            qkv_b = np.concatenate([t(f"attention.{n}.bias") for n in "qkv"])
        return LayerWeights(
            qkv_w=np.ascontiguousarray(qkv_w),
            qkv_b=qkv_b,
            out_w=np.ascontiguousarray(t("attention.o.weight").T),
            out_b=o("attention.o.bias"),
            ln1_g=o("attention_norm.weight"),
            ln1_b=o("attention_norm.bias"),
            ffn_in_w=np.ascontiguousarray(t("ffn.in.weight").T),
            ffn_in_b=o("ffn.in.bias"),
            ffn_out_w=np.ascontiguousarray(t("ffn.out.weight").T),
            ffn_out_b=o("ffn.out.bias"),
            ln2_g=t("ffn_norm.weight"),
            ln2_b=o("ffn_norm.bias"),
        )

    def layer_bytes(self) -> int:
        """float32 bytes of every layer's tensors."""
        return 4 * sum(int(np.prod(shape)) for name, shape in self.arch.shapes.items()
                       if name.startswith("layers."))


def _f32(name: str, arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == np.float32:
        return a
    if a.dtype in (np.float16, np.float64):
        return a.astype(np.float32)
    raise ValueError(f"weight {name!r} has dtype {a.dtype}; expected float32 or float16")


def parse_encoder(config: Mapping, weights: Mapping[str, np.ndarray]) -> EncoderSpec:
    """Check ``config`` and ``weights`` and gather them into an :class:`EncoderSpec`."""
    arch = describe_encoder(config, {name: tuple(np.shape(a)) for name, a in weights.items()})
    names = arch.weight_names
    spec = EncoderSpec(arch=arch, word_embeddings=None, position_embeddings=None,  # type: ignore[arg-type]
                       emb_ln_g=None, emb_ln_b=None, relative_bias=None, _weights=weights)  # type: ignore[arg-type]
    spec.word_embeddings = spec.tensor("embeddings.word")
    if "embeddings.position" in names:
        position = spec.tensor("embeddings.position")
        if "embeddings.token_type" in names:
            position = position + spec.tensor("embeddings.token_type")[0]
        spec.position_embeddings = np.ascontiguousarray(position, dtype=np.float32)
    spec.emb_ln_g = spec.tensor("embeddings.norm.weight")
    spec.emb_ln_b = spec.optional("embeddings.norm.bias")
    if "relative_attention_bias" in names:
        spec.relative_bias = spec.tensor("relative_attention_bias")
    return spec


def mpnet_relative_buckets(
    length: int, num_buckets: int = MPNET_NUM_BUCKETS, max_distance: int = MPNET_MAX_DISTANCE
) -> np.ndarray:
    """HF ``MPNetEncoder.relative_position_bucket`` for query i, key j in [0, length): int64
    [L, L], from the one bucket function of the native core."""
    positions = np.arange(length, dtype=np.int64)
    relative = np.ascontiguousarray(positions[None, :] - positions[:, None])
    return _core.mpnet_relative_buckets(relative, num_buckets, max_distance)
