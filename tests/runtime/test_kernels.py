"""Every matmul kernel variant against the scalar reference (C test driver).

Builds edgevlm/runtime/tests/test_kernels.c with cmake in a temporary
directory and runs it.  The driver checks, per variant: quantized activations
bit-exact; Q8_0/Q4_0 integer results bit-exact against an int64 reference;
random data within (m + 3) * 2^-24 * sum|term| of the exact sum (the float
summation-order bound, m terms); results independent of the thread count;
shapes with rows not a multiple of the tile, n = 1 and odd n.  Each variant
this CPU supports must run and pass; the aarch64 NEON variant runs under
qemu-user when the cross compiler and qemu are installed.
"""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgevlm.runtime import cpu_features

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = ROOT / "edgevlm" / "runtime" / "cmake" / "aarch64-linux-gnu.cmake"
SAN_FLAGS = "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"


def build_driver(build: Path, *cmake_args: str) -> Path:
    if not shutil.which("cmake"):
        pytest.skip("cmake is needed to build the kernel test driver")
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), *cmake_args], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "test_kernels", "-j2"], check=True,
                   capture_output=True)
    return build / "edgevlm" / "runtime" / "test_kernels"


def expected_variants() -> list[str]:
    feats = set(cpu_features())
    want = ["scalar"]
    if {"avx2", "fma", "f16c"} <= feats:
        want.append("avx2")
    if {"avx512f", "avx512_vnni", "avx2", "fma", "f16c"} <= feats:
        want.append("avx512_vnni")
    if "neon_dotprod" in feats:
        want.append("neon_dotprod")
    return want


def assert_passed(proc: subprocess.CompletedProcess, variants: list[str]) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for v in variants:
        assert f"ok {v}\n" in proc.stdout, f"variant {v} did not run or failed:\n{out[-4000:]}"


@pytest.fixture(scope="module")
def release_driver(tmp_path_factory):
    return build_driver(tmp_path_factory.mktemp("kernels-build"), "-DCMAKE_BUILD_TYPE=Release")


def test_every_variant_matches_scalar_reference(release_driver):
    proc = subprocess.run([str(release_driver)], capture_output=True, text=True, timeout=300)
    assert_passed(proc, expected_variants())


@pytest.mark.slow  # 90 s (an ASan build and every variant's checks under it): `make test-c` and CI's `make sanitize-ci`
def test_kernels_clean_under_sanitizers(tmp_path):
    """Out-of-bounds loads in tails or padded row groups show up here."""
    driver = build_driver(tmp_path / "build", "-DCMAKE_BUILD_TYPE=Debug", f"-DCMAKE_C_FLAGS={SAN_FLAGS}",
                          "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined")
    proc = subprocess.run([str(driver)], capture_output=True, text=True, timeout=300)
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr[-4000:]
    assert_passed(proc, expected_variants())


def test_unsupported_variant_is_reported(release_driver):
    proc = subprocess.run([str(release_driver), "no_such_variant"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "not available" in proc.stdout


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
                    reason="needs gcc-aarch64-linux-gnu and qemu-user (make install-aarch64-tools)")
def test_aarch64_neon_kernels_under_qemu(tmp_path):
    driver = build_driver(tmp_path / "build", f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}", "-DCMAKE_BUILD_TYPE=Release")
    proc = subprocess.run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", str(driver)], capture_output=True,
                          text=True, timeout=600)
    assert_passed(proc, ["scalar", "neon_dotprod"])


@pytest.mark.parametrize("qtype", ["Q4_0", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_dequantize_matches_gguf_py(release_driver, tmp_path, qtype):
    """ev_dequantize_row against gguf-py's reference dequantizer (gguf.quants),
    bit for bit (metric: exact equality of the f32 bit patterns), on random
    blocks: every quant and scale bit pattern, fp16 scales (and mins) kept finite."""
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize
    t = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[t]
    rows, cols = 64, 4 * 256
    rng = np.random.default_rng(16)
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    # fp16 d / dmin: finite values of either sign (random bits could be inf/nan)
    scale_at = {"Q6_K": [208]}.get(qtype, [0, 2] if qtype in ("Q4_K", "Q5_K", "Q5_1") else [0])   # Q5_1: d, m
    for off in scale_at:
        raw[..., off:off + 2] = rng.uniform(-2, 2, size=raw.shape[:2]).astype(np.float16).view(np.uint8).reshape(
            rows, cols // block, 2)
    raw = raw.reshape(rows, -1)
    (tmp_path / "in.bin").write_bytes(raw.tobytes())
    proc = subprocess.run([str(release_driver), "--dequantize", str(int(t)), str(cols), str(tmp_path / "in.bin"),
                           str(tmp_path / "out.bin")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and f"{rows} rows" in proc.stdout, proc.stdout + proc.stderr
    ours = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(rows, cols)
    ref = np.asarray(dequantize(raw, t), dtype=np.float32).reshape(rows, cols)
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), \
        f"{int((ours.view(np.uint32) != ref.view(np.uint32)).sum())} of {ours.size} values differ"
