"""ONNX model files, with the weights in a side file when one protobuf message cannot hold them.

Protobuf serializes one message up to 2 GiB; an LFM2-VL-1.6B-shaped
llm-prefill stage holds 4.8 GB of float weights.  :func:`save` writes such a
model as ONNX external data (``<name>.onnx`` + ``<name>.onnx.data``, one data
file), smaller ones as a single file exactly as ``onnx.save_model`` does, so
the builds of small models do not change.  :func:`files` lists what a saved
model consists of, for the build's manifest (every file is hashed there, the
data file too).
"""
import sys
from pathlib import Path

import onnx

# Initializer bytes above which a model is saved with external data: protobuf's 2 GiB, less room for the graph.
EXTERNAL_DATA_ABOVE = 2**31 - 2**27
# Models with more weight bytes than this are handled file to file during quantization: every
# intermediate model keeps its weights in a side file, and graph-only steps read the graph alone.
STREAM_ABOVE = 2**28
SIZE_THRESHOLD = 1024  # tensors smaller than this stay inside the .onnx file (onnx's default)


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's initializers (raw or typed, inside the message)."""
    total = 0
    for t in model.graph.initializer:
        if t.raw_data:
            total += len(t.raw_data)
        else:
            total += onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize * max(1, _numel(t))
    return total


def _numel(t) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n


def needs_external_data(model: onnx.ModelProto) -> bool:
    return initializer_bytes(model) > EXTERNAL_DATA_ABOVE


def save(model: onnx.ModelProto, path, external: bool | None = None) -> list[Path]:
    """Write ``model`` at ``path``; with external data (``<name>.data`` beside it) when ``external`` is True,
    or when None and the model is too large for one file.  Returns the files written."""
    path = Path(path)
    external = needs_external_data(model) if external is None else external
    if not external:
        onnx.save_model(model, str(path))
        return [path]
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=SIZE_THRESHOLD)
    # Saving moved the weights of ``model`` itself out to the file: read them back, so that the caller's
    # model still holds its values.
    onnx.load_external_data_for_model(model, str(path.parent))
    return [path, data]


def save_from(model: onnx.ModelProto, weights_dir, path) -> list[Path]:
    """:func:`save` with external data of a model whose initializers may still refer to data files in
    ``weights_dir``: each is read, written to ``path``'s data file and dropped in turn, so the weights are
    never all in memory.  The files are those ``save`` writes once the weights are loaded, tensor for
    tensor (onnx's rule: a tensor of raw data goes to the side file from SIZE_THRESHOLD bytes of
    ``sys.getsizeof``).  Initializers of subgraphs are not handled (none in the stages here)."""
    from onnx.external_data_helper import save_external_data, set_external_data, uses_external_data

    path = Path(path)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    for t in model.graph.initializer:
        if uses_external_data(t):
            _inline(t, weights_dir)
        if t.HasField("raw_data") and sys.getsizeof(t.raw_data) >= SIZE_THRESHOLD:  # as onnx.save_model does
            set_external_data(t, data.name)
            save_external_data(t, str(path.parent))
            t.ClearField("raw_data")
    onnx.save_model(model, str(path))
    return [path, data]


def files(path) -> list[Path]:
    """The model file at ``path`` and the external data files it refers to (reads the graph, not the weights)."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    found = {path}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in t.external_data if e.key == "location"), None)
            if location:
                found.add(path.parent / location)
    return [path] + sorted(found - {path})


def has_external_data(path) -> bool:
    return len(files(path)) > 1


def load_graph(path) -> onnx.ModelProto:
    """The model at ``path`` without the data of its large initializers when it keeps them in a side file:
    those stay references to it (``numpy_helper.to_array(t, base_dir=path's folder)`` reads one), the small
    ones are read (a Reshape's shape, a scalar scale).  A model given in one file is read whole.

    Holding a large model's weights for the steps that need one at a time cost a copy of them (a 1.4 GB
    LFM2-350M llm-prefill, for the weight checks and the int4 grids beside onnxruntime's quantizer).
    """
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        nbytes = _numel(t) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        if uses_external_data(t) and nbytes < SIZE_THRESHOLD:
            _inline(t, path.parent)
    return model


def _inline(tensor: onnx.TensorProto, base_dir) -> None:
    """Read ``tensor``'s external data from ``base_dir`` into it, as onnx.load_external_data_for_model leaves it."""
    from onnx.external_data_helper import load_external_data_for_tensor

    load_external_data_for_tensor(tensor, str(base_dir))
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]


def structure(model: onnx.ModelProto, keep_below: int = SIZE_THRESHOLD) -> onnx.ModelProto:
    """A copy of ``model`` without the data of its large initializers (name, type and shape kept).

    Type and shape inference read an initializer's type and dims, and the
    values of small ones only (a Reshape's shape); copying a model for them
    (onnx.shape_inference serializes it twice) costs 3-4x its weights.
    """
    out = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, field, getattr(model, field))
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    g, src = out.graph, model.graph
    g.name = src.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(g, field).extend(getattr(src, field))
    for t in src.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL and t.ByteSize() < keep_below:
            g.initializer.add().CopyFrom(t)
        else:
            g.initializer.add(name=t.name, dims=t.dims, data_type=t.data_type)
    return out


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """{tensor name: the nodes reading it, in graph order, once per input slot}."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def float_tensor_sizes(model) -> dict[str, int]:
    """{graph input or node output of float32 type: bytes (static shape; unknown dims count as 1)}, in
    graph order: the tensors activations are calibrated on.  ``model``: a ModelProto, or a path (read
    without its weights).  One shape inference, on :func:`structure`."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    g = onnx.shape_inference.infer_shapes(structure(model), strict_mode=False).graph
    inits = {t.name for t in g.initializer}
    infos = {vi.name: vi.type.tensor_type for vi in list(g.input) + list(g.output) + list(g.value_info)}
    names = [i.name for i in g.input if i.name not in inits]
    names += [o for n in g.node for o in n.output if o and n.op_type != "Constant"]
    sizes = {}
    for name in dict.fromkeys(names):
        info = infos.get(name)
        if info is None or info.elem_type != onnx.TensorProto.FLOAT:
            continue
        n = 4
        for d in info.shape.dim:
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        sizes[name] = n
    return sizes


def float_tensor_names(model: onnx.ModelProto) -> list[str]:
    """The float32 graph inputs and node outputs of ``model``, in graph order (see :func:`float_tensor_sizes`)."""
    return list(float_tensor_sizes(model))


def release_weights(program) -> None:
    """Detach the weights from a ``torch.onnx.export`` result once it is written (or serialized).

    The exporter's IR initializers wrap the captured graph's own torch
    tensors, and onnxscript's rewrite rules (module-level objects) keep the
    last node they matched, hence its graph, alive after the export: every
    exported stage's weights stayed resident for the rest of the compile
    (a 4-layer LFM2-VL at published widths, 0.5 GB per LM stage; measured
    with gc.get_referrers, onnxscript 0.7.2).  Dropping each initializer's
    value leaves that stale graph without data.
    """
    for value in program.model.graph.initializers.values():
        value.const_value = None
