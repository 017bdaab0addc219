"""Every target's defaults work: `edgevlm compile --target T`, default model, no other flag, builds for each
of the five targets, and each target's default schemes are ones its backends can run.

A whole default compile takes many minutes on this 2-core machine for every target (measured under load:
cpu-arm64 21 min, apple-a17pro more than 17 min, of which Core ML's conversion of the LLM stages over
11 min), so the five compiles are slow-marked (`make test-slow`).  `make test` keeps the fast checks of the
two causes that broke the CPU targets' defaults: the scheme check below (cpu-arm64 stopped with `XNNPACK
cannot run scheme w4a16`) and tests/compiler/test_lowering_errors.py (XNNPACK's `amax.default only
supports dim == 2 or dim == 3` on cpu-x86_64), beside the sa8295p build every run makes (tests/conftest.py).
"""
import json

import pytest

from edgevlm import cli
from edgevlm.targets import get_target, list_targets

TARGETS = ["sa8295p", "snapdragon-8-gen3", "apple-a17pro", "cpu-x86_64", "cpu-arm64"]


def test_the_five_targets_are_all_covered():
    assert sorted(TARGETS) == sorted(t.name for t in list_targets())


@pytest.mark.parametrize("target", [t.name for t in list_targets() if "executorch" in t.backends])
def test_default_schemes_fit_the_executorch_quantizer(target):
    """The check that stopped cpu-arm64's default build (`XNNPACK cannot run scheme w4a16`), for every stage."""
    pytest.importorskip("executorch")
    from edgevlm.quant.pt2e import quantizer_for

    t = get_target(target)
    for kind, scheme in t.default_quant.items():
        if kind != "kv":
            quantizer_for(t, scheme)  # raises InputError when the scheme does not fit


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_default_compile_builds(target, tmp_path, monkeypatch, capsys):
    from edgevlm.compiler.backends import get_backend

    monkeypatch.chdir(tmp_path)
    assert cli.main(["compile", "--target", target]) == 0, capsys.readouterr().err
    build = tmp_path / "build" / f"autoneural-nano-{target}"
    report = json.loads((build / "report.json").read_text())
    usable = [b for b in get_target(target).backends if get_backend(b).available()[0]]
    for stage in report["stages"]:  # every default backend lowered every stage, and each that runs here was verified
        assert sorted(a["backend"] for a in stage["artifacts"]) == sorted(usable), stage["name"]
        assert all(a["parity"]["value"] is not None for a in stage["artifacts"] if get_backend(a["backend"]).can_execute)
    assert report["runtime"]["parity"]["value"] >= 0.99  # greedy agreement of the C runtime's GGUF with PyTorch
    assert report["accuracy"]["quantized"] >= 0.9  # exact match of the deployed path, n=200 shapes samples
    assert cli.main(["inspect", str(build)]) == 0
