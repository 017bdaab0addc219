"""edgevlm sweep (edgevlm.sweep), sharded eval (edgevlm.sharded_eval) and the Ray-or-serial engine (edgevlm.parallel).

Fast: the grid, the resume logic (serial, with a stand-in for the compile + eval of a point), the
page's fronts and recommendation, the page's structure, user errors, and serial vs sharded eval of
the default build (on local Ray with 2 CPUs when Ray is installed).  Slow: a real 4-point sweep of
autoneural-nano on sa8295p through a local Ray with 2 CPUs (jsonl, resume, page) and one of its
points again without Ray.
"""
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from edgevlm import parallel
from edgevlm.errors import InputError
from edgevlm.sweep import execute, grid, page


def run_cli(*args, cwd=None, timeout=1800):
    proc = subprocess.run([sys.executable, "-m", "edgevlm.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def assert_user_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgevlm: error:") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


# -- grid ---------------------------------------------------------------------

def test_expand_quant_is_the_cartesian_product():
    assert grid.expand_quant("encoder=w8a16|w8a8,llm=w4a16|w8a16") == [
        "encoder=w8a16,llm=w4a16", "encoder=w8a16,llm=w8a16", "encoder=w8a8,llm=w4a16", "encoder=w8a8,llm=w8a16"]
    assert grid.expand_quant("w8a16|w4a16") == ["w8a16", "w4a16"]
    assert grid.expand_quant("") == [""]


def test_grid_points_all_tokens_once_and_stable_keys():
    pts = grid.expand("autoneural-nano", "sa8295p", ["encoder=w8a16|w8a8,llm=w4a16|w8a16"], "all|4|1", "dct|merge",
                      300, 12345, True)
    # 4 quant settings x (all + 2 counts x 2 reductions)
    assert len(pts) == 4 * 5 and len({p.key for p in pts}) == 20 and len({p.slug for p in pts}) == 20
    assert sum(p.vision_tokens is None for p in pts) == 4 and all(p.token_reduce is None for p in pts if p.vision_tokens is None)
    again = grid.expand("autoneural-nano", "sa8295p", ["encoder=w8a16|w8a8,llm=w4a16|w8a16"], "all|4|1", "dct|merge",
                        300, 12345, True)
    assert [p.key for p in again] == [p.key for p in pts]
    other_n = grid.expand("autoneural-nano", "sa8295p", ["encoder=w8a16"], "4", "dct", 100, 12345, True)
    assert other_n[0].key not in {p.key for p in pts}  # eval-n is part of a point's identity
    # repeated --quant: the union, duplicates once
    three = grid.expand("autoneural-nano", "sa8295p", ["encoder=w8a16|w8a8,llm=w4a16", "encoder=w8a16,llm=w8a16|w4a16"],
                        "4", "dct", 10, 1, True)
    assert [p.quant for p in three] == ["encoder=w8a16,llm=w4a16", "encoder=w8a8,llm=w4a16", "encoder=w8a16,llm=w8a16"]


@pytest.mark.parametrize("kwargs, needle", [
    ({"targets": "sa9999"}, "sa9999"),
    ({"quants": ["float"]}, "float"),
    ({"quants": ["encoder=w8a16|"]}, "empty alternative"),
    ({"quants": ["encoder=w8a16,encoder=w8a8"]}, "twice"),
    ({"vision_tokens": "all|0"}, "'0'"),
    ({"vision_tokens": "four"}, "'four'"),
    ({"token_reduce": "dct|magic"}, "magic"),
    ({"eval_n": 0}, "--eval-n"),
])
def test_grid_rejects_bad_settings(kwargs, needle):
    args = dict(model="autoneural-nano", targets="sa8295p", quants=["w8a16"], vision_tokens="4", token_reduce="dct",
                eval_n=10, seed=1, htp_verify=True) | kwargs
    with pytest.raises(Exception) as info:
        grid.expand(**args)
    assert isinstance(info.value, (InputError, KeyError)) and needle in str(info.value)


def test_cli_bad_input_is_one_line(tmp_path):
    code, _, err = run_cli("sweep", "--target", "sa8295p", "--vision-tokens", "all|x", "--out", str(tmp_path / "s"))
    assert_user_error(code, err, "'x'")
    assert not (tmp_path / "s").exists()
    code, _, err = run_cli("eval", "autoneural-nano", "--n", "4", "--shards", "2")
    assert_user_error(code, err, "--shards")


# -- resume (serial engine, a stand-in for one compile + eval) -----------------

def _fake_record(point: grid.Point, build_dir: str, backends=None) -> dict:
    """What run_point returns, with figures derived from the settings (no compile)."""
    t = point.vision_tokens or 16
    acc = {"encoder=w8a16": 0.9, "encoder=w8a8": 0.8}[point.quant] - (0.3 if t == 1 else 0.0)
    return {"format": 1, "key": point.key, "settings": point.settings(), "build": build_dir, "status": "ok",
            "exact_match": acc, "n": point.eval_n, "vision_backend": "qnn", "by_question": {},
            "estimate": {"label": "estimated", "ttft_ms": 1.0 + t * (0.5 if point.quant == "encoder=w8a16" else 0.3),
                         "decode_tokens_per_s": 700.0, "stages_ms": {}, "schemes": {}},
            "compile_s": 1.0, "eval_s": 1.0, "seconds": 2.0}


def test_sweep_streams_and_resumes(tmp_path, monkeypatch):
    calls = []

    def fake(point, build_dir, backends=None, hub=False):
        calls.append(point.key)
        assert hub is False
        return _fake_record(point, build_dir)

    monkeypatch.setattr(execute, "run_point", fake)
    pts = grid.expand("autoneural-nano", "sa8295p", ["encoder=w8a16|w8a8"], "all|4|1", "dct", 10, 1, True)
    serial = parallel.Engine("serial", 1)
    seen = []
    execute.run_sweep(pts, tmp_path, serial, on_done=lambda p, r: seen.append(p.key))
    assert calls == seen == [p.key for p in pts]
    lines = (tmp_path / execute.JSONL).read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [p.key for p in pts]

    calls.clear()
    execute.run_sweep(pts, tmp_path, serial)
    assert calls == []  # every point already finished

    # A run killed mid-write leaves a torn last line, and a failed point is retried.
    kept = lines[:2] + [json.dumps({**json.loads(lines[2]), "status": "failed", "error": "x"})]
    (tmp_path / execute.JSONL).write_text("\n".join(kept) + '\n{"key": "abc", "sett')
    records, bad = execute.read_records(tmp_path / execute.JSONL)
    assert bad == 1 and len(records) == 3
    started = []
    execute.run_sweep(pts, tmp_path, serial, on_start=lambda todo, before: started.append((len(todo), before)))
    assert started == [(len(pts) - 2, 2)] and calls == [p.key for p in pts[2:]]


def test_hub_is_passed_to_every_point_and_recorded(tmp_path, monkeypatch):
    """--hub: each point's compile runs AI Hub; measured stage latencies (or why it was skipped) join the record."""
    hubs = []

    def fake(point, build_dir, backends=None, hub=False):
        hubs.append(hub)
        return _fake_record(point, build_dir)

    monkeypatch.setattr(execute, "run_point", fake)
    pts = grid.expand("autoneural-nano", "sa8295p", ["encoder=w8a16"], "all", "dct", 10, 1, True)
    execute.run_sweep(pts, tmp_path, parallel.Engine("serial", 1), hub=True)
    assert hubs == [True]
    skipped = {"hub": {"status": "skipped", "reason": "no qai-hub credentials"}, "stages": [{"name": "encoder"}]}
    assert execute._hub_record(skipped) == {"status": "skipped", "reason": "no qai-hub credentials", "device": None,
                                            "label": "measured on the device (Qualcomm AI Hub)", "stages_ms": {}}
    measured = {"hub": {"status": "ok", "device": "SA8295P ADP"},
                "stages": [{"name": "encoder", "device_latency": {"latency_ms": 1.25}}, {"name": "projector"}]}
    assert execute._hub_record(measured)["stages_ms"] == {"encoder": 1.25}


# -- page ---------------------------------------------------------------------

def _records():
    pts = grid.expand("autoneural-nano", "sa8295p", ["encoder=w8a16|w8a8"], "all|4|1", "dct", 100, 1, True)
    return [_fake_record(p, f"/tmp/b/{p.slug}") for p in pts]


def test_pareto_and_recommendation():
    recs = _records()
    by = {(r["settings"]["quant"], r["settings"]["vision_tokens"]): r for r in recs}
    front = page.pareto(recs, "ttft_ms", minimize_x=True)
    # (TTFT, accuracy): w8a8 (1.3, .5) (2.2, .8) (5.8, .8); w8a16 (1.5, .6) (3, .9) (9, .9) for 1, 4, all tokens.
    expect = {by[(q, t)]["key"] for q in ("encoder=w8a8", "encoder=w8a16") for t in (1, 4)}
    assert front == expect
    # The best is 0.9 with n=100: one standard error is 0.03, so nothing at 0.8 qualifies; the fastest 0.9 point wins.
    chosen, floor = page.recommend(recs)
    assert chosen is by[("encoder=w8a16", 4)] and floor == pytest.approx(0.9 - 0.03)
    # With a noisier evaluation (n=4: s.e. 0.15) the faster 0.8 point is within one standard error.
    for r in recs:
        r["n"] = 4
    chosen, _ = page.recommend(recs)
    assert chosen is by[("encoder=w8a8", 4)]


def test_pareto_compares_estimates_at_three_digits():
    """1 vs 4 vision tokens move the decode estimate by 3e-4 tokens/s: not a reason to be on the front."""
    recs = _records()[:2]
    recs[0]["estimate"]["decode_tokens_per_s"], recs[0]["exact_match"] = 699.7665, 0.3
    recs[1]["estimate"]["decode_tokens_per_s"], recs[1]["exact_match"] = 699.7662, 0.5
    assert page.pareto(recs, "decode_tokens_per_s", minimize_x=False) == {recs[1]["key"]}
    recs[0]["estimate"]["decode_tokens_per_s"] = 705.0
    assert page.pareto(recs, "decode_tokens_per_s", minimize_x=False) == {recs[0]["key"], recs[1]["key"]}


def test_page_structure():
    recs = _records() + [{**_fake_record(grid.expand("autoneural-nano", "sa8295p", ["encoder=w8a8"], "2", "merge", 100, 1,
                                                     True)[0], "/tmp/b/x"), "status": "failed", "error": "LoweringError: op"}]
    text = page.render(recs, "t")
    assert "<script" not in text and not re.search(r"(src|href)=\"?https?:", text)
    svgs = re.findall(r"<svg.*?</svg>", text, flags=re.S)
    assert len(svgs) == 2
    ok = [r for r in recs if r["status"] == "ok"]
    for svg, x, minimize in zip(svgs, ("ttft_ms", "decode_tokens_per_s"), (True, False)):
        root = ET.fromstring(svg)  # well-formed SVG
        circles = [c for c in root.iter() if c.tag.endswith("circle")]
        front = {c.get("data-key") for c in circles if c.get("class") == "front"}
        assert front == page.pareto(ok, x, minimize)
        assert sum(c.get("class") == "point" for c in circles) == len(ok) - len(front)
        assert sum(c.get("class") == "recommended" for c in circles) == 1
    chosen, _ = page.recommend(ok)
    assert "Recommended on sa8295p</b>: " + page.label(chosen) in text
    assert text.count("<tr class=chosen>") == 1 and "LoweringError: op" in text


def test_page_renders_in_chromium(tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    path = tmp_path / "sweep.html"
    path.write_text(page.render(_records(), "t"))
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run(cmd + ["--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=180, check=True).stdout
    front = page.pareto(_records(), "ttft_ms", True)
    assert dom.count("<svg") == 2 and dom.count('<circle class="recommended"') == 2
    assert all(f'data-key="{k}"' in dom for k in front)
    shot = tmp_path / "shot.png"
    subprocess.run(cmd + [f"--screenshot={shot}", "--window-size=1100,1600", path.as_uri()], capture_output=True,
                   timeout=180, check=True)
    from PIL import Image

    colors = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    orange = sum(n for n, rgb in colors if rgb == (0xE0, 0x7B, 0x22))  # the front's color, painted
    assert orange > 200, orange


# -- sharded eval -------------------------------------------------------------

def test_split_covers_in_order():
    from edgevlm.sharded_eval import split

    assert split(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert split(2, 5) == [(0, 1), (1, 2)] and split(7, 1) == [(0, 7)]


@pytest.mark.parametrize("use_ray", [False, pytest.param(True, marks=pytest.mark.slow)])  # Ray: 30 s, make test-slow
def test_sharded_eval_equals_serial(build, use_ray):
    """Same samples, same answers: the result (exact match, per question, misses) equals the serial run's."""
    from edgevlm.commands.eval import answerer_for
    from edgevlm.data.evaluate import evaluate
    from edgevlm.sharded_eval import evaluate_sharded

    if use_ray:
        pytest.importorskip("ray")
    answer, size, _ = answerer_for(str(build))
    serial = evaluate(answer, n=6, seed=7, image_size=size)
    engine = parallel.start(workers=2, want_ray=use_ray)
    try:
        assert engine.kind == ("ray" if use_ray else "serial")
        sharded = evaluate_sharded(build, None, 6, 7, size, engine, shards=3)
    finally:
        parallel.stop(engine)
    assert {k: sharded[k] for k in serial} == serial
    assert [(s["start"], s["stop"]) for s in sharded["shards"]] == [(0, 2), (2, 4), (4, 6)]
    assert all(s["samples_per_s"] > 0 for s in sharded["shards"])
    assert sharded["engine"].startswith("local Ray with 2 CPUs" if use_ray else "serial")


# -- the real thing -----------------------------------------------------------

SMALL = ["--model", "autoneural-nano", "--target", "sa8295p", "--quant", "w8a16", "--vision-tokens", "4|1",
         "--token-reduce", "dct|merge", "--eval-n", "3", "--backends", "qnn", "--no-htp-verify"]


@pytest.mark.slow
def test_four_point_sweep_on_local_ray(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "s"
    code, stdout, err = run_cli("sweep", *SMALL, "--workers", "2", "--out", str(out))
    assert code == 0, err
    assert "4 to run on local Ray with 2 CPUs" in stdout
    assert len(re.findall(r"^edgevlm: sweep point \d/4 ", stdout, flags=re.M)) == 4  # one line a point in a pipe
    lines = (out / execute.JSONL).read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert len(recs) == 4 and all(r["status"] == "ok" and r["vision_backend"] == "qnn" and r["n"] == 3 for r in recs)
    assert all((out / "builds").joinpath(r["build"].rsplit("/", 1)[-1],
                                                                                "report.json").is_file() for r in recs)
    tokens = {r["settings"]["vision_tokens"]: r["num_image_tokens"] for r in recs}
    assert tokens == {4: 4, 1: 1}
    for r in recs:
        report = json.loads((out / "builds" / r["build"].rsplit("/", 1)[-1] / "report.json").read_text())
        ms = {s["name"]: s["estimate"]["total_ms"] for s in report["stages"]}
        assert r["estimate"]["ttft_ms"] == pytest.approx(ms["encoder"] + ms["projector"] + ms["llm-prefill"])
        assert r["estimate"]["decode_tokens_per_s"] == pytest.approx(1e3 / ms["llm-decode"])
    html_text = (out / "sweep.html").read_text()
    assert html_text.count('<circle class="recommended"') == 2 and 'class="front"' in html_text

    # Rerun: nothing recomputed.  Drop one record (as if killed before it finished): only that one runs.
    code, stdout, err = run_cli("sweep", *SMALL, "--workers", "2", "--out", str(out))
    assert code == 0 and "4 already in sweep.jsonl, 0 to run" in stdout, stdout + err
    (out / execute.JSONL).write_text("\n".join(lines[:3]) + "\n")
    code, stdout, err = run_cli("sweep", *SMALL, "--workers", "2", "--out", str(out))
    assert code == 0 and "3 already in sweep.jsonl, 1 to run" in stdout, stdout + err
    again = json.loads((out / execute.JSONL).read_text().splitlines()[-1])
    assert again["key"] == recs[3]["key"] and again["exact_match"] == recs[3]["exact_match"]

    # Without Ray (--workers 0): the same point gives the same record figures.
    one = tmp_path / "serial"
    code, stdout, err = run_cli("sweep", *SMALL[:6], "--vision-tokens", "1", "--token-reduce", "merge", *SMALL[10:],
                                "--workers", "0", "--out", str(one))
    assert code == 0 and "serial" in stdout, stdout + err
    rec = json.loads((one / execute.JSONL).read_text())
    twin = next(r for r in recs if r["key"] == rec["key"])
    assert rec["exact_match"] == twin["exact_match"] and rec["estimate"] == twin["estimate"]


def test_a_dead_worker_is_a_failed_task_not_the_end(tmp_path):
    """A Ray worker killed under a task (here: it exits) gives that task's ``crashed`` value; the others finish."""
    pytest.importorskip("ray")
    import math

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    engine = parallel.start(workers=2, want_ray=True)
    try:
        got = dict(parallel.as_completed(engine, _exit_or_sqrt, [(4.0,), (-1.0,), (9.0,)],
                                         crashed=lambda i, exc: f"crashed {type(exc).__name__}"))
    finally:
        parallel.stop(engine)
    assert got == {0: math.sqrt(4.0), 1: "crashed WorkerCrashedError", 2: 3.0}


def _exit_or_sqrt(x):
    import math
    import os

    if x < 0:
        os._exit(1)
    return math.sqrt(x)
