"""sutra: fast text embeddings from Python.

Quick start::

    import sutra
    embedder = sutra.Embedder()            # all-MiniLM-L6-v2, fetched on first use
    vectors = embedder.encode(["a cat", "a dog"])   # float32 [2, 384], unit length

See ``sutra.Embedder.encode`` for the full interface (sentence-transformers' ``encode()``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# The native core. A CUDA build imports without cuBLASLt too: the GPU engine loads it when it is
# first used and names the package that provides it if it is missing.
from . import _core  # noqa: F401
from ._errors import (
    BackendUnavailableError,
    LongTextTruncatedWarning,
    ModelFetchError,
    ModelNotFoundError,
    SutraError,
    UnsupportedModelError,
)
from .config import EmbedderConfig
from .embedder import Embedder
from .late_chunking import Chunk
from .multigpu import LoadBalancingStrategy, MultiGPUConfig, MultiGPUPool, PoolStats
from .quantization import quantize_embeddings
from .windows import (
    AggregationMethod,
    SlidingWindowAttention,
    Windows,
    aggregate_embeddings,
)

try:
    __version__ = version("sutra")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "AggregationMethod",
    "BackendUnavailableError",
    "Chunk",
    "Embedder",
    "EmbedderConfig",
    "LoadBalancingStrategy",
    "LongTextTruncatedWarning",
    "ModelFetchError",
    "ModelNotFoundError",
    "MultiGPUConfig",
    "MultiGPUPool",
    "PoolStats",
    "SlidingWindowAttention",
    "SutraError",
    "UnsupportedModelError",
    "Windows",
    "__version__",
    "aggregate_embeddings",
    "quantize_embeddings",
]
