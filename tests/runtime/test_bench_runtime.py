"""`edgevlm bench-runtime` on a tiny GGUF: llama-bench-style rows, clear errors."""
import json

from edgevlm.cli import main
from gguf_corpus import valid_model


def test_bench_runtime_json_rows(tmp_path, capsys):
    p = tmp_path / "tiny.gguf"
    p.write_bytes(valid_model().to_bytes())
    assert main(["bench-runtime", str(p), "-p", "8", "-n", "4", "-t", "2", "-r", "2", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["test"] for r in rows] == ["pp8", "tg4"]
    assert rows[0]["n_prompt"] == 8 and rows[0]["n_gen"] == 0 and rows[1]["n_gen"] == 4
    for r in rows:
        assert r["n_threads"] == 2 and r["avg_ts"] > 0 and r["stddev_ts"] >= 0 and len(r["samples_ts"]) == 2


def test_bench_runtime_markdown(tmp_path, capsys):
    p = tmp_path / "tiny.gguf"
    p.write_bytes(valid_model().to_bytes())
    assert main(["bench-runtime", str(p), "-p", "4", "-n", "0", "-r", "1"]) == 0
    out = capsys.readouterr().out
    assert "| test |" in out and "pp4" in out and "tg" not in out.split("pp4")[1]


def test_bench_runtime_bad_input(tmp_path, capsys):
    assert main(["bench-runtime", str(tmp_path / "missing.gguf")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    assert main(["bench-runtime", str(bad), "-p", "4", "-n", "0"]) == 2
    assert main(["bench-runtime", str(bad), "-t", "0"]) == 2
