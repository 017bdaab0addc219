"""Names of graph ops, one definition for the passes, the estimator and the backends.

A captured graph calls ATen overloads (``aten.conv2d.default``), ExecuTorch's
edge overloads (``aten::convolution`` under the edge dialect), quantized
decomposed ops and plain Python callables (``operator.getitem``); everything
that matches ops by name asks ``target_name`` for the bare name (``conv2d``).
"""

# Every spelling of a convolution in captured graphs (``convolution`` / ``_convolution`` carry a
# ``transposed`` flag at args[6]; the others are never transposed).
CONV_OPS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "_convolution"})
GENERIC_CONV_OPS = frozenset({"convolution", "_convolution"})


def target_name(target) -> str:
    """The bare op name of a node's target: ``aten.conv2d.default`` and ``aten::conv2d`` -> ``conv2d``."""
    schema = getattr(target, "_schema", None)   # OpOverload and edge-dialect overloads
    if schema is not None:
        return schema.name.split("::")[-1]
    name = getattr(target, "__name__", None)    # OpOverloadPacket, Python callables
    if name is None:
        parts = str(target).replace("::", ".").split(".")
        return parts[1] if len(parts) >= 2 else parts[0]
    return name


def node_op_name(node) -> str | None:
    """``target_name`` of a call_function node of a torch.fx graph; None for other nodes."""
    return target_name(node.target) if node.op == "call_function" else None


def is_transposed_conv(node) -> bool:
    """A convolution node whose ``transposed`` flag is set (its weight's channel axes differ)."""
    return node_op_name(node) in GENERIC_CONV_OPS and bool(node.args[6])
