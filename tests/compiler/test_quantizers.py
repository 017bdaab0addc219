"""The quantization step: quantizers registered per backend family, run by lower_stage between a
backend's export and its finish."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgevlm.compiler import quantizers
from edgevlm.compiler.backends import list_backends
from edgevlm.compiler.backends.base import Artifact, Backend, Plan, lower_stage
from edgevlm.core.records import QuantRecord
from edgevlm.errors import UnknownNameError
from edgevlm.quant.schemes import get_scheme
from edgevlm.targets import get_target


def test_every_backend_family_has_a_quantizer_and_every_quantizer_a_backend():
    families = {b.quantizer for b in list_backends() if b.quantizer is not None}
    assert families == set(quantizers.quantizers()), (families, sorted(quantizers.quantizers()))
    # A backend that lowers another's artifact quantizes nothing itself.
    assert all(b.quantizer is None for b in list_backends() if b.consumes is not None)


def test_unknown_family_names_the_known_ones():
    with pytest.raises(UnknownNameError, match="onnx-qdq"):
        quantizers.quantize("no-such-family", None, None, None, None)


def test_a_family_registers_once(monkeypatch):
    monkeypatch.setattr(quantizers, "_QUANTIZERS", dict(quantizers.quantizers()))
    with pytest.raises(ValueError, match="registered twice"):
        quantizers.register("onnx-qdq")(lambda *a, **k: None)


class _Recording(Backend):
    """A backend whose steps record what they were given."""

    name = "recording"
    quantizer = "test-family"

    def __init__(self):
        self.calls = []

    def export(self, stage, plan, workdir):
        assert Path(workdir).is_dir()
        self.workdir = Path(workdir)
        self.calls.append("export")
        return "float form"

    def finish(self, stage, plan, form, quantized):
        self.calls.append(("finish", form, quantized))
        return Artifact(self.name, stage.name, "x", ["x"], quant=None if quantized is None else quantized.record)


@pytest.mark.parametrize("scheme", [None, "w8a8"])
def test_lower_stage_runs_export_quantize_finish(monkeypatch, tmp_path, scheme):
    seen = []

    def family(form, stage, config, target, *, hessians=None):
        seen.append((form, stage.name, config.scheme_for("encoder").name, target.name, hessians))
        return quantizers.Quantized("quantized form", QuantRecord("w8a8"))

    monkeypatch.setitem(quantizers._QUANTIZERS, "test-family", family)
    backend, stage = _Recording(), SimpleNamespace(name="tiny", stage=SimpleNamespace(kind="encoder"))
    quant = {"encoder": get_scheme(scheme)} if scheme else {}
    plan = Plan(get_target("cpu-x86_64"), tmp_path, quant=quant, options={"gptq_hessians": "store"})
    artifact = lower_stage(backend, stage, plan)
    assert not backend.workdir.exists()  # the scratch directory lives until finish returns
    if scheme is None:  # float: the quantizer is not called, finish lowers the export
        assert seen == [] and backend.calls == ["export", ("finish", "float form", None)]
        assert artifact.quant is None
    else:
        assert seen == [("float form", "tiny", "w8a8", "cpu-x86_64", "store")]
        (_, form, quantized), = backend.calls[1:]
        assert form == "float form" and quantized.form == "quantized form" and artifact.quant.scheme == "w8a8"
