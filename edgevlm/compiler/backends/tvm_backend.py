"""TVM backend: Relax from the captured program; a host library and an aarch64 one.

``<stage>.tvm.so`` is built for generic x86-64 ("llvm", no host-specific CPU
flags, so it runs on any x86-64 machine) and runs here on the Relax VM.
``<stage>.aarch64.so`` is cross-compiled for "llvm -mtriple=aarch64-linux-gnu"
and linked with aarch64-linux-gnu-gcc when that is installed; otherwise the
object files are saved as ``<stage>.aarch64.tar`` for linking on the device,
written so that two builds give the same bytes (see :func:`deterministic_tar`).
Stages are compiled float (the quantized paths are the other backends').
"""
import shutil
import tarfile
from pathlib import Path

import numpy as np

from edgevlm.compiler.backends.base import Artifact, Backend, Plan
from edgevlm.errors import BackendUnavailableError

EXTRA = "tvm"
INSTALL = f"pip install 'edgevlm[{EXTRA}]'"
HOST_TARGET = {"kind": "llvm"}
AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}
AARCH64_CC = "aarch64-linux-gnu-gcc"


def deterministic_tar(output, files, **_kwargs):
    """An ``export_library`` fcompile: ``files`` in a plain tar whose bytes depend only on their contents.

    TVM's own (``tar -czf`` of a temp dir) records mtimes, the owner, the
    directory's listing order and a gzip timestamp, so two builds differ.
    Here members are sorted by name, with mtime 0, owner 0:0 and mode 0644;
    ``tvm.runtime.load_module`` and ``tar -xf`` read it as before.
    """
    by_name = {}
    for f in files:
        name = Path(f).name
        if name in by_name:
            raise ValueError(f"duplicate file name {name} in the aarch64 archive")
        by_name[name] = Path(f)
    with tarfile.open(output, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(by_name):
            member = tarfile.TarInfo(name)
            member.size, member.mtime, member.mode = by_name[name].stat().st_size, 0, 0o644
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            with open(by_name[name], "rb") as fh:
                tar.addfile(member, fh)


deterministic_tar.output_format = "tar"


def _relax_module(program):
    from tvm.relax.frontend.torch import from_exported_program

    # Weights stay constants of the module, so each library is self-contained.
    return from_exported_program(program, keep_params_as_input=False)


def relax_ops(mod) -> list[str]:
    """Relax operators called by the module's ``main`` (before lowering to TIR)."""
    import tvm
    from tvm import relax

    ops = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            ops.add(expr.op.name)

    relax.analysis.post_order_visit(mod["main"], visit)
    return sorted(ops)


class TvmBackend(Backend):
    name = "tvm"
    extra = EXTRA
    can_execute = True

    def available(self):
        try:
            import tvm  # noqa: F401
            from tvm import relax  # noqa: F401
        except ImportError as exc:
            return False, f"apache-tvm not installed ({exc.name or exc}): {INSTALL}"
        return True, ""

    def export(self, stage, plan: Plan, workdir: Path):
        """The captured program as a Relax module (no quantizer family: TVM lowers float stages)."""
        ok, _ = self.available()
        if not ok:
            raise BackendUnavailableError("apache-tvm not installed", INSTALL)
        return _relax_module(stage.program)

    def finish(self, stage, plan: Plan, mod, quantized=None) -> Artifact:
        import tvm
        from tvm import relax
        from tvm.support import cc

        out = Path(plan.out_dir)
        info = {"ops": relax_ops(mod), "host_target": HOST_TARGET, "aarch64_target": AARCH64_TARGET,
                "dtypes": sorted({str(x.dtype).removeprefix("torch.") for x in stage.stage.example_inputs})}
        scheme = plan.quant.scheme_for(stage.stage.kind)
        notes = {}
        if scheme is not None:
            notes["note"] = f"compiled in float: the TVM backend does not quantize (scheme {scheme.name} not applied)"

        host = f"{stage.name}.tvm.so"
        relax.build(mod, target=tvm.target.Target(HOST_TARGET)).export_library(str(out / host))

        arm = relax.build(mod, target=tvm.target.Target(AARCH64_TARGET))
        if shutil.which(AARCH64_CC):
            arm_rel = f"{stage.name}.aarch64.so"
            arm.export_library(str(out / arm_rel), fcompile=cc.cross_compiler(AARCH64_CC))
            info["aarch64"] = f"shared library linked with {AARCH64_CC}; load with tvm.runtime.load_module on the device"
        else:
            arm_rel = f"{stage.name}.aarch64.tar"
            arm.export_library(str(out / arm_rel), fcompile=deterministic_tar)
            info["aarch64"] = (f"{AARCH64_CC} not found (apt install gcc-aarch64-linux-gnu): saved the aarch64 "
                               "object files as a tar; link them into a shared library on the device")
        return Artifact(self.name, stage.name, host, [host, arm_rel], info, notes=notes)

    def execute(self, artifact: Artifact, build_dir, inputs):
        import tvm
        from tvm import relax

        vm = relax.VirtualMachine(tvm.runtime.load_module(str(Path(build_dir) / artifact.path)), tvm.cpu())
        result = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs])
        # from_exported_program always returns a tuple of the program's outputs.
        return [r.numpy() for r in result]


BACKEND = TvmBackend()
