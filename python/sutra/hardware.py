"""What this machine and this build of sutra can run."""

from __future__ import annotations

import os
import platform
from typing import Any

from . import _core


def hardware_info() -> dict[str, Any]:
    """CPU features, visible CUDA GPUs, and the backends this build has.

    Returns:
        ``{"cpu": {...}, "gpus": [...], "build": {...}, "backends": {"cpu": str, "cuda": str}}``,
        where each backend entry says whether it is available and, if not, why.
    """
    from .backends import cuda_status

    try:
        import onnxruntime as ort

        cpu_backend = f"available (ONNX Runtime {ort.__version__})"
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        cpu_backend = f"unavailable: {exc}"
    usable, why = cuda_status()
    return {
        "cpu": {
            "model": cpu_model(),
            "machine": platform.machine(),
            "logical_cores": os.cpu_count(),
            **_core.cpu_features(),
        },
        "gpus": list(_core.cuda_devices()),
        "build": dict(_core.build_info()),
        "backends": {"cpu": cpu_backend, "cuda": f"available: {why}" if usable else f"unavailable: {why}"},
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
