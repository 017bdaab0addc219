"""`edgevlm inspect BUILD_DIR`: summarize a build and check its files against manifest.json."""
import json
from pathlib import Path

from edgevlm.errors import InputError

NAME = "inspect"
HELP = "summarize a build directory and verify its artifacts' sha256 against manifest.json"
ORDER = 30


def add_arguments(parser):
    parser.add_argument("build_dir", help="a directory written by `edgevlm compile`")
    parser.add_argument("--json", action="store_true", help="print the check as JSON")


def load_build(build_dir) -> tuple[Path, dict, dict]:
    """(path, report, manifest) of a build directory; InputError if it is not one."""
    path = Path(build_dir)
    try:
        report = json.loads((path / "report.json").read_text())
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise InputError(f"'{build_dir}' is not an edgevlm build (no report.json/manifest.json)", "run `edgevlm compile` first, or pass its --out directory") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the build in '{build_dir}': {exc}", "recompile it with `edgevlm compile`") from None
    return path, report, manifest


def verify_manifest(path: Path, manifest: dict) -> list[str]:
    """Problems found: files missing or whose sha256 differs from the manifest."""
    from edgevlm.compiler.report import sha256_file

    problems = []
    for entry in manifest.get("artifacts", []):
        f = path / entry["path"]
        if not f.is_file():
            problems.append(f"missing: {entry['path']}")
        elif sha256_file(f) != entry["sha256"]:
            problems.append(f"modified: {entry['path']} (sha256 differs from manifest.json)")
    return problems


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    path, report, manifest = load_build(args.build_dir)
    problems = verify_manifest(path, manifest)
    if args.json:
        print(json.dumps({"model": report["model"], "target": report["target"], "ok": not problems, "problems": problems}, indent=2))
        return 0 if not problems else 1
    console = Console(width=max(Console().width, 110))
    table = Table(title=f"{report['model']} -> {report['target']}")
    for col in ("stage", "quant", "backend", "artifact", "parity", "integer-only"):
        table.add_column(col)
    for st in report["stages"]:
        for a in st["artifacts"]:
            p = a.get("parity", {})
            v = p.get("value")
            table.add_row(st["name"], str(st.get("quant") or "float"), a["backend"], a["path"],
                          f"{p.get('metric')} {v:.3g}" if isinstance(v, float) else str(p.get("metric")),
                          {True: "yes", False: "NO"}.get(a.get("integer_only"), "-"))
    console.print(table)
    console.print(f"{len(manifest.get('artifacts', []))} files in manifest: " + ("all match" if not problems else "; ".join(problems)))
    return 0 if not problems else 1
