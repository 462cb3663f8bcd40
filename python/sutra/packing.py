"""Planning of packed (padding-free) forward passes: which sequences share an attention row.

A packed pass computes its dense layers on the real tokens only; attention runs in rows of whole
sequences laid out in ``S`` slots each (``S`` = the longest row), at a cost of ``rows * S**2``.
Binning short sequences into rows as long as the longest sequence keeps that cost near
``tokens * longest`` -- the least any layout can pay, since the longest sequence needs a row of
its own length -- without padding the dense layers. The binning is the batch planner's
(:func:`sutra._core.plan_attention_rows`); this is its list-based face.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _core


def plan_rows(lengths: Sequence[int], capacity: int | None = None) -> tuple[list[int], list[int]]:
    """Bin sequences into attention rows (first fit, longest first).

    Args:
        lengths: token count of each sequence, every one >= 1.
        capacity: most tokens in a row; ``None`` (or anything shorter than the longest
            sequence) means the longest sequence's length.

    Returns:
        ``(order, row_lengths)``: ``order`` lists every position of ``lengths`` exactly once,
        row after row (lay the sequences out in this order); ``row_lengths[r]`` is the total
        length of row ``r``, each at most the capacity. An empty input gives ``([], [])``.

    Raises:
        ValueError: a length below 1.
    """
    order, row_lengths = _core.plan_attention_rows(np.asarray(lengths, dtype=np.int32),
                                                   0 if capacity is None else int(capacity))
    return order.tolist(), row_lengths.tolist()
