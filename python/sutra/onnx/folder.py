"""Build the graph of a model folder, as :meth:`sutra.models.ModelFolder.load` describes it."""

from __future__ import annotations

from pathlib import Path

import onnx

from ..models.spec import ModelFolder, Pipeline
from .builder import DenseSpec, PoolingSpec, build_encoder_graph, build_packed_encoder_graph


def pooling_spec_from_folder(model_dir: str | Path) -> PoolingSpec:
    """PoolingSpec (mode, normalize) of a sentence-transformers (or bare HF) folder.

    Raises ValueError (:class:`sutra.UnsupportedModelError`) for modules sutra does not run and
    for pooling configs that enable several modes.
    """
    pipeline = ModelFolder.load(model_dir, tokenizer_required=False).pipeline
    return PoolingSpec(pipeline.pooling.mode, pipeline.normalize)


def build_pipeline_graph(pipeline: Pipeline, *, layout: str = "padded", fused: bool = True,
                         opset: int = 17) -> onnx.ModelProto:
    """The graph of a whole pipeline: the encoder's weights, its pooling, Dense modules and
    normalization. ``layout``: ``"padded"`` (:func:`build_encoder_graph`) or ``"packed"``
    (:func:`build_packed_encoder_graph`)."""
    from safetensors.numpy import load_file

    transformer = pipeline.transformer
    if transformer.architecture is None:
        raise ValueError(f"{transformer.path} has no safetensors weights to build a graph from")
    weights = load_file(str(transformer.weights_path))
    dense = [DenseSpec(*module.load(), module.activation) for module in pipeline.dense]
    build = build_encoder_graph if layout == "padded" else build_packed_encoder_graph
    return build(transformer.config, weights, PoolingSpec(pipeline.pooling.mode, pipeline.normalize),
                 dense=dense, fused=fused, opset=opset)


def build_from_folder(model_dir: str | Path, *, fused: bool = True, opset: int = 17) -> onnx.ModelProto:
    """Build the padded encoder graph of a local sentence-transformers (or bare HF) model folder:
    its Transformer weights, Pooling, Dense modules and Normalize (see :func:`build_pipeline_graph`)."""
    pipeline = ModelFolder.load(model_dir, tokenizer_required=False).pipeline
    return build_pipeline_graph(pipeline, fused=fused, opset=opset)
