"""The CUDA smoke op (a hand-written kernel) against numpy. Needs a GPU and a CUDA build."""

import numpy as np
import pytest

from sutra import _core

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _core.build_info()["cuda"], reason="this build of sutra has no CUDA"),
    pytest.mark.skipif(_core.cuda_device_count() == 0, reason="no CUDA GPU is visible"),
]

FLOAT32_TOL = {"rtol": 1e-5, "atol": 1e-6}


def reference_normalize(x):
    x64 = x.astype(np.float64)
    return x64 / np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-12)


# dims below, at and above a warp and a block (256 threads), rows from 1 to many blocks
SHAPES = [(1, 1), (7, 3), (5, 31), (3, 32), (64, 384), (9, 257), (2, 1025), (4097, 768),
          (1, 70001)]


@pytest.mark.parametrize(("rows", "dim"), SHAPES)
def test_matches_numpy(rows, dim):
    x = np.random.default_rng(rows * 7 + dim).standard_normal((rows, dim)).astype(np.float32)
    out = _core.cuda_l2_normalize_rows(x)
    assert out.dtype == np.float32 and out.shape == (rows, dim)
    np.testing.assert_allclose(out, reference_normalize(x), **FLOAT32_TOL)
    np.testing.assert_allclose(out, _core.l2_normalize_rows(x), **FLOAT32_TOL)


def test_zero_rows_and_empty():
    x = np.zeros((3, 10), dtype=np.float32)
    x[1, 4] = 2.0
    out = _core.cuda_l2_normalize_rows(x)
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_array_equal(out[1], np.eye(10, dtype=np.float32)[4])
    assert _core.cuda_l2_normalize_rows(np.zeros((0, 8), np.float32)).shape == (0, 8)
    assert _core.cuda_l2_normalize_rows(np.zeros((4, 0), np.float32)).shape == (4, 0)


def test_every_device():
    x = np.random.default_rng(0).standard_normal((33, 100)).astype(np.float32)
    for device in range(_core.cuda_device_count()):
        np.testing.assert_allclose(_core.cuda_l2_normalize_rows(x, device),
                                   reference_normalize(x), **FLOAT32_TOL)


def test_bad_arguments():
    x = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="device"):
        _core.cuda_l2_normalize_rows(x, _core.cuda_device_count())
    with pytest.raises(ValueError, match="device"):
        _core.cuda_l2_normalize_rows(x, -1)
    with pytest.raises(ValueError, match="x .*float32"):
        _core.cuda_l2_normalize_rows(x.astype(np.float64))
    with pytest.raises(ValueError, match="x .*C-contiguous"):
        _core.cuda_l2_normalize_rows(np.ones((3, 2), np.float32).T)


def test_devices_report_compute_capability():
    for device in _core.cuda_devices():
        assert (device["major"], device["minor"]) >= (7, 0)
