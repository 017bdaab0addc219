"""report.html: one self-contained page with charts (per-layer SQNR, latency, accuracy vs vision tokens).

The page is rendered from synthetic report dicts (every section, and the
fewest keys a report has), checked for external references, and opened in
headless Chromium (a screenshot and the parsed DOM).
"""
import json
import math
import re
import shutil
import subprocess

import pytest
import torch
from torch import nn

import edgevlm
from edgevlm.compiler import plots
from edgevlm.compiler.report import render_html, write_report

CHART_BLUE = (0x2F, 0x6D, 0xB5)  # plots.COLORS[0]: SQNR points and the measured bars
CHART_ORANGE = (0xE0, 0x7B, 0x22)  # plots.COLORS[1]: the estimated bars


def _artifact(path, sqnr_rows=None, latency=None, integer_only=True):
    info = {"opset": 21}
    if sqnr_rows is not None:
        info |= {"quant": {"scheme": "w8a16"}, "integer_only": integer_only,
                 "offending_ops": [] if integer_only else ["Where 'mask': input 'x' is float"], "layer_sqnr": sqnr_rows}
    art = {"backend": "onnx", "path": path, "files": [path], "info": info, "lower_s": 1.5,
           "parity": {"metric": "sqnr_db", "value": 41.2, "reference": "float PyTorch model, example inputs"}}
    if latency is not None:
        art["latency_ms"] = {"label": "measured", "median": latency, "runs": 5, "where": "this machine (compile host), CPU"}
    return art


def _rows(n, start, slope):
    return [{"tensor": f"t{i}", "op": "Conv" if i % 2 else "Add", "sqnr_db": round(start - slope * i, 2)} for i in range(n)]


def full_report() -> dict:
    enc_rows = _rows(40, 55.0, 0.7)
    enc_rows[2]["sqnr_db"] = math.inf  # a bit-exact tensor
    enc_rows[5]["sqnr_db"] = None  # no value: the line breaks there
    enc_rows[6]["sqnr_db"] = "nan"  # as json_safe writes it
    llm_rows = _rows(30, 45.0, 1.0)
    llm_rows[0]["tensor"] = "<b>mask&</b>"  # must be escaped
    est = {"conv": {"ops": 27, "macs": 12232704, "bytes": 609472, "ms": 0.147}}
    return {
        "model": "tiny-<vlm>", "target": "sa8295p", "edgevlm_version": "0.1.0", "compile_s": 12.5,
        "model_meta": {"params": 1629560, "image_tokens": 16, "config": {}},
        "quant": {"encoder": "w8a16", "llm": "w4a16", "kv": "kv8"},
        "stages": [
            {"name": "encoder", "kind": "encoder", "quant": "w8a16", "sqnr_db": 40.1, "passes": [["fold_constants_pass", True]],
             "artifacts": [_artifact("encoder.onnx", enc_rows, latency=6.2)], "skipped": [],
             "estimate": {"label": "estimated", "total_ms": 1.4, "scheme": "w8a16", "by_class": est}},
            {"name": "projector", "kind": "projector", "quant": None, "sqnr_db": None, "passes": [],
             "artifacts": [_artifact("projector.onnx", latency=0.019)], "skipped": [],
             "estimate": {"label": "estimated", "total_ms": 0.0156, "by_class": {}}},
            {"name": "llm-prefill", "kind": "llm", "quant": "w4a16", "sqnr_db": 18.5, "passes": [],
             "artifacts": [_artifact("llm-prefill.onnx", llm_rows, latency=float("nan"), integer_only=False)],
             "skipped": [{"backend": "qnn", "reason": "QNN SDK not installed"}],
             "estimate": {"label": "estimated", "total_ms": None, "reason": "unsupported op 'Foo'"}},
        ],
        "runtime": {"backend": "edgevlm-runtime", "path": "llm.gguf", "info": {"gguf_type": "q4_0"},
                    "parity": {"metric": "greedy_agreement", "value": 1.0, "first_token_sqnr_db": 31.8}},
        "accuracy": {"dataset": "shapes", "n": 200, "seed": 12345, "float": 1.0, "quantized": 0.955,
                     "quantized_path": "onnx vision artifacts + C runtime llm.gguf (q4_0)"},
        "token_sweep": [{"tokens": t, "method": m, "exact_match": e, "ttft_ms": 2.0 + t / 10}
                        for m, pts in (("dct", ((1, 0.41), (4, 0.72))), ("pool", ((1, 0.38), (4, 0.69))))
                        for t, e in pts] + [{"tokens": 16, "method": "none", "exact_match": 0.955, "ttft_ms": float("inf")}],
    }


def minimal_report() -> dict:
    """Only the contract keys: no quantization, latency, estimates, runtime, accuracy or sweep."""
    return {"model": "m", "target": "t", "stages": [
        {"name": "model", "artifacts": [{"backend": "onnx", "path": "model.onnx", "parity": {"metric": "max_abs_err", "value": 0.0}}]}]}


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


def test_full_report_has_every_chart_with_titles():
    page = render_html(full_report())
    svgs = _svgs(page)
    # encoder + llm-prefill layer SQNR, latency, accuracy vs tokens
    assert len(svgs) == 4, len(svgs)
    assert all(re.match(r"<svg[^>]*>\s*<title>[^<]+</title>", s) for s in svgs)
    titles = [re.search(r"<title>([^<]+)</title>", s).group(1) for s in svgs]
    assert titles[0].startswith("encoder") and "per-layer SQNR" in titles[0]
    assert titles[1].startswith("llm-prefill")
    assert titles[2].startswith("Latency per stage") and titles[3] == "Accuracy vs vision tokens"
    for h in ("Summary", "Per-layer SQNR", "Latency per stage", "Accuracy vs vision tokens", "Artifacts", "Passes"):
        assert f"<h2>{h}</h2>" in page
    # Summary: accuracy float vs this build, integer-only per artifact.
    assert "100.0%" in page and "95.5%" in page
    assert "encoder.onnx: integer-only" in page and "llm-prefill.onnx: not integer-only" in page
    # The latency chart labels both series; the missing values are shown as n/a with the reason listed.
    assert "measured here: onnx" in svgs[2] and "estimated: sa8295p" in svgs[2]
    assert svgs[2].count(">n/a<") == 2 and "unsupported op &#x27;Foo&#x27;" in page
    assert "this build" in svgs[3] and "16 tokens" in svgs[3]
    assert "bit-exact" in svgs[0]
    # Non-finite values never reach a coordinate.
    assert not re.search(r'="[^"]*(nan|inf)[^"]*"', " ".join(svgs).replace("bit-exact (inf)", ""), flags=re.I)


def test_values_are_escaped():
    page = render_html(full_report())
    assert "tiny-<vlm>" not in page and "tiny-&lt;vlm&gt;" in page
    assert "<b>mask&</b>" not in page and "&lt;b&gt;mask&amp;&lt;/b&gt;" in page


def test_a_layer_chart_cut_by_its_budget_says_how_much_it_covers():
    report = full_report()
    info = report["stages"][0]["artifacts"][0]["info"]
    assert "chunks, spread over the stage" not in render_html(report)
    info["layer_sqnr_coverage"] = {"chunks": 16, "chunks_run": 5, "budget_s": 300.0, "tensors": 40, "tensors_of": 130}
    assert "40 of 130 activations: 5 of 16 chunks, spread over the stage, within the 300 s budget" in render_html(report)


def test_minimal_report_omits_sections():
    page = render_html(minimal_report())
    assert "<svg" not in page
    for h in ("Per-layer SQNR", "Latency per stage", "Accuracy vs vision tokens", "Estimate by op class"):
        assert h not in page
    assert "<h2>Artifacts</h2>" in page and "model.onnx" in page


def test_json_round_trip_renders(tmp_path):
    """write_report writes non-finite floats as strings; the page rendered from report.json still has every chart."""
    write_report(tmp_path, full_report())
    again = render_html(json.loads((tmp_path / "report.json").read_text()))
    assert len(_svgs(again)) == 4
    assert (tmp_path / "report.html").read_text().count("<svg") == 4


@pytest.mark.parametrize("report", [full_report(), minimal_report()], ids=["full", "minimal"])
def test_page_is_self_contained(report):
    page = render_html(report)
    assert not re.search(r"""(src|href|xlink:href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "http://" not in page and "https://" not in page
    for needle in ("<script", "<link", "@import", "url("):
        assert needle not in page.lower()


def test_scale_ticks():
    assert plots.Scale(0, 100, 0, 1).ticks() == [0, 20, 40, 60, 80, 100]
    assert plots.Scale(0.01, 10, 0, 1, log=True).ticks()[0] == pytest.approx(0.01)
    assert plots.Scale(0, 4, 0, 1, integer=True).ticks() == [0, 1, 2, 3, 4]
    one = plots.Scale(5, 5, 0, 100)  # a single value still maps inside the range
    assert 0 < one(5) < 100


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    return exe


def _run_chromium(exe, tmp_path, *args) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)


def test_chromium_renders_charts(tmp_path):
    from PIL import Image

    exe = _chromium()
    page = tmp_path / "report.html"
    page.write_text(render_html(full_report()))
    url = page.as_uri()

    dom = _run_chromium(exe, tmp_path, "--dump-dom", url).stdout
    # The browser parsed the charts as SVG elements, each with its title, and the tables.
    assert dom.count("<svg") == 4 and len(re.findall(r"<svg[^>]*>\s*<title>", dom)) == 4
    # Markers: 37 finite encoder layers (of 40: inf, None, nan), 30 llm-prefill layers, 5 sweep points + this build's ring.
    assert dom.count("<circle") == 37 + 30 + 6
    assert dom.count("<rect") == page.read_text().count("<rect") > 4
    assert "<h2>Accuracy vs vision tokens</h2>" in dom

    shot = tmp_path / "shot.png"
    _run_chromium(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", url)
    assert shot.exists() and shot.stat().st_size > 20_000, shot.stat().st_size if shot.exists() else "missing"
    im = Image.open(shot).convert("RGB")
    assert im.size == (1200, 3000)
    colors = im.getcolors(maxcolors=1 << 20)
    counts = {rgb: n for n, rgb in colors}
    # Not a blank page, and the chart fills were painted (bars are solid blocks of the series colors).
    assert len(colors) > 50, len(colors)
    assert counts.get(CHART_BLUE, 0) > 2000 and counts.get(CHART_ORANGE, 0) > 1000, (counts.get(CHART_BLUE), counts.get(CHART_ORANGE))


def test_default_build_page_has_layer_sqnr(default_build):
    """The real build: each quantized ONNX stage records per-layer SQNR and its chart is on the page."""
    result, cwd = default_build
    build = cwd / result.build_dir
    report = json.loads((build / "report.json").read_text())
    quantized = [(st, a) for st in report["stages"] for a in st["artifacts"] if st.get("quant") and a["backend"] == "onnx"]
    assert quantized
    page = (build / "report.html").read_text()
    for st, a in quantized:
        rows = a["info"]["layer_sqnr"]
        assert len(rows) > 1 and all(set(r) == {"tensor", "op", "sqnr_db"} for r in rows)
        assert f"<title>{st['name']} (onnx, {st['quant']}): per-layer SQNR</title>" in page
    assert "<title>Latency per stage: measured here vs estimated on target</title>" in page


def test_quantized_user_model_page_has_chart_or_reason(tmp_path):
    """A quantized user model (Conv-BN-HardSwish-Linear): the build always stands; its page has the
    per-layer SQNR chart, or, where the analysis cannot match a tensor, a note saying why."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(nn.functional.hardswish(self.bn(self.conv(x))).flatten(2).transpose(1, 2))

    gen = torch.Generator().manual_seed(0)
    calib = [(torch.randn(1, 3, 32, 32, generator=gen),) for _ in range(4)]
    result = edgevlm.compile(Net().eval(), calib[0], target="sa8295p", out=tmp_path / "q", backends=["onnx"], calibration=calib)
    info = result.report["stages"][0]["artifacts"][0]["info"]
    page = (tmp_path / "q" / "report.html").read_text()
    assert ("layer_sqnr" in info) != ("layer_sqnr_error" in info)
    if "layer_sqnr" in info:
        assert "per-layer SQNR</title>" in page
    else:
        assert "per-layer SQNR not computed: edgevlm.quant.analysis.layer_sqnr failed" in page
