"""Core ML backend: .mlpackage (ML Program, iOS 17+) per scheme, verified by
reloading the package and reading its ops and dtypes (Linux cannot run Core ML;
on macOS the float package runs and must match PyTorch within fp16 error)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgevlm.compiler.backends import get_backend
from edgevlm.core.metrics import compare
from edgevlm.quant.schemes import get_scheme

pytest.importorskip("coremltools")


def lower(stage, plan):
    artifact = get_backend("coreml").lower(stage, plan)
    assert artifact.path == "tiny.mlpackage" and (plan.out_dir / artifact.path / "Manifest.json").is_file()
    return artifact.report_info()  # report.json's facts of the artifact


def test_float_package(tiny_stage, make_plan):
    info = lower(tiny_stage, make_plan("apple-a17pro"))
    assert info["model_type"] == "mlProgram" and info["deployment_target"] == "iOS17"
    assert info["spec_version"] >= 8  # iOS 17 ML Program
    assert {"conv", "linear", "relu"} <= set(info["ops"])
    assert info["weight_storage"] == {} and info["inputs"] == {"input_0": "float32"}


def test_int8_weights_and_activations(tiny_stage, make_plan):
    info = lower(tiny_stage, make_plan("apple-a17pro", {"encoder": get_scheme("w8a8")}))
    assert info["ops"]["quantize"] >= 2 and info["ops"]["dequantize"] >= 2
    assert info["activation_dtypes"] == ["int8"]
    assert "int8" in info["weight_storage"]["constexpr_affine_dequantize"]
    assert info["quant"]["calibration_batches"] == 16


def test_int8_weight_only(tiny_stage, make_plan):
    info = lower(tiny_stage, make_plan("apple-a17pro", {"encoder": get_scheme("w8a16")}))
    assert "int8" in info["weight_storage"]["constexpr_affine_dequantize"]
    assert "quantize" not in info["ops"]


def test_4bit_palettized(tiny_stage, make_plan):
    info = lower(tiny_stage, make_plan("apple-a17pro", {"encoder": get_scheme("w4a16")}))
    assert "constexpr_lut_to_dense" in info["weight_storage"] and info["lut_bits"] == [4]
    assert info["deployment_target"] == "iOS17"


def test_4bit_per_group_linear_needs_ios18(tiny_stage, make_plan):
    info = lower(tiny_stage, make_plan("apple-a17pro", {"encoder": get_scheme("w4a16-g32")}))
    assert "int4" in info["weight_storage"]["constexpr_blockwise_shift_scale"]
    assert info["deployment_target"] == "iOS18" and "iOS 18" in info["deployment_note"]


def _tree_digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_package_bytes_are_deterministic(tiny_stage, make_plan, tmp_path):
    from coremltools.proto import Model_pb2

    lower(tiny_stage, make_plan("apple-a17pro"))
    first = _tree_digest(tmp_path / "tiny.mlpackage")
    lower(tiny_stage, make_plan("apple-a17pro"))
    assert _tree_digest(tmp_path / "tiny.mlpackage") == first
    # Within one process the protobuf runtime's map order repeats, so the check above cannot see it; the spec
    # on disk must be the key-sorted serialization (its op attribute maps are not in sorted order otherwise).
    raw = (tmp_path / "tiny.mlpackage" / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes()
    assert raw == Model_pb2.Model.FromString(raw).SerializeToString(deterministic=True)


def _build_tiny_package(out_dir) -> dict:
    """The float package of a seeded conv+linear, built the same way here and in a child process; its file digests."""
    from edgevlm.compiler.backends.base import Plan
    from edgevlm.compiler.stage import CapturedStage
    from edgevlm.core.stage import Stage
    from edgevlm.targets import get_target

    torch.manual_seed(0)
    nn = torch.nn
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 16)).eval()
    x = torch.randn(1, 3, 8, 8)
    program = torch.export.export(module, (x,))
    stage = CapturedStage(Stage("tiny", module, (x,), output_names=("out",)), program.module(), program)
    get_backend("coreml").lower(stage, Plan(target=get_target("apple-a17pro"), out_dir=Path(out_dir)))
    return _tree_digest(Path(out_dir) / "tiny.mlpackage")


@pytest.mark.slow  # a second interpreter importing torch + coremltools: ~13 s CPU (measured), minutes under load
def test_package_bytes_are_identical_across_processes(tmp_path):
    """A child process (another PYTHONHASHSEED; the protobuf runtime's map order also differs per process) writes the same bytes."""
    here = Path(__file__).parent
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    child = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_coreml_backend as t; "
             "print(json.dumps(t._build_tiny_package(sys.argv[2])))")
    with open(tmp_path / "child.log", "wb") as log:  # a file, not a pipe: the child's warnings cannot block it
        proc = subprocess.Popen([sys.executable, "-c", child, str(here), str(tmp_path / "child")],
                                env={**os.environ, "PYTHONHASHSEED": seed}, stdout=subprocess.PIPE, stderr=log)
        ours = _build_tiny_package(tmp_path / "here")  # built while the child runs
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, (tmp_path / "child.log").read_text()[-2000:]
    assert "Data/com.apple.CoreML/model.mlmodel" in ours and "Data/com.apple.CoreML/weights/weight.bin" in ours
    assert json.loads(out.decode().splitlines()[-1]) == ours


@pytest.mark.skipif(sys.platform == "darwin", reason="Linux-only behaviour")
def test_cannot_execute_on_linux(tiny_stage, make_plan):
    backend = get_backend("coreml")
    assert not backend.can_execute
    artifact = backend.lower(tiny_stage, make_plan("apple-a17pro"))
    assert "macOS" in artifact.info["verified"]
    with pytest.raises(NotImplementedError):
        backend.execute(artifact, make_plan("apple-a17pro").out_dir, [x.numpy() for x in tiny_stage.stage.example_inputs])


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions need macOS")
def test_macos_parity(tiny_stage, make_plan):
    plan = make_plan("apple-a17pro")
    backend = get_backend("coreml")
    artifact = backend.lower(tiny_stage, plan)
    outputs = backend.execute(artifact, plan.out_dir, [x.numpy() for x in tiny_stage.stage.example_inputs])
    with torch.no_grad():
        reference = [tiny_stage.stage.module(*tiny_stage.stage.example_inputs).numpy()]
    assert compare("sqnr_db", reference, outputs) >= 40.0  # fp16 compute: ~60 dB expected


def test_missing_coremltools_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_coremltools(name, *args, **kwargs):
        if name.startswith("coremltools"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_coremltools)
    ok, why = get_backend("coreml").available()
    assert not ok and "pip install 'edgevlm[coreml]'" in why


def test_4bit_weights_with_int8_activations_is_refused(tiny_stage, make_plan):
    from edgevlm.errors import InputError

    with pytest.raises(InputError, match="w4a16"):
        get_backend("coreml").lower(tiny_stage, make_plan("apple-a17pro", {"encoder": get_scheme("w4a8")}))


def test_state_passed_through_gets_distinct_output_names(make_plan):
    from edgevlm.compiler.stage import CapturedStage
    from edgevlm.core.stage import Stage

    class Step(torch.nn.Module):
        def forward(self, x, cache):
            new_cache = cache * 0.5 + x
            return new_cache.sum(dim=-1), new_cache

    x, cache = torch.randn(1, 8), torch.randn(1, 8)
    stage = Stage("tiny", Step(), (x, cache), input_names=("x", "cache"), output_names=("y", "cache"))
    program = torch.export.export(stage.module, stage.example_inputs)
    captured = CapturedStage(stage, program.module(), program)
    info = lower(captured, make_plan("apple-a17pro"))
    assert info["output_names"] == {"y": "y", "cache": "cache_out"}
    assert set(info["outputs"]) == {"y", "cache_out"} and set(info["inputs"]) == {"x", "cache"}
