"""The package's layer order: no edgevlm module imports a layer above its own.

Every ``import`` and ``from ... import`` of every module under edgevlm/ is read
with ``ast`` -- at module level, inside functions and under TYPE_CHECKING alike,
since a function-local import is as much a dependency as a top-level one.
Layers, lowest first (docs/architecture.md says what each holds and why):

    core -> data -> models, targets -> quant, runtime -> compiler -> runner
         -> accuracy, sweep, sharded_eval -> commands -> cli

A module may import its own package, any package of a lower layer, and
nothing else: not a higher layer, and not a sibling package of its own layer
(models and targets know nothing of each other; neither do quant and the C
runtime's Python side).  The package root ``edgevlm/__init__.py`` is the
public facade (``edgevlm.compile``): it may import anything, and any module
may import it (for ``__version__``), since Python runs it first anyway.

``ALLOWED`` lists the upward imports not yet removed, each with its reason; it
may only shrink (an entry no longer needed fails the test too).

Inside ``models`` the same rule orders its parts (``MODEL_PARTS``): the shared
modules (registry, checkpoint, tokenizer), then the architectures, the zoo,
checkpoint import, and training; the package's ``__init__`` (``build_model``)
may use them all.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgevlm"

LAYERS = (
    ("core", ("edgevlm.core", "edgevlm.errors", "edgevlm._compat", "edgevlm.ops", "edgevlm.progress",
              "edgevlm.parallel")),
    ("data", ("edgevlm.data",)),
    ("descriptions", ("edgevlm.models", "edgevlm.targets")),
    ("quant", ("edgevlm.quant", "edgevlm.runtime")),
    ("compiler", ("edgevlm.compiler",)),
    ("runner", ("edgevlm.runner",)),
    ("applications", ("edgevlm.accuracy", "edgevlm.sweep", "edgevlm.sharded_eval")),
    ("commands", ("edgevlm.commands",)),
    ("cli", ("edgevlm.cli",)),
)
ROOT = "edgevlm"

# (importing module, imported module) -> why the upward import is still there.
ALLOWED: dict[tuple[str, str], str] = {}

# The parts of edgevlm.models, lowest first: the architectures know no model names, the zoo no
# checkpoint format, checkpoint import builds the architectures (and reads a checkpoint saved from
# the zoo), training builds zoo models.
MODEL_PARTS = (
    ("shared", ("edgevlm.models.registry", "edgevlm.models.checkpoint", "edgevlm.models.tokenizer")),
    ("arch", ("edgevlm.models.arch",)),
    ("zoo", ("edgevlm.models.zoo",)),
    ("hf", ("edgevlm.models.hf",)),
    ("training", ("edgevlm.models.train",)),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """(edgevlm module imported, line) for every import statement in ``source``, wherever it sits.

    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if _is_module(sub) else base, node.lineno))
    return [(name, line) for name, line in found if name == ROOT or name.startswith(ROOT + ".")]


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer index, top package) of an edgevlm module; None for the package root."""
    if module == ROOT:
        return None
    for index, (_, packages) in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return index, package
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS (and docs/architecture.md)")


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (None when it may)."""
    src, dst = layer_of(importer), layer_of(imported)
    if src is None or dst is None:
        return None
    (src_layer, src_pkg), (dst_layer, dst_pkg) = src, dst
    if src_pkg == dst_pkg or dst_layer < src_layer or LAYERS[src_layer][0] == "core" == LAYERS[dst_layer][0]:
        return None
    if dst_layer == src_layer:
        return f"sibling packages of layer {LAYERS[src_layer][0]}"
    return f"layer {LAYERS[src_layer][0]} imports layer {LAYERS[dst_layer][0]}"


def all_imports() -> list[tuple[str, str, int]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for imported, line in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            out.append((module, imported, line))
    return out


def test_no_module_imports_upward():
    found = {}
    for importer, imported, line in all_imports():
        why = violation(importer, imported)
        if why and (importer, imported) not in ALLOWED:
            found.setdefault(f"{importer} -> {imported} ({why})", []).append(line)
    assert not found, "upward imports:\n" + "\n".join(f"  {k}, line {', '.join(map(str, v))}" for k, v in found.items())


def test_allow_list_only_shrinks():
    still_there = {(a, b) for a, b, _ in all_imports() if violation(a, b)}
    stale = [pair for pair in ALLOWED if pair not in still_there]
    assert not stale, f"remove from ALLOWED (the import is gone or no longer upward): {stale}"


def test_every_module_has_a_layer():
    modules = [module_name(path) for path in sorted(PACKAGE.rglob("*.py"))]
    assert all(layer_of(m) is not None for m in modules if m != ROOT)  # layer_of raises for a module in no layer


@pytest.mark.parametrize("source, expected", [
    ("from edgevlm.compiler.pipeline import compile\n", ["edgevlm.compiler.pipeline"]),
    ("def f():\n    from edgevlm.runner import BuildRunner\n", ["edgevlm.runner"]),
    ("def f():\n    import edgevlm.compiler.capture as c\n", ["edgevlm.compiler.capture"]),
    ("from edgevlm import progress\n", ["edgevlm.progress"]),
    ("from . import base\n", ["edgevlm.targets.base"]),
    ("from ..compiler import stage\n", ["edgevlm.compiler.stage"]),
    ("import numpy\n", []),
])
def test_imports_are_found_wherever_they_are(source, expected):
    assert [name for name, _ in imported_modules(source, "edgevlm.targets.sa8295p")] == expected


def test_upward_and_sibling_imports_are_flagged():
    assert violation("edgevlm.targets.estimator", "edgevlm.compiler.capture") == "layer descriptions imports layer compiler"
    assert violation("edgevlm.models.arch.vlm", "edgevlm.targets.base") == "sibling packages of layer descriptions"
    assert violation("edgevlm.compiler.pipeline", "edgevlm.runner") == "layer compiler imports layer runner"
    assert violation("edgevlm.compiler.pipeline", "edgevlm.models.arch.vlm") is None
    assert violation("edgevlm.quant.analysis", "edgevlm.core.metrics") is None
    assert violation("edgevlm.ops", "edgevlm.errors") is None
    assert violation("edgevlm.errors", "edgevlm.compiler") == "layer core imports layer compiler"


def model_part(module: str) -> int | None:
    """Index in MODEL_PARTS of an edgevlm.models module; None for the package's __init__ and non-models."""
    for index, (_, packages) in enumerate(MODEL_PARTS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return index
    if module.startswith("edgevlm.models."):
        raise AssertionError(f"{module} is in no part of edgevlm.models: add it to MODEL_PARTS (and models/__init__.py)")
    return None


def test_model_parts_import_downward_only():
    found = []
    for importer, imported, line in all_imports():
        src, dst = model_part(importer), model_part(imported)
        if src is not None and dst is not None and dst > src:
            found.append(f"{importer} -> {imported} (part {MODEL_PARTS[src][0]} imports part "
                         f"{MODEL_PARTS[dst][0]}), line {line}")
    assert not found, "upward imports inside edgevlm.models:\n  " + "\n  ".join(found)


def test_every_zoo_module_registers_models():
    """Discovery (edgevlm.models._discover) imports every module of models/zoo/ and reads its MODELS, so a zoo
    module that defines none would be imported for nothing, and a MODELS list elsewhere would never be found."""
    defines = {module_name(path): any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODELS"
                                                                            for t in node.targets)
                                      for node in ast.parse(path.read_text()).body)
               for path in sorted((PACKAGE / "models").rglob("*.py")) if path.name != "__init__.py"}
    zoo = {m for m in defines if m.startswith("edgevlm.models.zoo.")}
    assert zoo and all(defines[m] for m in zoo), [m for m in zoo if not defines[m]]
    assert not [m for m, d in defines.items() if d and m not in zoo]


def test_no_backend_imports_another_backend():
    """Backends share code through backends/base.py, the core, quant and the compiler, never each other; a
    backend that lowers another's artifact declares it in ``consumes`` and gets that artifact from the pipeline."""
    backends = "edgevlm.compiler.backends."
    found = [(a, b, line) for a, b, line in all_imports()
             if a.startswith(backends) and b.startswith(backends) and a != b and b != backends + "base"]
    assert not found, f"backends importing each other: {found}"


# The quant modules that quantize (calibrate, round, search precision, measure quantization error).
QUANTIZING = ("edgevlm.quant.onnx_qdq", "edgevlm.quant.mixed_precision", "edgevlm.quant.analysis", "edgevlm.quant.pt2e",
              "edgevlm.quant.gptq", "edgevlm.quant.smooth_quant", "edgevlm.quant.calibration", "edgevlm.quant.observers",
              "edgevlm.quant.awq", "edgevlm.quant.weight_scales")


def test_backends_lower_what_they_are_given():
    """No backend imports a quantizing module: quantization is the pipeline's step, through the quantizer of the
    backend's family (edgevlm.compiler.quantizers), between the backend's export and its finish."""
    backends = "edgevlm.compiler.backends."
    found = [(a, b, line) for a, b, line in all_imports() if a.startswith(backends) and b.startswith(QUANTIZING)]
    assert not found, f"backends quantizing themselves: {found}"
