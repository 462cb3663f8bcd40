"""sutra.packing.plan_rows: binning sequences into attention rows of a packed pass."""

from __future__ import annotations

import random

import pytest

from sutra.packing import plan_rows


def _rows(lengths, order, row_lengths):
    """The positions of each row, cut from ``order`` by ``row_lengths``."""
    rows, k = [], 0
    for total in row_lengths:
        row = []
        while sum(lengths[p] for p in row) < total:
            row.append(order[k])
            k += 1
        assert sum(lengths[p] for p in row) == total
        rows.append(row)
    assert k == len(order)
    return rows


@pytest.mark.parametrize("seed", range(20))
def test_every_sequence_once_and_rows_within_capacity(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([1, 2, 5, 9, 11, 12, 14, 30, 64]) for _ in range(rng.randint(1, 80))]
    capacity = rng.choice([None, 0, 32, 100])
    order, row_lengths = plan_rows(lengths, capacity)
    assert sorted(order) == list(range(len(lengths))), f"seed={seed}"
    limit = max(max(lengths), capacity or 0)
    assert all(1 <= total <= limit for total in row_lengths), f"seed={seed}"
    rows = _rows(lengths, order, row_lengths)
    # First fit: a row was opened only for a sequence that fitted no earlier row, so no two rows
    # could be merged.
    assert all(row_lengths[i] + row_lengths[j] > limit
               for i in range(len(rows)) for j in range(i + 1, len(rows))), f"seed={seed}"
    assert -(-sum(lengths) // limit) <= len(rows) <= len(lengths)


def test_short_sequences_share_rows_as_long_as_the_longest():
    order, row_lengths = plan_rows([3, 5, 2, 7, 1, 1, 4])
    assert row_lengths == [7, 7, 7, 2]
    assert order[0] == 3  # the longest opens the first row
    # Ten sequences of 3 with a longest of 12: four per row.
    _, row_lengths = plan_rows([12] + [3] * 12)
    assert row_lengths == [12, 12, 12, 12]


def test_edges():
    assert plan_rows([]) == ([], [])
    assert plan_rows([4]) == ([0], [4])
    with pytest.raises(ValueError, match="length must be >= 1, got 0"):
        plan_rows([3, 0])
