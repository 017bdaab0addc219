"""TVM backend: Relax host build runs on the Relax VM (max abs err <= 1e-4 vs
PyTorch) and an aarch64 artifact is written."""
import shutil

import pytest
import torch

from edgevlm.compiler.backends import get_backend
from edgevlm.compiler.backends import tvm_backend
from edgevlm.core.metrics import compare

pytest.importorskip("tvm")


def test_host_parity_and_aarch64_artifact(tiny_stage, make_plan):
    plan = make_plan("cpu-arm64")
    backend = get_backend("tvm")
    artifact = backend.lower(tiny_stage, plan)
    assert artifact.path == "tiny.tvm.so"
    arm = artifact.files[1]
    assert arm in ("tiny.aarch64.so", "tiny.aarch64.tar") and (plan.out_dir / arm).stat().st_size > 0
    assert {"relax.nn.conv2d", "relax.matmul"} <= set(artifact.info["ops"])
    outputs = backend.execute(artifact, plan.out_dir, [x.numpy() for x in tiny_stage.stage.example_inputs])
    with torch.no_grad():
        reference = [tiny_stage.stage.module(*tiny_stage.stage.example_inputs).numpy()]
    assert compare("max_abs_err", reference, outputs) <= 1e-4


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="needs gcc-aarch64-linux-gnu")
def test_aarch64_library_is_an_arm64_elf(tiny_stage, make_plan):
    plan = make_plan("cpu-arm64")
    artifact = get_backend("tvm").lower(tiny_stage, plan)
    head = (plan.out_dir / "tiny.aarch64.so").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    assert "linked with" in artifact.info["aarch64"]


def test_without_cross_compiler_saves_objects(tiny_stage, make_plan, monkeypatch):
    monkeypatch.setattr(tvm_backend.shutil, "which", lambda name: None)
    plan = make_plan("cpu-arm64")
    artifact = get_backend("tvm").lower(tiny_stage, plan)
    assert artifact.files[1] == "tiny.aarch64.tar" and (plan.out_dir / "tiny.aarch64.tar").is_file()
    assert "not found" in artifact.info["aarch64"]


def test_aarch64_tar_is_deterministic_without_cross_compiler(tiny_stage, make_plan, tmp_path, monkeypatch):
    """Checked with and without aarch64-linux-gnu-gcc installed: the tar path is forced."""
    import tarfile

    monkeypatch.setattr(tvm_backend.shutil, "which", lambda name: None)
    tar_path = tmp_path / "tiny.aarch64.tar"
    get_backend("tvm").lower(tiny_stage, make_plan("cpu-arm64"))
    first = tar_path.read_bytes()
    get_backend("tvm").lower(tiny_stage, make_plan("cpu-arm64"))
    assert tar_path.read_bytes() == first
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members) and members
        assert all((m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644) for m in members)
        head = tar.extractfile(members[0]).read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64 object


def test_deterministic_tar_loads_in_tvm(tmp_path):
    """The archive format TVM reads back: load_module untars and links it (host objects here)."""
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Add:
        @R.function
        def main(x: R.Tensor((4,), "float32")):
            return R.add(x, x)

    lib = relax.build(Add, target=tvm.target.Target({"kind": "llvm"}))
    lib.export_library(str(tmp_path / "add.tar"), fcompile=tvm_backend.deterministic_tar)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tmp_path / "add.tar")), tvm.cpu())
    x = tvm.runtime.tensor(torch.arange(4, dtype=torch.float32).numpy())
    assert vm["main"](x).numpy().tolist() == [0.0, 2.0, 4.0, 6.0]


def test_missing_tvm_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tvm(name, *args, **kwargs):
        if name == "tvm" or name.startswith("tvm."):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tvm)
    ok, why = get_backend("tvm").available()
    assert not ok and "pip install 'edgevlm[tvm]'" in why


def test_libraries_are_deterministic(tiny_stage, make_plan, tmp_path):
    backend = get_backend("tvm")
    first = backend.lower(tiny_stage, make_plan("cpu-arm64"))
    blobs = {f: (tmp_path / f).read_bytes() for f in first.files}
    backend.lower(tiny_stage, make_plan("cpu-arm64"))
    assert all((tmp_path / f).read_bytes() == b for f, b in blobs.items())


def test_scheme_is_reported_as_not_applied(tiny_stage, make_plan):
    from edgevlm.quant.schemes import get_scheme

    artifact = get_backend("tvm").lower(tiny_stage, make_plan("cpu-arm64", {"encoder": get_scheme("w8a8")}))
    assert artifact.quant is None and "w8a8 not applied" in artifact.notes["note"]
