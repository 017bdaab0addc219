"""examples/: the folder captioner and the C app agree with BuildRunner and fail cleanly on bad input."""
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from edgevlm.data.shapes import make_sample, write_dataset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LINE = re.compile(r"^(?P<name>\S+): (?P<caption>.+) \((?P<ms>\d+\.\d) ms\)$")
SUMMARY = re.compile(r"^captioned (?P<n>\d+) images, (?P<failed>\d+) failed, mean (?P<ms>\d+\.\d) ms per image$")


def run(*args, timeout=300):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)


# -- caption_folder.py -----------------------------------------------------------

def test_caption_folder_one_line_per_image_and_summary(build, runner, tmp_path):
    folder = write_dataset(tmp_path / "shapes", 3, seed=5, image_size=runner.meta["image_size"])  # + labels.jsonl
    (folder / "broken.png").write_bytes(b"not a png")
    proc = run(sys.executable, EXAMPLES / "caption_folder.py", build, folder, "--threads", "1")
    assert proc.returncode == 1, proc.stderr  # one image failed
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, proc.stdout
    parsed = [LINE.match(line) for line in lines[:3]]
    assert all(parsed), lines
    assert [m["name"] for m in parsed] == ["0.png", "1.png", "2.png"]  # sorted; broken.png (last) failed
    from edgevlm.runner import open_image

    for m in parsed:  # the captions are BuildRunner's greedy answers
        assert m["caption"] == runner.answer(open_image(folder / m["name"]), "describe the image.").text
    summary = SUMMARY.match(lines[3])
    assert summary and (summary["n"], summary["failed"]) == ("3", "1"), lines[3]
    mean = sum(float(m["ms"]) for m in parsed) / 3
    assert abs(float(summary["ms"]) - mean) <= 0.1  # the mean of the per-image times, to print rounding
    err = proc.stderr.splitlines()
    assert err.count("warning: skipping 'labels.jsonl': not an image file") == 1
    assert [e for e in err if e.startswith("broken.png: failed: ")], err


@pytest.mark.parametrize("case", ["bad_build", "empty_folder"])
def test_caption_folder_bad_input_exits_2_with_one_line(case, build, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    build_dir = tmp_path if case == "bad_build" else build
    proc = run(sys.executable, EXAMPLES / "caption_folder.py", build_dir, empty, "--threads", "1")
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert ("not an edgevlm build" if case == "bad_build" else "holds no image files") in proc.stderr


# -- c_app ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def c_app(tmp_path_factory):
    if not (shutil.which("gcc") and shutil.which("make")):
        pytest.skip("gcc and make are needed to build examples/c_app")
    out = tmp_path_factory.mktemp("c_app")
    proc = run("make", "-s", "-C", EXAMPLES / "c_app", f"OUT={out}", "CC=gcc")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr  # main.c and the runtime build cleanly with -Wall -Wextra
    return out / "vlm_answer"


def write_inputs(build, image, prompt, out):
    proc = run(sys.executable, EXAMPLES / "write_inputs.py", build, image, prompt, "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("index", [0, 1, 2])
def test_c_app_answers_as_the_python_runner(index, build, runner, c_app, tmp_path):
    sample = make_sample(seed=11, index=index, image_size=runner.meta["image_size"])
    sample.image.save(tmp_path / "image.png")
    inputs = write_inputs(build, tmp_path / "image.png", sample.prompt, tmp_path / "inputs.bin")
    proc = run(c_app, build / "llm.gguf", inputs, "-n", "24", "-t", "1")
    assert proc.returncode == 0, proc.stderr
    tokens, answer, timings = proc.stdout.splitlines()
    expected = runner.answer(sample.image, sample.prompt, max_new_tokens=24)
    assert expected.tokens, "the build answered nothing: the comparison would be vacuous"
    assert [int(t) for t in tokens.removeprefix("tokens:").split()] == expected.tokens  # same greedy ids
    assert answer == f"answer: {expected.text}"
    assert re.match(r"load [\d.]+ ms \| prefill \d+ tokens [\d.]+ ms \| decode \d+ tokens", timings), timings


def corrupt(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[:-6]
    if how == "short_header":
        return data[:10]
    if how == "trailing":
        return data + b"\0"
    if how == "magic":
        return b"GGUF" + data[4:]
    if how == "hidden":  # a consistent file whose rows are half the model's width
        n_image, hidden, n_prompt = struct.unpack_from("<3I", data, 8)
        rows = data[20:20 + 4 * n_image * hidden]
        return data[:12] + struct.pack("<I", hidden // 2) + data[16:20] + rows[:len(rows) // 2] + data[len(data) - 4 * n_prompt:]
    if how == "huge_count":
        return data[:8] + struct.pack("<I", 0xFFFFFFFF) + data[12:]
    raise ValueError(how)


@pytest.fixture(scope="module")
def good_inputs(build, runner, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    sample = make_sample(seed=11, index=0, image_size=runner.meta["image_size"])
    sample.image.save(tmp / "image.png")
    return write_inputs(build, tmp / "image.png", sample.prompt, tmp / "inputs.bin").read_bytes()


@pytest.mark.parametrize("how, message", [
    ("truncated", "truncated"), ("short_header", "truncated header"), ("trailing", "trailing bytes"),
    ("magic", "bad magic"), ("hidden", "n_embd"), ("huge_count", "n_image outside"),
])
def test_c_app_rejects_bad_inputs(how, message, build, good_inputs, c_app, tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(corrupt(good_inputs, how))
    proc = run(c_app, build / "llm.gguf", bad)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)  # an error exit, not a signal (negative) or success
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("vlm_answer: ") and message in proc.stderr, proc.stderr
