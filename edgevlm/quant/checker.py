"""Integer-only check of a QDQ ONNX graph.

An integer-only NPU (Hexagon HTP v68) runs a QDQ model by fusing each
``DequantizeLinear -> op -> QuantizeLinear`` group into one integer kernel.
That needs, for every compute op:

- each float input produced by a DequantizeLinear, and
- each float output consumed only by QuantizeLinear,

where pure data-movement ops (Reshape, Transpose, Concat, ...) between them
are transparent, as QNN executes those on quantized tensors directly.  Float
tensors may exist only at graph inputs (feeding a QuantizeLinear) and graph
outputs (coming from a DequantizeLinear).  A compute op with no float input
and no float output (shape arithmetic on int64) is not checked.
"""
from pathlib import Path

import onnx

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

# Ops that only move or select data: transparent between DQ and Q.
DATA_MOVEMENT_OPS = frozenset(
    """Reshape Transpose Squeeze Unsqueeze Flatten Identity Slice Gather GatherElements GatherND
    Split Concat Expand Tile Pad DepthToSpace SpaceToDepth""".split()
)

# Float inputs that are op parameters, not data (QNN takes them as static attributes).
PARAMETER_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Clip", 1), ("Clip", 2), ("Pad", 2), ("Dropout", 1)})

_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                          onnx.TensorProto.DOUBLE})


def _load(model_or_path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    return onnx.load(str(Path(model_or_path)), load_external_data=False)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor known after shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is best effort; unknown types are treated as float
        inferred = model
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for node in g.node:
        if node.op_type == "QuantizeLinear":
            types.setdefault(node.output[0], onnx.TensorProto.UINT8)  # some integer type
        elif node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types.setdefault(node.output[0], attr.t.data_type)
    return types


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.types = _elem_types(model)
        self.producer = {o: n for n in g.node for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.initializers = {t.name for t in g.initializer}
        self.inputs = {i.name for i in g.input} - self.initializers
        self.outputs = {o.name for o in g.output}

    def is_float(self, name: str) -> bool:
        return self.types.get(name, onnx.TensorProto.FLOAT) in _FLOAT_TYPES

    def dequantized(self, name: str, seen=frozenset()) -> str | None:
        """None if ``name`` comes from a DequantizeLinear (through data movement), else where it comes from."""
        node = self.producer.get(name)
        if node is None:
            return "graph input" if name in self.inputs else "float initializer"
        if node.op_type == "DequantizeLinear":
            return None
        if node.op_type in DATA_MOVEMENT_OPS and name not in seen:
            for i in node.input:
                if i and self.is_float(i):
                    src = self.dequantized(i, seen | {name})
                    if src is not None:
                        return src
            return None
        return f"float {node.op_type} '{node.name}'"

    def requantized(self, name: str, seen=frozenset()) -> str | None:
        """None if every use of ``name`` ends in a QuantizeLinear (through data movement), else the first other use."""
        if name in self.outputs:
            return "graph output"
        for user in self.consumers.get(name, []):
            if user.op_type == "QuantizeLinear":
                continue
            if user.op_type in DATA_MOVEMENT_OPS and name not in seen:
                for o in user.output:
                    if o and self.is_float(o):
                        dest = self.requantized(o, seen | {name})
                        if dest is not None:
                            return dest
                continue
            return f"{user.op_type} '{user.name}'"
        return None


def check_integer_only(onnx_model_or_path) -> tuple[bool, list[str]]:
    """(ok, offending): does every compute op of the QDQ model run on quantized tensors?

    ``offending`` lists one line per float input or output of a compute op,
    e.g. ``"Softmax 'attn/softmax': input 'x' is float (from graph input)"``.
    """
    return _check(_load(onnx_model_or_path))[:2]


def _check(model: onnx.ModelProto) -> tuple[bool, list[str], int]:
    g = _Graph(model)
    offending, quantized = [], 0
    for node in model.graph.node:
        if node.op_type in QDQ_OPS or node.op_type in DATA_MOVEMENT_OPS or node.op_type == "Constant":
            continue
        float_in = [(k, i) for k, i in enumerate(node.input)
                    if i and g.is_float(i) and (node.op_type, k) not in PARAMETER_INPUTS]
        float_out = [o for o in node.output if o and g.is_float(o)]
        if not float_in and not float_out:
            continue
        problems = []
        for _, i in float_in:
            src = g.dequantized(i)
            if src is not None:
                problems.append(f"input '{i}' is float (from {src})")
        for o in float_out:
            dest = g.requantized(o)
            if dest is not None:
                problems.append(f"output '{o}' is used as float (by {dest})")
        if problems:
            offending.extend(f"{node.op_type} '{node.name}': {p}" for p in problems)
        else:
            quantized += 1
    return not offending, offending, quantized


def count_quantized_ops(onnx_model_or_path) -> int:
    """Number of compute ops whose float inputs and outputs are all Q/DQ-wrapped."""
    return _check(_load(onnx_model_or_path))[2]
