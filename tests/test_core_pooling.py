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


# ---------------------------------------------------------------------------------------------
# pool_tokens: every sentence-transformers mode, packed and padded layouts, prompt exclusion

POOL_MODES = ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")


def reference_pool(x, length, mode, prompt=0):
    """sentence-transformers 6 Pooling of one right-padded row, in float64: the tokens taking
    part are positions [prompt, length) (the mask after _exclude_prompt_from_mask)."""
    h = x.astype(np.float64)
    part = np.zeros(len(h), bool)
    part[min(prompt, length):length] = True
    m = part[:, None].astype(np.float64)
    if mode == "cls":
        return h[int(np.argmax(part))]  # argmax of the mask: 0 when nothing takes part
    if mode == "max":
        return np.where(part[:, None], h, -np.inf).max(0)
    if mode in ("mean", "mean_sqrt_len"):
        count = max(m.sum(), 1e-9)
        return (h * m).sum(0) / (count if mode == "mean" else np.sqrt(count))
    if mode == "weightedmean":
        w = m * np.arange(1, len(h) + 1)[:, None]
        return (h * w).sum(0) / max(w.sum(), 1e-9)
    last = np.flatnonzero(part)
    return h[last[-1]] if len(last) else np.zeros(h.shape[1])


@pytest.mark.parametrize("mode", POOL_MODES)
@pytest.mark.parametrize("with_prompt", [False, True])
def test_pool_tokens_matches_sentence_transformers(mode, with_prompt):
    rng = np.random.default_rng(POOL_MODES.index(mode) + 10 * with_prompt)
    lengths = np.array([1, 7, 19, 3, 2, 19], np.int32)
    prompts = np.array([0, 3, 4, 3, 2, 19], np.int32) if with_prompt else None
    hidden, seq = 37, 19
    padded = rng.standard_normal((len(lengths), seq, hidden)).astype(np.float32)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    packed = np.concatenate([padded[b, :n] for b, n in enumerate(lengths)])
    expected = np.stack([reference_pool(padded[b], n, mode, 0 if prompts is None else prompts[b])
                         for b, n in enumerate(lengths)])
    for layout, tokens in (("packed", packed), ("padded", padded)):
        out = _core.pool_tokens(tokens, cu, mode, prompts)
        assert out.dtype == np.float32 and out.shape == (len(lengths), hidden), layout
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6, err_msg=f"{mode} {layout}")


def test_pool_tokens_masked_api_is_the_same_pooling():
    """mean_pool / cls_pool / max_pool on a right-padded mask are pool_tokens on its lengths."""
    x, mask = make_batch(5, 9, 16, seed=4)
    cu = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int32)
    for name, pool in (("mean", _core.mean_pool), ("cls", _core.cls_pool), ("max", _core.max_pool)):
        np.testing.assert_array_equal(pool(x, mask), _core.pool_tokens(x, cu, name), err_msg=name)
    holes = mask.copy()
    holes[0, 2] = 0
    with pytest.raises(ValueError, match="attention_mask row 0 must be right-padded"):
        _core.mean_pool(x, holes)


def test_pool_tokens_rejects_what_does_not_fit():
    x = np.zeros((6, 4), np.float32)
    with pytest.raises(ValueError, match="mode must be one of 'cls', 'mean', 'max'"):
        _core.pool_tokens(x, np.array([0, 6], np.int32), "median")
    with pytest.raises(ValueError, match="cu_seqlens ends at 7 but token_embeddings has 6 rows"):
        _core.pool_tokens(x, np.array([0, 7], np.int32), "mean")
    with pytest.raises(ValueError, match="cu_seqlens must be nondecreasing"):
        _core.pool_tokens(x, np.array([0, 4, 2], np.int32), "mean")
    with pytest.raises(ValueError, match="sequence 0's length must be <= the padded length 3"):
        _core.pool_tokens(np.zeros((1, 3, 4), np.float32), np.array([0, 5], np.int32), "mean")
    with pytest.raises(ValueError, match=r"prompt_lengths .*\(batch,\)"):
        _core.pool_tokens(x, np.array([0, 6], np.int32), "mean", np.zeros(2, np.int32))


# ---------------------------------------------------------------------------------------------
# truncate_and_normalize (Matryoshka)


def test_truncate_and_normalize():
    x = np.random.default_rng(5).standard_normal((6, 48)).astype(np.float32)
    cut = _core.truncate_and_normalize(x, 16)
    np.testing.assert_allclose(cut, reference_normalize(x[:, :16]), **FLOAT32_TOL)
    np.testing.assert_array_equal(_core.truncate_and_normalize(x, 16, normalize=False), x[:, :16])
    np.testing.assert_allclose(_core.truncate_and_normalize(x, 48), reference_normalize(x),
                               **FLOAT32_TOL)
    for keep in (0, 49):
        with pytest.raises(ValueError, match=rf"keep_dim must be in \[1, 48\], got {keep}"):
            _core.truncate_and_normalize(x, keep)
