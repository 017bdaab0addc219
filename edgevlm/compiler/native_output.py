"""Redirect what native libraries print (file descriptors 1 and 2) into a file.

Third-party toolchains (QNN, coremltools, TVM, ExecuTorch's cpuinfo) write
to the process's stdout/stderr from C as well as from Python, so replacing
``sys.stdout`` is not enough: the descriptors themselves are pointed at the
file and restored afterwards.
"""
import contextlib
import os
import sys


@contextlib.contextmanager
def fds_redirected_to(log):
    """Descriptors 1 and 2 write to the open binary file ``log`` inside the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
