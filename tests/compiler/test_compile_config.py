"""CompileConfig: one definition of every compile option and its default (edgevlm.core.config)."""
import argparse
import dataclasses

import pytest

import edgevlm
from edgevlm.commands import compile as compile_cmd
from edgevlm.compiler.pipeline import compile as compile_model
from edgevlm.core.config import CompileConfig


def test_unknown_option_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match="'quantt'"):
        CompileConfig().with_fields(quant="w8a8", quantt="w8a8")
    with pytest.raises(TypeError, match="'bakends'"):  # before any work: no build dir appears
        compile_model("tinyconv", target="cpu-x86_64", out=tmp_path / "b", bakends=["onnx"])
    assert not any(tmp_path.iterdir())
    with pytest.raises(TypeError, match="CompileConfig"):
        compile_model("tinyconv", None, "cpu-x86_64", tmp_path / "b")  # the 4th positional is the config now


def test_config_is_a_frozen_value():
    backends = ["onnx"]
    cfg = CompileConfig(backends=backends)
    backends.append("qnn")
    assert cfg.backends == ("onnx",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.quant = "w8a8"
    assert cfg.with_fields(quant="w8a8") == CompileConfig(backends=("onnx",), quant="w8a8") and cfg.quant is None


def test_cli_defaults_are_the_configs():
    parser = argparse.ArgumentParser()
    compile_cmd.add_arguments(parser)
    args = parser.parse_args(["--target", "sa8295p"])
    default = CompileConfig()
    for arg, field in (("calib_samples", "calib_samples"), ("observer", "observer"), ("token_reduce", "token_reduce"),
                       ("eval_n", "eval_n"), ("weight_algo", "weight_algo"), ("quant", "quant"), ("out", "out"),
                       ("calib", "calib_dir"), ("vision_tokens", "vision_tokens"), ("max_context", "max_context")):
        assert getattr(args, arg) == getattr(default, field), arg
    assert args.no_htp_verify is (not default.htp_verify) and args.hub is default.hub


def test_fields_override_the_config(tmp_path):
    """A config plus keyword fields: the fields win, the rest comes from the config."""
    cfg = CompileConfig(out=tmp_path / "b", backends=("onnx",), quant="w8a8")
    result = edgevlm.compile("tinyconv", target="cpu-x86_64", config=cfg, quant="float")
    assert result.build_dir == tmp_path / "b" and set(result.report["quant"].values()) == {None}
    assert [a["backend"] for st in result.report["stages"] for a in st["artifacts"]] == ["onnx"]


def test_quant_config_is_resolved_once_with_the_configs_options():
    """QuantConfig: the schemes per kind plus the config's observer/quality target/weight rounding; a Plan given a
    mapping (or None) resolves one with CompileConfig's defaults, so no backend holds a default of its own."""
    from edgevlm.compiler.backends.base import Plan
    from edgevlm.core.config import QuantConfig
    from edgevlm.quant.schemes import get_scheme, parse_quant_spec
    from edgevlm.targets import get_target

    tgt = get_target("sa8295p")
    cfg = CompileConfig(quant="encoder=w8a8", observer="mse", weight_algo="rtn", quality_target_db=30.0)
    q = QuantConfig.resolve(parse_quant_spec(cfg.quant, tgt), cfg)
    assert q.scheme_for("encoder") == get_scheme("w8a8") and q.scheme_for("kv") == get_scheme("kv8") and q.quantized
    assert (q.observer, q.weight_algo, q.quality_target_db) == ("mse", "rtn", 30.0)
    with pytest.raises(TypeError):
        q.schemes["encoder"] = None  # read-only
    plan = Plan(tgt, "/tmp", quant={"encoder": get_scheme("w8a16")})
    default = CompileConfig()
    assert isinstance(plan.quant, QuantConfig) and plan.quant.scheme_for("llm") is None
    assert (plan.quant.observer, plan.quant.weight_algo) == (default.observer, default.weight_algo)
    assert not Plan(tgt, "/tmp").quant.quantized
