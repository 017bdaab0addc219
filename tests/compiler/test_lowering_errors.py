"""A backend whose toolchain rejects a stage ends the compile with one line naming the backend, the stage
and the op (exit 2), never a traceback; and the XNNPACK form that used to fail now lowers."""
import numpy as np
import pytest
import torch

from edgevlm import cli
from edgevlm.compiler.backends import executorch_backend
from edgevlm.compiler.backends.base import failing_op, lowering_error
from edgevlm.errors import LoweringError

pytest.importorskip("executorch")


class SoftmaxLastDim(torch.nn.Module):
    """The attention softmax of models/arch/lfm2.py: a max over the last dim of a 4-D tensor."""

    def forward(self, s):
        return torch.exp(s - s.max(dim=-1, keepdim=True).values)


def _compile_softmax(tmp_path):
    import edgevlm

    x = torch.randn(1, 2, 5, 7)
    return edgevlm.compile(SoftmaxLastDim(), (x,), target="cpu-x86_64", out=tmp_path / "b", backends=["executorch"],
                           quant="float")


def test_max_over_last_dim_lowers_to_xnnpack(tmp_path):
    result = _compile_softmax(tmp_path)
    art = result.report["stages"][0]["artifacts"][0]
    assert art["info"]["delegates"] == {"XnnpackBackend": 1}
    assert art["parity"]["metric"] == "max_abs_err" and art["parity"]["value"] <= 1e-6


def test_toolchain_error_is_one_line_naming_backend_stage_and_op(tmp_path, monkeypatch):
    """Without the dim rewrite XNNPACK raises its RuntimeError from inside its serializer."""
    monkeypatch.setattr(executorch_backend, "positive_reduction_dims", lambda program: program)
    with pytest.raises(LoweringError) as info:
        _compile_softmax(tmp_path)
    cause = info.value.cause
    assert cause.startswith("backend executorch cannot lower stage 'model' at op aten.amax.default: ")
    assert "amax.default only supports dim == 2 or dim == 3" in cause and "\n" not in cause
    assert not any(p.name.startswith(".b.tmp-") for p in tmp_path.iterdir())


def test_cli_prints_the_lowering_error_as_one_line(tmp_path, monkeypatch, capsys):
    from edgevlm.compiler import pipeline

    def broken(stage, plan, workdir):
        node = next(n for n in stage.program.graph.nodes if n.op == "call_function")  # what a frontend walks
        raise RuntimeError(f"no kernel for this op\nsecond line {node.name}")

    monkeypatch.setattr(pipeline.get_backend("onnx"), "export", broken)
    code = cli.main(["compile", "--model", "tinyconv", "--target", "cpu-x86_64", "--backends", "onnx",
                     "--quant", "float", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("edgevlm: error: backend onnx cannot lower stage 'encoder' at op aten.")
    assert "no kernel for this op; fix: leave onnx out" in err


def test_failing_op_is_none_without_graph_frames():
    try:
        raise ValueError("plain")
    except ValueError as exc:
        assert failing_op(exc) is None
        assert lowering_error("tvm", "s", exc).cause == "backend tvm cannot lower stage 's': plain"


def test_positive_reduction_dims_keeps_values():
    program = torch.export.export(SoftmaxLastDim(), (torch.randn(1, 2, 5, 7),))
    x = torch.randn(1, 2, 5, 7)
    before = program.module()(x)
    program = executorch_backend.positive_reduction_dims(program)
    dims = [n.args[1] for n in program.graph.nodes if n.target is torch.ops.aten.max.dim]
    assert dims == [3]
    np.testing.assert_array_equal(program.module()(x).numpy(), before.numpy())


def test_keep_failed_keeps_the_partial_build(tmp_path, monkeypatch, capsys):
    """--keep-failed: the failed compile's temporary dir becomes OUT.failed-<pid>, named on stderr; the
    next compile into the same OUT leaves it alone (it is not a stale .tmp- dir)."""
    import os

    from edgevlm.compiler import pipeline

    def broken(stage, plan, workdir):
        raise RuntimeError("no kernel for this op")

    monkeypatch.setattr(pipeline.get_backend("onnx"), "export", broken)
    args = ["compile", "--model", "tinyconv", "--target", "cpu-x86_64", "--backends", "onnx", "--quant", "float",
            "--out", str(tmp_path / "b")]
    assert cli.main(args + ["--keep-failed"]) == 2
    kept = tmp_path / f"b.failed-{os.getpid()}"
    err = capsys.readouterr().err
    assert f"the failed build is kept in {kept}/" in err and (kept / "logs").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]  # no .tmp- dir, no build
    assert cli.main(args) == 2  # without the flag: removed as before, and the kept one stays
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
