"""Build integrity: the files of a build against the sha256 that manifest.json recorded.

`edgevlm compile` writes manifest.json (edgevlm.compiler.report.write_manifest);
`edgevlm run`, `eval` and `profile` check the files they load before loading
them, `edgevlm inspect` checks them all.  A mismatch is one error naming the
file: the build is damaged and is never used as is.
"""
import json
from pathlib import Path

from edgevlm.compiler.report import sha256_file
from edgevlm.errors import InputError

RECOMPILE = "recompile it with `edgevlm compile` (or restore the directory from a copy)"


def read_manifest(build_dir) -> dict:
    """manifest.json of ``build_dir``; one clear error if it is missing or unreadable."""
    path = Path(build_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        entries = manifest["artifacts"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str)
                                                    and isinstance(e.get("sha256"), str) for e in entries):
            # the types too: a number as a path was a TypeError later (found by tests/fuzz/fuzz_build_files.py)
            raise ValueError("'artifacts' is not a list of {path, sha256} entries with string values")
    except FileNotFoundError:
        raise InputError(f"'{build_dir}' is not an edgevlm build (no manifest.json)",
                         "pass a directory written by `edgevlm compile`, e.g. build/autoneural-nano-sa8295p") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"build '{build_dir}' is damaged: cannot read manifest.json ({exc})", RECOMPILE) from None
    return manifest


def problems(build_dir, entries) -> list[str]:
    """``missing: PATH`` / ``modified: PATH`` for each manifest entry whose file is absent or differs."""
    found = []
    for entry in entries:
        f = Path(build_dir) / entry["path"]
        try:
            present = f.is_file()
        except OSError:   # e.g. a name longer than the file system allows (found by tests/fuzz/fuzz_build_files.py)
            present = False
        if not present:
            found.append(f"missing: {entry['path']}")
        elif sha256_file(f) != entry["sha256"]:
            found.append(f"modified: {entry['path']} (sha256 differs from manifest.json)")
    return found


def damaged_error(build_dir, found: list[str]) -> InputError:
    return InputError(f"build '{build_dir}' is damaged: {'; '.join(found)}", RECOMPILE)


def verify_entries(build_dir, manifest: dict, keep) -> list[dict]:
    """Check the entries ``keep(entry)`` selects; raise the damaged-build error on any mismatch.

    Returns the entries checked; selecting none is an error too (the manifest
    does not describe the files about to be loaded).
    """
    entries = [e for e in manifest["artifacts"] if keep(e)]
    if not entries:
        raise InputError(f"build '{build_dir}' is damaged: manifest.json lists none of the files to load", RECOMPILE)
    found = problems(build_dir, entries)
    if found:
        raise damaged_error(build_dir, found)
    return entries
