"""Backends: one module per backend, each defining ``BACKEND`` (see base.py)."""
import importlib
import pkgutil

from edgevlm.compiler.backends.base import Artifact, Backend, Plan
from edgevlm.errors import UnknownNameError

_BACKENDS: dict[str, Backend] | None = None


def _discover() -> dict[str, Backend]:
    global _BACKENDS
    if _BACKENDS is None:
        found = {}
        for info in pkgutil.iter_modules(__path__):
            if info.name == "base":
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            backend = getattr(module, "BACKEND", None)
            if isinstance(backend, Backend):
                found[backend.name] = backend
        _BACKENDS = found
    return _BACKENDS


def list_backends() -> list[Backend]:
    return list(_discover().values())


def get_backend(name: str) -> Backend:
    backends = _discover()
    if name not in backends:
        raise UnknownNameError(f"unknown backend '{name}'", f"use one of: {', '.join(sorted(backends))}")
    return backends[name]


__all__ = ["Artifact", "Backend", "Plan", "get_backend", "list_backends"]
