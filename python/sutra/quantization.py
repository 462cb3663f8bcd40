"""Embedding quantization with sentence-transformers' semantics, computed in the C++ core."""

from __future__ import annotations

import numpy as np

from . import _core

QUANTIZED_PRECISIONS = ("int8", "uint8", "binary", "ubinary")


def quantize_embeddings(embeddings: np.ndarray, precision: str,
                        ranges: np.ndarray | None = None) -> np.ndarray:
    """Quantize float embeddings ``[n, d]``.

    Args:
        embeddings: float32 ``[n, d]`` (other float dtypes are converted).
        precision: ``"float32"`` (returned as is), ``"int8"``, ``"uint8"``, ``"binary"`` or
            ``"ubinary"``.
        ranges: float32 ``[2, d]``, per-dimension minimum and maximum for the int8/uint8 buckets.
            ``None`` takes them from ``embeddings`` (which then needs at least two rows).

    Returns:
        int8/uint8 ``[n, d]``: ``floor((x - min) / ((max - min) / 255))`` clipped to 0..255
        (minus 128 for int8). binary/ubinary ``[n, ceil(d / 8)]``: the bits ``x > 0`` packed
        big-endian, as uint8 (ubinary) or int8 offset by -128 (binary).
    """
    array = np.ascontiguousarray(embeddings, dtype=np.float32)
    if precision == "float32":
        return array
    if precision not in QUANTIZED_PRECISIONS:
        raise ValueError(
            f"precision must be one of float32, {', '.join(QUANTIZED_PRECISIONS)}; got {precision!r}"
        )
    if ranges is not None:
        ranges = np.ascontiguousarray(ranges, dtype=np.float32)
    return _core.quantize(array, precision, ranges)
