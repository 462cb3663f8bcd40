"""Backends run a model's pipeline on flat token arrays (the contract: :mod:`.base`)."""

from __future__ import annotations

from .._errors import BackendUnavailableError
from ..models.spec import ModelFolder
from .base import Backend, EncodedRows, PassLimits, TokenBatch
from .onnxruntime import OnnxRuntimeBackend


def cuda_status() -> tuple[bool, str]:
    """Whether the cuda backend can run here, and if not, why (one sentence)."""
    from .. import _core

    info = _core.build_info()
    if not info.get("cuda"):
        return False, (
            "this build of sutra has no CUDA support (it was built without nvcc/cuBLAS; "
            "rebuild with SUTRA_ENABLE_CUDA=ON on a machine with the CUDA toolkit)"
        )
    if _core.cuda_device_count() == 0:
        return False, "no CUDA GPU is visible (no device or no driver)"
    return False, (
        "this release of sutra has the CUDA build and device query but not yet the CUDA encoder "
        "engine; use backend='cpu'"
    )


def create_backend(model: ModelFolder, backend: str, *, use_fp16: bool,
                   use_flash_attention: bool, onnx_source: str,
                   num_threads: int | None, pad_token_id: int = 0) -> Backend:
    """Pick and construct a backend; raise ``BackendUnavailableError`` rather than fall back
    silently when an explicit request cannot be met."""
    if backend == "cuda":
        usable, why = cuda_status()
        if not usable:
            raise BackendUnavailableError(f"backend='cuda' cannot run: {why}")
    # "auto" resolves to the CPU backend until the CUDA engine lands: cuda_status() never says yes.
    for flag, value, what in (
        ("use_fp16", use_fp16, "fp16 compute"),
        ("use_flash_attention", use_flash_attention, "flash attention"),
    ):
        if value:
            raise BackendUnavailableError(
                f"{flag}=True: {what} runs only on the cuda backend, and the backend here is "
                f"'cpu' ({cuda_status()[1]}); set {flag}=False"
            )
    return OnnxRuntimeBackend(model, onnx_source=onnx_source, num_threads=num_threads,
                              pad_token_id=pad_token_id)


__all__ = ["Backend", "BackendUnavailableError", "EncodedRows", "OnnxRuntimeBackend", "PassLimits",
           "TokenBatch", "create_backend", "cuda_status"]
