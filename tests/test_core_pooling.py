"""Pooling and normalization in sutra._core against numpy (sentence-transformers semantics)."""

import numpy as np
import pytest

from sutra import _core

FLOAT32_TOL = {"rtol": 1e-5, "atol": 1e-6}


def make_batch(batch, seq, hidden, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, seq, hidden)).astype(np.float32)
    lengths = rng.integers(0, seq + 1, size=batch)
    if batch > 1:
        lengths[0], lengths[-1] = seq, min(1, seq)  # a full row and a row of length 1
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return x, mask


def reference_mean(x, mask):
    m = mask.astype(np.float64)[:, :, None]
    return (x.astype(np.float64) * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


def reference_max(x, mask):
    # sentence-transformers 6: token_embeddings.masked_fill(mask == 0, -inf).max(dim=1)
    masked = np.where(mask[:, :, None] == 0, np.float32(-np.inf), x)
    return masked.max(axis=1)


SHAPES = [(1, 1, 1), (5, 7, 13), (3, 128, 384), (4, 9, 1025)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_s{}_h{}".format(*s))
def test_pools_match_reference(shape):
    x, mask = make_batch(*shape, seed=sum(shape))
    np.testing.assert_allclose(_core.mean_pool(x, mask), reference_mean(x, mask), **FLOAT32_TOL)
    np.testing.assert_array_equal(_core.max_pool(x, mask), reference_max(x, mask))
    np.testing.assert_array_equal(_core.cls_pool(x, mask), x[:, 0, :])
    for out in (_core.mean_pool(x, mask), _core.max_pool(x, mask), _core.cls_pool(x, mask)):
        assert out.dtype == np.float32 and out.shape == (shape[0], shape[2])


def test_all_padding_rows():
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.zeros((2, 4), dtype=np.int64)
    np.testing.assert_array_equal(_core.mean_pool(x, mask), np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(_core.max_pool(x, mask), np.full((2, 3), -np.inf, np.float32))


def test_pool_is_batch_invariant():
    """A row pools to the same vector alone and inside a padded batch."""
    x, mask = make_batch(6, 20, 31, seed=3)
    batched = _core.mean_pool(x, mask)
    for i in range(6):
        n = int(mask[i].sum())
        alone = _core.mean_pool(np.ascontiguousarray(x[i : i + 1, : max(n, 1)]),
                                np.ascontiguousarray(mask[i : i + 1, : max(n, 1)]))
        np.testing.assert_allclose(alone[0], batched[i], **FLOAT32_TOL)


def test_empty_batch_and_empty_sequence():
    x = np.zeros((0, 5, 8), dtype=np.float32)
    assert _core.mean_pool(x, np.zeros((0, 5), np.int64)).shape == (0, 8)
    x = np.zeros((2, 0, 8), dtype=np.float32)
    np.testing.assert_array_equal(_core.mean_pool(x, np.zeros((2, 0), np.int64)),
                                  np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="seq >= 1"):
        _core.cls_pool(x, np.zeros((2, 0), np.int64))


@pytest.mark.parametrize("pool", [_core.mean_pool, _core.cls_pool, _core.max_pool])
def test_pool_rejects_bad_arrays(pool):
    x, mask = make_batch(2, 3, 4, seed=1)
    with pytest.raises(ValueError, match="token_embeddings .*float32"):
        pool(x.astype(np.float64), mask)
    with pytest.raises(ValueError, match="token_embeddings .*C-contiguous"):
        pool(np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2), mask)
    with pytest.raises(ValueError, match="token_embeddings .*shape"):
        pool(x[0], mask)
    with pytest.raises(ValueError, match="attention_mask .*int64"):
        pool(x, mask.astype(np.int32))
    with pytest.raises(ValueError, match=r"attention_mask .*got .*\(2, 4\)"):
        pool(x, np.ones((2, 4), np.int64))


# ---------------------------------------------------------------------------------------------
# l2_normalize_rows


def reference_normalize(x):
    x64 = x.astype(np.float64)
    return x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-12)


@pytest.mark.parametrize(("rows", "dim"), [(1, 1), (7, 3), (64, 384), (3, 1025), (0, 5), (4, 0)])
def test_l2_normalize_rows(rows, dim):
    x = np.random.default_rng(rows + dim).standard_normal((rows, dim)).astype(np.float32)
    before = x.copy()
    out = _core.l2_normalize_rows(x)
    assert out.dtype == np.float32 and out.shape == (rows, dim)
    np.testing.assert_allclose(out, reference_normalize(x), **FLOAT32_TOL)
    np.testing.assert_array_equal(x, before)  # a new array; the input is untouched


def test_l2_normalize_zero_and_tiny_rows():
    x = np.array([[0, 0, 0], [1e-30, 0, 0], [3, 4, 0]], dtype=np.float32)
    out = _core.l2_normalize_rows(x)
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_allclose(out[1], [1e-18, 0, 0], rtol=1e-5)  # divided by eps = 1e-12
    np.testing.assert_allclose(out[2], [0.6, 0.8, 0], **FLOAT32_TOL)


def test_l2_normalize_rejects_bad_arrays():
    with pytest.raises(ValueError, match="x .*float32"):
        _core.l2_normalize_rows(np.ones((2, 3)))
    with pytest.raises(ValueError, match="x .*C-contiguous"):
        _core.l2_normalize_rows(np.ones((3, 2), np.float32).T)
    with pytest.raises(ValueError, match=r"x .*\(n, d\)"):
        _core.l2_normalize_rows(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="x .*float32.*got numpy.ndarray of dtype >f4"):
        _core.l2_normalize_rows(np.ones((2, 3), dtype=">f4"))
