"""Which backend a configuration gets and what it refuses, on any machine (the GPU engine's own
checks are in test_gpu_engine.py): every field takes effect or raises, ``backend="auto"`` falls
back to the cpu backend where the engine cannot run, and a CUDA build needs no cuBLASLt until
the engine is used."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sutra
from sutra import _core
from sutra.backends import create_backend, cuda_status, engine_refuses
from sutra.models.spec import ModelFolder

NO_GPU = _core.cuda_device_count() == 0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"max_batch_tokens": "big"}, "max_batch_tokens must be a positive int or 'auto'"),
        ({"max_batch_tokens": 0}, "max_batch_tokens must be a positive int or 'auto'"),
        ({"dtype": "float64"}, "dtype must be one of 'float32', 'float16', 'bfloat16'"),
        ({"use_fp16": True, "dtype": "bfloat16"}, "use_fp16=True asks for float16"),
        ({"device": -1}, "device must be a CUDA device index"),
        ({"device": True}, "device must be a CUDA device index"),
    ],
)
def test_config_fields_are_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        sutra.EmbedderConfig(**fields)


def test_auto_defaults():
    config = sutra.EmbedderConfig()
    assert config.batch_size is None and config.max_batch_tokens == "auto"
    assert config.dtype is None and config.backend == "auto"


@pytest.mark.skipif(not NO_GPU, reason="on a GPU machine auto picks cuda (test_gpu_engine.py)")
def test_auto_is_cpu_without_a_gpu(efficient_folder):
    embedder = sutra.Embedder(efficient_folder)
    assert embedder.backend.name == "cpu"
    limits = embedder.backend.pass_limits(None, "auto")
    assert (limits.max_sequences, limits.max_tokens) == (32, 16384)
    assert embedder.backend.pass_limits(8, 1000).max_sequences == 8


@pytest.mark.skipif(not NO_GPU, reason="needs a machine without a GPU")
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"backend": "cuda"}, "backend='cuda' cannot run: .*no CUDA GPU is visible"),
        ({"dtype": "bfloat16"}, "dtype='bfloat16' runs only on the cuda backend"),
        ({"dtype": "float16"}, "dtype='float16' runs only on the cuda backend"),
    ],
)
def test_gpu_only_fields_raise_on_the_cpu_backend(efficient_folder, fields, message):
    with pytest.raises(sutra.BackendUnavailableError, match=message):
        sutra.Embedder(efficient_folder, **fields)


def test_float32_dtype_is_the_cpu_backend(efficient_folder):
    embedder = sutra.Embedder(efficient_folder, backend="cpu", dtype="float32")
    assert embedder.backend.name == "cpu"


def test_engine_refuses_what_it_cannot_run(efficient_folder, tmp_path):
    model = ModelFolder.load(efficient_folder)
    assert engine_refuses(model) is None  # MiniLM: head size 32
    # The same weights declared with 6 heads: head size 64 -> still runnable; 5 heads is not a
    # divisor of 384, 16 heads gives 24 (no kernel for it).
    folder = tmp_path / "heads16"
    shutil.copytree(efficient_folder, folder)
    config = (folder / "config.json").read_text().replace(
        '"num_attention_heads": 12', '"num_attention_heads": 16')
    (folder / "config.json").write_text(config)
    reason = engine_refuses(ModelFolder.load(folder))
    assert reason is not None and "head size of 24" in reason


def test_explicit_cuda_request_names_what_blocks_it(efficient_folder):
    usable, why = cuda_status()
    if usable:
        pytest.skip("the engine can run here")
    model = ModelFolder.load(efficient_folder)
    with pytest.raises(sutra.BackendUnavailableError, match="backend='cuda' cannot run"):
        create_backend(model, "cuda")
    assert why


@pytest.mark.skipif(not _core.build_info()["cuda"], reason="a CPU-only build has no cuBLASLt")
def test_cuda_build_does_not_link_cublaslt():
    """The engine dlopens cuBLASLt at first use: the module itself must not need it."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed")
    dynamic = subprocess.run([readelf, "-d", _core.__file__], capture_output=True, text=True,
                             check=True).stdout
    needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed and not any("cublas" in line.lower() for line in needed), needed


@pytest.mark.skipif(not _core.build_info()["cuda"], reason="a CPU-only build has no cuBLASLt")
def test_cpu_paths_run_where_cublaslt_cannot_be_loaded(efficient_folder, tmp_path):
    """A machine with the CUDA build but without cuBLASLt: import, the cpu backend and the
    queries work; build_info reports the library missing; the engine names the package."""
    bogus = tmp_path / "libcublasLt.so.13"
    bogus.write_text("not a library")
    code = (
        "import sutra._core as c\n"
        f"assert c.set_cublaslt_path({str(bogus)!r})\n"
        "import sutra\n"
        "assert c.build_info()['cublaslt'] == 0, c.build_info()\n"
        "from sutra.backends import cuda_status\n"
        "print('status:', cuda_status())\n"
        f"e = sutra.Embedder({efficient_folder!r}, backend='cpu')\n"
        "print('shape:', e.encode(['a cat']).shape)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "shape: (1, 384)" in result.stdout
    if not NO_GPU:
        assert "nvidia-cublas" in result.stdout


def test_engine_bindings_refuse_bad_arguments():
    spec = _core.EncoderSpec(vocab=10, max_positions=8, token_types=2, hidden=64, heads=2,
                             layers=1, intermediate=128)
    arena = np.zeros(_core.plan_weight_layout(spec).total_bytes, dtype=np.uint8)
    common = {"activation": "gelu", "positions": "absolute", "padding_idx": 0,
              "layer_norm_eps": 1e-12, "pooling": "mean", "dense": [], "normalize": True}
    with pytest.raises(ValueError, match="dtype must be 'float16' or 'bfloat16'"):
        _core.GpuEncoder(spec, arena, **{**common, "dtype": "float32"})
    with pytest.raises(ValueError, match="activation must be one of"):
        _core.GpuEncoder(spec, arena, **{**common, "activation": "swish"})
    with pytest.raises(ValueError, match="positions must be 'absolute', 'padding_offset' or "):
        _core.GpuEncoder(spec, arena, **{**common, "positions": "alibi"})
    # Checked against the spec before any device work, so this holds without a GPU too.
    with pytest.raises(ValueError, match="position_table must be false with rotary"):
        _core.GpuEncoder(spec, arena, **{**common, "positions": "rotary",
                                         "rotary_thetas": [10_000.0]})
    rotary = _core.EncoderSpec(vocab=10, max_positions=8, token_types=0, hidden=64, heads=2,
                               layers=2, intermediate=128, position_table=False, pre_norm=True)
    rotary_arena = np.zeros(_core.plan_weight_layout(rotary).total_bytes, dtype=np.uint8)
    with pytest.raises(ValueError, match="rotary_thetas must be one rotary base per layer"):
        _core.GpuEncoder(rotary, rotary_arena, **{**common, "positions": "rotary",
                                                  "rotary_thetas": [10_000.0]})
    with pytest.raises(ValueError, match="attention_windows must be empty or one value per"):
        _core.GpuEncoder(rotary, rotary_arena, **{**common, "positions": "rotary",
                                                  "rotary_thetas": [1e4, 1e4],
                                                  "attention_windows": [64]})
    with pytest.raises(ValueError, match="arena must be a C-contiguous"):
        _core.GpuEncoder(spec, arena.astype(np.int8), **common)
    if NO_GPU:  # valid arguments: the engine then needs a GPU
        with pytest.raises(_core.SutraError, match="GPU|CUDA support"):
            _core.GpuEncoder(spec, arena, **common)


def test_cli_passes_dtype_and_device_to_the_embedder(efficient_folder, capsys):
    from sutra.cli import main

    assert main(["embed", "a cat", "--model", efficient_folder, "--backend", "cpu",
                 "--dtype", "float32", "--format", "json"]) == 0
    assert capsys.readouterr().out.startswith("[[")
    code = main(["embed", "a cat", "--model", efficient_folder, "--backend", "cpu",
                 "--dtype", "bfloat16"])
    assert code != 0
    assert "dtype='bfloat16' runs only on the cuda backend" in capsys.readouterr().err
