"""edgevlm's import drops torchao's CUDA-extension load warnings, and only those."""
import logging
import subprocess
import sys

import edgevlm  # noqa: F401  (installs the filter)


def test_cuda_extension_warnings_dropped_others_kept(caplog):
    logger = logging.getLogger("torchao")
    with caplog.at_level(logging.WARNING, logger="torchao"):
        logger.warning("Failed to load /x/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load")
        logger.warning("Failed to load /x/torchao/_C_cutlass_90a.abi3.so: Could not load")
        logger.warning("Failed to load /x/torchao/_C.abi3.so: undefined symbol")
        logger.warning("some other torchao warning")
    assert [r.getMessage() for r in caplog.records] == [
        "Failed to load /x/torchao/_C.abi3.so: undefined symbol", "some other torchao warning"]


def test_import_torchao_after_edgevlm_is_quiet():
    """The real import, in a fresh process: no "Failed to load" line for the CUDA-only libraries."""
    out = subprocess.run([sys.executable, "-c", "import edgevlm, torchao"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "_C_mxfp8" not in out.stderr and "_C_cutlass" not in out.stderr, out.stderr[-2000:]
