"""Shared test fixtures."""
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def default_build(tmp_path_factory):
    """`edgevlm compile --target sa8295p --backends onnx` of the default model, run once in a fresh directory.

    Returns (CompileResult, the directory compile ran in).  Tests must not modify the build.
    """
    import os

    import edgevlm

    cwd = tmp_path_factory.mktemp("default-build")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = edgevlm.compile(target="sa8295p", backends=["onnx"])  # other backends: tests/compiler/backends
    finally:
        os.chdir(old)
    return result, cwd


@pytest.fixture(scope="session")
def build(default_build):
    """The default build's directory (see default_build)."""
    result, cwd = default_build
    return cwd / result.build_dir


@pytest.fixture(scope="session")
def runner(build):
    """edgevlm.runner.BuildRunner on the default build, one thread."""
    from edgevlm.runner import BuildRunner

    return BuildRunner(build, threads=1)
