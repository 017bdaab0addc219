"""The roofline latency estimator: exact MAC counts, bound classification, calibration, CLI errors."""
import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from edgevlm.cli import main
from edgevlm.errors import InputError
from edgevlm.targets import get_target
from edgevlm.compiler.estimate import (
    HTP_EFFICIENCY,
    Efficiency,
    OpCount,
    count_timm_ops,
    estimate_latency,
    fit_efficiency,
    published_latencies,
    time_ops,
)

SA8295P = get_target("sa8295p")
UNIT = Efficiency(dense=1.0, depthwise=1.0, memory=1.0, op_overhead_s=0.0, source="test")


class Small(nn.Module):
    """conv -> BN -> relu -> depthwise conv -> linear, plus an activation x activation matmul."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x, a, b):
        y = self.dw(torch.relu(self.bn(self.conv(x))))
        return self.fc(y.flatten(1)), torch.matmul(a, b)


def _small_estimate(scheme="w8a8", target=SA8295P, efficiency=UNIT):
    inputs = (torch.randn(1, 3, 16, 16), torch.randn(1, 4, 5), torch.randn(1, 5, 6))
    return estimate_latency(Small().eval(), inputs, target, scheme, efficiency)


def test_mac_counts_are_exact_on_a_hand_computed_model():
    rows = {r.op: r for r in _small_estimate().rows}
    convs = [r for r in _small_estimate().rows if r.op == "conv2d"]
    assert [(r.op_class, r.macs) for r in convs] == [
        ("conv", 8 * 16 * 16 * 3 * 3 * 3),  # out_numel * Cin/groups * kh * kw = 55296
        ("depthwise_conv", 8 * 16 * 16 * 1 * 3 * 3),  # 18432
        ("conv", 10 * 2048),  # the linear, a 1x1 conv on the HTP (linear_to_conv_pass): M * N * K, as a linear
    ]
    assert "linear" not in rows
    assert rows["matmul"].macs == 4 * 6 * 5
    assert "batch_norm" not in rows and "_native_batch_norm_legit_no_training" not in rows  # folded as on device
    assert rows["relu"].macs == 0 and rows["relu"].op_class == "other"
    # weights stream from DRAM at 8 bits: conv weight + the bias BN folding gave it
    assert convs[0].bytes == 8 * 3 * 3 * 3 + 8


def test_activation_bits_and_weight_bits_set_the_bytes():
    w8 = {r.name: r.bytes for r in _small_estimate("w8a16").rows}
    w4 = {r.name: r.bytes for r in _small_estimate("w4a16").rows}
    fc = next(n for n in w8 if n == "conv2d_default")  # the linear, a 1x1 conv on the HTP (linear_to_conv_pass)
    assert w4[fc] == w8[fc] // 2  # 4-bit weights halve the streamed weight bytes


def test_activations_that_do_not_fit_on_chip_go_to_dram():
    tiny = dataclasses.replace(SA8295P, roofline=dataclasses.replace(SA8295P.roofline, onchip_bytes=1024))
    on_chip = {r.name: r.bytes for r in _small_estimate(target=SA8295P).rows}
    spilled = {r.name: r.bytes for r in _small_estimate(target=tiny).rows}
    relu = next(n for n in on_chip if n.startswith("relu"))
    assert on_chip[relu] == 0
    assert spilled[relu] == 2 * 8 * 16 * 16  # reads and writes 2048 int8 activations through DRAM


class _Gemv(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4096, 4096, bias=False)

    def forward(self, x):
        return self.fc(x)


def test_gemv_is_memory_bound_and_wide_conv_is_compute_bound():
    eff = Efficiency(dense=0.5, depthwise=0.1, memory=0.8, op_overhead_s=4e-6, source="test")
    gemv = estimate_latency(_Gemv().eval(), (torch.randn(1, 4096),), SA8295P, "w8a8", eff).rows[0]
    assert gemv.bound == "memory"
    assert gemv.bytes == 4096 * 4096  # int8 weights; activations stay on chip
    expected = gemv.bytes / (67e9 * 0.8) + 4e-6
    assert math.isclose(gemv.ms, expected * 1e3, rel_tol=1e-9)

    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    row = estimate_latency(conv, (torch.randn(1, 64, 56, 56),), SA8295P, "w8a16", eff).rows[0]
    assert row.bound == "compute" and row.macs == 64 * 56 * 56 * 64 * 9
    expected = row.macs / (7.5e12 * 0.5) + 4e-6  # 16-bit activations: the int16 MAC rate
    assert math.isclose(row.ms, expected * 1e3, rel_tol=1e-9)


def test_float_estimate_on_integer_only_target_is_refused():
    with pytest.raises(InputError, match="no float graphs"):
        _small_estimate("float")


def test_fit_recovers_known_efficiencies():
    counts_a = [OpCount("c", "conv2d", "conv", 4_000_000_000, 1_000_000, 0)] + [OpCount(f"r{i}", "relu", "other", 0, 0, 10) for i in range(50)]
    counts_b = [OpCount("c", "conv2d", "conv", 100_000_000, 500_000, 0), OpCount("d", "conv2d", "depthwise_conv", 20_000_000, 10_000, 0)]
    truth = Efficiency(dense=0.3, depthwise=0.01, memory=0.8, op_overhead_s=5e-6, source="test")
    cases = [(c, s, time_ops(c, SA8295P, s, truth).total_ms) for c, s in ((counts_a, "w8a8"), (counts_b, "w8a16"))]
    fitted, worst = fit_efficiency(cases, SA8295P)
    assert worst < 0.005  # grid step is 0.46 %
    assert math.isclose(fitted.dense, 0.3, rel_tol=0.01) and math.isclose(fitted.depthwise, 0.01, rel_tol=0.01)


@pytest.mark.slow
def test_stored_htp_constants_reproduce_the_calibration_latencies():
    """Re-fit on the two published calibration latencies (timm models at 224 px, 40-80 s on 2 shared cores): the fit must
    land on the stored constants (1 %) and the stored constants must reproduce both latencies (2 %)."""
    cases = [(count_timm_ops(p.model, p.image_size, SA8295P), p.precision, p.published_ms)
             for p in published_latencies("calibration")]
    fitted, worst = fit_efficiency(cases, SA8295P)
    assert worst < 0.01
    assert math.isclose(fitted.dense, HTP_EFFICIENCY.dense, rel_tol=0.01)
    assert math.isclose(fitted.depthwise, HTP_EFFICIENCY.depthwise, rel_tol=0.01)
    for counts, scheme, published_ms in cases:
        est = time_ops(counts, SA8295P, scheme, HTP_EFFICIENCY)
        assert abs(est.total_ms / published_ms - 1) < 0.02, (scheme, est.total_ms, published_ms)


def test_cli_unknown_timm_name_is_one_line_exit_2(capsys):
    assert main(["estimate", "--timm", "no_such_net_xyz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown timm model 'no_such_net_xyz'" in err[0]


def test_cli_rejects_image_size_for_zoo_models(capsys):
    assert main(["estimate", "--model", "tinyconv", "--image-size", "64"]) == 2
    assert "--image-size applies to --timm" in capsys.readouterr().err


def test_cli_timm_json_is_labelled_estimated(capsys):
    assert main(["estimate", "--timm", "resnet18", "--image-size", "32", "--quant", "w8a8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] == "estimated" and out["stages"][0]["label"] == "estimated"
    assert out["total_ms"] > 0
    # MACs agree with torch's own FlopCounterMode (conv + linear) on the same model
    from edgevlm.models.arch.flops import count_macs
    from edgevlm.compiler.estimate import timm_model

    assert out["stages"][0]["macs"] == count_macs(timm_model("resnet18"), torch.zeros(1, 3, 32, 32))
