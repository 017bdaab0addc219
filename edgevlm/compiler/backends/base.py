"""The Backend interface: one file per backend in this package.

A backend module defines ``BACKEND``, an object with:

- ``name``: e.g. ``"onnx"``; ``extra``: the pip extra that installs it;
- ``available() -> (ok, reason)``: never raises; a missing SDK is a reason;
- ``export(stage: CapturedStage, plan, workdir) -> form`` and
  ``finish(stage, plan, form, quantized) -> Artifact``: the stage in the form
  the backend lowers (an ONNX file, a torch.export program), then the files
  written under ``plan.out_dir`` from that form, or from ``quantized.form``
  when the stage's scheme quantizes it.  Between the two the pipeline runs
  the quantizer of the backend's family (``quantizer``, e.g. ``"onnx-qdq"``;
  see ``edgevlm.compiler.quantizers``): :func:`lower_stage`.  A backend
  without a family takes float stages only;
- ``lower(stage, plan) -> Artifact``: the three steps for one stage.  A
  backend that lowers another backend's artifact names it in ``consumes``
  and overrides ``lower(stage, plan, source)`` instead (qnn: onnx's QDQ model);
- ``execute(artifact, inputs) -> list[np.ndarray]`` where this machine can run
  the artifact; ``can_execute`` says whether it can;
- ``load(artifact, build_dir) -> fn(inputs) -> outputs``: the artifact loaded
  once for many runs (`edgevlm run`, profiling).
"""
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgevlm.compiler.quantizers import Quantized, quantize
from edgevlm.core.config import QuantConfig
from edgevlm.core.records import HtpContext, QuantRecord
from edgevlm.errors import LoweringError
from edgevlm.progress import track
from edgevlm.targets.base import Target


@dataclass(frozen=True)
class Plan:
    """How to lower: the target, where to write, how to quantize, and the verification options.

    ``quant`` is the compile's :class:`QuantConfig` (``plan.quant.scheme_for(kind)``:
    the stage kind's scheme, None for float); a mapping of stage kind to
    scheme, or None (all float), becomes one with CompileConfig's defaults.
    ``options`` holds what is not quantization: ``htp_verify`` (run the QNN
    context binaries on the HTP simulation) and ``gptq_hessians`` (the
    compile's GPTQ Hessian store, shared by the stages).
    """

    target: Target
    out_dir: Path
    quant: QuantConfig | Mapping | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.quant, QuantConfig):
            object.__setattr__(self, "quant", QuantConfig.resolve(self.quant))


@dataclass
class Artifact:
    """Files a backend wrote for one stage (paths relative to the build dir), and what it knows of them.

    The typed fields are what the pipeline and the CLI read: ``quant`` (None:
    a float artifact, verified by max abs error; else by SQNR), the
    integer-only check, the HTP context facts, ``notes`` (one line each on how
    the artifact departs from the target's own path, e.g. ``notes["qnn"]``).
    ``info`` holds the backend's other facts (opset, ops, dtypes...), for the
    report only.  :meth:`report_info` is report.json's ``info`` of the artifact.
    """

    backend: str
    stage: str
    path: str  # the main file or directory
    files: list[str] = field(default_factory=list)  # every file written, incl. path
    info: dict = field(default_factory=dict)  # backend facts for the report (opset, dtypes, ...)
    quant: QuantRecord | None = None
    integer_only: bool | None = None  # the quantized graph runs integer ops only (edgevlm.quant.checker)
    htp: HtpContext | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def report_info(self) -> dict:
        """The artifact's facts as report.json holds them: ``info`` with the typed records serialized into it."""
        out = dict(self.htp.to_dict()) if self.htp is not None else {}
        out |= self.info
        if self.quant is not None:
            out["quant"] = self.quant.to_dict()
        if self.integer_only is not None:
            out["integer_only"] = self.integer_only
            if self.quant is not None and self.quant.offending_ops is not None:
                out["offending_ops"] = list(self.quant.offending_ops)
        return out | self.notes


class Backend:
    """Base class with the defaults; subclasses override what they support."""

    name: str = ""
    extra: str | None = None  # pip extra, e.g. "executorch"
    can_execute: bool = False
    # The backend whose artifact of the same stage this one lowers (qnn: "onnx"'s QDQ model).
    # The pipeline lowers that backend first and passes its Artifact as ``lower(stage, plan, source)``.
    consumes: str | None = None
    # The quantizer family (edgevlm.compiler.quantizers) that quantizes this backend's exported form; None:
    # the backend lowers float stages only.
    quantizer: str | None = None
    measures_latency: bool = True  # False where running here says nothing of speed (a simulator)
    # Where verification runs on a simulator or reference kernels with a time budget: the multiply-accumulates
    # a second it does them at here, and where (for the report).  The pipeline skips a verification whose
    # sample the stage's MAC count puts past SIMULATION_SKIP_FACTOR budgets (see pipeline._verify).
    simulated_macs_per_s: float | None = None
    simulated_where: str = ""

    def verify_samples(self, stage, plan: Plan):
        """(input tuples to verify the artifact on, time budget in seconds or None); None skips verification."""
        return [stage.example_inputs], None

    def reference(self, plan: Plan) -> str:
        """What the parity figure compares, for the report."""
        return "float PyTorch model, example inputs"

    def run_samples(self, artifact: Artifact, build_dir: Path, samples: list, budget_s: float) -> list:
        """Outputs of ``artifact`` for each of ``samples`` (lists of arrays), stopping once ``budget_s`` is spent."""
        run, results, t0 = self.load(artifact, build_dir), [], time.perf_counter()
        for sample in track(samples, f"{self.name} verification", len(samples)):
            results.append(run(sample))
            if time.perf_counter() - t0 > budget_s:
                break
        return results

    def available(self) -> tuple[bool, str]:
        return True, ""

    def export(self, stage, plan: Plan, workdir: Path):
        """The stage in the form this backend lowers and its quantizer family takes; ``workdir`` is scratch
        space that lives until ``finish`` returns."""
        raise NotImplementedError

    def finish(self, stage, plan: Plan, form, quantized: Quantized | None) -> Artifact:
        """The artifact of ``form`` (a float stage), or of ``quantized.form`` with ``quantized.record``."""
        raise NotImplementedError

    def lower(self, stage, plan: Plan) -> Artifact:
        """``stage`` exported, quantized when its scheme says so, and lowered: :func:`lower_stage`."""
        return lower_stage(self, stage, plan)

    def load(self, artifact: Artifact, build_dir: Path, threads: int = 0):
        """A function inputs -> outputs running ``artifact`` (loaded once, run many times).

        Backends that only define ``execute`` get a loader that calls it each run.
        """
        if type(self).execute is Backend.execute:
            raise NotImplementedError(f"backend {self.name} cannot run artifacts on this machine")
        return lambda inputs: self.execute(artifact, build_dir, inputs)

    def execute(self, artifact: Artifact, build_dir: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if type(self).load is Backend.load:  # neither defined: this backend cannot run artifacts
            raise NotImplementedError(f"backend {self.name} cannot run artifacts on this machine")
        return self.load(artifact, build_dir)(inputs)


def lower_stage(backend: Backend, stage, plan: Plan, source: Artifact | None = None) -> Artifact:
    """One stage on one backend: export -> quantize (the backend's family, when the stage's scheme is not
    float) -> finish.  A backend that ``consumes`` another's artifact lowers ``source`` itself."""
    if backend.consumes is not None:
        return backend.lower(stage, plan, source)
    with tempfile.TemporaryDirectory(prefix=f"edgevlm-{backend.name}-") as workdir:
        form = backend.export(stage, plan, Path(workdir))
        quantized = None
        if backend.quantizer is not None and plan.quant.scheme_for(stage.stage.kind) is not None:
            quantized = quantize(backend.quantizer, form, stage, plan.quant, plan.target,
                                 hessians=plan.options.get("gptq_hessians"))
        return backend.finish(stage, plan, form, quantized)


def failing_op(exc: BaseException) -> str | None:
    """The graph op a toolchain was working on when it raised ``exc``, if its frames show one.

    ExecuTorch, TVM's and ONNX's torch frontends walk torch.fx nodes; the
    innermost frame holding a call_function ``torch.fx.Node`` names the op.
    """
    import torch.fx

    found, tb = None, exc.__traceback__
    while tb is not None:  # outermost to innermost frame
        nodes = {k: v for k, v in tb.tb_frame.f_locals.items() if isinstance(v, torch.fx.Node) and v.op == "call_function"}
        if nodes:
            found = nodes.get("node", next(iter(nodes.values())))
        tb = tb.tb_next
    if found is None:
        return None
    target = found.target
    return str(target) if isinstance(target, torch._ops.OpOverload) else getattr(target, "__name__", str(target))


def lowering_error(backend: str, stage: str, exc: Exception, fix: str | None = None) -> LoweringError:
    """One line for a toolchain's exception: the backend, the stage, the op if known, its first message line."""
    reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    op = failing_op(exc)
    where = f" at op {op}" if op and op not in reason else ""
    return LoweringError(f"backend {backend} cannot lower stage '{stage}'{where}: {reason}",
                         fix or f"leave {backend} out (--backends with the target's other backends), or change the op in the model")
