"""ExecuTorch backend: .pte programs, run here with executorch.runtime.

- CPU targets: XNNPACK delegate, float or static int8 through torchao pt2e
  with ``XNNPACKQuantizer``.
- Hexagon HTP targets (sa8295p, snapdragon-8-gen3): pt2e with
  ``QnnQuantizer`` (8a8w / 16a8w / 16a4w from the stage's scheme).  With a QNN
  SDK (``QNN_SDK_ROOT``) the program is lowered with the QNN partitioner for
  the target's SoC; without one, the QnnQuantizer-quantized program is lowered
  to ExecuTorch's portable kernels so it still runs here with the HTP's
  quantization numerics, and ``notes["qnn"]`` says so.  That is not an error.

The pt2e quantization is the ``pt2e`` quantizer's
(compiler/quantizers/pt2e_quantizer.py), which the pipeline runs between this
backend's ``export`` and ``finish``.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgevlm.compiler.backends.base import Artifact, Backend, Plan
from edgevlm.compiler.quantizers import Quantized
from edgevlm.compiler.quantizers.pt2e_quantizer import Program
from edgevlm.errors import BackendUnavailableError
from edgevlm.ops import target_name

EXTRA = "executorch"
INSTALL = f"pip install 'edgevlm[{EXTRA}]'"
QNN_HOST_LIB = Path("lib") / "x86_64-linux-clang" / "libQnnHtp.so"
# A quantized HTP program without the QNN SDK runs on ExecuTorch's portable kernels, the reference
# implementation of each op, which is slow and says nothing of the device's speed: verification takes
# the calibration samples that finish within this budget (seconds per stage; a large program runs in a
# child process that is stopped then, as the QNN HTP simulation is: qnn_backend.VERIFY_BUDGET_S), and
# no latency runs.
# Measured on an LFM2-VL-450M-shaped llm-prefill: see benchmarks/results/compile_scale.md.
REFERENCE_KERNELS_BUDGET_S = 120.0
# Their pace, for skipping a verification that could not finish one sample (pipeline._verify): the fastest
# measured on the LFM2-VL-450M-shaped default build (2026-12-04, 2-core AMD EPYC VM, load 1-4): the
# projector's 2.68 GMAC at 12 s a sample (224 M MAC/s), llm-decode's 0.37 GMAC at 4.5 s (82 M MAC/s).
REFERENCE_KERNELS_MACS_PER_S = 250e6
REFERENCE_KERNELS_MAX_SAMPLES = 4
CHILD_ABOVE_BYTES = 2**26  # programs this large verify in a child process (one sample can outlast the budget)


def qnn_sdk_root() -> str | None:
    """QNN_SDK_ROOT when it holds the SDK's host HTP library, else None."""
    root = os.environ.get("QNN_SDK_ROOT", "")
    return root if root and (Path(root) / QNN_HOST_LIB).is_file() else None


def has_channel_rms_norm(program) -> bool:
    """True when an RMS norm reduces over a dim other than the last (e.g. channels of NCHW).

    ExecuTorch's QNN ``RecomposeRmsNorm`` pass rewrites every
    ``x * rsqrt(mean(x^2) + eps) * gamma`` into ``rms_norm(x, gamma.shape)``,
    which normalizes the trailing dims: for a channel norm (MobileNetV5's
    RMSNorm2d) that is wrong and fails at calibration.
    """
    for node in program.graph.nodes:
        if node.op != "call_function" or target_name(node.target) != "mean" or len(node.args) < 2:
            continue
        rank = len(node.args[0].meta["val"].shape)
        if (rank - 1) in {d % rank for d in node.args[1]}:
            continue
        followers = {target_name(u.target) for u in node.users} | {
            target_name(v.target) for u in node.users for v in u.users
        }
        if "rsqrt" in followers:
            return True
    return False


def decompose_tanh_gelu(program):
    """Spell out ``gelu(approximate="tanh")`` as mul/add/tanh.

    XNNPACK lowers it as exact (erf) GELU: 5e-4 max abs error per op,
    2.9e-3 over a MobileNetV5 encoder (measured); spelled out it is 4e-7.
    """
    import torch
    from torch._decomp import decomposition_table

    gelu = torch.ops.aten.gelu.default
    if not any(n.target is gelu and n.kwargs.get("approximate") == "tanh" for n in program.graph.nodes):
        return program
    return program.run_decompositions({gelu: decomposition_table[gelu]})


def positive_reduction_dims(program):
    """``max.dim(x, d)`` with ``d < 0`` -> ``max.dim(x, d + rank)`` (in place; same values).

    XNNPACK's partitioner takes a 4-D ``max.dim`` over any dim, but its
    serializer accepts only ``dim == 2 or dim == 3`` as written, so a softmax's
    ``scores.max(dim=-1)`` failed the cpu-x86_64 compile of the default model
    (``amax.default only supports dim == 2 or dim == 3``).
    """
    import torch

    changed = False
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.max.dim and node.args[1] < 0:
            rank = len(node.args[0].meta["val"].shape)
            node.args = (node.args[0], node.args[1] + rank, *node.args[2:])
            changed = True
    if changed:
        program.graph_module.recompile()
    return program


def _lower_xnnpack(program):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = positive_reduction_dims(decompose_tanh_gelu(program))
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def _lower_portable(program):
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(program)


def _lower_qnn(program, soc: str, example_inputs, keep_rms_norm_decomposed: bool = False):
    """QNN HTP delegate for ``soc`` (needs the QNN SDK's host libraries)."""
    from executorch.backends.qualcomm._passes import RecomposeRmsNorm
    from executorch.backends.qualcomm._passes.qnn_pass_manager import get_qnn_pass_manager_cls
    from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset
    from executorch.backends.qualcomm.utils.constants import QCOM_PASS_ACTIVATE_KEY
    from executorch.backends.qualcomm.utils.utils import (
        generate_htp_compiler_spec,
        generate_qnn_executorch_compiler_spec,
        to_edge_transform_and_lower_to_qnn,
    )

    specs = generate_qnn_executorch_compiler_spec(
        soc_model=getattr(QcomChipset, soc), backend_options=generate_htp_compiler_spec(use_fp16=False)
    )
    passes_job = get_qnn_pass_manager_cls().get_capture_program_passes()
    if keep_rms_norm_decomposed:  # see has_channel_rms_norm
        passes_job[RecomposeRmsNorm][QCOM_PASS_ACTIVATE_KEY] = False
    return to_edge_transform_and_lower_to_qnn(program.module(), tuple(example_inputs), specs, passes_job=passes_job)


def describe_program(edge_manager) -> dict:
    """Delegates (backend id -> partitions), ops left outside them, ops inside them."""
    gm = edge_manager.exported_program().graph_module
    delegates: dict[str, int] = {}
    outside, inside = set(), set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if target_name(node.target) == "executorch_call_delegate":
            lowered = getattr(gm, node.args[0].target)
            delegates[lowered.backend_id] = delegates.get(lowered.backend_id, 0) + 1
            inside |= {
                target_name(n.target) for n in lowered.original_module.graph.nodes if n.op == "call_function"
            }
        elif target_name(node.target) != "getitem":
            outside.add(target_name(node.target))
    return {"delegates": delegates, "ops": sorted(outside), "delegated_ops": sorted(inside - {"getitem"})}


def runs_on_reference_kernels(plan: Plan, kind: str) -> bool:
    """True when a stage of ``kind`` lowers to the portable kernels (quantized, HTP target, no QNN SDK)."""
    return plan.target.htp is not None and plan.quant.scheme_for(kind) is not None and qnn_sdk_root() is None


def _run_child(pte: str, tmp: str, n: str) -> None:
    """Entry of the verification child: each sample's outputs to out<i>.npz as soon as it is done."""
    import executorch.kernels.quantized  # noqa: F401 - registers the quantized_decomposed kernels a Q/DQ program calls
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(Path(pte)).load_method("forward")
    with np.load(Path(tmp) / "in.npz", allow_pickle=False) as data:
        for i in range(int(n)):
            inputs = [torch.from_numpy(np.ascontiguousarray(data[k])) for k in sorted(
                (k for k in data.files if k.startswith(f"s{i}_")), key=lambda k: int(k.split("_")[1]))]
            outs = [o.detach().numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in method.execute(inputs)]
            partial = Path(tmp) / f"out{i}.partial.npz"
            np.savez(partial, **{f"o{k}": o for k, o in enumerate(outs)})
            partial.replace(Path(tmp) / f"out{i}.npz")


def run_in_child(pte: Path, samples: list, budget_s: float, label: str = "executorch verification") -> list:
    """Outputs of the program ``pte`` for each of ``samples``, as many as finish within ``budget_s`` seconds.

    In a child process, killed at the budget: a portable-kernel run cannot be
    interrupted in-process.  Inputs and outputs pass as .npz (no pickle).
    """
    from edgevlm import progress

    with tempfile.TemporaryDirectory(prefix="edgevlm-et-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "in.npz", **{f"s{i}_{j}": np.asarray(x) for i, s in enumerate(samples) for j, x in enumerate(s)})
        cmd = [sys.executable, "-c", "import sys; from edgevlm.compiler.backends.executorch_backend import _run_child; "
               "_run_child(*sys.argv[1:])", str(pte), str(tmp), str(len(samples))]
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0, done = time.perf_counter(), 0
        progress.report(label, 0, len(samples), 0.0)
        while child.poll() is None and time.perf_counter() - t0 < budget_s:
            time.sleep(0.5)
            now = sum((tmp / f"out{i}.npz").is_file() for i in range(len(samples)))
            if now != done:
                done = now
                progress.report(label, done, len(samples), time.perf_counter() - t0)
        if child.poll() is None:
            child.kill()
        _, err = child.communicate()
        results = []
        for i in range(len(samples)):
            if not (tmp / f"out{i}.npz").is_file():
                break
            with np.load(tmp / f"out{i}.npz", allow_pickle=False) as data:
                results.append([data[f"o{k}"] for k in range(len(data.files))])
        if not results and child.returncode not in (0, -9):
            last = (err.strip().splitlines() or [""])[-1]
            raise RuntimeError(f"ExecuTorch verification of {pte.name} failed (exit {child.returncode}): {last[:300]}")
        return results


class ExecuTorchBackend(Backend):
    name = "executorch"
    extra = EXTRA
    can_execute = True
    quantizer = "pt2e"

    simulated_macs_per_s = REFERENCE_KERNELS_MACS_PER_S  # used only where verification has a budget: portable kernels
    simulated_where = "ExecuTorch's portable kernels"

    def verify_samples(self, stage, plan: Plan):
        """On the portable kernels: calibration samples within REFERENCE_KERNELS_BUDGET_S; else the example inputs."""
        if not runs_on_reference_kernels(plan, stage.kind):
            return super().verify_samples(stage, plan)
        samples = list(stage.calibration or [])[:REFERENCE_KERNELS_MAX_SAMPLES] or [tuple(stage.example_inputs)]
        return samples, REFERENCE_KERNELS_BUDGET_S

    def reference(self, plan: Plan) -> str:
        if plan.target.htp is not None and qnn_sdk_root() is None:
            return ("float PyTorch model, calibration inputs; QnnQuantizer program run on ExecuTorch's portable "
                    "(reference) kernels")
        return super().reference(plan)

    def run_samples(self, artifact: Artifact, build_dir, samples: list, budget_s: float) -> list:
        """A small program in-process (the budget checked after each sample: a nano stage's sample takes
        milliseconds); a large one in a child process stopped at the budget."""
        if artifact.info.get("bytes", 0) < CHILD_ABOVE_BYTES:
            return super().run_samples(artifact, build_dir, samples, budget_s)
        return run_in_child(Path(build_dir) / artifact.path, samples, budget_s, f"{self.name} verification")

    def available(self):
        try:
            import executorch.exir  # noqa: F401
            import executorch.runtime  # noqa: F401
            import torchao.quantization.pt2e  # noqa: F401
        except ImportError as exc:
            return False, f"executorch not installed ({exc.name or exc}): {INSTALL}"
        return True, ""

    def export(self, stage, plan: Plan, workdir: Path) -> Program:
        """The captured program at contiguous inputs (what ExecuTorch lowers), for the pt2e quantizer."""
        if not self.available()[0]:
            raise BackendUnavailableError("executorch not installed", INSTALL)
        program, example = stage.contiguous_program()
        return Program(program, example, plan.target.htp is not None and has_channel_rms_norm(program))

    def finish(self, stage, plan: Plan, form: Program, quantized: Quantized | None) -> Artifact:
        """QNN HTP delegate (quantized, HTP target, QNN SDK), portable kernels (no SDK) or XNNPACK."""
        soc = plan.target.htp.soc_name if plan.target.htp is not None else None
        program, record = (form.program, None) if quantized is None else (quantized.form.program, quantized.record)
        notes = {} if quantized is None else dict(quantized.notes)
        if soc and quantized is not None and qnn_sdk_root():
            try:
                edge = _lower_qnn(program, soc, form.example, keep_rms_norm_decomposed=form.keep_rms_norm_decomposed)
            except Exception as exc:  # the SDK raises many types; the user needs the first line
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise BackendUnavailableError(
                    f"QNN lowering for {soc} failed with the SDK at {qnn_sdk_root()}: {reason}",
                    "point QNN_SDK_ROOT at a QNN SDK whose host libraries load here, or unset it to lower without QNN",
                ) from None
            notes["qnn"] = f"lowered with the QNN HTP partitioner for {soc} (SDK at {qnn_sdk_root()})"
        elif soc and quantized is not None:
            # XNNPACK takes neither QNN's 16-bit activations nor (measured) its
            # int32 per-channel bias correctly, so the portable kernels run the
            # Q/DQ graph: the HTP's quantization numerics, executed on the CPU.
            edge = _lower_portable(program)
            notes["qnn"] = (
                f"QNN SDK not found (set QNN_SDK_ROOT to an SDK holding {QNN_HOST_LIB.as_posix()}): "
                f"QnnQuantizer-quantized program for {soc} lowered to ExecuTorch portable kernels, not the HTP"
            )
        else:
            edge = _lower_xnnpack(program)
            if soc:
                notes["qnn"] = f"float stage: lowered to XNNPACK, not the HTP ({plan.target.name} runs integer graphs only)"
        info = describe_program(edge)
        info["delegate"] = ", ".join(info["delegates"]) or "portable"
        rel = f"{stage.name}.pte"
        data = edge.to_executorch().buffer
        (Path(plan.out_dir) / rel).write_bytes(data)
        info["bytes"] = len(data)
        return Artifact(self.name, stage.name, rel, [rel], info, quant=record, notes=notes)

    def load(self, artifact: Artifact, build_dir, threads: int = 0):
        import torch
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(Path(build_dir) / artifact.path)
        method = program.load_method("forward")

        def run(inputs):
            outputs = method.execute([torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
            return [o.detach().numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outputs]

        return run


BACKEND = ExecuTorchBackend()
