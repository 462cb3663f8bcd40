"""A thin wrapper over ``onnx.helper`` that names values and owns the initializers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

MS_DOMAIN = "com.microsoft"


class GraphBuilder:
    """Writes straight into one ModelProto: ``helper.make_graph`` / ``make_model`` would copy every
    initializer once more (a model-sized transient on a 400 MB checkpoint)."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.model = onnx.ModelProto()
        self.graph = self.model.graph
        self.initializer_bytes = 0
        self.uses_ms_domain = False
        self._counter = 0
        self._consts: dict[tuple, str] = {}

    def _fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    def weight(self, name: str, array: np.ndarray) -> str:
        """Register a named initializer; ``array`` is serialized once, not kept."""
        array = np.asarray(array)
        tensor = self.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        self.initializer_bytes += array.nbytes
        return name

    def const(self, value, dtype=np.int64) -> str:
        """Small shared constant (shapes, axes, scalars), deduplicated by value."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight(self._fresh("const"), arr)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], *, n_out: int = 1, name: str | None = None,
           outputs: list[str] | None = None, domain: str | None = None, **attrs) -> str | list[str]:
        if outputs is None:
            base = name or self._fresh(op_type)
            outputs = [f"{base}_out{i}" if n_out > 1 else base for i in range(n_out)]
        node_name = self._fresh(op_type) if name is None else name + "_node"
        if domain == MS_DOMAIN:
            self.uses_ms_domain = True
        self.graph.node.append(
            helper.make_node(op_type, inputs, outputs, name=node_name, domain=domain, **attrs)
        )
        return outputs[0] if len(outputs) == 1 else outputs

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int, **kw) -> str:
        """Reduce* with ``axes`` as an input from the opset that moved it there."""
        moved = 13 if op_type == "ReduceSum" else 18
        if self.opset >= moved:
            return self.op(op_type, [x, self.const(axes)], keepdims=keepdims, **kw)
        return self.op(op_type, [x], axes=axes, keepdims=keepdims, **kw)

    def unsqueeze(self, x: str, axes: list[int], **kw) -> str:
        return self.op("Unsqueeze", [x, self.const(axes)], **kw)

    def squeeze(self, x: str, axes: list[int], **kw) -> str:
        return self.op("Squeeze", [x, self.const(axes)], **kw)


def value_info(name: str, elem_type: int, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, dims)


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
BOOL = TensorProto.BOOL
