"""`edgevlm inspect BUILD_DIR`: summarize a build and check its files against manifest.json."""
import json
from pathlib import Path

from edgevlm.errors import InputError

NAME = "inspect"
HELP = "summarize a build directory and verify its artifacts' sha256 against manifest.json"
ORDER = 30
EXIT_DAMAGED = 2  # like every user-facing error


def add_arguments(parser):
    parser.add_argument("build_dir", help="a directory written by `edgevlm compile`")
    parser.add_argument("--json", action="store_true", help="print the check as JSON")


def load_build(build_dir) -> tuple[Path, dict, dict]:
    """(path, report, manifest) of a build directory; InputError if it is not one."""
    from edgevlm.compiler.integrity import RECOMPILE, read_manifest

    path = Path(build_dir)
    manifest = read_manifest(path)
    try:
        report = json.loads((path / "report.json").read_text())
    except FileNotFoundError:
        raise InputError(f"build '{build_dir}' is damaged: report.json is missing", RECOMPILE) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"build '{build_dir}' is damaged: cannot read report.json ({exc})", RECOMPILE) from None
    return path, report, manifest


def qnn_contexts(path: Path, report: dict) -> list[dict]:
    """What each QNN context binary of the build was prepared with: QNN SDK, HTP arch, SoC, graph names, bytes."""
    from edgevlm.compiler.backends.qnn_backend import describe

    return [{"stage": st["name"], "path": a["path"], **describe(path / a["path"])}
            for st in report["stages"] for a in st["artifacts"] if a["backend"] == "qnn"]


def run(args) -> int:
    from edgevlm.commands._table import print_table
    from edgevlm.compiler import integrity

    path, report, manifest = load_build(args.build_dir)
    problems = integrity.problems(path, manifest["artifacts"])
    contexts = [] if problems else qnn_contexts(path, report)  # a damaged file is not parsed
    if args.json:
        print(json.dumps({"model": report["model"], "target": report["target"], "ok": not problems, "problems": problems,
                          "qnn_contexts": contexts}, indent=2))
        return 0 if not problems else EXIT_DAMAGED
    rows = []
    for st in report["stages"]:
        for a in st["artifacts"]:
            p = a.get("parity", {})
            v = p.get("value")
            rows.append((st["name"], str(st.get("quant") or "float"), a["backend"], a["path"],
                         f"{p.get('metric')} {v:.3g}" if isinstance(v, float) else str(p.get("metric")),
                         {True: "yes", False: "NO"}.get(a.get("integer_only"), "-")))
    print_table(f"{report['model']} -> {report['target']}", ("stage", "quant", "backend", "artifact", "parity", "integer-only"), rows)
    if problems:
        raise integrity.damaged_error(path, problems)
    if contexts:
        print_table("QNN context binaries", ("stage", "artifact", "QNN SDK", "HTP", "soc_model", "graphs", "bytes"),
                    [(c["stage"], c["path"], c["qnn_sdk"], f"v{c['htp_arch']}", c["soc_model"], ", ".join(c["graphs"]),
                      str(c["bytes"])) for c in contexts], right=("bytes",))
    print(f"{len(manifest['artifacts'])} files in manifest: all match (sha256)")
    return 0
