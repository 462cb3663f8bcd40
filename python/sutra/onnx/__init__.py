"""ONNX graphs of sentence-transformers encoders, built from safetensors weights without torch.

>>> model = build_from_folder("all-MiniLM-L6-v2")           # onnx.ModelProto
>>> session = onnxruntime.InferenceSession(model.SerializeToString())
>>> session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})

See :mod:`sutra.onnx.builder` for the graph's inputs and outputs.
"""

from ._arch import supported_architectures
from .builder import (
    DENSE_ACTIVATIONS,
    POOLING_MODES,
    DenseSpec,
    PoolingSpec,
    build_encoder_graph,
    build_packed_encoder_graph,
)
from .folder import build_from_folder, build_pipeline_graph, pooling_spec_from_folder

__all__ = [
    "DENSE_ACTIVATIONS",
    "DenseSpec",
    "POOLING_MODES",
    "PoolingSpec",
    "build_encoder_graph",
    "build_from_folder",
    "build_packed_encoder_graph",
    "build_pipeline_graph",
    "pooling_spec_from_folder",
    "supported_architectures",
]
