"""The whole runtime cross-compiled for aarch64 and run under qemu-user.

Same checks as the sanitizer test (bad-file corpus codes, short decodes of
F32/Q8_0/Q4_0 exports), and the aarch64 greedy tokens must equal the x86
build's for F32 weights: the NEON and x86 paths compute the same model.
"""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgevlm.runtime import Model, Sampler
from edgevlm.runtime.gguf_export import export_lfm2_gguf
from gguf_corpus import corpus
from test_sanitizers import _state_dict_from_corpus_model

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = ROOT / "edgevlm" / "runtime" / "cmake" / "aarch64-linux-gnu.cmake"

pytestmark = pytest.mark.skipif(
    not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64") and shutil.which("cmake")),
    reason="needs gcc-aarch64-linux-gnu, qemu-user and cmake")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    build = tmp_path_factory.mktemp("aarch64-build")
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "ev_test_driver", "-j2"], check=True, capture_output=True)
    return build / "edgevlm" / "runtime" / "ev_test_driver"


def qemu(driver, *args):
    return subprocess.run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(driver), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_bad_files_on_aarch64(driver, tmp_path):
    want = {}
    for name, data, code in corpus():
        f = tmp_path / f"{name}.gguf"
        f.write_bytes(data)
        want[str(f)] = code
    p = qemu(driver, "load", *want)
    assert p.returncode == 0, p.stderr
    got = dict(line.split(" ")[:2] for line in p.stdout.splitlines())
    assert got == want


@pytest.mark.parametrize("qtype", ["f32", "q8_0", "q4_0"])
def test_decode_on_aarch64(driver, tmp_path, qtype):
    sd, cfg = _state_dict_from_corpus_model(np.random.default_rng(0))
    path = export_lfm2_gguf(tmp_path / f"m-{qtype}.gguf", cfg, sd, qtype=qtype)
    p = qemu(driver, "decode", path, 12, 0)
    assert p.returncode == 0, p.stderr
    arm = [int(t) for t in p.stdout.split()]
    assert len(arm) == 12
    if qtype == "f32":
        m = Model.load(path)
        assert arm == list(m.generate([1, 2, 3], 12, Sampler(), stop_at_eos=False))
