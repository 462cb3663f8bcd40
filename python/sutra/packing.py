"""Planning of packed (padding-free) forward passes: which sequences share an attention row.

A packed pass computes its dense layers on the real tokens only; attention runs in rows of whole
sequences laid out in ``S`` slots each (``S`` = the longest row), at a cost of ``rows * S**2``.
Binning short sequences into rows as long as the longest sequence keeps that cost near
``tokens * longest`` -- the least any layout can pay, since the longest sequence needs a row of
its own length -- without padding the dense layers.
"""

from __future__ import annotations

from collections.abc import Sequence


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
    """
    if not lengths:
        return [], []
    if min(lengths) < 1:
        raise ValueError(f"every sequence length must be >= 1, got {min(lengths)}")
    longest = max(lengths)
    capacity = longest if capacity is None else max(int(capacity), longest)
    rows: list[list[int]] = []
    free: list[int] = []
    for position in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        n = lengths[position]
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(position)
                free[r] -= n
                break
        else:
            rows.append([position])
            free.append(capacity - n)
    order = [position for row in rows for position in row]
    return order, [capacity - room for room in free]
