"""CLI output that survives a pipe: listings print full names whatever the width, plain text when stdout is
not a terminal, and JSON with --json; a compile logs one line per finished step."""
import json
import re
import subprocess
import sys

import pytest

from edgevlm import cli
from edgevlm.commands import _table


def _sh(pipeline: str, cwd=None) -> subprocess.CompletedProcess:
    """A real shell pipeline; ``edgevlm`` is this interpreter's CLI, COLUMNS as narrow as a CI log's can be."""
    script = pipeline.replace("edgevlm ", f"{sys.executable} -m edgevlm.cli ")
    return subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={"PATH": "/usr/bin:/bin", "COLUMNS": "40", "HOME": "/tmp"})


@pytest.mark.parametrize("pipeline", [
    "edgevlm targets | grep -w sa8295p",
    "edgevlm targets | grep -w snapdragon-8-gen3",
    "edgevlm models | grep -w autoneural-nano",
    "edgevlm models | grep -w enc-efficientvit-m-nano",
])
def test_listing_through_a_pipe_keeps_full_names(pipeline):
    r = _sh(pipeline)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "…" not in r.stdout and "┃" not in r.stdout  # plain text, nothing ellipsized


def test_every_target_and_model_name_is_in_the_piped_listing():
    from edgevlm.models.zoo.vlms import SPECS
    from edgevlm.targets import list_targets

    targets = _sh("edgevlm targets | cat").stdout.splitlines()
    assert {t.name for t in list_targets()} <= {line.split()[0] for line in targets if line.strip()}
    models = _sh("edgevlm models | cat").stdout.splitlines()
    assert set(SPECS) <= {line.split()[0] for line in models if line.strip()}


@pytest.mark.parametrize("command, key", [("targets", None), ("models", "vlms")])
def test_listings_have_json(command, key, capsys):
    assert cli.main([command, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data if key is None else data[key]
    assert rows and all("name" in r for r in rows)


def test_inspect_through_a_pipe_and_json(tmp_path):
    import edgevlm

    out = tmp_path / "a-build-dir-whose-name-is-longer-than-the-column"
    edgevlm.compile("tinyconv", target="cpu-x86_64", out=out, backends=["onnx"], quant="float")
    r = _sh(f"edgevlm inspect {out} | grep -F encoder.onnx")
    assert r.returncode == 0, r.stderr
    r = _sh(f"edgevlm inspect {out} --json")
    assert json.loads(r.stdout)["ok"] is True


def test_terminal_table_never_cuts_the_name_column(monkeypatch, capsys):
    """In a terminal narrower than the table, rich is widened to the longest word: names stay whole."""
    monkeypatch.setattr(_table, "is_terminal", lambda stream=None: True)
    monkeypatch.setenv("COLUMNS", "30")
    long = "a-target-name-much-longer-than-thirty-columns"
    _table.print_table("t", ("name", "notes"), [(long, "several words that may wrap over lines")])
    out = capsys.readouterr().out
    assert long in out and "…" not in out


def test_plain_table_aligns_and_keeps_cells():
    text = _table.plain_table("title", ("name", "n"), [("x", "1"), ("longer-name", "22")], caption="end", right=("n",))
    assert text.splitlines() == ["title", "name          n", "x             1", "longer-name  22", "end"]


def test_compile_logs_one_line_per_finished_step(tmp_path):
    """stdout to a pipe: a line per stage step (stage, backend, seconds) as it finishes, then the summary."""
    r = _sh(f"edgevlm compile --model tinyconv --target cpu-x86_64 --backends onnx,tvm --quant float --out {tmp_path / 'b'} | cat")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("edgevlm: ")]
    steps = [ln.split(":")[1].strip() for ln in lines]
    assert steps == ["encoder capture + passes", "encoder onnx lowered + verified", "encoder tvm lowered + verified"]
    # "<seconds> s (total <seconds> s, peak RSS <GB> GB)"
    assert all(re.fullmatch(r"\d+\.\d\d s \(total \d+\.\d s, peak RSS \d+\.\d GB\)", ln.split(": ", 2)[2]) for ln in lines), lines
    assert "build: " in r.stdout.splitlines()[-1]


def test_compile_piped_into_head_still_builds(tmp_path):
    """The reader of the progress lines leaves after one: the compile goes on and the build is written."""
    out = tmp_path / "b"
    r = _sh(f"edgevlm compile --model tinyconv --target cpu-x86_64 --backends onnx --quant float --out {out} | head -1")
    assert r.stdout.startswith("edgevlm: encoder capture + passes:"), (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and (out / "manifest.json").is_file()
