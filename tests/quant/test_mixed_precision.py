"""Mixed precision: raising sensitive layers until a quality target is met."""
import logging
import math

import pytest

from edgevlm.errors import InputError
from edgevlm.quant.analysis import stage_sqnr
from edgevlm.quant.mixed_precision import MAX_REQUANTIZATIONS, search_mixed_precision

logging.getLogger().setLevel(logging.ERROR)


def test_raises_int4_weights_until_sqnr_target(conv_attention_onnx, calib, tmp_path):
    out = tmp_path / "q.onnx"
    base = search_mixed_precision(conv_attention_onnx, out, "w4a16", calib, "sa8295p", min_sqnr_db=0.0)
    assert base.met and base.overrides == {} and len(base.steps) == 1
    goal = base.achieved + 6.0  # ask for 6 dB more than plain w4a16
    r = search_mixed_precision(conv_attention_onnx, out, "w4a16", calib, "sa8295p", min_sqnr_db=goal)
    assert r.met and r.achieved >= goal
    assert r.overrides and set(r.overrides.values()) == {8}  # only weights raised: activations are already 16-bit
    assert r.achieved in [step["sqnr_db"] for step in r.steps] and len(r.steps) >= 2
    # The figure is the model on disk's figure (stage SQNR on the calibration data).
    assert stage_sqnr(conv_attention_onnx, out, calib)["sqnr_db"] == pytest.approx(r.achieved)
    assert r.info["integer_only"]
    assert r.info["mixed_precision"]["achieved"] == r.achieved and r.info["overrides"] == r.overrides


def test_raises_activations_on_w8a8(conv_attention_onnx, calib, tmp_path):
    r = search_mixed_precision(conv_attention_onnx, tmp_path / "q.onnx", "w8a8", calib, "sa8295p",
                               min_sqnr_db=200.0, max_steps=2, search="linear", workers=0)
    assert not r.met and len(r.steps) == 3  # the base model and two raised layers, then stopped
    assert set(r.overrides.values()) == {16}
    assert r.steps[-1]["sqnr_db"] > r.steps[0]["sqnr_db"]


def test_bisect_finds_the_linear_searchs_candidate(conv_attention_onnx, calib, tmp_path):
    linear = search_mixed_precision(conv_attention_onnx, tmp_path / "l.onnx", "w4a16", calib, "sa8295p",
                                    min_sqnr_db=200.0, search="linear", workers=0)
    figures = [step["sqnr_db"] for step in linear.steps]
    k = next(i for i in range(1, len(figures)) if figures[i] > figures[0] + 3.0)  # 3 dB over plain w4a16
    goal = figures[k]
    first = next(i for i in range(1, len(figures)) if figures[i] >= goal)
    r = search_mixed_precision(conv_attention_onnx, tmp_path / "b.onnx", "w4a16", calib, "sa8295p", min_sqnr_db=goal)
    assert r.met and r.achieved >= goal
    # The same candidate as one re-quantization per layer: the first `first` ranked layers raised.
    assert r.overrides == {t: 8 for step in linear.steps[1:first + 1] for t in step["tensors"]}
    n = len(figures) - 1  # ranked layers that can be raised
    assert len(r.steps) - 1 <= 1 + math.ceil(math.log2(n))  # all raised, then bisection: not one per layer
    assert stage_sqnr(conv_attention_onnx, tmp_path / "b.onnx", calib)["sqnr_db"] == pytest.approx(r.achieved)
    assert r.info["mixed_precision"]["overrides"] == r.overrides and first >= 1


def test_bisect_budget_and_an_unreachable_target(conv_attention_onnx, calib, tmp_path):
    r = search_mixed_precision(conv_attention_onnx, tmp_path / "q.onnx", "w4a16", calib, "sa8295p", min_sqnr_db=500.0)
    assert not r.met and len(r.steps) == 2  # everything raised misses 500 dB: nothing left to bisect
    assert r.steps[1]["layers_raised"] == len(r.overrides) or r.overrides  # every ranked layer's weights at 8 bits
    assert set(r.overrides.values()) == {8} and r.achieved == r.steps[1]["sqnr_db"]
    base = r.steps[0]["sqnr_db"]
    b = search_mixed_precision(conv_attention_onnx, tmp_path / "b.onnx", "w4a16", calib, "sa8295p",
                               min_sqnr_db=base + 0.01, max_requantizations=2)
    assert b.met and len(b.steps) <= 1 + 2  # the base model and at most two candidates measured
    assert stage_sqnr(conv_attention_onnx, tmp_path / "b.onnx", calib)["sqnr_db"] == pytest.approx(b.achieved)
    with pytest.raises(InputError, match="search"):
        search_mixed_precision(conv_attention_onnx, tmp_path / "x.onnx", "w4a16", calib, "sa8295p",
                               min_sqnr_db=base + 1, search="greedy")


def test_accuracy_drop_callable(conv_attention_onnx, calib, tmp_path):
    seen = []

    def drop(path):
        seen.append(path)
        return 0.5

    r = search_mixed_precision(conv_attention_onnx, tmp_path / "q.onnx", "w8a8", calib, "sa8295p",
                               accuracy_drop=drop, max_accuracy_drop=1.0)
    assert r.met and r.metric == "accuracy_drop" and r.achieved == 0.5 and seen == [tmp_path / "q.onnx"]


def test_needs_exactly_one_target(conv_attention_onnx, calib, tmp_path):
    with pytest.raises(InputError, match="exactly one"):
        search_mixed_precision(conv_attention_onnx, tmp_path / "q.onnx", "w8a8", calib, "sa8295p")


def test_quality_target_per_stage():
    from edgevlm.quant.mixed_precision import parse_quality_target, quality_target_for

    assert parse_quality_target("30") == 30.0 and quality_target_for(30.0, "encoder") == 30.0
    per_stage = parse_quality_target("llm-prefill=25, llm-decode=26")
    assert per_stage == {"llm-prefill": 25.0, "llm-decode": 26.0}
    assert quality_target_for(per_stage, "llm-decode") == 26.0 and quality_target_for(per_stage, "encoder") is None
    assert parse_quality_target(None) is None
    with pytest.raises(InputError, match="unknown stage"):
        parse_quality_target("llm=25")
    with pytest.raises(InputError, match="not a number"):
        parse_quality_target("llm-prefill=high")


def test_weights_on_their_grid_are_not_raised():
    from edgevlm.quant.mixed_precision import RAISE_WEIGHTS_BELOW_DB, _candidates

    # A weight trained onto the int4 grid (71 dB at 4 bits) would lose precision at 8 bits; one at 18 dB gains.
    ranking = [{"node": "a", "outputs": ["ya"], "weights": ["wa", "wb"], "weights_sqnr_db": {"wa": 71.0, "wb": 18.0}},
               {"node": "b", "outputs": ["yb"], "weights": ["wc"], "weights_sqnr_db": {"wc": RAISE_WEIGHTS_BELOW_DB}}]
    plan = _candidates(ranking, {}, raise_acts=False, raise_weights=True, max_steps=None)
    assert [new for _, new, _ in plan] == [{"wb": 8}]


def test_bisect_on_an_llm_like_stage(tiny_lm_onnx, tmp_path):
    import torch

    gen = torch.Generator().manual_seed(0)
    calib = [(torch.randint(0, 50, (1, 8), generator=gen), torch.randn(1, 1, 16, generator=gen)) for _ in range(4)]
    base = search_mixed_precision(tiny_lm_onnx, tmp_path / "b.onnx", "w4a16", calib, "sa8295p", min_sqnr_db=0.0)
    # Metric: worst-output SQNR on the calibration inputs; goal 6 dB over plain w4a16 (int4 -> int8 weights).
    goal = base.achieved + 6.0
    r = search_mixed_precision(tiny_lm_onnx, tmp_path / "q.onnx", "w4a16", calib, "sa8295p", min_sqnr_db=goal)
    assert r.met and r.achieved >= goal and set(r.overrides.values()) == {8}
    assert len(r.steps) - 1 <= MAX_REQUANTIZATIONS and r.info["integer_only"]
    assert stage_sqnr(tiny_lm_onnx, tmp_path / "q.onnx", calib)["sqnr_db"] == pytest.approx(r.achieved)
