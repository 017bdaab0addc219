"""The C extension reports run-time CPU features consistent with /proc/cpuinfo."""
import platform
from pathlib import Path

from edgevlm.runtime import cpu_features


def test_cpu_features_match_proc_cpuinfo():
    feats = cpu_features()
    assert isinstance(feats, list) and all(isinstance(f, str) for f in feats)
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() == "x86_64" and cpuinfo.exists():
        flags = set(next(l for l in cpuinfo.read_text().splitlines() if l.startswith("flags")).split(":")[1].split())
        assert ("avx2" in feats) == ("avx2" in flags)
        assert ("avx512_vnni" in feats) == ("avx512_vnni" in flags)
    if platform.machine() == "aarch64":
        assert "neon" in feats
