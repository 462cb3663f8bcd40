"""Read a sentence-transformers model folder into the inputs of :func:`build_encoder_graph`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from .builder import PoolingSpec, build_encoder_graph

# sentence-transformers pooling config flag -> PoolingSpec mode
_POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
_POOLING_NAMES = {"mean": "mean", "cls": "cls", "max": "max", "mean_sqrt_len_tokens": "mean_sqrt_len"}


def _read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _modules(model_dir: Path) -> list[dict]:
    path = model_dir / "modules.json"
    if not path.exists():
        # A bare Hugging Face checkpoint: sentence-transformers defaults to mean pooling.
        return [{"type": "Transformer", "path": ""}, {"type": "Pooling", "path": None}]
    return _read_json(path)


def pooling_spec_from_folder(model_dir: str | Path) -> PoolingSpec:
    """PoolingSpec from ``modules.json`` and the Pooling module's ``config.json``.

    Raises ValueError for modules the graph does not implement (Dense, LayerNorm, ...) and for
    pooling configs that enable zero or several modes.
    """
    model_dir = Path(model_dir)
    mode, normalize = "mean", False
    for i, module in enumerate(_modules(model_dir)):
        kind = module["type"].rsplit(".", 1)[-1]
        if kind == "Transformer":
            if i != 0:
                raise ValueError(f"modules.json: Transformer must be the first module, found at {i}")
        elif kind == "Pooling":
            if module.get("path") is None:
                continue
            cfg = _read_json(model_dir / module["path"] / "config.json")
            if isinstance(cfg.get("pooling_mode"), str):
                if cfg["pooling_mode"] not in _POOLING_NAMES:
                    raise ValueError(f"unsupported pooling_mode {cfg['pooling_mode']!r}")
                mode = _POOLING_NAMES[cfg["pooling_mode"]]
                continue
            on = [flag for flag, value in cfg.items() if flag.startswith("pooling_mode_") and value]
            if len(on) != 1 or on[0] not in _POOLING_FLAGS:
                raise ValueError(
                    f"pooling config enables {on}; exactly one of {sorted(_POOLING_FLAGS)} is supported"
                )
            mode = _POOLING_FLAGS[on[0]]
        elif kind == "Normalize":
            normalize = True
        else:
            raise ValueError(f"unsupported sentence-transformers module {module['type']!r}")
    return PoolingSpec(mode=mode, normalize=normalize)


def build_from_folder(model_dir: str | Path, *, fused: bool = True, opset: int = 17) -> onnx.ModelProto:
    """Build the encoder graph of a local sentence-transformers (or bare HF) model folder.

    Reads config.json and model.safetensors of the Transformer module, and the pooling/normalize
    modules from modules.json.
    """
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    transformer_dir = model_dir / (_modules(model_dir)[0].get("path") or "")
    config = _read_json(transformer_dir / "config.json")
    weights_path = transformer_dir / "model.safetensors"
    if not weights_path.exists():
        raise ValueError(f"no model.safetensors in {transformer_dir}")
    weights: dict[str, np.ndarray] = load_file(str(weights_path))
    return build_encoder_graph(config, weights, pooling_spec_from_folder(model_dir), fused=fused, opset=opset)
