"""DIR/sweep.html: the accuracy / estimated-latency trade-off of a sweep, one self-contained page.

Per target: accuracy against estimated time to first token and against estimated decode tokens/s
(inline SVG, no JavaScript, no network), the Pareto front of each marked, a table of every point,
and the recommended point.  Fronts: a point is on the TTFT front when no other point of its target
has at least its accuracy and at most its TTFT, one of them strictly (for decode: at least its
tokens/s).  Recommended: the point with the lowest estimated TTFT among those whose accuracy is
within one standard error (sqrt(p(1-p)/n)) of the target's most accurate point, the one-standard-
error rule: a difference smaller than the evaluation's own noise does not buy a slower build.
"""
from __future__ import annotations

import html
import math

from edgevlm.compiler import plots

GREY = "#9a9a9a"


def _num(v) -> float | None:
    return float(v) if plots.finite(v) else None


def usable(rec: dict) -> bool:
    est = rec.get("estimate") or {}
    return rec.get("status") == "ok" and plots.finite(rec.get("exact_match")) and _num(est.get("ttft_ms")) is not None


def resolved(v: float) -> float:
    """An estimate at 3 significant digits, the resolution it is compared at: the roofline is off by 20-40 %
    on published latencies, so 699.7665 vs 699.7662 tokens/s (1 vs 4 vision tokens) is no difference."""
    return float(f"{v:.3g}")


def pareto(points: list[dict], x: str, minimize_x: bool) -> set[str]:
    """Keys of the points no other point dominates in (exact_match up, ``x`` down if ``minimize_x`` else up),
    ``x`` compared at :func:`resolved`'s resolution."""
    def better_x(a, b):  # a at least as good as b on x
        return a <= b if minimize_x else a >= b

    front = set()
    for p in points:
        px, pa = resolved(p["estimate"][x]), p["exact_match"]
        dominated = any(q is not p and q["exact_match"] >= pa and better_x(resolved(q["estimate"][x]), px)
                        and (q["exact_match"] > pa or resolved(q["estimate"][x]) != px) for q in points)
        if not dominated:
            front.add(p["key"])
    return front


def standard_error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else 0.0


def recommend(points: list[dict]) -> tuple[dict | None, float]:
    """(the recommended point, the accuracy floor it had to reach); see the module docstring."""
    if not points:
        return None, math.nan
    best = max(points, key=lambda p: p["exact_match"])
    floor = best["exact_match"] - standard_error(best["exact_match"], best.get("n") or best["settings"]["eval_n"])
    ok = [p for p in points if p["exact_match"] >= floor - 1e-12]
    dec = lambda p: _num(p["estimate"].get("decode_tokens_per_s")) or 0.0  # noqa: E731
    return min(ok, key=lambda p: (p["estimate"]["ttft_ms"], -p["exact_match"], -dec(p), p["key"])), floor


def label(p: dict) -> str:
    s = p["settings"]
    toks = "all tokens" if s["vision_tokens"] is None else f"{s['vision_tokens']} tokens ({s['token_reduce']})"
    return f"{s['quant'] or 'target default'}, {toks}"


def scatter(title: str, points: list[dict], x: str, xlabel: str, front: set[str], chosen: dict | None) -> str:
    """Exact match (y) against ``estimate[x]`` (x): front points filled and joined, the rest hollow, the
    recommended point ringed."""
    pts = [p for p in points if _num(p["estimate"].get(x)) is not None]
    xs_v = [p["estimate"][x] for p in pts]
    left, right = plots.MARGIN["left"], plots.WIDTH - plots.MARGIN["right"]
    lo, hi = (min(xs_v), max(xs_v)) if xs_v else (0.0, 1.0)
    log = lo > 0 and hi / lo > 30
    pad = 0.0 if log else (hi - lo) * 0.06
    xs = plots.Scale(lo - pad, hi + pad, left + 16, right - 16, log=log)
    accs = [p["exact_match"] for p in pts]
    ylo = max(0.0, math.floor((min(accs) if accs else 0.0) * 10 - 0.5) / 10)
    ys = plots.Scale(ylo, 1.0, plots.HEIGHT - plots.MARGIN["bottom"], plots.MARGIN["top"] + 8)
    body = plots._axes(xs, ys, xlabel + (" — log scale" if log else ""), "exact match", ytick_fmt=lambda t: f"{t * 100:.0f}%")
    on = sorted((p for p in pts if p["key"] in front), key=lambda p: p["estimate"][x])
    if len(on) > 1:
        coords = " ".join(f"{xs(p['estimate'][x]):.1f},{ys(p['exact_match']):.1f}" for p in on)
        body.append(f'<polyline class="front" points="{coords}" fill="none" stroke="{plots.COLORS[1]}" stroke-width="2"/>')
    for p in pts:
        cx, cy = xs(p["estimate"][x]), ys(p["exact_match"])
        is_front = p["key"] in front
        fill = plots.COLORS[1] if is_front else "white"
        stroke = plots.COLORS[1] if is_front else GREY
        tip = (f"{label(p)}: {p['exact_match'] * 100:.1f}% exact match, {xlabel} {plots.fmt_num(p['estimate'][x])}"
               + (" (Pareto front)" if is_front else ""))
        body.append(f'<circle class="{"front" if is_front else "point"}" data-key="{p["key"]}" cx="{cx:.1f}" cy="{cy:.1f}" '
                    f'r="5" fill="{fill}" stroke="{stroke}" stroke-width="1.5"><title>{plots._esc(tip)}</title></circle>')
    if any(p is chosen for p in pts):
        cx, cy = xs(chosen["estimate"][x]), ys(chosen["exact_match"])
        body.append(f'<circle class="recommended" cx="{cx:.1f}" cy="{cy:.1f}" r="10" fill="none" stroke="#111" stroke-width="2">'
                    f'<title>recommended: {plots._esc(label(chosen))}</title></circle>'
                    f'<text x="{cx + 13:.1f}" y="{cy - 8:.1f}" fill="#111">recommended</text>')
    desc = (f"{len(pts)} points, {len(on)} on the Pareto front: "
            + "; ".join(f"{label(p)} {p['exact_match'] * 100:.1f}% at {plots.fmt_num(p['estimate'][x])}" for p in on))
    legend = [("Pareto front", plots.COLORS[1]), ("dominated", GREY), ("recommended (ring)", "#111")]
    return plots._frame(title, desc, body, legend)


def _f(v, digits=3):
    return html.escape(plots.fmt_num(v, digits))


def _target_section(target: str, points: list[dict]) -> str:
    e = html.escape
    f_ttft = pareto(points, "ttft_ms", minimize_x=True)
    dec_pts = [p for p in points if _num(p["estimate"].get("decode_tokens_per_s")) is not None]
    f_dec = pareto(dec_pts, "decode_tokens_per_s", minimize_x=False)
    chosen, floor = recommend(points)
    out = [f'<section class="target" id="target-{e(target)}"><h2>{e(target)}</h2>']
    if chosen is not None:
        est = chosen["estimate"]
        out.append(f'<p class="recommended"><b>Recommended on {e(target)}</b>: {e(label(chosen))} — exact match '
                   f'{chosen["exact_match"] * 100:.1f}% (n={chosen.get("n")}, through {e(str(chosen.get("vision_backend")))} '
                   f'vision + C runtime), estimated TTFT {_f(est["ttft_ms"])} ms, estimated decode '
                   f'{_f(est.get("decode_tokens_per_s"))} tokens/s. Rule: the lowest estimated TTFT among the points within '
                   f'one standard error of the most accurate (exact match ≥ {floor * 100:.1f}%).</p>')
    out.append(scatter(f"{target}: accuracy vs estimated time to first token", points, "ttft_ms",
                       "estimated TTFT on the target (ms)", f_ttft, chosen))
    out.append(scatter(f"{target}: accuracy vs estimated decode rate", dec_pts, "decode_tokens_per_s",
                       "estimated decode on the target (tokens/s)", f_dec, chosen))
    rows = []
    for p in sorted(points, key=lambda p: (p["estimate"]["ttft_ms"], -p["exact_match"])):
        s, est = p["settings"], p["estimate"]
        se = standard_error(p["exact_match"], p.get("n") or s["eval_n"])
        marks = [m for m, f in (("TTFT", f_ttft), ("decode", f_dec)) if p["key"] in f]
        build = p.get("build", "")
        rows.append(f'<tr{" class=chosen" if p is chosen else ""}><td>{e(s["quant"] or "default")}</td>'
                    f'<td>{e("all" if s["vision_tokens"] is None else str(s["vision_tokens"]))}</td>'
                    f'<td>{e(s["token_reduce"] or "-")}</td><td>{p["exact_match"] * 100:.1f}% ± {se * 100:.1f}</td>'
                    f'<td>{_f(est["ttft_ms"])}</td><td>{_f(est.get("decode_tokens_per_s"))}</td>'
                    f'<td>{e(", ".join(marks) or "-")}</td><td>{e(str(p.get("vision_backend")))}</td>'
                    f'<td>{_f(p.get("compile_s"))}</td><td>{_f(p.get("eval_s"))}</td>'
                    f'<td><code>{e(build.rsplit("/", 1)[-1])}</code></td></tr>')
    out.append("<table><tr><th>quant</th><th>vision tokens</th><th>reduction</th><th>exact match ± s.e.</th>"
               "<th>TTFT est. (ms)</th><th>decode est. (tokens/s)</th><th>Pareto front</th><th>eval path</th>"
               "<th>compile s</th><th>eval s</th><th>build</th></tr>" + "".join(rows) + "</table></section>")
    return "\n".join(out)


def render(records: list[dict], title: str = "edgevlm sweep") -> str:
    """The page for a sweep's records (sweep.jsonl's last record per key)."""
    e = html.escape
    good = [r for r in records if usable(r)]
    failed = [r for r in records if r.get("status") != "ok"]
    targets = list(dict.fromkeys(r["settings"]["target"] for r in good))
    models = sorted({r["settings"]["model"] for r in records})
    parts = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
             f"<title>{e(title)}</title><style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1000px}}"
             "table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px}"
             "th{background:#f3f3f3}tr.chosen td{background:#fff6d8}svg.chart{display:block;margin:10px 0}"
             ".recommended{background:#f6f9ff;border-left:4px solid #2f6db5;padding:8px}</style></head><body>",
             f"<h1>{e(title)}</h1>",
             f"<p>{len(records)} points of {e(', '.join(models))}: {len(good)} finished, {len(failed)} failed. "
             "<b>Accuracy</b>: exact match on the shapes set, measured here through each build's deployed path "
             "(its target's vision backend, e.g. the QNN context binaries on the HTP simulation, + the C runtime). "
             "<b>Latency</b>: the target's roofline estimate from each build's report.json "
             "(TTFT = encoder + projector + LLM prefill; decode = 1000 / LLM decode ms), estimated, not measured.</p>"]
    parts += [_target_section(t, [r for r in good if r["settings"]["target"] == t]) for t in targets]
    if failed:
        rows = "".join(f"<tr><td>{e(r['settings']['target'])}</td><td>{e(label(r))}</td><td>{e(str(r.get('error')))}</td></tr>"
                       for r in failed)
        parts.append(f"<h2>Failed points</h2><table><tr><th>target</th><th>point</th><th>error</th></tr>{rows}</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
