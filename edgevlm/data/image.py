"""Image preprocessing shared by the PyTorch models and the build runner (numpy and PIL only, no torch)."""
import numpy as np

from edgevlm.errors import InputError


def preprocess(images, size: int, mean, std) -> np.ndarray:
    """PIL images (or one) -> float32 [B, 3, size, size]: RGB, bilinear resize, (x/255 - mean) / std."""
    from PIL import Image

    images = images if isinstance(images, (list, tuple)) else [images]
    arrays = []
    for im in images:
        if not isinstance(im, Image.Image):
            raise InputError(f"expected a PIL image, got {type(im).__name__}", "open the image with PIL.Image.open")
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.float32) / 255.0)
    x = np.stack(arrays).transpose(0, 3, 1, 2)
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)
