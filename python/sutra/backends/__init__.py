"""Backends run a model's pipeline on flat token arrays (the contract: :mod:`.base`)."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

from .. import _core
from .._errors import BackendUnavailableError
from ..models.spec import ModelFolder
from .base import Backend, EncodedRows, PassLimits, TokenBatch
from .cuda import engine_lacks
from .onnxruntime import OnnxRuntimeBackend

CUBLASLT_SONAME = "libcublasLt.so.13"


def find_cublaslt() -> Path | None:
    """The nvidia-cublas wheel's ``libcublasLt.so.13`` on ``sys.path``, or ``None``."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "cu13" / "lib" / CUBLASLT_SONAME
        if candidate.is_file():
            return candidate
    return None


# The GPU engine loads cuBLASLt when it is first used; point it at the wheel on sys.path (which
# may not be the site-packages next to sutra's module, where the module's RUNPATH looks).
_wheel_cublaslt = find_cublaslt()
if _wheel_cublaslt is not None:
    _core.set_cublaslt_path(str(_wheel_cublaslt))


def cuda_status() -> tuple[bool, str]:
    """Whether the cuda backend can run here, and if not, why (one sentence)."""
    info = _core.build_info()
    if not info.get("cuda"):
        return False, (
            "this build of sutra has no CUDA support (it was built without nvcc/cuBLAS; "
            "rebuild with SUTRA_ENABLE_CUDA=ON on a machine with the CUDA toolkit)"
        )
    if _core.cuda_device_count() == 0:
        return False, "no CUDA GPU is visible (no device or no driver)"
    if not info.get("cublaslt"):
        return False, (f"cuBLASLt ({CUBLASLT_SONAME}) cannot be loaded; install it with "
                       "`pip install 'nvidia-cublas>=13,<14'` (the sutra[cuda] extra)")
    return True, (f"GPU engine on {_core.cuda_devices()[0]['name']} (cuBLASLt "
                  f"{info['cublaslt']}; float16 by default, bfloat16 on request)")


def engine_refuses(model: ModelFolder) -> str | None:
    """Why the GPU engine cannot run ``model`` (one sentence), or ``None`` when it can."""
    arch = model.pipeline.transformer.architecture
    if model.student is not None or arch is None:
        return f"{model.path} is an ONNX graph only (no safetensors encoder for the engine)"
    return engine_lacks(arch)


def create_backend(model: ModelFolder, backend: str, *, use_fp16: bool = False,
                   dtype: str | None = None, use_flash_attention: bool = False,
                   onnx_source: str = "build", num_threads: int | None = None,
                   pad_token_id: int = 0, device: int = 0,
                   max_batch_tokens: int | str = "auto",
                   devices: str | list[int] | None = None,
                   pool: dict | None = None) -> Backend:
    """Pick and construct a backend; raise ``BackendUnavailableError`` rather than fall back
    silently when an explicit request cannot be met. ``backend="auto"`` takes the GPU engine when
    a GPU is visible and the engine runs the model; if the engine then fails to start (no
    cuBLASLt, say) it warns and takes the cpu backend. ``devices`` (not ``None``): a
    :class:`~sutra.backends.pool.PoolBackend` over those devices, ``pool`` its options
    (``workers_per_device`` and PoolBackend's keywords)."""
    if devices is not None:
        return _pool_backend(model, backend, devices, dict(pool or {}), use_fp16=use_fp16,
                             dtype=dtype, use_flash_attention=use_flash_attention,
                             onnx_source=onnx_source, num_threads=num_threads,
                             pad_token_id=pad_token_id, max_batch_tokens=max_batch_tokens)
    if pool:
        raise ValueError("pool_options are the scheduler's and need devices=... (several "
                         f"devices); got {sorted(pool)} without devices")
    gpu_dtype = "float16" if use_fp16 else dtype
    if backend == "cuda":
        usable, why = cuda_status()
        if not usable:
            raise BackendUnavailableError(f"backend='cuda' cannot run: {why}")
        return _cuda_backend(model, gpu_dtype, device, max_batch_tokens, onnx_source, num_threads)
    if backend == "auto" and cuda_status()[0] and engine_refuses(model) is None and (
        onnx_source == "build" and dtype != "float32"
    ):
        try:
            return _cuda_backend(model, gpu_dtype, device, max_batch_tokens, onnx_source,
                                 num_threads=None)
        except BackendUnavailableError as exc:
            warnings.warn(f"backend='auto': the GPU engine could not start ({exc}); using the "
                          "cpu backend", RuntimeWarning, stacklevel=3)
    for flag, value, what in (
        ("use_fp16", use_fp16, "fp16 compute"),
        ("use_flash_attention", use_flash_attention, "flash attention"),
    ):
        if value:
            raise BackendUnavailableError(
                f"{flag}=True: {what} runs only on the cuda backend, and the backend here is "
                f"'cpu' ({cuda_status()[1]}); set {flag}=False"
            )
    if dtype not in (None, "float32"):
        raise BackendUnavailableError(
            f"dtype={dtype!r} runs only on the cuda backend; the cpu backend computes in "
            "float32 (dtype=None or 'float32')")
    return OnnxRuntimeBackend(model, onnx_source=onnx_source, num_threads=num_threads,
                              pad_token_id=pad_token_id)


def _cuda_backend(model: ModelFolder, dtype: str | None, device: int,
                  max_batch_tokens: int | str, onnx_source: str,
                  num_threads: int | None) -> Backend:
    from .cuda import CudaBackend

    if dtype == "float32":
        raise BackendUnavailableError(
            "dtype='float32': the cuda backend computes in 'float16' or 'bfloat16' (with "
            "float32 accumulation); use backend='cpu' for float32")
    if onnx_source == "model":
        raise BackendUnavailableError(
            "onnx_source='model' runs the folder's own ONNX file, which only the cpu backend "
            "does; the cuda backend runs the safetensors weights (onnx_source='build')")
    if num_threads is not None:
        raise BackendUnavailableError(
            "num_threads sets ONNX Runtime's CPU threads, which the cuda backend does not use")
    refused = engine_refuses(model)
    if refused is not None:
        raise BackendUnavailableError(f"backend='cuda' cannot run this model: {refused}")
    return CudaBackend(model, dtype=dtype or "float16", device=device,
                       max_tokens=None if max_batch_tokens == "auto" else max_batch_tokens)


def _pool_backend(model: ModelFolder, backend: str, devices: str | list[int], pool: dict,
                  *, num_threads: int | None, **single) -> Backend:
    """One backend per worker (``workers_per_device`` per device) under the scheduler: GPU
    engines where the request is for the GPU (``cuda``, or ``auto`` with a usable GPU that runs
    the model), else CPU sessions that share the cores."""
    from .pool import PoolBackend

    per_device = pool.pop("workers_per_device", 1)
    if isinstance(per_device, bool) or not isinstance(per_device, int) or per_device < 1:
        raise ValueError(f"workers_per_device must be an int >= 1, got {per_device!r}")
    on_gpu = backend == "cuda" or (backend == "auto" and cuda_status()[0]
                                   and engine_refuses(model) is None)
    if on_gpu:
        usable, why = cuda_status()
        if not usable:
            raise BackendUnavailableError(f"devices={devices!r} on the GPU cannot run: {why}")
        count = _core.cuda_device_count()
        ids = list(range(count)) if devices == "all" else list(devices)
        missing = [d for d in ids if d >= count]
        if missing:
            raise BackendUnavailableError(
                f"devices={devices!r}: no GPU {', '.join(map(str, missing))} here; the visible "
                f"devices are 0..{count - 1}")
        kind = "cuda"
    else:
        ids = [0] if devices == "all" else list(devices)
        kind = "cpu"
        cores = num_threads or os.cpu_count() or 1
        num_threads = max(1, cores // (len(ids) * per_device))
    workers = [d for d in ids for _ in range(per_device)]
    backends = [create_backend(model, kind, device=d if kind == "cuda" else 0,
                               num_threads=None if kind == "cuda" else num_threads, **single)
                for d in workers]
    return PoolBackend(backends, workers, **pool)


__all__ = ["Backend", "BackendUnavailableError", "EncodedRows", "OnnxRuntimeBackend", "PassLimits",
           "TokenBatch", "create_backend", "cuda_status", "engine_refuses", "find_cublaslt"]
