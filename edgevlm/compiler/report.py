"""Build-directory outputs: manifest.json, report.json and report.html.

report.json keys "model", "target" and "stages" (each {"name", "artifacts":
[{"backend", "path", "parity": {"metric", "value"}}]}) are a contract: later
work adds keys, never renames these.
"""
import hashlib
import html
import json
import math
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_safe(x):
    """Replace non-finite floats (JSON has none) with strings "inf"/"-inf"/"nan"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def _artifact_files(build_dir: Path, files: list[str]) -> list[Path]:
    out = []
    for rel in files:
        p = build_dir / rel
        out.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    return out


def write_manifest(build_dir: Path, report: dict) -> dict:
    """manifest.json: every artifact file (stage artifacts and the runtime bundle) with its sha256 and size."""
    groups = [(stage["name"], art) for stage in report["stages"] for art in stage["artifacts"]]
    if report.get("runtime"):
        groups.append(("llm", report["runtime"]))
    entries = [
        {"path": p.relative_to(build_dir).as_posix(), "stage": stage, "backend": art["backend"],
         "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for stage, art in groups
        for p in _artifact_files(build_dir, art.get("files") or [art["path"]])
    ]
    manifest = {"model": report["model"], "target": report["target"], "artifacts": sorted(entries, key=lambda e: e["path"])}
    (build_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_report(build_dir: Path, report: dict) -> None:
    """report.json and report.html."""
    (build_dir / "report.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    (build_dir / "report.html").write_text(render_html(report))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if math.isfinite(v) else str(v)
    return html.escape(str(v))


def render_html(report: dict) -> str:
    """A self-contained page (no network): the build's stages, artifacts and parity."""
    e = html.escape
    rows = []
    for st in report["stages"]:
        for a in st["artifacts"]:
            p = a.get("parity") or {}
            rows.append(
                f"<tr><td>{e(st['name'])}</td><td>{e(a['backend'])}</td><td><code>{e(a['path'])}</code></td>"
                f"<td>{e(str(p.get('metric', '-')))}</td><td>{_fmt(p.get('value', '-'))}</td>"
                f"<td>{_fmt(a.get('lower_s', '-'))}</td></tr>"
            )
        for s in st.get("skipped", []):
            rows.append(f"<tr class=skip><td>{e(st['name'])}</td><td>{e(s['backend'])}</td><td colspan=4>skipped: {e(s['reason'])}</td></tr>")
    passes = "".join(
        f"<li><b>{e(st['name'])}</b>: " + ", ".join(f"{e(n)}{' (changed)' if c else ''}" for n, c in st.get("passes", [])) + "</li>"
        for st in report["stages"]
    )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>edgevlm report: {e(report['model'])} for {e(report['target'])}</title>
<style>
body{{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}}
table{{border-collapse:collapse;width:100%}} td,th{{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left}}
th{{background:#f3f3f3}} tr.skip td{{color:#888}} code{{font-size:90%}}
</style></head><body>
<h1>{e(report['model'])} &rarr; {e(report['target'])}</h1>
<p>edgevlm {e(str(report.get('edgevlm_version', '')))}. Parity: each artifact run on this machine against the float PyTorch model on the stage's example inputs.</p>
<h2>Artifacts</h2>
<table><tr><th>stage</th><th>backend</th><th>artifact</th><th>parity metric</th><th>value</th><th>lower (s)</th></tr>
{''.join(rows)}</table>
<h2>Passes</h2><ul>{passes}</ul>
</body></html>
"""
