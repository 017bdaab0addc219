"""CLI: user errors are one line on stderr, exit status 2, no traceback, no build dir left."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from edgevlm import cli


def run_cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "edgevlm.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def assert_user_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgevlm: error:"), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_target_subprocess(tmp_path):
    code, _, err = run_cli("compile", "--target", "sa9999", cwd=tmp_path)
    assert_user_error(code, err, "sa9999", "sa8295p")
    assert not (tmp_path / "build").exists()


def test_targets_command_lists_exact_names(capsys):
    assert cli.main(["targets", "--json"]) == 0
    names = [t["name"] for t in json.loads(capsys.readouterr().out)]
    assert names == ["sa8295p", "snapdragon-8-gen3", "apple-a17pro", "cpu-x86_64", "cpu-arm64"]


def _main_error(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_unknown_model(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _main_error(capsys, "compile", "--model", "no-such-model", "--target", "sa8295p")
    assert_user_error(code, err, "no-such-model")
    assert not (tmp_path / "build").exists()


def test_missing_checkpoint_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _main_error(capsys, "compile", "--model", str(tmp_path / "absent"), "--target", "sa8295p")
    assert_user_error(code, err, "does not exist")
    code, err = _main_error(capsys, "compile", "--model", "someorg/some-model", "--target", "sa8295p")
    assert_user_error(code, err, "never downloads")


def _ckpt(tmp_path, files: dict):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"edgevlm_model": "tinyconv"}))
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def test_pickle_weights_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = _ckpt(tmp_path, {"pytorch_model.bin": b"\x80\x04K\x01."})
    code, err = _main_error(capsys, "compile", "--model", str(d), "--target", "sa8295p")
    assert_user_error(code, err, "pickle", "safetensors")


def test_unreadable_checkpoint(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = _ckpt(tmp_path, {"model.safetensors": b"\xff" * 64})
    code, err = _main_error(capsys, "compile", "--model", str(d), "--target", "sa8295p")
    assert_user_error(code, err, "cannot read weights")
    assert not (tmp_path / "build").exists()


def test_mismatched_checkpoint_names_tensor(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"edgevlm_model": "tinyconv"}))
    save_file({"features.0.0.weight": torch.zeros(5, 3, 3, 3)}, str(d / "model.safetensors"))
    code, err = _main_error(capsys, "compile", "--model", str(d), "--target", "sa8295p")
    assert_user_error(code, err, "features.0.0.weight", "shape")


def test_valid_checkpoint_compiles(tmp_path, capsys):
    from edgevlm.models import build_model

    model = build_model("tinyconv").stages[0].module
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"edgevlm_model": "tinyconv"}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    assert cli.main(["compile", "--model", str(d), "--target", "cpu-x86_64", "--backends", "onnx",
                     "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "manifest.json").exists()


def test_op_the_target_cannot_run(capsys, tmp_path, monkeypatch):
    """A model with an op HTP lacks: the error names the op and the target; no build dir."""
    from edgevlm import models
    from edgevlm.core.stage import Stage
    from edgevlm.models.registry import ModelBundle, ModelEntry

    class Inv(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.inv(x)

    entry = ModelEntry("inv-test", "test", lambda weights_dir=None: ModelBundle("inv-test", [Stage("encoder", Inv(), (torch.eye(3)[None],))]))
    monkeypatch.setitem(models._discover(), "inv-test", entry)
    monkeypatch.chdir(tmp_path)
    code, err = _main_error(capsys, "compile", "--model", "inv-test", "--target", "sa8295p")
    assert_user_error(code, err, "linalg_inv", "sa8295p")
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").iterdir())


def test_unknown_backend(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _main_error(capsys, "compile", "--target", "sa8295p", "--backends", "nope")
    assert_user_error(code, err, "nope")


@pytest.mark.parametrize("argv", [[], ["compile"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        if argv:
            cli.main(argv)
        else:
            raise SystemExit(cli.main(argv))
    assert info.value.code == 2


def test_hub_without_credentials_still_builds(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("QAI_HUB_API_TOKEN", raising=False)
    monkeypatch.delenv("QAIHUB_CLIENT_INI", raising=False)
    out = tmp_path / "b"
    assert cli.main(["compile", "--model", "tinyconv", "--target", "sa8295p", "--backends", "onnx", "--hub", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert sum("AI Hub" in line for line in err.splitlines()) == 1 and "Traceback" not in err
    assert json.loads((out / "report.json").read_text())["hub"]["status"] == "skipped"
