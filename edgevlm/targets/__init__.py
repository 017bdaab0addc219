"""Deployment targets: one module per target, each defining ``TARGET``."""
import importlib
import pkgutil

from edgevlm.errors import UnknownNameError
from edgevlm.targets.base import Roofline, Target

_TARGETS: dict[str, Target] | None = None


def _discover() -> dict[str, Target]:
    global _TARGETS
    if _TARGETS is None:
        found = []
        for info in pkgutil.iter_modules(__path__):
            module = importlib.import_module(f"{__name__}.{info.name}")
            if isinstance(getattr(module, "TARGET", None), Target):
                found.append(module.TARGET)
        _TARGETS = {t.name: t for t in sorted(found, key=lambda t: (t.order, t.name))}
    return _TARGETS


def list_targets() -> list[Target]:
    """All known targets, in listing order."""
    return list(_discover().values())


def get_target(name: str | Target) -> Target:
    """The target called ``name``; raises UnknownNameError naming the known ones."""
    if isinstance(name, Target):
        return name
    targets = _discover()
    if name not in targets:
        raise UnknownNameError(
            f"unknown target '{name}'", f"use one of: {', '.join(targets)} (see `edgevlm targets`)"
        )
    return targets[name]


__all__ = ["Roofline", "Target", "get_target", "list_targets"]
