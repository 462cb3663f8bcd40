"""Writing a trained student: an ONNX model folder, an ``.npz`` or a PyTorch state dict.

Everything is written under a temporary name beside the destination and renamed at the end, so a
failure never leaves a half-written model where the caller asked for one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__

STUDENT_FILE = "sutra_student.json"
_NORMALIZE_EPS = 1e-12  # as the encoder graph's Normalize (torch.nn.functional.normalize)
# files of the teacher's folder that describe its tokenization; copied beside the student
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "vocab.txt", "sentence_bert_config.json", "config.json")


def _normalize_nodes(source: str, output: str,
                     opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``output = source / max(|source|, eps)`` along the last axis."""
    eps = numpy_helper.from_array(np.array(_NORMALIZE_EPS, dtype=np.float32), "student_norm_eps")
    consts = [eps]
    if opset >= 18:  # ReduceL2 takes its axes as an input from opset 18
        axes = numpy_helper.from_array(np.array([-1], dtype=np.int64), "student_norm_axes")
        consts.append(axes)
        norm = helper.make_node("ReduceL2", [source, axes.name], ["student_norm"], keepdims=1,
                                name="student_norm_node")
    else:
        norm = helper.make_node("ReduceL2", [source], ["student_norm"], keepdims=1, axes=[-1],
                                name="student_norm_node")
    nodes = [
        norm,
        helper.make_node("Max", ["student_norm", eps.name], ["student_norm_clamped"],
                         name="student_norm_clamp_node"),
        helper.make_node("Div", [source, "student_norm_clamped"], [output],
                         name="student_normalize_node"),
    ]
    return nodes, consts


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def projection_graph(teacher_graph: Path, weight: np.ndarray) -> onnx.ModelProto:
    """The teacher's graph with ``normalize(sentence_embedding @ weight)`` as its only output."""
    model = onnx.load(str(teacher_graph))
    graph = model.graph
    if not any(o.name == "sentence_embedding" for o in graph.output):
        raise ValueError(
            f"{teacher_graph} has no 'sentence_embedding' output to project; export needs a "
            "teacher whose graph pools (sutra's built graphs do)"
        )
    for node in graph.node:
        node.output[:] = ["teacher_embedding" if o == "sentence_embedding" else o
                          for o in node.output]
    del graph.output[:]
    w = numpy_helper.from_array(np.ascontiguousarray(weight, dtype=np.float32), "student_projection")
    graph.initializer.append(w)
    graph.node.append(helper.make_node("MatMul", ["teacher_embedding", w.name], ["projected"],
                                       name="student_projection_node"))
    nodes, consts = _normalize_nodes("projected", "sentence_embedding", _default_opset(model))
    graph.initializer.extend(consts)
    graph.node.extend(nodes)
    graph.output.append(helper.make_tensor_value_info(
        "sentence_embedding", TensorProto.FLOAT, ["batch", int(weight.shape[1])]))
    _drop_unused_outputs_nodes(graph)
    return model


def _drop_unused_outputs_nodes(graph: onnx.GraphProto) -> None:
    """Remove nodes nothing needs any more (the teacher's token output path stays: the pooled
    output depends on it; only dangling nodes go)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    kept = list(reversed(keep))
    del graph.node[:]
    graph.node.extend(kept)


def static_graph(table: np.ndarray, opset: int = 17) -> onnx.ModelProto:
    """``normalize(sum over unmasked tokens of table[input_ids])`` as an ONNX model.

    Inputs ``input_ids`` and ``attention_mask``, int64 ``[batch, sequence]``; output
    ``sentence_embedding`` float32 ``[batch, student_dim]``.
    """
    dim = int(table.shape[1])
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(table, dtype=np.float32), "token_table"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
    ]
    nodes = [
        helper.make_node("Gather", ["token_table", "input_ids"], ["token_vectors"], axis=0,
                         name="gather_node"),
        helper.make_node("Cast", ["attention_mask"], ["mask_float"], to=TensorProto.FLOAT,
                         name="mask_cast_node"),
        helper.make_node("Unsqueeze", ["mask_float", "axis_2"], ["mask_3d"], name="mask_3d_node"),
        helper.make_node("Mul", ["token_vectors", "mask_3d"], ["masked_vectors"], name="mask_node"),
        helper.make_node("ReduceSum", ["masked_vectors", "axis_1"], ["summed"], keepdims=0,
                         name="sum_node"),
    ]
    norm_nodes, norm_consts = _normalize_nodes("summed", "sentence_embedding", opset)
    nodes += norm_nodes
    inits += norm_consts
    graph = helper.make_graph(
        nodes, "sutra_static_student",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="sutra")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_atomically(destination: Path, write: Callable[[Path], None], *, is_dir: bool,
                     overwrite: bool) -> Path:
    """Run ``write(tmp)`` on a temporary path beside ``destination``, then rename it into place.

    Raises FileExistsError when ``destination`` exists and ``overwrite`` is false.
    """
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} exists; pass overwrite=True to replace it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    target = tmp if is_dir else tmp / destination.name
    try:
        write(target)
        if is_dir:  # mkdtemp makes it private (0700); a model folder is as readable as a file
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(target, 0o777 & ~umask)
        old = None
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.replace(destination, old)
        os.replace(target, destination)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return destination


def model_folder_writer(model: onnx.ModelProto, teacher_folder: Path,
                        description: dict[str, Any]) -> Callable[[Path], None]:
    """A writer for :func:`write_atomically` that lays out a student model folder."""

    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in _TOKENIZER_FILES:
            source = teacher_folder / name
            if source.is_file():
                shutil.copyfile(source, folder / name)
        data = model.SerializeToString()
        with open(folder / "model.onnx", "wb") as f:
            f.write(data)
        with open(folder / STUDENT_FILE, "w", encoding="utf-8") as f:
            json.dump({**description, "sutra_version": __version__}, f, indent=2)
            f.write("\n")

    return write
