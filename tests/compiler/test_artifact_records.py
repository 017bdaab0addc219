"""Typed artifact records (edgevlm.core.records): what the pipeline and the CLI read, serialized to report.json unchanged."""
import edgevlm
from edgevlm.core.records import HtpContext, MixedPrecisionRecord, QuantRecord


def test_quant_record_round_trips_a_quantizer_dict_in_order():
    """QuantRecord.from_dict(d).to_dict() == d, keys in d's order (onnx_qdq's report with mixed precision and kv8)."""
    d = {"scheme": "w8a16", "scheme_detail": {"act_bits": 16}, "observer": "minmax", "weights": {"weight_algo": "gptq"},
         "calibration_samples": 8, "integer_only": False, "offending_ops": ["Erf"],
         "mixed_precision": {"overrides": {"t": 16}, "metric": "sqnr_db", "achieved": 31.5, "target": 30.0, "met": True,
                             "steps": [{"node": "n", "value": 31.5}]},
         "kv_cache": {"bits": 8, "tensors": 4}}
    rec = QuantRecord.from_dict(d)
    assert rec.to_dict() == d and list(rec.to_dict()) == list(d)
    assert rec.integer_only is False and rec.offending_ops == ("Erf",) and rec.weight_algo == "gptq"
    assert rec.calibration_samples == 8 and rec.mixed_precision == MixedPrecisionRecord({"t": 16}, "sqnr_db", 31.5, 30.0, True,
                                                                                      [{"node": "n", "value": 31.5}])
    pt2e = {"scheme": "w8a8", "quantizer": "XNNPACKQuantizer", "calibration_batches": 16}
    assert QuantRecord.from_dict(pt2e).to_dict() == pt2e and QuantRecord.from_dict(pt2e).calibration_samples == 16
    htp = HtpContext("enc.onnx", 68, 39, 8, 1.5, 1800.0, "v2.40")
    assert "htp_departure" not in htp.to_dict() and htp.to_dict()["htp_arch"] == 68 and htp.to_dict()["qnn_graphs"] == 1


def test_compile_result_holds_the_typed_artifacts_behind_the_report(tmp_path):
    """The report's artifact entries are the typed records serialized: quant, integer-only, parity metric by quant."""
    result = edgevlm.compile("tinyconv", target="sa8295p", out=tmp_path / "b", backends=["onnx"], eval_n=0)
    (st,) = result.report["stages"]
    (a,) = st["artifacts"]
    art = result.artifacts[st["name"], "onnx"]
    assert art.quant is not None and art.quant.scheme == st["quant"] and a["info"]["quant"] == art.quant.to_dict()
    assert a["integer_only"] is art.integer_only is art.quant.integer_only is a["info"]["integer_only"]
    assert a["info"]["offending_ops"] == list(art.quant.offending_ops) and a["parity"]["metric"] == "sqnr_db"
    assert art.quant.weight_algo == "gptq" and "quant" not in art.info
    flt = edgevlm.compile("tinyconv", target="cpu-x86_64", out=tmp_path / "f", backends=["onnx"], quant="float", eval_n=0)
    (fa,) = flt.report["stages"][0]["artifacts"]
    assert flt.artifacts[flt.report["stages"][0]["name"], "onnx"].quant is None and "quant" not in fa["info"]
    assert fa["parity"]["metric"] == "max_abs_err" and "integer_only" not in fa
