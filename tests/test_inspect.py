"""`edgevlm inspect`: reports a build and catches files that changed after compile."""
from edgevlm import cli
import edgevlm


def test_inspect_detects_modified_artifact(tmp_path, capsys):
    out = tmp_path / "b"
    edgevlm.compile("tinyconv", target="cpu-x86_64", out=out, backends=["onnx"], quant="float")
    assert cli.main(["inspect", str(out)]) == 0
    assert "all match" in capsys.readouterr().out
    with open(out / "encoder.onnx", "ab") as f:
        f.write(b"\0")
    assert cli.main(["inspect", str(out)]) == 1
    assert "modified: encoder.onnx" in capsys.readouterr().out


def test_inspect_non_build_is_user_error(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path)]) == 2
    assert "not an edgevlm build" in capsys.readouterr().err
