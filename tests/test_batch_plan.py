"""The one batch planner (sutra._core.plan_batches) against its definition, checked by brute force.

Every backend cuts its token arrays into forward passes with it; these tests pin what a plan
must be: every sequence exactly once, the caps held, passes longest first, the optimal partition
when a pass cost is given (exhaustive search over the cuts of the length-sorted order), and
inputs gathered exactly as numpy would lay them out.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from sutra import _core


def plan(lengths, max_sequences=32, max_tokens=16384, **kwargs):
    return _core.plan_batches(np.asarray(lengths, np.int32), max_sequences, max_tokens, **kwargs)


def random_lengths(rng: random.Random, n: int) -> list[int]:
    return [rng.choice([rng.randint(1, 12), rng.randint(1, 300)]) for _ in range(n)]


def test_every_sequence_once_caps_held_longest_first():
    rng = random.Random(20261201)
    for trial in range(400):
        lengths = random_lengths(rng, rng.randint(0, 80))
        max_sequences = rng.randint(1, 40)
        max_tokens = rng.choice([1, 40, 500, 16384])
        packing = rng.choice(["never", "when_it_pays", "always"])
        case = f"trial {trial}: {lengths} {max_sequences} {max_tokens} {packing}"
        passes = plan(lengths, max_sequences, max_tokens, packing=packing)
        orders = [p.order.tolist() for p in passes]
        assert sorted(i for o in orders for i in o) == list(range(len(lengths))), case
        longest = [p.max_seqlen for p in passes]
        assert longest == sorted(longest, reverse=True), case
        for p in passes:
            own = [lengths[i] for i in p.order]
            assert len(own) <= max_sequences, case
            budget = sum(own) if packing == "always" else len(own) * max(own)
            assert len(own) == 1 or budget <= max_tokens, case
            assert p.max_seqlen == max(own) and p.tokens == sum(own), case
            np.testing.assert_array_equal(p.cu_seqlens, np.concatenate([[0], np.cumsum(own)]))
            if packing == "never":
                assert not p.packed
            elif packing == "always":
                assert p.packed
            else:
                assert p.packed == _core.packing_pays(np.array(own, np.int32)), case


def test_fewest_passes_fill_longest_first():
    """Without a pass cost the plan is the greedy one: sort longest first, fill to the caps."""
    lengths = [5, 30, 7, 7, 2, 30, 1]
    orders = [p.order.tolist() for p in plan(lengths, 3, 1000)]
    assert orders == [[1, 5, 2], [3, 0, 4], [6]]
    # The token budget (rows x longest) closes a pass early: 30 + 30 fits 60, a third row not.
    orders = [p.order.tolist() for p in plan(lengths, 8, 60)]
    assert orders == [[1, 5], [2, 3, 0, 4, 6]]


def _cost(lengths, groups, pass_cost, packing, overhead=0.03):
    total = 0.0
    for g in groups:
        own = [lengths[i] for i in g]
        padded = len(own) * max(own)
        packed = sum(own) * (1 + overhead)
        if packing == "never":
            total += pass_cost + padded
        elif packing == "always":
            total += pass_cost + packed
        else:
            total += pass_cost + (min(padded, packed) if len(own) > 1 else padded)
    return total


@pytest.mark.parametrize("packing", ["never", "when_it_pays", "always"])
def test_pass_cost_gives_an_optimal_partition(packing):
    rng = random.Random(7)
    for trial in range(250):
        n = rng.randint(1, 9)
        lengths = random_lengths(rng, n)
        pass_cost = rng.choice([0, 1, 5, 16, 64, 1e9])
        case = f"trial {trial}: {lengths} cost={pass_cost} {packing}"
        passes = plan(lengths, n, 2**40, pass_cost_tokens=pass_cost, packing=packing)
        groups = [p.order.tolist() for p in passes]
        assert sorted(i for g in groups for i in g) == list(range(n)), case
        ordered = sorted(range(n), key=lambda i: -lengths[i])
        best = min(
            _cost(lengths, [ordered[a:b] for a, b in zip((0, *cuts), (*cuts, n))], pass_cost,
                  packing)
            for k in range(n)
            for cuts in itertools.combinations(range(1, n), k)
        )
        assert _cost(lengths, groups, pass_cost, packing) == pytest.approx(best), case


def test_attention_rows_hold_whole_sequences():
    rng = random.Random(3)
    for _ in range(200):
        lengths = random_lengths(rng, rng.randint(2, 40))
        for p in plan(lengths, 64, 2**40, packing="always", attention_rows=True):
            rows = p.cu_rowlens
            assert rows[0] == 0 and rows[-1] == p.tokens
            assert set(rows.tolist()) <= set(p.cu_seqlens.tolist())  # only at sequence ends
            assert np.diff(rows).max() <= p.max_seqlen  # no row wider than the longest sequence
    # Without attention rows a packed pass has none, and a padded pass never has any.
    assert all(len(p.cu_rowlens) == 0 for p in plan([3, 9, 1], packing="always"))
    assert all(len(p.cu_rowlens) == 0 for p in plan([3, 9, 1], attention_rows=True))


def test_pass_inputs_are_the_sequences_laid_out():
    rng = np.random.default_rng(11)
    lengths = [4, 1, 9, 3, 9, 2]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = rng.integers(5, 1000, size=int(cu[-1])).astype(np.int32)
    sequences = [ids[cu[i]:cu[i + 1]] for i in range(len(lengths))]
    for packing in ("never", "always"):
        for p in plan(lengths, 3, 1000, packing=packing, attention_rows=True):
            if packing == "never":
                input_ids, mask = p.padded_inputs(ids, cu, 77)
                assert input_ids.dtype == mask.dtype == np.int64
                assert input_ids.shape == (len(p), p.max_seqlen)
                for row, index in enumerate(p.order):
                    n = lengths[index]
                    np.testing.assert_array_equal(input_ids[row, :n], sequences[index])
                    assert (input_ids[row, n:] == 77).all()
                    assert mask[row].tolist() == [1] * n + [0] * (p.max_seqlen - n)
            else:
                flat, pass_cu, rows = p.packed_inputs(ids, cu)
                assert flat.dtype == pass_cu.dtype == rows.dtype == np.int64
                np.testing.assert_array_equal(flat, np.concatenate([sequences[i] for i in p.order]))
                np.testing.assert_array_equal(pass_cu, p.cu_seqlens)
                np.testing.assert_array_equal(rows, p.cu_rowlens)


def test_bad_arguments_name_what_is_wrong():
    with pytest.raises(ValueError, match="max_sequences must be >= 1, got 0"):
        plan([3], max_sequences=0)
    with pytest.raises(ValueError, match="max_tokens must be >= 1, got 0"):
        plan([3], max_tokens=0)
    with pytest.raises(ValueError, match="every sequence length must be >= 1, got 0 at lengths"):
        plan([3, 0])
    with pytest.raises(ValueError, match="packing must be one of 'never', 'when_it_pays', 'always'"):
        plan([3], packing="sometimes")
    with pytest.raises(ValueError, match="pass_cost_tokens must be a number >= 0"):
        plan([3], pass_cost_tokens=-1.0)
    with pytest.raises(ValueError, match="lengths must be a C-contiguous numpy.ndarray of dtype int32"):
        _core.plan_batches(np.array([3, 4], np.int64), 8, 100)
    p = plan([3, 4])[0]
    ids = np.arange(7, dtype=np.int32)
    with pytest.raises(ValueError, match="the length of sequence 1 must be the planned 4"):
        p.padded_inputs(ids, np.array([0, 3, 6], np.int32), 0)
    with pytest.raises(ValueError, match="cu_seqlens ends at 9 but ids holds only 7 tokens"):
        p.packed_inputs(ids, np.array([0, 3, 9], np.int32))
    assert plan([]) == []
