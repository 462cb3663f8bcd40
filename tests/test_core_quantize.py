"""sutra._core.quantize against sentence-transformers' quantize_embeddings, replicated in numpy.

The formulas are those of sentence-transformers 6.2 (sentence_transformers/util/quantization.py):
buckets are floored and clipped to 0..255, a constant dimension gets a step of 1, and ranges
cannot be computed from a single embedding. The int8/uint8 results must be bit-identical.
"""

import numpy as np
import pytest

from sutra import _core


def st_quantize(embeddings, precision, ranges=None):
    """sentence-transformers 6.2 quantize_embeddings, numpy part, verbatim formulas."""
    if precision in ("int8", "uint8"):
        if ranges is None:
            ranges = np.vstack((np.min(embeddings, axis=0), np.max(embeddings, axis=0)))
        ranges = ranges.astype(np.float32, copy=False)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        with np.errstate(all="ignore"):  # inf - inf in the specials test
            q_vals = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        q_vals = np.nan_to_num(q_vals, nan=0.0)  # sutra maps NaN to bucket 0 (numpy: undefined)
        if precision == "uint8":
            return q_vals.astype(np.uint8)
        return (q_vals - 128).astype(np.int8)
    if precision == "binary":
        return (np.packbits(embeddings > 0, axis=-1) - 128).astype(np.int8)
    if precision == "ubinary":
        return np.packbits(embeddings > 0, axis=-1)
    raise AssertionError(precision)


def packbits_rows(embeddings, signed):
    """np.packbits per row, padded with zero bits, computed independently of st_quantize."""
    packed = np.packbits(embeddings > 0, axis=1)
    return (packed.astype(np.int16) - 128).astype(np.int8) if signed else packed


PRECISIONS = ["int8", "uint8", "binary", "ubinary"]
SHAPES = [(2, 8), (7, 16), (100, 384), (33, 1024), (3, 1)]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_sentence_transformers(precision, shape):
    emb = np.random.default_rng(shape[0] * 1000 + shape[1]).standard_normal(shape)
    emb = emb.astype(np.float32)
    got = _core.quantize(emb, precision, None)
    want = st_quantize(emb, precision)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_given_ranges_with_values_outside_are_clipped(precision):
    rng = np.random.default_rng(5)
    calibration = rng.standard_normal((50, 97)).astype(np.float32)
    ranges = np.vstack((calibration.min(axis=0), calibration.max(axis=0))).astype(np.float32)
    emb = (3 * rng.standard_normal((40, 97))).astype(np.float32)  # often outside the ranges
    emb[0, :5] = [1e6, -1e6, 3e9, -3e9, 1e30]  # far outside int32 as well
    got = _core.quantize(emb, precision, ranges)
    np.testing.assert_array_equal(got, st_quantize(emb, precision, ranges))
    low, high = (-128, 127) if precision == "int8" else (0, 255)
    assert got[0, :5].tolist() == [high, low, high, low, high]


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_constant_dimension_and_specials(precision):
    emb = np.random.default_rng(6).standard_normal((10, 6)).astype(np.float32)
    emb[:, 2] = 0.25  # max == min: 0 / 0
    emb[3, 4] = np.inf
    got = _core.quantize(emb, precision, None)
    np.testing.assert_array_equal(got, st_quantize(emb, precision))


def test_range_extremes_hit_the_ends():
    emb = np.random.default_rng(9).standard_normal((20, 12)).astype(np.float32)
    got = _core.quantize(emb, "int8", None)
    assert got.min() == -128 and got.max() == 127
    got = _core.quantize(emb, "uint8", None)
    assert got.min() == 0 and got.max() == 255


@pytest.mark.parametrize("dim", [1, 5, 9, 383, 385])
@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_binary_odd_dims(precision, dim):
    emb = np.random.default_rng(dim).standard_normal((11, dim)).astype(np.float32)
    got = _core.quantize(emb, precision, None)
    want = packbits_rows(emb, signed=precision == "binary")
    assert got.shape == (11, (dim + 7) // 8) and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_binary_zero_is_not_positive():
    emb = np.array([[0.0, -0.0, 1e-45, -1, 2, 0, 0, 0]], dtype=np.float32)
    assert _core.quantize(emb, "ubinary", None).tolist() == [[0b00101000]]
    assert _core.quantize(emb, "binary", None).tolist() == [[0b00101000 - 128]]


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_single_embedding_needs_ranges(precision):
    emb = np.ones((1, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="single embedding; pass ranges"):
        _core.quantize(emb, precision, None)
    ranges = np.array([[0, 0, 0, 0], [2, 2, 2, 2]], dtype=np.float32)
    np.testing.assert_array_equal(_core.quantize(emb, precision, ranges),
                                  st_quantize(emb, precision, ranges))


def test_empty_batch():
    emb = np.zeros((0, 16), dtype=np.float32)
    assert _core.quantize(emb, "int8", None).shape == (0, 16)
    assert _core.quantize(emb, "binary", None).shape == (0, 2)


def test_errors_name_the_argument():
    emb = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="precision.*'int8', 'uint8', 'binary', 'ubinary'.*'int4'"):
        _core.quantize(emb, "int4", None)
    with pytest.raises(ValueError, match="embeddings .*float32"):
        _core.quantize(emb.astype(np.float16), "int8", None)
    with pytest.raises(ValueError, match="embeddings .*C-contiguous"):
        _core.quantize(np.ones((4, 2), np.float32).T, "int8", None)
    with pytest.raises(ValueError, match=r"ranges .*\(2, d\).*\(2, 3\)"):
        _core.quantize(emb, "int8", np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="ranges .*float32"):
        _core.quantize(emb, "uint8", np.ones((2, 4)))
    with pytest.raises(ValueError, match="ranges .*int8.*uint8"):
        _core.quantize(emb, "binary", np.ones((2, 4), np.float32))
