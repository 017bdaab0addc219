"""An interrupted compile leaves no temporary build dir: SIGINT and SIGTERM clean up at once, and a
compile killed beyond help (SIGKILL) has its `.NAME.tmp-<pid>-*` dir removed by the next compile."""
import os
import signal
import subprocess
import sys
import time

import pytest

import edgevlm
from edgevlm.compiler.pipeline import clear_stale_dirs


def _start_compile(out):
    """`edgevlm compile` of the default model in a subprocess (SIGINT at its default, even under a shell
    that ignores it for background jobs)."""
    argv = [sys.executable, "-m", "edgevlm.cli", "compile", "--target", "sa8295p", "--backends", "onnx",
            "--eval-n", "0", "--out", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_until_lowering(proc, out, timeout=900):
    """The temporary dir, once the first backend has started writing into it (logs/ exists).

    The timeout only guards a hang (a compile that ends first fails the assert below): on an idle
    2-core machine lowering starts within a minute, but a CI machine shared with a long compile took
    over 240 s (2026-12-04, fresh-clone `.ci/run` at nice 19 beside a 450M sa8295p compile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tmps = [d for d in out.parent.glob(f".{out.name}.tmp-*") if (d / "logs").is_dir()]
        if tmps:
            return tmps[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.kill()
    pytest.fail("compile did not start lowering in time")


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_signal_removes_the_temporary_build_dir(tmp_path, sig, status):
    out = tmp_path / "b"
    proc = _start_compile(out)
    tmp = _wait_until_lowering(proc, out)
    assert tmp.name.startswith(f".b.tmp-{proc.pid}-")  # the owner's pid, for the stale-dir check
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "Traceback" not in err
    assert not tmp.exists() and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_next_compile_clears_a_killed_compiles_dir(tmp_path):
    out = tmp_path / "b"
    proc = _start_compile(out)
    tmp = _wait_until_lowering(proc, out)
    proc.kill()  # SIGKILL: no handler runs, the dir stays behind
    proc.communicate(timeout=60)
    assert tmp.is_dir()
    edgevlm.compile("tinyconv", target="cpu-x86_64", out=out, backends=["onnx"], quant="float")
    assert not tmp.exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_clear_stale_dirs_keeps_live_compiles_and_other_names(tmp_path):
    out = tmp_path / "b"
    out.mkdir()  # the build exists: a stale .b.old-* is garbage
    dead = _dead_pid()
    stale = [tmp_path / f".b.tmp-{dead}-x1", tmp_path / f".b.old-{dead}", tmp_path / ".b.tmp-legacy"]
    kept = [tmp_path / f".b.tmp-{os.getpid()}-x2",  # a compile in progress (this process)
            tmp_path / f".c.tmp-{dead}-x3",  # another build's
            tmp_path / ".b.tmp-fresh"]  # no pid and recently touched: maybe an older edgevlm at work
    for d in stale + kept:
        d.mkdir()
    old = time.time() - 2 * 3600
    os.utime(tmp_path / ".b.tmp-legacy", (old, old))
    assert sorted(clear_stale_dirs(out)) == sorted(stale)
    assert all(d.is_dir() for d in kept) and not any(d.exists() for d in stale)


def test_clear_stale_dirs_puts_back_a_build_moved_aside(tmp_path):
    """A compile that died between moving the earlier build aside and renaming the new one into place."""
    out = tmp_path / "b"
    old = tmp_path / f".b.old-{_dead_pid()}"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    assert clear_stale_dirs(out) == []
    assert (out / "manifest.json").is_file() and not old.exists()
