"""checkpoint.lazy_state_dict + load_into: a checkpoint is copied into its module one tensor at a time.

Why: read whole, a published-size checkpoint sits in memory beside the module it is copied into
(LFM2-VL-1.6B: 6.3 GB of float32 weights twice, the compile's load step).
Metrics: values equal the eager load's exactly; checkpoint tensors alive at once during the copy (bound 1);
peak RSS added by the load of 256 MiB of weights into an already-built module, in a fresh interpreter
(bound 0.5 x the weight bytes: lazy adds about one 32 MiB tensor, an eager load_file adds all of them).
"""
import json
import subprocess
import sys
import weakref

import pytest
import torch
from safetensors.torch import save_file

from edgevlm.errors import CheckpointError
from edgevlm.models import checkpoint


def _module(n=4, width=64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(n)])


def _write(tmp_path, module):
    (tmp_path / "config.json").write_text("{}")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_lazy_load_equals_the_eager_load(tmp_path):
    ckpt = _write(tmp_path, _module(seed=1))
    lazy, eager = _module(seed=2), _module(seed=3)
    checkpoint.load_into(lazy, checkpoint.lazy_state_dict(ckpt), "lazy")
    checkpoint.load_into(eager, checkpoint.load_state_dict(ckpt), "eager")
    for (name, a), (_, b) in zip(lazy.state_dict().items(), eager.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_one_checkpoint_tensor_alive_at_a_time(tmp_path, monkeypatch):
    ckpt = _write(tmp_path, _module(n=6))
    alive, most = [], []
    load = checkpoint.LazyTensor.load

    def tracked(self):
        most.append(sum(r() is not None for r in alive))  # checkpoint tensors still alive when the next is read
        t = load(self)
        alive.append(weakref.ref(t))
        return t

    monkeypatch.setattr(checkpoint.LazyTensor, "load", tracked)
    checkpoint.load_into(_module(n=6, seed=5), checkpoint.lazy_state_dict(ckpt), "x")
    assert len(most) == 12 and max(most) == 0, most


def test_shape_mismatch_and_truncated_file_are_checkpoint_errors(tmp_path):
    ckpt = _write(tmp_path, _module())
    with pytest.raises(CheckpointError, match=r"tensor '0\.(weight|bias)' has shape \(64"):
        checkpoint.load_into(_module(width=32), checkpoint.lazy_state_dict(ckpt), "x")
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[:-1000])
    with pytest.raises(CheckpointError, match="truncated or not safetensors"):
        checkpoint.load_into(_module(), checkpoint.lazy_state_dict(ckpt), "x")


# The peak is the kernel's VmHWM, reset (clear_refs 5) once the module is built, so what the interpreter's
# imports touched before does not hide the load's own peak.
_PROBE = """
import json, sys, torch
from edgevlm.models import checkpoint
def kib(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
torch.manual_seed(0)
m = torch.nn.Sequential(*[torch.nn.Linear(2048, 4096, bias=False) for _ in range(8)])  # 8 x 32 MiB
open("/proc/self/clear_refs", "w").write("5")
before = kib("VmRSS")
read = checkpoint.lazy_state_dict if sys.argv[2] == "lazy" else checkpoint.load_state_dict
checkpoint.load_into(m, read(checkpoint.Path(sys.argv[1])), "probe")
print(json.dumps((kib("VmHWM") - before) * 1024))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (VmHWM)")
def test_lazy_load_adds_about_one_tensor_of_peak_rss(tmp_path):
    torch.manual_seed(0)
    weights = {f"{i}.weight": torch.randn(4096, 2048) for i in range(8)}
    (tmp_path / "config.json").write_text("{}")
    save_file(weights, str(tmp_path / "model.safetensors"))
    total = sum(t.numel() * 4 for t in weights.values())
    del weights
    added = {how: json.loads(subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path), how], check=True,
                                            capture_output=True, text=True).stdout) for how in ("lazy", "eager")}
    assert added["lazy"] < 0.5 * total, (added, total)
    assert added["eager"] > 0.8 * total, (added, total)  # the probe sees what the lazy load saves
