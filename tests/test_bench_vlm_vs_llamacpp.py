"""benchmarks/bench_vlm_vs_llamacpp.py: reading llama-mtmd-cli's timestamped log, /usr/bin/time -v and `edgevlm run --json`.

The log samples follow mtmd-cli.cpp's single-turn path of the llama.cpp the benchmark builds (entries
and their order as it writes them with --log-jsonl --log-timestamps); the last test runs that binary
when the benchmark has built it.
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_vlm_vs_llamacpp as bench  # noqa: E402


def _entry(t_us, level, msg):
    return json.dumps({"type": "log", "time": t_us, "level": level, "msg": msg})


def _log(tokens, eog=False, shuffle_streams=True):
    """(stdout, stderr) of a run: image in at 1.0 s, encoding 1.2-1.5 s, prompt done 1.9 s, tokens every 50 ms."""
    err = [json.dumps({"type": "fit_memory_breakdown", "data": {}}),
           _entry(500_000, "info", "main: loading model: text.gguf\n"),
           _entry(1_000_000, "warn", "WARN: This is an experimental CLI for testing multimodal capability.\n"),
           _entry(1_000_000, "warn", "      " + bench.IMAGE_IN_MARK + "\n"),
           _entry(1_200_000, "info", "encoding mtmd batch, n_chunks = 1 (done = 1, total = 3)\n"),
           _entry(1_500_000, "info", "mtmd batch encoding done in 300 ms\n")]
    out = [_entry(1_900_000, "none", "\n")]
    t = 1_950_000
    for tok in tokens:
        out.append(_entry(t, "none", tok))
        t += 50_000
    if eog:
        out.append(_entry(t, "none", "\n"))
    out.append(_entry(t + 1000, "none", "\n\n"))
    if shuffle_streams:  # the two pipes are read separately: order across them is lost
        return "\n".join(out), "\n".join(err) + "\n\tMaximum resident set size (kbytes): 1024\n"
    return "\n".join(err + out), ""


def test_mtmd_log_timings():
    """Times exact to the microsecond the log states: TTFT 950 ms, 5 tokens over 200 ms = 20 t/s."""
    out, err = _log(["a", "b", "\n", "c", "d"])
    r = bench.parse_mtmd_log(out + "\n" + err, n_predict=5)
    assert r["ttft_ms"] == pytest.approx(950.0, abs=1e-9)
    assert r["encode_ms"] == 300.0
    assert r["before_encode_ms"] == pytest.approx(200.0, abs=1e-9)
    assert r["prefill_after_encode_ms"] == pytest.approx(400.0, abs=1e-9)
    assert r["new_tokens"] == 5 and r["answer"] == "ab\ncd"
    assert r["decode_tokens_per_s"] == pytest.approx(20.0, rel=1e-12)


def test_mtmd_log_eog_marker_is_not_a_token():
    """Stopped at end-of-generation after 3 of 8: generate_response's "\\n" is not counted."""
    out, err = _log(["a", "b", "c"], eog=True)
    r = bench.parse_mtmd_log(err + "\n" + out, n_predict=8)
    assert r["new_tokens"] == 3 and r["answer"] == "abc"
    # all 8 generated and the last one is a newline: it is a token
    out, err = _log(list("abcdefg") + ["\n"])
    assert bench.parse_mtmd_log(out + err, n_predict=8)["new_tokens"] == 8


def test_mtmd_log_order_independent_of_lines():
    """Entries interleaved in any line order parse the same (they are sorted by llama.cpp's clock)."""
    out, err = _log(["x", "y", "z"], shuffle_streams=False)
    lines = (out + err).splitlines()
    random.Random(0).shuffle(lines)
    ref = bench.parse_mtmd_log(out, n_predict=3)
    # entries of one instant (the two WARN lines) keep their relative order only within a stream; the
    # image-in mark is found by its text, so a shuffle does not change the result
    assert bench.parse_mtmd_log("\n".join(lines), n_predict=3) == ref


@pytest.mark.parametrize("drop", [bench.IMAGE_IN_MARK, "mtmd batch encoding done", '"msg": "\\n"}'])
def test_mtmd_log_missing_line_is_one_clear_error(drop):
    out, err = _log(["a", "b"])
    text = "\n".join(line for line in (out + "\n" + err).splitlines() if drop not in line)
    with pytest.raises(ValueError, match="llama-mtmd-cli's log has no"):
        bench.parse_mtmd_log(text, n_predict=2)


def test_peak_rss_from_time_v():
    assert bench.peak_rss_mib("\tMaximum resident set size (kbytes): 2097152\n\tExit status: 0\n") == 2048.0
    with pytest.raises(ValueError, match="Maximum resident set size"):
        bench.peak_rss_mib("Command exited with non-zero status 1\n")


def test_edgevlm_figures_ttft_excludes_the_first_decode_step():
    run = {"answer": "hi", "token_ids": [5, 6, 7], "backend": "onnx", "threads": 2,
           "timings": {"image_read_ms": 2.0, "preprocess_ms": 3.0, "encoder_ms": 100.0, "projector_ms": 5.0,
                       "prefill_ms": 200.0, "prompt_tokens": 276, "image_to_logits_ms": 310.0, "ttft_ms": 340.0,
                       "new_tokens": 3, "decode_tokens_per_s": 33.0}}
    f = bench.edgevlm_figures(run)
    assert f["ttft_ms"] == 312.0 and f["runner_ttft_ms"] == 342.0
    assert f["decode_tokens_per_s"] == 33.0 and f["prompt_tokens"] == 276


def test_summary_is_the_median_of_rounds():
    rows = [{"engine": "edgevlm", "mmproj": None, "round": i, "ttft_ms": v, "answer": "a"} for i, v in
            enumerate([300.0, 100.0, 200.0])]
    (s,) = bench.summarize(rows)
    assert s["ttft_ms"] == 200.0 and s["rounds"] == 3 and "answer" not in s


def _mtmd_cli():
    exe = bench.rt.WORK / "llama-build-noamx" / "bin" / "llama-mtmd-cli"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


def _converted():
    """(text GGUF, mmproj GGUF) that a benchmark run converted and cached, if any."""
    for d in sorted(bench.WORK.glob("*")):
        text, mmproj = sorted(d.glob("text-*.gguf")), sorted(d.glob("mmproj-*.gguf"))
        if text and mmproj:
            return text[0], mmproj[0]
    return None


@pytest.mark.slow
@pytest.mark.skipif(_mtmd_cli() is None or _converted() is None,
                    reason="no llama-mtmd-cli build or converted GGUF files (run benchmarks/bench_vlm_vs_llamacpp.py)")
def test_parser_reads_a_real_mtmd_cli_run(tmp_path):
    """The benchmark's llama-mtmd-cli on its cached conversion, 3 tokens: every figure parses and is plausible
    (TTFT after the encoding, decode rate > 0, tokens <= 3, peak RSS above the GGUF files' size)."""
    text, mmproj = _converted()
    image = bench.bench_image(tmp_path / "img.png", 512)
    r = bench.run_llama(_mtmd_cli(), text, mmproj, image, "What is in this image?", 3, 2, 590)
    assert 1 <= r["new_tokens"] <= 3
    assert r["ttft_ms"] > r["encode_ms"] > 0 and r["prefill_after_encode_ms"] > 0
    assert r["new_tokens"] == 1 or r["decode_tokens_per_s"] > 0
    assert r["peak_rss_mib"] * 2**20 > text.stat().st_size + mmproj.stat().st_size


def test_run_json_has_the_timings_the_benchmark_reads(build, tmp_path):
    """`edgevlm run --json` on the default build: one object whose answer and token ids are the streamed run's,
    with every timing edgevlm_figures reads, image_to_logits_ms <= ttft_ms (the first token also waits for its
    decode step) and prompt_tokens = the build's bos + image tokens + prompt ids."""
    from edgevlm.data.shapes import make_sample
    from edgevlm.runner import BuildRunner

    sample = make_sample(777, 0, json.loads((build / "vlm.json").read_text())["image_size"])
    sample.image.save(tmp_path / "img.png")
    args = ["run", build, "--image", tmp_path / "img.png", "--prompt", sample.prompt, "--threads", "1",
            "--max-new-tokens", "6"]
    run = lambda *extra: subprocess.run([sys.executable, "-m", "edgevlm.cli", *map(str, args), *extra],  # noqa: E731
                                        capture_output=True, text=True, timeout=300)
    plain, js = run("--quiet"), run("--json")
    assert plain.returncode == 0 and js.returncode == 0, js.stderr[-2000:]
    out = json.loads(js.stdout)
    assert out["answer"] == plain.stdout.strip() and len(out["token_ids"]) == out["timings"]["new_tokens"]
    f = bench.edgevlm_figures(out)
    t = out["timings"]
    assert 0 < t["image_to_logits_ms"] <= t["ttft_ms"] and f["ttft_ms"] <= f["runner_ttft_ms"]
    assert t["prompt_tokens"] == len(BuildRunner(build, threads=1).prompt_ids(sample.prompt))
