"""What the atheris targets share: coverage instrumentation of the code under test, scratch files."""
import atexit
import gc
import shutil
import tempfile
import types


def instrument(*packages: str) -> int:
    """Add atheris coverage instrumentation to every function of the already-imported modules of ``packages``.

    atheris.instrument_imports() misses edgevlm when it is installed editable
    (its modules come through scikit-build-core's custom loader); patching the
    functions' code objects after import works for any loader.  Returns the
    number of functions instrumented.
    """
    import atheris

    n = 0
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and (getattr(obj, "__module__", None) or "").split(".")[0] in packages:
            atheris.instrument_func(obj)
            n += 1
    if n == 0:
        raise RuntimeError(f"no function of {packages} to instrument: import the code under test first")
    return n


def scratch_dir(prefix: str) -> str:
    """A fresh temporary directory, removed when the process exits normally (pytest's in-process runs).
    libFuzzer ends a process with C exit(), which skips this; benchmarks/fuzz.py gives each fuzzing run
    a TMPDIR of its own and removes that instead."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path
