"""Inline SVG charts for report.html: written by hand, no JavaScript, no network.

Each chart function returns one ``<svg role="img">`` element whose first
child is a ``<title>`` (its accessible name), so the page stays a single
self-contained file.  Values that are None or not finite are skipped or
drawn as marked exceptions, never passed into coordinates.  Every marker
carries its own ``<title>``, which a browser shows on hover.
"""
import html
import math

WIDTH = 920
HEIGHT = 300
MARGIN = {"left": 64, "right": 56, "top": 56, "bottom": 52}
COLORS = ["#2f6db5", "#e07b22", "#3a9d5d", "#b8434e", "#7a5cb0", "#8a6d3b"]


def is_number(v) -> bool:
    """A real int or float (not bool); may be non-finite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def finite(v) -> bool:
    return is_number(v) and math.isfinite(v)


def fmt_num(v, digits: int = 3) -> str:
    """Short text for a number: 3 significant digits, "inf"/"nan" spelled out, "-" for None."""
    if v is None:
        return "-"
    if not is_number(v):
        return str(v)
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.{digits}g}"


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


class Scale:
    """Map a data interval [lo, hi] onto pixels [a, b]; linear or log10."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False, integer: bool = False):
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:  # one value: give it room on both sides
            pad = abs(lo) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.a, self.b, self.log, self.integer = lo, hi, a, b, log, integer

    def __call__(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.a + (t - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self, n: int = 5) -> list[float]:
        if self.log:
            first, last = math.floor(self.lo + 1e-9), math.ceil(self.hi - 1e-9)
            mults = (1, 2, 5) if last - first <= 2 else (1,)
            out = [m * 10.0 ** k for k in range(first, last + 1) for m in mults]
            return [t for t in out if self.lo - 1e-9 <= math.log10(t) <= self.hi + 1e-9]
        step = nice_step((self.hi - self.lo) / n)
        if self.integer:  # an index axis: no ticks between items
            step = max(step, 1.0)
        start = math.ceil(self.lo / step - 1e-9) * step
        return [start + i * step for i in range(int((self.hi - start) / step + 1e-9) + 1)]


def nice_step(raw: float) -> float:
    """The 1, 2 or 5 times a power of ten nearest above ``raw`` (a tick spacing)."""
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw - 1e-12)


def _tick_label(t: float) -> str:
    return f"{t:g}" if abs(t) >= 1e-3 or t == 0 else f"{t:.0e}"


def _frame(title: str, desc: str, body: list[str], legend: list[tuple[str, str]] = ()) -> str:
    """The <svg> shell: accessible title and description, heading, legend on the line below it."""
    parts = [f'<svg role="img" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" font-family="system-ui,sans-serif" font-size="12">',
             f"<title>{_esc(title)}</title>", f"<desc>{_esc(desc)}</desc>",
             f'<text x="{MARGIN["left"]}" y="22" font-size="15" font-weight="600">{_esc(title)}</text>']
    x = MARGIN["left"]
    for label, color in legend:
        parts.append(f'<rect x="{x:.1f}" y="31" width="12" height="12" fill="{color}"/>'
                     f'<text x="{x + 16:.1f}" y="41">{_esc(label)}</text>')
        x += 34 + 6.6 * len(label)  # about 6.6 px per character at 12 px
    return "\n".join(parts + body + ["</svg>"])


def _axes(xs: Scale | None, ys: Scale, xlabel: str, ylabel: str, ytick_fmt=_tick_label) -> list[str]:
    """Gridlines, tick labels and axis titles; ``xs`` None when the caller labels the x axis itself."""
    left, right = MARGIN["left"], WIDTH - MARGIN["right"]
    top, bottom = MARGIN["top"], HEIGHT - MARGIN["bottom"]
    out = []
    for t in ys.ticks():
        y = ys(t)
        out.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_esc(ytick_fmt(t))}</text>')
    if xs is not None:
        for t in xs.ticks(8):
            x = xs(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#888"/>'
                       f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle" fill="#555">{_esc(_tick_label(t))}</text>')
    out.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#888"/>'
               f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}" stroke="#888"/>')
    out.append(f'<text x="{(left + right) / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle" fill="#333">{_esc(xlabel)}</text>')
    out.append(f'<text transform="translate(16 {(top + bottom) / 2:.1f}) rotate(-90)" text-anchor="middle" '
               f'fill="#333">{_esc(ylabel)}</text>')
    return out


def layer_sqnr_chart(title: str, rows: list[dict], reference_db: float = 30.0) -> str:
    """SQNR (dB, y) of each quantized activation in graph order (x), with a dashed reference line.

    ``rows``: ``{"tensor", "op", "sqnr_db"}``.  A +inf SQNR (bit-exact
    tensor) is drawn as an open triangle at the top edge; None/NaN rows keep
    their x position but draw nothing.
    """
    pts = [(i, r.get("sqnr_db"), r) for i, r in enumerate(rows)]
    vals = [v for _, v, _ in pts if finite(v)]
    exact = [(i, r) for i, v, r in pts if is_number(v) and v == math.inf]
    lo = min([0.0] + vals)
    hi = max(vals + [reference_db]) + 5 if vals else reference_db + 10
    left, right = MARGIN["left"], WIDTH - MARGIN["right"]
    xs = Scale(0, max(len(rows) - 1, 1), left + 6, right - 6, integer=True)
    ys = Scale(lo, hi, HEIGHT - MARGIN["bottom"], MARGIN["top"] + 8)
    body = _axes(xs, ys, "quantized activation, in graph order", "SQNR vs float (dB)")
    yr = ys(reference_db)
    body.append(f'<line x1="{left}" x2="{right}" y1="{yr:.1f}" y2="{yr:.1f}" stroke="#b8434e" stroke-dasharray="6 4"/>'
                f'<text x="{right + 4}" y="{yr + 4:.1f}" fill="#b8434e">{reference_db:g} dB</text>')
    # One polyline per run of finite points, so a missing value breaks the line instead of bridging it.
    runs, cur = [], []
    for i, v, _ in pts:
        if finite(v):
            cur.append(f"{xs(i):.1f},{ys(v):.1f}")
        elif cur:
            runs.append(cur)
            cur = []
    runs.append(cur)
    body += [f'<polyline points="{" ".join(r)}" fill="none" stroke="{COLORS[0]}" stroke-width="1.3"/>' for r in runs if r]
    for i, v, r in pts:
        if finite(v):
            color = COLORS[0] if v >= reference_db else COLORS[3]
            body.append(f'<circle cx="{xs(i):.1f}" cy="{ys(v):.1f}" r="2.6" fill="{color}">'
                        f'<title>#{i} {_esc(r.get("op", ""))} {_esc(r.get("tensor", ""))}: {fmt_num(v)} dB</title></circle>')
    top = MARGIN["top"] + 4
    for i, r in exact:
        x = xs(i)
        body.append(f'<path d="M{x - 4:.1f},{top + 7} L{x + 4:.1f},{top + 7} L{x:.1f},{top} Z" fill="none" stroke="{COLORS[2]}">'
                    f'<title>#{i} {_esc(r.get("op", ""))} {_esc(r.get("tensor", ""))}: inf dB (bit-exact)</title></path>')
    below = sum(1 for v in vals if v < reference_db)
    desc = (f"{len(rows)} quantized activations; {len(vals)} with a finite SQNR, min {fmt_num(min(vals)) if vals else '-'} dB; "
            f"{below} below {reference_db:g} dB; {len(exact)} bit-exact")
    legend = [(f"≥ {reference_db:g} dB", COLORS[0]), (f"< {reference_db:g} dB", COLORS[3])]
    if exact:
        legend.append(("bit-exact (inf)", COLORS[2]))
    return _frame(title, desc, body, legend)


def grouped_bar_chart(title: str, categories: list[str], series: list[tuple[str, list]], ylabel: str,
                      log: bool | None = None, unit: str = "") -> str:
    """Bars per category (x), one per series, side by side; None/non-finite/non-positive-on-log shown as "n/a".

    ``log`` None picks a log10 axis when the positive values span more than
    30x, so a 0.02 ms stage and a 6 ms stage are both readable.
    """
    vals = [v for _, vs in series for v in vs if finite(v) and v > 0]
    if log is None:
        log = len(vals) > 1 and max(vals) / min(vals) > 30
    left, right = MARGIN["left"], WIDTH - MARGIN["right"]
    bottom = HEIGHT - MARGIN["bottom"]
    if log and vals:
        lo, hi = 10.0 ** math.floor(math.log10(min(vals))), 10.0 ** math.ceil(math.log10(max(vals)))
        ys = Scale(lo, hi, bottom, MARGIN["top"] + 8, log=True)
    else:
        log = False
        ys = Scale(0.0, max([v for _, vs in series for v in vs if finite(v)] + [0.0]) * 1.12 or 1.0, bottom, MARGIN["top"] + 8)
    body = _axes(None, ys, "stage", ylabel + (" — log scale" if log else ""))
    slot = (right - left) / max(len(categories), 1)
    bar = min(56.0, slot * 0.8 / max(len(series), 1))
    for ci, cat in enumerate(categories):
        x0 = left + slot * ci + (slot - bar * len(series)) / 2
        body.append(f'<text x="{left + slot * (ci + 0.5):.1f}" y="{bottom + 17}" text-anchor="middle" fill="#333">{_esc(cat)}</text>')
        for si, (label, vs) in enumerate(series):
            v = vs[ci] if ci < len(vs) else None
            x = x0 + bar * si
            if not finite(v) or (log and v <= 0):
                body.append(f'<text x="{x + bar / 2:.1f}" y="{bottom - 4}" text-anchor="middle" fill="#999" font-size="10">'
                            f'n/a<title>{_esc(label)} {_esc(cat)}: {_esc(fmt_num(v))}</title></text>')
                continue
            y = ys(v)
            body.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{max(bottom - y, 1.0):.1f}" '
                        f'fill="{COLORS[si % len(COLORS)]}"><title>{_esc(label)} {_esc(cat)}: {fmt_num(v)} {_esc(unit)}</title></rect>'
                        f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" fill="#333" font-size="10">{fmt_num(v)}</text>')
    desc = "; ".join(f"{label}: " + ", ".join(f"{c} {fmt_num(v)}" for c, v in zip(categories, vs)) for label, vs in series)
    return _frame(title, desc, body, [(label, COLORS[i % len(COLORS)]) for i, (label, _) in enumerate(series)])


def tokens_accuracy_chart(title: str, points: list[dict], highlight: dict | None = None) -> str:
    """Exact match (y, %) against vision tokens (x, log2 axis when tokens span > 8x), one line per method.

    ``points``: ``{"tokens", "method", "exact_match", "ttft_ms"?}``;
    ``highlight``: the same kind of dict for this build, drawn as a ring.
    """
    good = [p for p in points if finite(p.get("tokens")) and p["tokens"] > 0 and finite(p.get("exact_match"))]
    if highlight is not None and not (finite(highlight.get("tokens")) and highlight["tokens"] > 0
                                      and finite(highlight.get("exact_match"))):
        highlight = None
    toks = [p["tokens"] for p in good] + ([highlight["tokens"]] if highlight else [])
    left, right = MARGIN["left"], WIDTH - MARGIN["right"]
    log = bool(toks) and max(toks) / min(toks) > 8
    lo, hi = (min(toks), max(toks)) if toks else (1, 2)
    xs = _Log2Scale(lo, hi, left + 20, right - 20) if log else Scale(lo, hi, left + 20, right - 20, integer=True)
    ys = Scale(0.0, 1.0, HEIGHT - MARGIN["bottom"], MARGIN["top"] + 8)
    body = _axes(xs, ys, "vision tokens per image" + (" — log2 scale" if log else ""), "exact match",
                 ytick_fmt=lambda t: f"{t * 100:.0f}%")
    methods = list(dict.fromkeys(p["method"] for p in good))
    for mi, m in enumerate(methods):
        color = COLORS[mi % len(COLORS)]
        line = sorted((p for p in good if p["method"] == m), key=lambda p: p["tokens"])
        coords = " ".join(f"{xs(p['tokens']):.1f},{ys(p['exact_match']):.1f}" for p in line)
        body.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for p in line:
            ttft = f", TTFT {fmt_num(p.get('ttft_ms'))} ms" if p.get("ttft_ms") is not None else ""
            body.append(f'<circle cx="{xs(p["tokens"]):.1f}" cy="{ys(p["exact_match"]):.1f}" r="4" fill="{color}">'
                        f'<title>{_esc(m)}, {p["tokens"]:g} tokens: {p["exact_match"] * 100:.1f}%{_esc(ttft)}</title></circle>')
    legend = [(str(m), COLORS[i % len(COLORS)]) for i, m in enumerate(methods)]
    if highlight:
        x, y = xs(highlight["tokens"]), ys(highlight["exact_match"])
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="#111" stroke-width="2">'
                    f'<title>this build: {highlight["tokens"]:g} tokens ({_esc(highlight.get("method", ""))}), '
                    f'{highlight["exact_match"] * 100:.1f}%</title></circle>'
                    f'<text x="{x - 12:.1f}" y="{y + 20:.1f}" text-anchor="end" fill="#111">this build</text>')
        legend.append(("this build (ring)", "#111"))
    desc = "; ".join(f"{p['method']} {p['tokens']:g} tokens: {p['exact_match'] * 100:.1f}%" for p in good)
    return _frame(title, desc or "no finite points", body, legend)


class _Log2Scale(Scale):
    """A log axis whose ticks are the powers of two (token counts are)."""

    def __init__(self, lo, hi, a, b):
        super().__init__(lo, hi, a, b, log=True)

    def ticks(self, n: int = 5) -> list[float]:
        first, last = math.floor(self.lo / math.log10(2) + 1e-9), math.ceil(self.hi / math.log10(2) - 1e-9)
        return [2.0 ** k for k in range(first, last + 1) if self.lo - 1e-9 <= k * math.log10(2) <= self.hi + 1e-9]
