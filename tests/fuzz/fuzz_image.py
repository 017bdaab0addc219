"""Fuzz target: an image file the way `edgevlm run --image` reads it (edgevlm.runner.open_image, then the
build's preprocessing, edgevlm.data.image.preprocess).

    python tests/fuzz/fuzz_image.py CORPUS_DIR [libFuzzer flags]   (needs atheris)

A bad file must give InputError ("cannot read image ..."); any other
exception is a bug.  PIL's Python code is instrumented too, so its format
plugins guide the fuzzer.
"""
import os
import sys

from fuzz_support import scratch_dir

IMAGE_SIZE, MEAN, STD = 96, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)   # the default build's vlm.json
_PATH = os.path.join(scratch_dir("ev-fuzz-image-"), "image")


def run(data: bytes):
    """The pixel values `edgevlm run` would compute from an image file holding ``data``; raises InputError if bad."""
    from edgevlm.data.image import preprocess
    from edgevlm.runner import open_image

    with open(_PATH, "wb") as f:
        f.write(data)
    return preprocess(open_image(_PATH), IMAGE_SIZE, MEAN, STD)


def one_input(data: bytes) -> None:
    import numpy as np

    from edgevlm.errors import InputError

    try:
        x = run(data)
    except InputError:
        return
    assert x.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == np.float32 and np.isfinite(x).all()


if __name__ == "__main__":
    import atheris

    import PIL.Image

    import edgevlm.data.image  # noqa: F401  (the code under test, instrumented below)
    import edgevlm.runner  # noqa: F401
    from fuzz_support import instrument

    PIL.Image.init()   # imports every format plugin now, so that they are instrumented too
    instrument("edgevlm", "PIL")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
