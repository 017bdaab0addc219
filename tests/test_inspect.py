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
    assert cli.main(["inspect", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "modified: encoder.onnx" in err and err.count("\n") == 1
    assert cli.main(["inspect", str(out), "--json"]) == 2
    assert '"ok": false' in capsys.readouterr().out
    (out / "encoder.onnx").unlink()
    assert cli.main(["inspect", str(out)]) == 2
    assert "missing: encoder.onnx" in capsys.readouterr().err


def test_unreadable_manifest_is_a_damaged_build_for_every_command(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("{not json")
    (tmp_path / "img.png").write_bytes(b"")
    for argv in (["inspect", str(tmp_path)], ["eval", str(tmp_path), "--n", "1"], ["profile", str(tmp_path)],
                 ["run", str(tmp_path), "--image", str(tmp_path / "img.png"), "--prompt", "hi"]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "is damaged: cannot read manifest.json" in err and err.count("\n") == 1, (argv, err)


def test_inspect_non_build_is_user_error(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path)]) == 2
    assert "not an edgevlm build" in capsys.readouterr().err
