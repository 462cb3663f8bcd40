"""Build metadata, CPU/GPU discovery and the no-GPU behaviour of sutra._core."""

import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import pytest

from sutra import _core


def test_build_info():
    info = _core.build_info()
    assert set(info) == {"version", "cuda", "cuda_runtime", "cublaslt", "cuda_architectures",
                         "compiler"}
    assert info["version"] == importlib.metadata.version("sutra")
    assert isinstance(info["compiler"], str) and info["compiler"]
    if info["cuda"]:
        major, minor = info["cuda_runtime"].split(".")
        assert int(major) >= 12 and int(minor) >= 0
        assert isinstance(info["cublaslt"], int) and info["cublaslt"] > 0
        assert info["cuda_architectures"]
    else:
        assert info["cuda_runtime"] is None and info["cublaslt"] is None
        assert info["cuda_architectures"] == ""


def test_cpu_features():
    features = _core.cpu_features()
    assert isinstance(features["arch"], str)
    assert features["cores"] >= 1
    if features["arch"] == "x86_64":
        for name in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni"):
            assert isinstance(features[name], bool), name
        assert features["avx2"] <= features["avx"]  # avx2 implies avx


def test_device_queries_never_raise():
    count = _core.cuda_device_count()
    assert isinstance(count, int) and count >= 0
    devices = _core.cuda_devices()
    assert len(devices) == count
    for index, device in enumerate(devices):
        assert device["index"] == index
        assert device["major"] >= 1 and device["total_memory"] > 0
        assert device["multiprocessors"] > 0 and device["name"]
    assert _core.cuda_driver_version() >= 0


def test_sutra_error_is_runtime_error():
    assert issubclass(_core.SutraError, RuntimeError)


def test_device_work_without_gpu_raises_sutra_error():
    if _core.cuda_device_count() > 0:
        pytest.skip("a GPU is visible; test_cuda_smoke covers this machine")
    x = np.ones((2, 3), dtype=np.float32)
    expected = "no CUDA GPU" if _core.build_info()["cuda"] else "has no CUDA support"
    with pytest.raises(_core.SutraError, match=expected):
        _core.cuda_l2_normalize_rows(x)


def test_import_with_no_visible_gpu():
    """A CUDA build imports and answers "0 devices" where the runtime sees no GPU."""
    code = (
        "import numpy as np, sutra._core as c\n"
        "assert c.cuda_device_count() == 0 and c.cuda_devices() == []\n"
        "c.build_info()\n"
        "try:\n"
        "    c.cuda_l2_normalize_rows(np.ones((1, 2), np.float32))\n"
        "except c.SutraError as e:\n"
        "    print('raised:', e)\n"
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "raised:" in result.stdout
