"""Targets: the listed names, their invariants, and clear errors for unknown names."""
import dataclasses

import pytest

from edgevlm.errors import UnknownNameError
from edgevlm.targets import get_target, list_targets


def test_exact_target_names():
    assert [t.name for t in list_targets()] == ["sa8295p", "snapdragon-8-gen3", "apple-a17pro", "cpu-x86_64", "cpu-arm64"]


def test_sa8295p_constraints():
    t = get_target("sa8295p")
    assert t.integer_only and not t.float_graphs
    assert t.kv_dtypes == ("int8",)
    assert "per-group" not in t.weight_granularities
    assert t.roofline.onchip_bytes == 8 * 2**20 and t.roofline.dram_gb_per_s == 67.0
    assert t.default_quant["encoder"] == "w8a16" and t.default_quant["llm"] == "w4a16"


def test_targets_are_frozen_and_valid():
    for t in list_targets():
        with pytest.raises(dataclasses.FrozenInstanceError):
            t.name = "x"
        assert t.backends and t.roofline.dram_gb_per_s > 0


def test_unknown_target_lists_known_ones():
    with pytest.raises(UnknownNameError) as info:
        get_target("sa9000")
    assert "sa9000" in str(info.value) and "sa8295p" in str(info.value)
