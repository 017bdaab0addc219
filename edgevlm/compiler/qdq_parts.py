"""A QDQ ONNX model cut into consecutive parts along its quantized activations, for one QNN graph a part.

Qualcomm's own LLM deployments ship a large model as several QNN context
binaries, each prepared on its own and executed in sequence.  The qnn
backend does the same for a stage whose single graph would take QNN's
preparation too long or too much memory (benchmarks/results/htp_cost.md).

A cut goes right after a ``DequantizeLinear`` of an activation: every value
the rest of the graph still needs (besides weights and the model's own
inputs) is then such a dequantized, on-grid tensor.  Part k outputs it;
part k+1 takes it as a float input and quantizes it again with a copy of
the same ``QuantizeLinear -> DequantizeLinear`` pair, which gives back the
same integers exactly (re-quantizing an on-grid value).  So the chain
computes what the whole graph computes, and each part is an ordinary QDQ
graph: float inputs, float outputs, quantized inside, as QNN takes them.

Equation, for a cut at the activation ``x``:
``G(in) = B(DQ(Q(x))), x = A(in)  ->  A'(in) = DQ(Q(x)),  B'(y) = B(DQ(Q(y)))``.

Written here: onnx.utils.extract_model cuts at named tensors but leaves
part B reading a dequantized tensor without its Q/DQ pair (QNN then refuses
its first node as a float op), and it finds no cut points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import onnx

_QDQ = ("QuantizeLinear", "DequantizeLinear")
CARRIED_MAX = 64  # tensors a cut may pass on (the residual stream, a mask, each layer's KV cache so far)
REQUANTIZED = "_requantized"  # inside part k+1, the carried input x re-quantized is x + REQUANTIZED


@dataclass
class Part:
    """Nodes [start, end) of the model (in its topological order) and the tensors the part exchanges."""

    start: int
    end: int
    inputs: list[str] = field(default_factory=list)  # model inputs, and tensors made by earlier parts
    outputs: list[str] = field(default_factory=list)  # tensors later parts read, and model outputs made here


def _constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Initializers and what nodes compute from them alone (the weights' DequantizeLinear outputs)."""
    const = {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        if all(i in const for i in node.input):
            const.update(node.output)
    return const


def cut_points(model: onnx.ModelProto) -> list[tuple[int, list[str]]]:
    """[(index after which to cut, tensors carried across)] of the model's node order.

    A cut is valid when every non-constant tensor produced so far and used
    later is the output of an activation's DequantizeLinear whose
    QuantizeLinear has constant scale and zero point (at most CARRIED_MAX).
    """
    graph = model.graph
    const = _constant_tensors(graph)
    last_use = _last_use(graph)
    producer = {o: node for node in graph.node for o in node.output}
    live: set[str] = set()
    cuts = []
    for k, node in enumerate(graph.node[:-1]):
        for t in node.output:
            if t not in const and last_use.get(t, -1) > k:
                live.add(t)
        live = {t for t in live if last_use[t] > k}
        carried = sorted(live)
        if (node.op_type == "DequantizeLinear" and node.output[0] in carried and len(carried) <= CARRIED_MAX
                and all(_requantizable(t, producer, const) for t in carried)):
            cuts.append((k, carried))
    return cuts


def _last_use(graph) -> dict[str, int]:
    """{tensor name: index of the last node reading it}."""
    return {t: k for k, node in enumerate(graph.node) for t in node.input}


def _requantizable(tensor: str, producer: dict, const: set[str]) -> bool:
    dq = producer.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in const:
        return False
    q = producer.get(dq.input[0])
    return (q is not None and q.op_type == "QuantizeLinear" and all(i in const for i in q.input[1:])
            and all(i in const for i in dq.input[1:]) and _axis(q) == _axis(dq))


def _axis(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "axis"), None)


def activation_elements(model: onnx.ModelProto) -> list[int]:
    """Per node, the elements of the activations it computes (0 for Q/DQ and weight nodes); the model
    must carry inferred shapes (``value_info``)."""
    const = _constant_tensors(model.graph)
    dims = {v.name: v.type.tensor_type.shape.dim for v in (*model.graph.output, *model.graph.value_info)}
    sizes = []
    for node in model.graph.node:
        n = 0
        if node.op_type not in _QDQ:
            for o in node.output:
                if o not in const and o in dims:
                    n += math.prod(max(d.dim_value, 1) for d in dims[o])
        sizes.append(n)
    return sizes


def plan_parts(model: onnx.ModelProto, max_elements: int) -> list[Part]:
    """Consecutive parts computing at most ``max_elements`` activation elements each, where cut points allow.

    QNN's preparation time and memory grow with the activations it tiles,
    not with the weights (benchmarks/results/htp_cost.md), hence the measure.
    Greedy: each part ends at the cut within ``max_elements`` that carries
    the fewest tensors, the latest of those, among the cuts past half the
    budget (so that a part ends between two blocks, not inside one); where
    no cut is within the budget, at the next cut.  One part (the whole
    graph) when it is within ``max_elements`` or has no cut point.
    """
    graph = model.graph
    n = len(graph.node)
    work = [0]
    for size in activation_elements(model):
        work.append(work[-1] + size)
    cuts = cut_points(model)
    chosen, start = [], 0
    while work[n] - work[start] > max_elements:
        ahead = [(k, c) for k, c in cuts if k >= start]
        within = [(k, c) for k, c in ahead if work[k + 1] - work[start] <= max_elements]
        late = [(k, c) for k, c in within if work[k + 1] - work[start] >= max_elements / 2] or within
        if late:
            cut = min(late, key=lambda kc: (len(kc[1]), -kc[0]))
        elif ahead:
            cut = ahead[0]
        else:
            break
        chosen.append(cut)
        start = cut[0] + 1
    if not chosen:
        return [Part(0, n, [i.name for i in graph.input], [o.name for o in graph.output])]
    bounds = [0] + [k + 1 for k, _ in chosen] + [n]
    made = {o: k for k, node in enumerate(graph.node) for o in node.output}
    const = _constant_tensors(graph)
    last_use = _last_use(graph)
    model_inputs = [i.name for i in graph.input]
    parts = []
    for start, end in zip(bounds, bounds[1:]):
        used = dict.fromkeys(i for node in graph.node[start:end] for i in node.input)
        inputs = [t for t in model_inputs if t in used]
        inputs += [t for t in used if t not in const and made.get(t, start) < start]
        outputs = [o for node in graph.node[start:end] for o in node.output if last_use.get(o, -1) >= end]
        outputs += [o.name for o in graph.output if start <= made.get(o.name, -1) < end and o.name not in outputs]
        parts.append(Part(start, end, inputs, outputs))
    return parts


def part_model(model: onnx.ModelProto, part: Part) -> onnx.ModelProto:
    """The ONNX model of ``part``: its nodes, the constant nodes (weights' DequantizeLinear) they read,
    wherever the model has them, with their initializers, and for each carried input a copy of the
    Q/DQ pair that made it."""
    graph = model.graph
    producer = {o: k for k, node in enumerate(graph.node) for o in node.output}
    const = _constant_tensors(graph)
    values = {v.name: v for v in (*graph.input, *graph.output, *graph.value_info)}
    model_inputs = {i.name for i in graph.input}
    carried = [n for n in part.inputs if n not in model_inputs]
    requantize = []
    for name in carried:  # merge_duplicate_dequantize left one DQ per Q, so each Q is copied once
        dq = graph.node[producer[name]]
        q = graph.node[producer[dq.input[0]]]
        for node, inputs, output in ((q, [name, *q.input[1:]], dq.input[0]),
                                     (dq, list(dq.input), name + REQUANTIZED)):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            del copy.input[:], copy.output[:]
            copy.input.extend(inputs)
            copy.output.append(output)
            requantize.append(copy)
    body = [k for k in range(part.start, part.end) if not all(o in const for o in graph.node[k].output)]
    keep, frontier = set(body), [i for k in body for i in graph.node[k].input]
    frontier += [i for node in requantize for i in node.input]
    while frontier:
        k = producer.get(frontier.pop())
        if k is not None and k not in keep and all(o in const for o in graph.node[k].output):
            keep.add(k)
            frontier += list(graph.node[k].input)
    constants = [graph.node[k] for k in sorted(keep - set(body))]
    renamed = {name: name + REQUANTIZED for name in carried}
    nodes = constants + requantize + [_reading(graph.node[k], renamed) for k in body]
    used = {i for node in nodes for i in node.input}

    def info(name, like):
        if like in values:
            v = onnx.ValueInfoProto()
            v.CopyFrom(values[like])
            v.name = name
            return v
        return onnx.helper.make_empty_tensor_value_info(name)

    g = onnx.helper.make_graph(nodes, f"{graph.name}_part", [info(n, n) for n in part.inputs],
                               [info(n, n) for n in part.outputs],
                               [t for t in graph.initializer if t.name in used])
    return onnx.helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                                  producer_name=model.producer_name)


def _reading(node: onnx.NodeProto, renamed: dict[str, str]) -> onnx.NodeProto:
    """``node``, or a copy of it reading ``renamed[t]`` for each input ``t`` it has in ``renamed``."""
    if not any(i in renamed for i in node.input):
        return node
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    for k, i in enumerate(copy.input):
        copy.input[k] = renamed.get(i, i)
    return copy


def dequantize_after_quantize(model: onnx.ModelProto) -> None:
    """Reorder the nodes (in place, still topological) so that each activation's DequantizeLinear comes
    right after its QuantizeLinear: the exporter's order can leave the integer tensor between them live
    across many nodes, and a cut there would carry an integer tensor."""
    nodes = list(model.graph.node)
    inits = {t.name for t in model.graph.initializer}
    dq_of = {}
    for node in nodes:
        if node.op_type == "DequantizeLinear" and all(i in inits for i in node.input[1:]):
            dq_of.setdefault(node.input[0], []).append(node)
    moved = {id(dq) for dqs in dq_of.values() for dq in dqs}
    order = []
    for node in nodes:
        if id(node) in moved:
            continue
        order.append(node)
        if node.op_type == "QuantizeLinear":
            order += dq_of.get(node.output[0], [])
    placed = {id(n) for n in order}
    order += [n for n in nodes if id(n) not in placed]  # a DequantizeLinear of something no Q made: as it was
    del model.graph.node[:]
    model.graph.node.extend(order)


def merge_duplicate_dequantize(model: onnx.ModelProto) -> int:
    """Make the consumers of each activation DequantizeLinear that repeats an earlier one (same input, scale,
    zero point and axis; htp_forms' MatMul split makes such twins) read the earlier one's output; the twin
    then goes.  The values are the same, so nothing changes but this: a cut never carries two copies of one
    tensor.  Carried twins made QNN's part graph and its EPContext node disagree on their outputs
    ("Inconsistent output sizes" when the LFM2-VL-450M-width encoder ran as a chain).  Returns how many went."""
    graph = model.graph
    keep = {o.name for o in graph.output}
    first, alias = {}, {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] not in keep:
            key = (tuple(node.input), _axis(node))
            if key in first:
                alias[node.output[0]] = first[key]
            else:
                first[key] = node.output[0]
    if not alias:
        return 0
    nodes = [node for node in graph.node if not (node.op_type == "DequantizeLinear" and node.output[0] in alias)]
    for node in nodes:
        for k, i in enumerate(node.input):
            node.input[k] = alias.get(i, i)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(alias)


def write_parts(model_path: Path, out_dir: Path, stem: str, max_elements: int) -> list[tuple[Path, Part]]:
    """Cut the model at ``model_path`` (see plan_parts) and write ``<stem>.part<i>.onnx`` per part, when
    there is more than one; returns [(path, part)] ([] when the graph stays whole)."""
    model = onnx.load(str(model_path))
    merge_duplicate_dequantize(model)
    dequantize_after_quantize(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.value_info.extend(v for v in inferred.graph.value_info)
    parts = plan_parts(model, max_elements)
    if len(parts) < 2:
        return []
    written = []
    for i, part in enumerate(parts):
        path = Path(out_dir) / f"{stem}.part{i}.onnx"
        onnx.save(part_model(model, part), str(path))
        written.append((path, part))
    return written
