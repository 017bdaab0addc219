"""Roofline latency estimates: what a graph would take on a target, without the target.

The estimator sits in the compiler, not in targets/: it captures graphs and runs
the compiler's passes, while a target only describes its roofline (targets/base.py).

The model, per op of the captured graph (after the same passes the compiler
runs, so BatchNorm is folded into convs as on the device):

    compute_s = MACs / (peak MAC/s at the operand width * efficiency of the op's class)
    memory_s  = DRAM bytes / (DRAM bandwidth * memory efficiency)
    time      = max(compute_s, memory_s) + per-op overhead

MACs: conv = out_numel * Cin/groups * kh * kw; linear/matmul/bmm/addmm =
out_numel * K; every other op 0.

Bytes and the on-chip memory model:
  * weights (graph constants) stream from DRAM on every inference, at the
    scheme's weight width;
  * activations are counted at the scheme's activation width; an op whose
    activations (inputs + output) fit in ``roofline.onchip_bytes`` (the HTP's
    VTCM) keeps them on chip and moves no activation bytes through DRAM; an op
    whose working set does not fit reads and writes all of them through DRAM.
  * ops that only reshape or relabel a tensor (view, flatten, expand, ...) and
    ops on constants only (folded by the target's compiler) cost nothing.

Operand width picks the peak: 16-bit activations use ``int16_macs_per_s``,
8-bit ones ``int8_macs_per_s`` (4- and 8-bit weights alike: HTP v68 unpacks
int4 weights to int8), float schemes ``float_macs_per_s`` with fp32 tensors on
targets that list fp32 activations and fp16 ones elsewhere.

Every figure this module returns is an estimate, labelled so; the efficiency
constants and where they come from are below (:data:`HTP_EFFICIENCY`).
"""
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgevlm.core.stage import StageKind, StageName
from edgevlm.errors import InputError
from edgevlm.ops import CONV_OPS, GENERIC_CONV_OPS, is_transposed_conv, target_name
from edgevlm.targets.base import NON_COMPUTE_OPS, Target

LABEL = "estimated"

_MATMULS = {"linear", "mm", "bmm", "matmul", "addmm", "baddbmm"}
# Ops that only relabel memory; the device compiler folds them into addressing.
_FREE = NON_COMPUTE_OPS | {
    "view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze", "unsqueeze", "expand", "expand_as",
    "view_as", "alias", "detach", "clone", "contiguous", "dropout", "lift_fresh_copy", "_assert_tensor_metadata",
}
OP_CLASSES = ("conv", "depthwise_conv", "matmul", "other")


@dataclass(frozen=True)
class Efficiency:
    """Fractions of the roofline a target reaches, and its fixed costs.

    ``dense`` applies to convs and matmuls, ``depthwise`` to depthwise convs
    (one input channel per group: little reuse, so far below peak on a
    matrix engine), ``memory`` to DRAM bandwidth.
    """

    dense: float
    depthwise: float
    memory: float
    op_overhead_s: float
    source: str

    def for_class(self, op_class: str) -> float:
        return self.depthwise if op_class == "depthwise_conv" else self.dense


# Fixed before fitting (assumptions, not fitted and not measured): the share of
# nominal DRAM bandwidth a streaming read sustains, and the cost of dispatching
# one op.  Only ``dense`` and ``depthwise`` are fitted: two published latencies
# determine two constants.
PRIOR_MEMORY = 0.8
PRIOR_OP_OVERHEAD_S = 5e-6

# Fitted on the two published SA8295P ADP latencies marked "calibration" in
# ai_hub_sa8295p.json (MobileNet-v3-Large w8a16 1.54 ms, ResNet50 w8a8
# 1.31 ms; timm mobilenetv3_large_100 and resnet50 at 224x224) by
# fit_efficiency(): a deterministic grid search minimising the largest
# |log(estimated / published)|, rounded to 3 significant digits.  The tiny
# depthwise figure (~26 GMAC/s at int16) absorbs what the roofline leaves out
# for MobileNet-style graphs: depthwise layers run on the vector unit, not the
# matrix engine, and move their activations through VTCM at low reuse.
# Reproduce: python benchmarks/validate_latency_estimator.py --refit
# (tests/compiler/test_estimate.py re-fits and checks these values).
HTP_EFFICIENCY = Efficiency(
    dense=0.568,
    depthwise=0.00342,
    memory=PRIOR_MEMORY,
    op_overhead_s=PRIOR_OP_OVERHEAD_S,
    source="fitted on Qualcomm AI Hub SA8295P ADP latencies (MobileNet-v3-Large w8a16, ResNet50 w8a8)",
)

# Targets without published latencies to fit on: nominal efficiencies, not calibrated.
UNCALIBRATED_EFFICIENCY = Efficiency(
    dense=0.5, depthwise=0.05, memory=PRIOR_MEMORY, op_overhead_s=PRIOR_OP_OVERHEAD_S,
    source="uncalibrated defaults (no published latencies fitted for this target)",
)

PUBLISHED_FILE = Path(__file__).with_name("ai_hub_sa8295p.json")


@dataclass(frozen=True)
class PublishedLatency:
    """A published latency the estimator is fitted on ("calibration") or checked against ("validation")."""

    role: str
    model: str  # timm name of the published architecture
    published_name: str
    precision: str
    published_ms: float
    source: str
    image_size: int = 224


def published_latencies(role: str | None = None) -> list[PublishedLatency]:
    """The published SA8295P ADP latencies in ai_hub_sa8295p.json (optionally of one role)."""
    doc = json.loads(PUBLISHED_FILE.read_text())
    rows = [PublishedLatency(r["role"], r["model"], r["published_name"], r["precision"], float(r["published_ms"]),
                             r["source"], int(doc["image_size"])) for r in doc["published"]]
    return [r for r in rows if role is None or r.role == role]


def efficiency_for(target: Target) -> Efficiency:
    """The efficiency constants used for ``target``: the HTP fit for targets running the HTP op set."""
    return HTP_EFFICIENCY if target.htp is not None else UNCALIBRATED_EFFICIENCY


@dataclass(frozen=True)
class OpCount:
    """What one op does, independent of how fast the target is."""

    name: str  # graph node name
    op: str  # ATen op name
    op_class: str  # one of OP_CLASSES
    macs: int
    weight_elems: int  # constant (weight/bias) elements read
    act_elems: int  # activation elements read and written


@dataclass(frozen=True)
class OpEstimate:
    """One row of an estimate: an op, its work, what bounds it and its estimated time."""

    name: str
    op: str
    op_class: str
    macs: int
    bytes: int  # DRAM bytes moved
    bound: str  # "compute" | "memory" | "overhead" (neither: the op's time is its fixed cost)
    ms: float


@dataclass
class Estimate:
    """An estimated latency: per-op rows and the total, for one graph on one target."""

    target: str
    scheme: str
    rows: list[OpEstimate]
    efficiency: Efficiency
    label: str = LABEL
    total_ms: float = field(init=False)

    def __post_init__(self):
        self.total_ms = sum(r.ms for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def by_class(self) -> dict[str, dict]:
        """Per op class: op count, MACs, DRAM bytes and ms (classes with no ops are left out)."""
        out: dict[str, dict] = {}
        for r in self.rows:
            agg = out.setdefault(r.op_class, {"ops": 0, "macs": 0, "bytes": 0, "ms": 0.0})
            agg["ops"] += 1
            agg["macs"] += r.macs
            agg["bytes"] += r.bytes
            agg["ms"] += r.ms
        return {k: out[k] for k in OP_CLASSES if k in out}

    def to_dict(self) -> dict:
        """JSON-ready form (every time field is labelled estimated)."""
        return {
            "label": self.label, "target": self.target, "scheme": self.scheme,
            "total_ms": self.total_ms, "macs": self.macs,
            "by_class": self.by_class(), "efficiency": asdict(self.efficiency),
            "ops": [asdict(r) for r in self.rows],
        }


def _shape(node) -> tuple:
    """Shape of a single-tensor node (from ShapeProp's tensor_meta)."""
    return tuple(node.meta["tensor_meta"].shape)


def _numel(node) -> int:
    """Elements of a node's output; a multi-output node counts all its tensors; non-tensors 0."""
    import torch

    meta = getattr(node, "meta", {}).get("tensor_meta")
    if meta is None:
        return 0
    if hasattr(meta, "shape"):
        return math.prod(meta.shape)
    leaves = torch.utils._pytree.tree_leaves(meta, is_leaf=lambda m: hasattr(m, "shape"))
    return sum(math.prod(m.shape) for m in leaves if hasattr(m, "shape"))


def _conv_count(node) -> tuple[str, int]:
    x, w = node.args[0], node.args[1]
    ws, xs = _shape(w), _shape(x)
    transposed = is_transposed_conv(node)
    groups = node.args[-1] if target_name(node.target) in GENERIC_CONV_OPS else (
        node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1))
    groups = int(groups)
    if transposed:  # weight [Cin, Cout/groups, k...]: every input element meets Cout/groups * k MACs
        return "conv", math.prod(xs) * math.prod(ws[1:])
    macs = _numel(node) * math.prod(ws[1:])  # out_numel * Cin/groups * kh * kw
    depthwise = groups > 1 and ws[1] == 1 and groups == xs[1]
    return ("depthwise_conv" if depthwise else "conv"), macs


def _matmul_k(node) -> int:
    op = target_name(node.target)
    if op == "linear":
        return _shape(node.args[1])[-1]  # weight [out, in]
    a = node.args[1] if op in ("addmm", "baddbmm") else node.args[0]
    return _shape(a)[-1]


def count_ops(gm, example_inputs: tuple) -> list[OpCount]:
    """MACs and element traffic of every op of ``gm`` at ``example_inputs``' shapes.

    Shapes come from a FakeTensor run (no compute).  Constants are the graph's
    ``get_attr`` nodes and everything computed from constants alone.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(gm, fake_mode=FakeTensorMode(allow_non_fake_inputs=True)).propagate(*example_inputs)
    constant = set()
    counts = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            constant.add(node)
            continue
        if node.op != "call_function":
            continue
        inputs = node.all_input_nodes
        op = target_name(node.target)
        if all(i in constant for i in inputs):
            constant.add(node)  # constants only (or none, e.g. arange): folded at compile time on the device
            continue
        if op in _FREE or op.startswith("_assert") or op.startswith("sym_"):
            continue
        if op in CONV_OPS:
            op_class, macs = _conv_count(node)
        elif op in _MATMULS:
            op_class, macs = "matmul", _numel(node) * _matmul_k(node)
        else:
            op_class, macs = "other", 0
        weights = sum(_numel(i) for i in inputs if i in constant)
        acts = sum(_numel(i) for i in inputs if i not in constant) + _numel(node)
        counts.append(OpCount(node.name, op, op_class, int(macs), int(weights), int(acts)))
    return counts


def scheme_bits(scheme) -> tuple[int | None, int | None, str]:
    """(weight bits, activation bits, name) of a scheme name or object; (None, None, 'float') for float."""
    from edgevlm.quant.schemes import FLOAT_SPECS, get_scheme

    if scheme is None or (isinstance(scheme, str) and scheme.strip().lower() in FLOAT_SPECS):
        return None, None, "float"
    s = get_scheme(scheme)
    if s.is_kv_only:
        raise InputError(f"'{s.name}' is a KV-cache scheme, not a stage scheme", "use e.g. w8a16 or w8a8")
    return s.weight_bits, s.act_bits, s.name


def _peak_macs(target: Target, act_bits: int | None) -> float:
    r = target.roofline
    if act_bits is None:
        if r.float_macs_per_s is None:
            raise InputError(
                f"target {target.name} runs no float graphs, so a float estimate is meaningless",
                "give an integer scheme, e.g. --quant w8a16",
            )
        return r.float_macs_per_s
    return r.int8_macs_per_s if act_bits <= 8 else r.int16_macs_per_s


def time_ops(counts: list[OpCount], target: Target, scheme=None, efficiency: Efficiency | None = None) -> Estimate:
    """Turn op counts into an :class:`Estimate` for ``target`` under ``scheme``."""
    eff = efficiency or efficiency_for(target)
    w_bits, a_bits, scheme_name = scheme_bits(scheme)
    float_bits = 32 if "fp32" in target.activation_dtypes else 16  # NPUs with float graphs run fp16
    w_bytes, a_bytes = (w_bits or float_bits) / 8, (a_bits or float_bits) / 8
    peak = _peak_macs(target, a_bits)
    bandwidth = target.roofline.dram_gb_per_s * 1e9 * eff.memory
    rows = []
    for c in counts:
        act = c.act_elems * a_bytes
        dram = c.weight_elems * w_bytes + (0 if act <= target.roofline.onchip_bytes else act)
        compute_s = c.macs / (peak * eff.for_class(c.op_class)) if c.macs else 0.0
        memory_s = dram / bandwidth if dram else 0.0
        bound = "overhead" if compute_s == memory_s == 0 else ("compute" if compute_s >= memory_s else "memory")
        ms = (max(compute_s, memory_s) + eff.op_overhead_s) * 1e3
        rows.append(OpEstimate(c.name, c.op, c.op_class, c.macs, int(dram), bound, ms))
    return Estimate(target.name, scheme_name, rows, eff)


def capture_for_estimate(module_or_program, example_inputs: tuple, target: Target):
    """The GraphModule the device would run: captured as the compiler captures a stage, then its passes."""
    from edgevlm.compiler.capture import capture_module
    from edgevlm.compiler.passes import run_pipeline

    gm = capture_module(module_or_program, example_inputs, type(module_or_program).__name__)
    return run_pipeline(gm, target)[0]


def estimate_latency(module_or_program, example_inputs, target, scheme=None, efficiency: Efficiency | None = None) -> Estimate:
    """Estimated latency of one graph on ``target`` (a name or Target) under ``scheme`` (e.g. ``"w8a16"``).

    ``scheme=None`` uses the target's default encoder scheme.  The result is
    labelled ``"estimated"``; see the module docstring for the model.
    """
    from edgevlm.targets import get_target

    target = get_target(target)
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    if scheme is None:
        scheme = target.default_quant.get(StageKind.ENCODER)
    gm = capture_for_estimate(module_or_program, inputs, target)
    counts = count_ops(gm, inputs)
    return time_ops(counts, target, scheme, efficiency)


def _split_time(counts: list[OpCount], target: Target, scheme, grid, depthwise: bool, memory: float):
    """Seconds spent in one op group (depthwise convs or everything else) at each efficiency of ``grid``."""
    import numpy as np

    est = time_ops(counts, target, scheme, Efficiency(1.0, 1.0, memory, 0.0, ""))
    rows = [(c, r) for c, r in zip(counts, est.rows) if (c.op_class == "depthwise_conv") == depthwise]
    if not rows:
        return np.zeros(len(grid))
    peak = _peak_macs(target, scheme_bits(scheme)[1])
    macs = np.array([c.macs for c, _ in rows], dtype=np.float64)
    mem_s = np.array([r.bytes for _, r in rows], dtype=np.float64) / (target.roofline.dram_gb_per_s * 1e9 * memory)
    return np.maximum(macs[None, :] / (peak * grid[:, None]), mem_s[None, :]).sum(axis=1)


def fit_efficiency(cases, target: Target, memory: float = PRIOR_MEMORY, op_overhead_s: float = PRIOR_OP_OVERHEAD_S,
                   points: int = 2001) -> tuple[Efficiency, float]:
    """Fit ``dense`` and ``depthwise`` efficiency to published latencies by grid search.

    ``cases``: (op counts, scheme, published ms) per published model.  Both
    efficiencies range over ``points`` log-spaced values in [1e-4, 1]; the pair
    minimising the largest |log(estimated / published)| wins (the first such
    pair in grid order on ties, so the fit is deterministic).  Time separates
    into a depthwise part and a rest, so the whole grid costs two small matrix
    sums per case.  Returns (efficiency rounded to 3 significant digits,
    worst |relative error| of the unrounded optimum).
    """
    import numpy as np

    grid = np.geomspace(1e-4, 1.0, points)
    worst = np.zeros((points, points))
    for counts, scheme, published_ms in cases:
        rest = _split_time(counts, target, scheme, grid, False, memory)
        dw = _split_time(counts, target, scheme, grid, True, memory)
        total_ms = (rest[:, None] + dw[None, :] + len(counts) * op_overhead_s) * 1e3
        worst = np.maximum(worst, np.abs(np.log(total_ms / published_ms)))
    i, j = np.unravel_index(int(np.argmin(worst)), worst.shape)
    fitted = Efficiency(
        dense=float(f"{grid[i]:.3g}"), depthwise=float(f"{grid[j]:.3g}"), memory=memory, op_overhead_s=op_overhead_s,
        source=HTP_EFFICIENCY.source,
    )
    return fitted, float(np.expm1(worst[i, j]))


def timm_model(name: str):
    """A timm model with random weights (no download): only its shapes matter for an estimate."""
    from edgevlm._compat import import_timm
    from edgevlm.errors import UnknownNameError

    timm = import_timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        raise UnknownNameError(
            f"unknown timm model '{name}'",
            f"use a name from timm.list_models(), e.g. {', '.join(close)}" if close else "use a name from timm.list_models()",
        )
    return timm.create_model(name, pretrained=False).eval()


def count_timm_ops(name: str, image_size: int, target: Target) -> list[OpCount]:
    """Op counts of timm model ``name`` at ``image_size`` x ``image_size`` (batch 1), as captured for ``target``."""
    import torch

    inputs = (torch.zeros(1, 3, image_size, image_size),)
    return count_ops(capture_for_estimate(timm_model(name), inputs, target), inputs)


def refit_htp(target: Target) -> tuple[Efficiency, float]:
    """Re-run the HTP calibration: build the calibration models, count their ops, fit (see fit_efficiency)."""
    cases = [(count_timm_ops(p.model, p.image_size, target), p.precision, p.published_ms)
             for p in published_latencies("calibration")]
    return fit_efficiency(cases, target)


def report_estimates(report: dict) -> dict:
    """Target estimates from a build's report.json: per stage, and the TTFT / decode rate they imply."""
    stages = {s["name"]: s.get("estimate") or {} for s in report.get("stages", [])}
    ms = {name: e.get("total_ms") for name, e in stages.items()}
    out = {"label": LABEL, "target": report.get("target"), "method": f"roofline ({__name__})",
           "stages_ms": ms, "schemes": {name: e.get("scheme") for name, e in stages.items()}}
    first = [ms.get(n) for n in (StageName.ENCODER, StageName.PROJECTOR, StageName.LLM_PREFILL)]
    out["ttft_ms"] = sum(first) if all(v is not None for v in first) else None
    out["decode_tokens_per_s"] = 1e3 / ms[StageName.LLM_DECODE] if ms.get(StageName.LLM_DECODE) else None
    reasons = {name: e["reason"] for name, e in stages.items() if e.get("reason")}
    if reasons:
        out["not_estimated"] = reasons
    return out
