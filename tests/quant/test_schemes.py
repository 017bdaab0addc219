"""Quantization schemes: validation, names, and --quant parsing against targets."""
import dataclasses

import pytest

from edgevlm.errors import InputError, UnknownNameError
from edgevlm.quant.schemes import QuantScheme, get_scheme, parse_quant_spec
from edgevlm.targets import get_target


def test_named_schemes():
    s = get_scheme("w8a16")
    assert (s.weight_bits, s.act_bits, s.weight_granularity) == (8, 16, "per-channel")
    assert s.weight_dtype == "int8" and s.act_dtype == "uint16"
    assert get_scheme("w4a8").weight_dtype == "int4" and get_scheme("w4a8").act_dtype == "uint8"
    assert get_scheme("kv8").is_kv_only and get_scheme("kv8").kv_bits == 8
    g = get_scheme("w4a16-g32")
    assert g.weight_granularity == "per-group" and g.group_size == 32


def test_schemes_are_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_scheme("w8a8").act_bits = 16
    with pytest.raises(InputError, match="weight_bits"):
        QuantScheme("bad", weight_bits=3, act_bits=8)
    with pytest.raises(InputError, match="act_bits"):
        QuantScheme("bad", weight_bits=8, act_bits=4)
    with pytest.raises(InputError, match="group_size"):
        QuantScheme("bad", weight_bits=4, act_bits=16, weight_granularity="per-group")
    with pytest.raises(InputError, match="power of two"):
        QuantScheme("bad", weight_bits=4, act_bits=16, weight_granularity="per-group", group_size=24)
    with pytest.raises(UnknownNameError, match="w3a8"):
        get_scheme("w3a8")


def test_default_spec_is_target_default():
    q = parse_quant_spec(None, get_target("sa8295p"))
    assert {k: s.name for k, s in q.items()} == {
        "encoder": "w8a16", "projector": "w8a16", "llm": "w4a16", "kv": "kv8"}


def test_single_scheme_applies_to_every_stage_kind():
    q = parse_quant_spec("w8a8", get_target("sa8295p"))
    assert [q[k].name for k in ("encoder", "projector", "llm", "kv")] == ["w8a8", "w8a8", "w8a8", "kv8"]


def test_per_kind_spec_keeps_other_defaults():
    q = parse_quant_spec("encoder=w8a8, llm=w4a8", get_target("sa8295p"))
    assert [q[k].name for k in ("encoder", "projector", "llm", "kv")] == ["w8a8", "w8a16", "w4a8", "kv8"]


def test_float_only_where_target_runs_float_graphs():
    assert all(v is None for v in parse_quant_spec("float", get_target("cpu-x86_64")).values())
    assert parse_quant_spec("llm=none", get_target("cpu-x86_64"))["llm"] is None
    with pytest.raises(InputError, match="integer graphs only"):
        parse_quant_spec("float", get_target("sa8295p"))


def test_disallowed_scheme_names_scheme_target_and_allowed():
    with pytest.raises(InputError) as e:
        parse_quant_spec("w16a16", get_target("sa8295p"))
    msg = str(e.value)
    assert "w16a16" in msg and "sa8295p" in msg and "int4, int8" in msg and "w8a16" in msg
    with pytest.raises(InputError, match="per-group.*sa8295p|sa8295p.*per-group"):
        parse_quant_spec("llm=w4a16-g32", get_target("sa8295p"))
    assert parse_quant_spec("llm=w4a16-g32", get_target("snapdragon-8-gen3"))["llm"].group_size == 32
    with pytest.raises(InputError, match="kv16.*int8"):
        parse_quant_spec("kv=kv16", get_target("sa8295p"))


def test_bad_entries():
    with pytest.raises(InputError, match="kind=scheme"):
        parse_quant_spec("vision=w8a8", get_target("sa8295p"))
    with pytest.raises(InputError, match="not a KV-cache scheme"):
        parse_quant_spec("kv=w8a8", get_target("sa8295p"))
    with pytest.raises(InputError, match="KV-cache scheme kv8"):
        parse_quant_spec("encoder=kv8", get_target("sa8295p"))
