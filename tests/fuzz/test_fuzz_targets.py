"""The fuzz targets: every crash input they found gives its documented error, and each target fuzzes clean.

- test_regression_input_gives_its_error: each input in regressions/ (a crash
  the fuzzers found, since fixed) raises the error class and message
  expected.json names for it, through the same code path the target runs.
  GGUF crash inputs live in tests/runtime/gguf_corpus.py with their error
  codes, and the C target replays its seeds under ASan + UBSan in
  tests/runtime/test_sanitizers.py.
- test_target_fuzzes_clean (slow; CI runs it from .ci/run): each target of
  benchmarks/fuzz.py for EDGEVLM_FUZZ_SECONDS (default 30) seconds must find
  no crash.  Skips, with the reason, where clang/libFuzzer or atheris is missing.
"""
import importlib
import json
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REGRESSIONS = HERE / "regressions"
EXPECTED = json.loads((REGRESSIONS / "expected.json").read_text())
sys.path.insert(0, str(ROOT / "benchmarks"))


def _error_class(name: str):
    import edgevlm.errors
    import edgevlm.runtime.errors

    return {**vars(edgevlm.errors), **vars(edgevlm.runtime.errors)}[name]


def _target_module(name: str, request, monkeypatch):
    if name == "build_files":
        monkeypatch.setenv("EDGEVLM_FUZZ_BUILD", str(request.getfixturevalue("build")))
    return importlib.import_module(f"fuzz_{name}")


def test_every_regression_input_is_listed():
    files = {str(p.relative_to(REGRESSIONS)) for p in REGRESSIONS.rglob("*") if p.is_file() and p.name != "expected.json"}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_regression_input_gives_its_error(case, request, monkeypatch):
    want = EXPECTED[case]
    target = _target_module(case.split("/")[0], request, monkeypatch)
    with pytest.raises(_error_class(want["error"]), match=want["match"]):
        target.run((REGRESSIONS / case).read_bytes())


@pytest.mark.parametrize("name", ["runtime_binding", "build_files", "image"])
def test_seeds_run_clean(name, request, monkeypatch):
    """Every seed goes through its target's one_input without an undocumented error (what fuzzing starts from)."""
    import seeds

    target = _target_module(name, request, monkeypatch)
    inputs = {"runtime_binding": lambda: seeds.gguf_seeds(ROOT / "benchmarks" / "_work" / "fuzz" / "seedwork"),
              "build_files": lambda: seeds.build_files_seeds(request.getfixturevalue("build")),
              "image": seeds.image_seeds}[name]()
    assert len(inputs) >= 9
    for data in inputs.values():
        target.one_input(data)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gguf_model", "runtime_binding", "build_files", "image"])
def test_target_fuzzes_clean(name, tmp_path, request):
    import fuzz

    target = next(t for t in fuzz.TARGETS if t.name == name)
    build = request.getfixturevalue("build") if name == "build_files" else None
    try:
        exe, env = fuzz.prepare(target, tmp_path, ROOT, tmp_path / "c-build", build)
    except fuzz.Unavailable as exc:
        pytest.skip(f"{name}: {exc}")
    r = fuzz.run_target(target, float(os.environ.get("EDGEVLM_FUZZ_SECONDS", "30")), exe, env, 0, tmp_path)
    assert r["executions"] > 0 and r["coverage_edges"] > 0, r
    assert not r["crashes"], json.dumps(r["crashes"], indent=1)
