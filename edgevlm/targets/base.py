"""The Target interface: what a device accepts and how fast it is.

A target is a frozen dataclass.  Adding a target is adding one module to this
package that defines ``TARGET``; the registry in ``__init__`` finds it.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Roofline:
    """Nominal peak figures used by the latency estimator (not measurements).

    MAC/s are multiply-accumulates per second for the given operand width;
    ``float_macs_per_s`` is None where the accelerator runs no float graphs.
    """

    int8_macs_per_s: float
    int16_macs_per_s: float
    float_macs_per_s: float | None
    dram_gb_per_s: float
    onchip_bytes: int
    source: str  # where the nominal figures come from


@dataclass(frozen=True)
class Htp:
    """A Qualcomm Hexagon HTP: what QNN needs to prepare and run a graph for it.

    ``soc_model`` is QNN's SoC id (the ``soc_model`` option of QNN's HTP
    backend and of onnxruntime-qnn); ``soc_name`` the same SoC in ExecuTorch's
    ``QcomChipset``.
    """

    arch: int  # HTP version: 68 for v68, 75 for v75
    soc_model: int
    soc_name: str
    vtcm_mb: int  # on-chip memory the graph may use


@dataclass(frozen=True)
class Target:
    """A deployment target.

    ``supported_ops`` holds ATen op names without namespace and overload
    (``"conv2d"``, ``"linear"``); None means the target runs any op.
    ``default_quant`` maps a stage kind (``encoder``, ``projector``, ``llm``,
    ``kv``) to the scheme name used when the user gives none.
    """

    name: str
    description: str
    kind: str  # "npu" | "cpu"
    backends: tuple[str, ...]  # in order of preference
    activation_dtypes: tuple[str, ...]
    weight_dtypes: tuple[str, ...]
    kv_dtypes: tuple[str, ...]
    weight_granularities: tuple[str, ...]
    float_graphs: bool  # may a compiled graph compute in floating point?
    roofline: Roofline
    memory_bytes: int  # memory the deployed model may use on the device
    supported_ops: frozenset[str] | None = None
    default_quant: dict = field(default_factory=dict)
    htp: Htp | None = None  # set for Qualcomm targets: their graphs follow QNN's rules and run on QNN HTP
    constraints: tuple[str, ...] = ()  # human-readable notes shown by `edgevlm targets`
    order: int = 100  # position in listings

    def __post_init__(self):
        if not self.backends:
            raise ValueError(f"target {self.name}: no backends")
        if not self.float_graphs and any(d.startswith("fp") for d in self.activation_dtypes):
            raise ValueError(f"target {self.name}: integer-only target lists float activations")

    @property
    def integer_only(self) -> bool:
        return not self.float_graphs

    def supports_op(self, op_name: str) -> bool:
        return self.supported_ops is None or op_name in self.supported_ops or op_name in NON_COMPUTE_OPS


# Ops the Hexagon HTP (QNN HTP backend) executes, named as ATen ops after
# torch.export.  Pure data movement and shape ops are included; anything not
# listed is rewritten by the legalize pass (scaled_dot_product_attention,
# rms_norm, ...) or rejected at compile time with the op's name.
# Checked against QNN's own validation (onnxruntime-qnn 2.7.0, HTP v68 simulation, w8a16
# one-op graphs, CPU fallback disabled): matmul/bmm, log_softmax, cumsum, sin, cos, elu,
# pixel_shuffle, upsample_bilinear2d, topk, argmax, amax, pow, hardswish, exp, rsqrt and
# maximum run at 41-97 dB vs float; prelu (refused: graph finalize fails) and log (0 dB)
# run only in the forms edgevlm.quant.htp_forms gives them (8-bit slope, 8-bit activations).
HTP_OPS = frozenset(
    """
    conv1d conv2d convolution linear addmm mm bmm matmul baddbmm
    add sub mul div rsub neg abs pow sqrt rsqrt exp log reciprocal square
    relu relu6 hardtanh leaky_relu prelu sigmoid tanh hardswish hardsigmoid gelu silu elu
    clamp clamp_min clamp_max minimum maximum where
    softmax _softmax log_softmax layer_norm native_layer_norm group_norm
    batch_norm _native_batch_norm_legit_no_training
    mean sum amax amin max min argmax
    avg_pool2d max_pool2d adaptive_avg_pool2d adaptive_avg_pool1d
    upsample_nearest2d upsample_bilinear2d pixel_shuffle
    reshape view _unsafe_view flatten unflatten permute transpose t contiguous clone
    expand expand_as view_as squeeze unsqueeze cat stack split split_with_sizes chunk unbind slice select narrow movedim
    index_select gather embedding constant_pad_nd pad repeat tile
    eq ne gt ge lt le logical_not logical_and logical_or bitwise_not bitwise_and bitwise_or
    alias detach dropout _to_copy to type_as zeros zeros_like ones ones_like full full_like arange eye scalar_tensor new_zeros new_ones new_full
    cumsum sin cos masked_fill topk
    """.split()
)

# Graph bookkeeping that torch.export records but no device executes.
NON_COMPUTE_OPS = frozenset(
    "getitem _assert_tensor_metadata _assert_scalar _assert_async sym_size sym_numel sym_stride "
    "sym_constrain_range sym_constrain_range_for_size".split()
)
