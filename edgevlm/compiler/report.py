"""Build-directory outputs: manifest.json, report.json and report.html.

report.json keys "model", "target" and "stages" (each {"name", "artifacts":
[{"backend", "path", "parity": {"metric", "value"}}]}) are a contract: later
work adds keys, never renames these.

report.html is one page with no network and no JavaScript: a summary, then
inline SVG charts (edgevlm.compiler.plots) of per-layer SQNR, latency per
stage (measured here vs estimated on the target) and accuracy vs vision
tokens, each drawn only when report.json has its data, then the tables.
"""
import hashlib
import html
import json
import math
from pathlib import Path

from edgevlm.compiler import plots
from edgevlm.core.stage import KV_CACHE, StageKind


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
        groups.append((StageKind.LLM, report["runtime"]))
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


REFERENCE_SQNR_DB = 30.0  # the reference line on the per-layer SQNR charts: above it, quantization noise is small


def as_number(v) -> float | None:
    """A float from a report value: numbers as they are, "inf"/"-inf"/"nan" (as json_safe writes them) parsed, else None."""
    if plots.is_number(v):
        return float(v)
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    return None


def _fmt(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    n = as_number(v)
    return plots.fmt_num(n) if n is not None else html.escape(str(v))


def _pct(v) -> str:
    """A fraction 0..1 as a percentage with one decimal; "-" when missing or not finite."""
    n = as_number(v)
    return f"{n * 100:.1f}%" if n is not None and math.isfinite(n) else "-"


def _stage_latency(report: dict) -> tuple[list[str], list[tuple[str, list]], list[str]]:
    """Stage names, bar series (measured per backend, then estimated) and notes on missing values."""
    stages = report["stages"]
    names = [st["name"] for st in stages]
    backends = list(dict.fromkeys(a["backend"] for st in stages for a in st["artifacts"] if a.get("latency_ms")))
    series, notes = [], []
    for b in backends:
        vals = [next((as_number(a["latency_ms"].get("median")) for a in st["artifacts"]
                      if a["backend"] == b and a.get("latency_ms")), None) for st in stages]
        series.append((f"measured here: {b}", vals))
    est = [as_number((st.get("estimate") or {}).get("total_ms")) for st in stages]
    if any(v is not None for v in est):
        series.append((f"estimated: {report['target']} (roofline)", est))
    for st in stages:
        reason = (st.get("estimate") or {}).get("reason")
        if reason:
            notes.append(f"{st['name']}: no estimate ({reason})")
    return names, series, notes


def _build_point(report: dict) -> dict | None:
    """This build's (vision tokens, reduction method, exact match) for the accuracy-vs-tokens chart."""
    acc, meta = report.get("accuracy") or {}, report.get("model_meta") or {}
    red = (meta.get("config") or {}).get("token_reduction") or {}
    tokens = red.get("tokens", meta.get("image_tokens"))
    em = as_number(acc.get("quantized"))
    if tokens is None or em is None:
        return None
    return {"tokens": tokens, "method": red.get("method", "none"), "exact_match": em}


def _summary(report: dict) -> str:
    e = html.escape
    rows = [("model", e(str(report["model"]))), ("target", e(str(report["target"])))]
    meta = report.get("model_meta") or {}
    if meta.get("params") is not None:
        rows.append(("parameters", _fmt(meta["params"])))
    if report.get("compile_s") is not None:
        rows.append(("compile time", f"{_fmt(report['compile_s'])} s"))
    quant = ", ".join(f"{e(st['name'])} <b>{e(str(st.get('quant') or 'float'))}</b>" for st in report["stages"])
    if (report.get("quant") or {}).get(KV_CACHE):
        quant += f", KV cache <b>{e(str(report['quant'][KV_CACHE]))}</b>"
    rows.append(("quantization", quant))
    badges = []
    for st in report["stages"]:
        for a in st["artifacts"]:
            io = a.get("integer_only", (a.get("info") or {}).get("integer_only"))
            if io is None:
                continue
            cls, word = ("ok", "integer-only") if io else ("bad", "not integer-only")
            badges.append(f'<span class="badge {cls}" title="{e(", ".join((a.get("info") or {}).get("offending_ops") or []))}">'
                          f"{e(a['path'])}: {word}</span>")
    if badges:
        rows.append(("integer-only", " ".join(badges)))
    rt = report.get("runtime")
    if rt:
        p = rt.get("parity") or {}
        rows.append(("C runtime", f"<code>{e(rt['path'])}</code> ({e(str((rt.get('info') or {}).get('gguf_type', '-')))}), "
                                  f"{e(str(p.get('metric', '-')).replace('_', ' '))} {_fmt(p.get('value', '-'))}"
                                  + (f", first-token SQNR {_fmt(p['first_token_sqnr_db'])} dB" if "first_token_sqnr_db" in p else "")))
    cards = ""
    acc = report.get("accuracy")
    if acc and "agreement" in acc:  # an imported checkpoint vs transformers (edgevlm.accuracy.checkpoint_agreement)
        cards = (f'<div class="cards"><div class="card"><div class="big">{_pct(as_number(acc["agreement"]))}</div>'
                 f'greedy agreement with transformers</div><div class="card note">{e(str(acc.get("summary", "")))}</div></div>')
    elif acc:
        f, q = as_number(acc.get("float")), as_number(acc.get("quantized"))
        cards = (f'<div class="cards"><div class="card"><div class="big">{_pct(f)}</div>float PyTorch</div>'
                 f'<div class="card"><div class="big">{_pct(q)}</div>this build</div>'
                 f'<div class="card note">exact match on {e(str(acc.get("n", "?")))} {e(str(acc.get("dataset", "")))} samples '
                 f'(seed {e(str(acc.get("seed", "?")))}); build path: {e(str(acc.get("quantized_path", "-")))}</div></div>')
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<h2>Summary</h2>{cards}<table class="kv">{table}</table>'


def _sqnr_section(report: dict) -> str:
    charts, notes = [], []
    for st in report["stages"]:
        for a in st["artifacts"]:
            info = a.get("info") or {}
            if info.get("layer_sqnr_error"):
                notes.append(f"<li>{html.escape(st['name'])} ({html.escape(a['backend'])}): per-layer SQNR not computed: "
                             f"{html.escape(str(info['layer_sqnr_error']))}</li>")
            rows = info.get("layer_sqnr")
            if not rows:
                continue
            rows = [dict(r, sqnr_db=as_number(r.get("sqnr_db"))) for r in rows]
            title = f"{st['name']} ({a['backend']}, {st.get('quant') or 'quantized'}): per-layer SQNR"
            charts.append(plots.layer_sqnr_chart(title, rows, REFERENCE_SQNR_DB))
            cov = info.get("layer_sqnr_coverage")
            if cov:
                charts.append(f'<p class="caption">{cov["tensors"]} of {cov["tensors_of"]} activations: '
                              f'{cov["chunks_run"]} of {cov["chunks"]} chunks, spread over the stage, within the '
                              f'{plots.fmt_num(cov["budget_s"])} s budget of this diagnostic.</p>')
            worst = sorted((r for r in rows if r["sqnr_db"] is not None and math.isfinite(r["sqnr_db"])),
                           key=lambda r: r["sqnr_db"])[:3]
            if worst:
                charts.append('<p class="caption">Lowest: ' + ", ".join(
                    f"{html.escape(str(r.get('op', '')))} <code>{html.escape(str(r.get('tensor', '')))}</code> "
                    f"{plots.fmt_num(r['sqnr_db'])} dB" for r in worst) + "</p>")
    if not charts and not notes:
        return ""
    return ("<h2>Per-layer SQNR</h2><p>Each quantized activation of the QDQ model against the float model "
            "(error accumulated up to that layer; calibration samples), in graph order. "
            f"The dashed line is {REFERENCE_SQNR_DB:g} dB; hover a point for its tensor.</p>" + "".join(charts)
            + (f"<ul class=notes>{''.join(notes)}</ul>" if notes else ""))


def _htp_section(report: dict) -> str:
    """Per QNN context binary: where the HTP's execution departs from onnxruntime CPU's, layer by layer."""
    e = html.escape
    charts = []
    for st in report["stages"]:
        for a in st["artifacts"]:
            dep = (a.get("info") or {}).get("htp_departure")
            if not dep:
                continue
            info = a["info"]
            if not dep["rows"]:  # not run, or no sample within its budget: say why, draw no empty chart
                charts.append(f'<p class="caption">{e(st["name"])} (qnn, HTP v{info["htp_arch"]}): '
                              f'{e(dep.get("reason") or "no tensor measured")}.</p>')
                continue
            rows = [dict(r, sqnr_db=as_number(r.get("sqnr_db"))) for r in dep["rows"]]
            charts.append(plots.layer_sqnr_chart(f"{st['name']} (qnn, HTP v{info['htp_arch']}): HTP vs onnxruntime CPU per layer",
                                                 rows, dep["threshold_db"]))
            first = dep.get("first_departure")
            charts.append('<p class="caption">' + (
                f"First departure below {dep['threshold_db']:g} dB: {e(str(first['op']))} input "
                f"<code>{e(str(first['tensor']))}</code> at {plots.fmt_num(first['sqnr_db'])} dB."
                if first else f"No tensor below {dep['threshold_db']:g} dB.") + "</p>")
    if not charts:
        return ""
    return ("<h2>Where the HTP departs</h2><p>Each dequantized activation of the QDQ model as the QNN HTP "
            "(simulation) computes it, against onnxruntime CPU on the same model and input, in graph order. "
            "CPU matches float within quantization noise, so the first tensor far below the line is the layer "
            "the HTP computes differently: the one to rewrite.</p>" + "".join(charts))


def _latency_section(report: dict) -> str:
    names, series, notes = _stage_latency(report)
    if not any(v is not None and math.isfinite(v) for _, vs in series for v in vs):
        return ""
    chart = plots.grouped_bar_chart("Latency per stage: measured here vs estimated on target", names, series,
                                    "milliseconds per run", unit="ms")
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    lat = next((a["latency_ms"] for st in report["stages"] for a in st["artifacts"] if a.get("latency_ms")), {})
    where = html.escape(f"median of {lat.get('runs', '?')} runs on {lat.get('where', 'this machine')}") if lat else "none here"
    return (f"<h2>Latency per stage</h2><p><b>Measured</b>: {where}, not on the target. "
            f"<b>Estimated</b>: roofline model of {html.escape(report['target'])}, not measured.</p>"
            + chart + (f"<ul class=notes>{note}</ul>" if note else ""))


def _tokens_section(report: dict) -> str:
    sweep = report.get("token_sweep")
    if not sweep:
        return ""
    points = [{"tokens": as_number(p.get("tokens")), "method": str(p.get("method", "?")),
               "exact_match": as_number(p.get("exact_match")), "ttft_ms": as_number(p.get("ttft_ms"))} for p in sweep]
    chart = plots.tokens_accuracy_chart("Accuracy vs vision tokens", points, _build_point(report))
    rows = "".join(f"<tr><td>{_fmt(p['tokens'])}</td><td>{html.escape(p['method'])}</td><td>{_pct(p['exact_match'])}</td>"
                   f"<td>{_fmt(p['ttft_ms'])}</td></tr>" for p in points)
    return ("<h2>Accuracy vs vision tokens</h2><p>Exact match of builds with their image tokens reduced; "
            "time to first token measured on this machine.</p>" + chart
            + f"<table><tr><th>vision tokens</th><th>reduction</th><th>exact match</th><th>TTFT measured (ms)</th></tr>{rows}</table>")


def render_html(report: dict) -> str:
    """A self-contained page (no network, no JavaScript): summary, charts, then the tables."""
    e = html.escape
    rows = []
    for st in report["stages"]:
        for a in st["artifacts"]:
            p = a.get("parity") or {}
            lat = (a.get("latency_ms") or {}).get("median")
            why = f"<br><small>{e(str(p['reason']))}</small>" if p.get("value") is None and p.get("reason") else ""
            rows.append(
                f"<tr><td>{e(st['name'])}</td><td>{e(a['backend'])}</td><td><code>{e(a['path'])}</code></td>"
                f"<td>{e(str(p.get('metric', '-')))}{why}</td><td>{_fmt(p.get('value', '-'))}</td>"
                f"<td>{_fmt(lat) if lat is not None else '-'}</td><td>{_fmt(a.get('lower_s', '-'))}</td></tr>"
            )
        for s in st.get("skipped", []):
            rows.append(f"<tr class=skip><td>{e(st['name'])}</td><td>{e(s['backend'])}</td><td colspan=5>skipped: {e(s['reason'])}</td></tr>")
    rt = report.get("runtime")
    if rt:
        p = rt.get("parity") or {}
        rows.append(f"<tr><td>llm</td><td>{e(rt['backend'])}</td><td><code>{e(rt['path'])}</code></td>"
                    f"<td>{e(str(p.get('metric', '-')))}</td><td>{_fmt(p.get('value', '-'))}</td><td>-</td><td>-</td></tr>")
    est_rows = []
    for st in report["stages"]:
        est = st.get("estimate") or {}
        for cls, c in (est.get("by_class") or {}).items():
            est_rows.append(f"<tr><td>{e(st['name'])}</td><td>{e(cls)}</td><td>{_fmt(c.get('ops'))}</td><td>{_fmt(c.get('macs'))}</td>"
                            f"<td>{_fmt(c.get('bytes'))}</td><td>{_fmt(c.get('ms'))}</td></tr>")
    estimates = ("<h2>Estimate by op class</h2><table><tr><th>stage</th><th>op class</th><th>ops</th><th>MACs</th>"
                 f"<th>bytes</th><th>estimated ms</th></tr>{''.join(est_rows)}</table>") if est_rows else ""
    passes = "".join(
        f"<li><b>{e(st['name'])}</b>: " + ", ".join(f"{e(n)}{' (changed)' if c else ''}" for n, c in st.get("passes", [])) + "</li>"
        for st in report["stages"]
    )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>edgevlm report: {e(report['model'])} for {e(report['target'])}</title>
<style>
body{{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222;padding:0 1em}}
table{{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}} td,th{{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left}}
th{{background:#f3f3f3}} table.kv th{{width:11em;vertical-align:top}} tr.skip td{{color:#888}} code{{font-size:90%}}
svg.chart{{display:block;max-width:100%;height:auto;margin:.5em 0 1.5em;border:1px solid #eee;border-radius:6px;background:#fff}}
.badge{{display:inline-block;border-radius:4px;padding:0 .45em;margin:.1em;font-size:85%}}
.badge.ok{{background:#dcefe2;color:#1d5e33}} .badge.bad{{background:#f6dcdc;color:#8a2323}}
.cards{{display:flex;gap:1em;margin:.5em 0 1em}} .card{{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;color:#555}}
.card .big{{font-size:28px;font-weight:600;color:#222}} .card.note{{flex:1;font-size:90%}}
p.caption{{margin:-1em 0 1.5em;color:#555;font-size:90%}} ul.notes{{color:#666;font-size:90%}}
</style></head><body>
<h1>{e(report['model'])} &rarr; {e(report['target'])}</h1>
<p>edgevlm {e(str(report.get('edgevlm_version', '')))}. Parity: each artifact run on this machine against the float PyTorch model, on the stage's example inputs; QNN context binaries on the QNN HTP simulation, over calibration samples.</p>
{_summary(report)}
{_sqnr_section(report)}
{_htp_section(report)}
{_latency_section(report)}
{_tokens_section(report)}
<h2>Artifacts</h2>
<table><tr><th>stage</th><th>backend</th><th>artifact</th><th>parity metric</th><th>value</th><th>measured ms</th><th>lower (s)</th></tr>
{''.join(rows)}</table>
{estimates}
<h2>Passes</h2><ul>{passes}</ul>
</body></html>
"""
