"""Import shims for the CPU-only environment.

PyPI's torchvision wheels are CUDA builds: on the CPU build of torch their C
extension cannot load, and ``import torchvision`` then fails while registering
fake kernels for ``torchvision::nms``/``qnms``.  timm imports torchvision only
for Python-level helpers (FrozenBatchNorm2d, transforms), so when the extension
is missing we declare those two op schemas (no kernels) and import again.
Calling torchvision's detection ops would still fail loudly, which is right:
edgevlm never uses them.
"""
import sys

_TV_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_tv_lib = None  # keep the Library alive: dropping it would undefine the ops


def import_timm():
    """Return the ``timm`` module, importable even where torchvision's C ops are not."""
    global _tv_lib
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _tv_lib = torch.library.Library("torchvision", "DEF")
        for schema in _TV_SCHEMAS:
            _tv_lib.define(schema)
        import torchvision  # noqa: F401
    import timm

    return timm


def _cuda_extension_notice(record) -> bool:
    """False for torchao's import-time "Failed to load .../_C_mxfp8...so" / "_C_cutlass_90a...so" warnings.

    Those two libraries hold CUDA kernels (MX formats on Blackwell, CUTLASS on Hopper) that a CPU
    build of torch cannot load and that edgevlm never calls; torchao logs one line each on every
    import, which lands in every compile log.  Any other torchao message passes.
    """
    message = record.getMessage()
    return not (message.startswith("Failed to load ") and ("_C_mxfp8" in message or "_C_cutlass" in message))


def quiet_torchao_cuda_extensions() -> None:
    """Drop torchao's CUDA-extension load warnings (see _cuda_extension_notice); idempotent."""
    import logging

    logger = logging.getLogger("torchao")
    if _cuda_extension_notice not in logger.filters:
        logger.addFilter(_cuda_extension_notice)
