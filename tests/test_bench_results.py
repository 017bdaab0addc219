"""benchmarks/_results.py: the <out>.json + <out>.md pair every benchmark writes, byte for byte as the scripts wrote it."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _results import write_results  # noqa: E402

DATA = {"meta": {"n": 2, "model": "vit-nano"}, "rows": [{"sqnr_db": 41.25, "refused": None}]}
TABLE = "| model | SQNR (dB) |\n|---|---:|\n| vit-nano | 41.2 |\n"
# json.dumps(DATA, indent=...) + "\n", as the scripts wrote it before the helper (and benchmarks/results holds).
JSON = {2: '{\n  "meta": {\n    "n": 2,\n    "model": "vit-nano"\n  },\n  "rows": [\n    {\n      "sqnr_db": 41.25,\n'
           '      "refused": null\n    }\n  ]\n}\n',
        1: '{\n "meta": {\n  "n": 2,\n  "model": "vit-nano"\n },\n "rows": [\n  {\n   "sqnr_db": 41.25,\n'
           '   "refused": null\n  }\n ]\n}\n'}


@pytest.mark.parametrize("indent", [2, 1])  # 1: compile_scale's
def test_the_pair_is_written_as_the_scripts_wrote_it(tmp_path, capsys, indent):
    write_results(tmp_path / "new" / "run", DATA, TABLE, indent=indent)
    assert (tmp_path / "new" / "run.json").read_text() == JSON[indent]
    assert (tmp_path / "new" / "run.md").read_text() == TABLE
    assert capsys.readouterr().out == TABLE  # what print("\n".join(lines)) printed


@pytest.mark.parametrize("out", ["fastvlm-0.5b", "fastvlm-0.5b.json", "fastvlm-0.5b.md"])
def test_either_file_or_a_bare_name_gives_the_same_pair(tmp_path, capsys, out):
    """fuzz.py and bench_runtime_vs_llamacpp.py pass the .json path, the others a bare name, which may hold a dot."""
    write_results(tmp_path / out, DATA, TABLE, echo=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fastvlm-0.5b.json", "fastvlm-0.5b.md"]
    assert capsys.readouterr().out == ""
