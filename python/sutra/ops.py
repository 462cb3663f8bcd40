"""Device-tensor operators of sutra (CUDA): ``sutra.ops.flash_attention``."""

from __future__ import annotations

from .flash_attention import (
    FlashAttentionConfig,
    FlashAttentionOptimizer,
    flash_attention,
    mpnet_relative_position_bucket,
)

__all__ = [
    "FlashAttentionConfig",
    "FlashAttentionOptimizer",
    "flash_attention",
    "mpnet_relative_position_bucket",
]
