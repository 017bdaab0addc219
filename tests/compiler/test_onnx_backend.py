"""ONNX backend: lowering and onnxruntime parity with PyTorch (max abs err <= 1e-4)."""
import numpy as np
import torch
from torch import nn

import edgevlm
from edgevlm.compiler.backends import get_backend


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = nn.functional.hardswish(self.bn(self.conv(x)))
        tokens = y.flatten(2).transpose(1, 2)
        return self.fc(tokens), tokens.mean(dim=1)


def test_user_module_parity_and_report(tmp_path):
    model = Small().eval()
    x = torch.randn(1, 3, 32, 32)
    result = edgevlm.compile(model, (x,), target="cpu-x86_64", out=tmp_path / "b", backends=["onnx"], quant="float")
    stage = result.report["stages"][0]
    art = stage["artifacts"][0]
    assert art["backend"] == "onnx" and (result.build_dir / art["path"]).is_file()
    assert art["parity"]["metric"] == "max_abs_err"
    assert art["parity"]["value"] <= 1e-4
    # Run the artifact again on a fresh input: still matches PyTorch.
    x2 = torch.randn(1, 3, 32, 32)
    from edgevlm.compiler.backends.base import Artifact

    outs = get_backend("onnx").execute(Artifact("onnx", "model", art["path"]), result.build_dir, [x2.numpy()])
    with torch.no_grad():
        ref = model(x2)
    for r, o in zip(ref, outs):
        assert np.abs(r.numpy() - o).max() <= 1e-4


def test_int64_inputs_and_multiple_outputs(tmp_path):
    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(32, 8)

        def forward(self, ids):
            e = self.emb(ids)
            return e, e.sum(-1)

    ids = torch.tensor([[1, 5, 7, 31]])
    result = edgevlm.compile(Embed().eval(), (ids,), target="cpu-x86_64", out=tmp_path / "e", backends=["onnx"], quant="float")
    assert result.report["stages"][0]["artifacts"][0]["parity"]["value"] <= 1e-6


def test_quantized_artifact_is_integer_only_with_sqnr(tmp_path):
    """sa8295p default (encoder w8a16): QDQ ONNX, integer-only, SQNR >= 30 dB vs float on calibration-like data."""
    model = Small().eval()
    gen = torch.Generator().manual_seed(0)
    calib = [(torch.randn(1, 3, 32, 32, generator=gen),) for _ in range(8)]
    result = edgevlm.compile(model, (calib[0][0],), target="sa8295p", out=tmp_path / "q", backends=["onnx"], calibration=calib)
    stage = result.report["stages"][0]
    art = stage["artifacts"][0]
    assert stage["quant"] == "w8a16" and art["integer_only"] is True
    assert art["parity"]["metric"] == "sqnr_db" and art["parity"]["value"] >= 30.0
    assert stage["calibration"] == "given: 8 samples"


def test_large_stage_external_data_in_the_manifest(tmp_path, monkeypatch):
    """A stage above the size limits goes file to file and keeps its weights in <stage>.onnx.data: the artifact
    and manifest.json list the data file (a changed byte in it is a damaged build); float parity max abs err
    <= 1e-4, quantized (sa8295p w8a16) SQNR >= 30 dB, as for a small stage."""
    from edgevlm.compiler.integrity import problems, read_manifest
    from edgevlm.quant import onnx_files

    monkeypatch.setattr(onnx_files, "STREAM_ABOVE", 0)
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_ABOVE", 0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 16)).eval()  # 16 KiB weights: past onnx's 1 KiB inline size
    gen = torch.Generator().manual_seed(0)
    calib = [(torch.randn(1, 8, 64, generator=gen),) for _ in range(4)]
    for target, quant, metric, ok in (("cpu-x86_64", "float", "max_abs_err", lambda v: v <= 1e-4),
                                      ("sa8295p", None, "sqnr_db", lambda v: v >= 30.0)):
        out = tmp_path / target
        result = edgevlm.compile(model, (calib[0][0],), target=target, out=out, backends=["onnx"], quant=quant, calibration=calib)
        art = result.report["stages"][0]["artifacts"][0]
        assert art["files"] == ["model.onnx", "model.onnx.data"] and art["info"]["external_data"] == ["model.onnx.data"]
        assert art["parity"]["metric"] == metric and ok(art["parity"]["value"])
        entries = read_manifest(out)["artifacts"]
        assert {e["path"] for e in entries} == {"model.onnx", "model.onnx.data"} and problems(out, entries) == []
        data = out / "model.onnx.data"
        blob = bytearray(data.read_bytes())
        blob[-1] ^= 1
        data.write_bytes(bytes(blob))
        assert problems(out, entries) == ["modified: model.onnx.data (sha256 differs from manifest.json)"]


def test_lowered_stage_leaves_no_weights_behind(tmp_path):
    """After an ONNX lowering, the captured graph's weights are freed once the caller drops it: onnxscript's
    rewrite rules keep the exporter's last graph, whose initializers wrapped them (onnx_files.release_weights)."""
    import gc
    import weakref

    from edgevlm.compiler.backends.base import Plan
    from edgevlm.compiler.capture import capture, export_static
    from edgevlm.compiler.passes import run_pipeline
    from edgevlm.compiler.stage import CapturedStage
    from edgevlm.core.stage import Stage
    from edgevlm.targets import get_target

    target = get_target("sa8295p")
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    stage = Stage("model", model, (torch.randn(1, 4, 16),))
    gm, log = run_pipeline(capture(stage), target)
    weights = [weakref.ref(t) for _, t in gm.named_buffers()]
    assert weights  # linear_to_conv's kernels
    captured = CapturedStage(stage, gm, export_static(gm, stage.example_inputs, "model"), log)
    get_backend("onnx").lower(captured, Plan(target=target, out_dir=tmp_path, quant={}, options={}))
    del gm, captured
    gc.collect()
    assert [w for w in weights if w() is not None] == []


def test_passes_share_the_float_weights():
    """linear_to_conv's 1x1 kernels are views of the module's weights (no copy), and the module is unchanged."""
    from edgevlm.compiler.capture import capture
    from edgevlm.compiler.passes import run_pipeline
    from edgevlm.core.stage import Stage
    from edgevlm.targets import get_target

    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm, _ = run_pipeline(capture(Stage("model", model, (torch.randn(1, 4, 16),))), get_target("sa8295p"))
    kernels = [t for _, t in gm.named_buffers() if t.dim() == 4]
    assert len(kernels) == 2
    assert {t.untyped_storage().data_ptr() for t in kernels} == {model[0].weight.untyped_storage().data_ptr(),
                                                                 model[2].weight.untyped_storage().data_ptr()}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_artifacts_carry_no_source_paths(tmp_path):
    """A build's ONNX holds no absolute source path (torch.onnx's per-node stack traces are dropped), so the
    same model compiled from two checkouts is the same bytes; float and quantized artifacts alike."""
    import onnx

    from edgevlm.compiler.backends.onnx_backend import STACK_TRACE_KEY

    x = torch.randn(1, 3, 32, 32)
    for target, quant in (("cpu-x86_64", "float"), ("sa8295p", "w8a16")):
        result = edgevlm.compile(Small().eval(), (x,), target=target, out=tmp_path / quant, backends=["onnx"],
                                 quant=quant)
        path = result.build_dir / result.report["stages"][0]["artifacts"][0]["path"]
        model = onnx.load(str(path), load_external_data=False)
        keys = {p.key for n in model.graph.node for p in n.metadata_props}
        values = [p.value for n in model.graph.node for p in n.metadata_props]
        assert STACK_TRACE_KEY not in keys, (quant, keys)
        assert quant != "float" or "pkg.torch.onnx.class_hierarchy" in keys  # the other metadata stays
        assert not [v for v in values if __file__ in v or "/edgevlm/" in v], quant


def _qdq_matmul(path):
    """x (float) -> Q(u8, scale 1, zp 0) -> DQ -> MatMul with DQ(s8 weights, all 127) -> out.

    An input of 255 everywhere makes each pair of byte products 2 x 255 x 127 = 64770, past int16: the
    sum that onnxruntime's pre-VNNI x86 u8s8 kernels saturate."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = 64, 8
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "zp_x"),
             numpy_helper.from_array(np.array(0, np.int8), "zp_w"),
             numpy_helper.from_array(np.full((k, n), 127, np.int8), "w_q")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp_x"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "s", "zp_x"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "s", "zp_w"], ["w_dq"]),
             helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return k


def test_load_runs_the_qdq_arithmetic_where_int8_kernels_saturate(tmp_path, monkeypatch):
    """On an x86 CPU without VNNI the artifact a build deploys runs as dequantize -> float op (ONNX's
    own arithmetic), not on onnxruntime's saturating u8s8 kernels.  Metric: max abs error vs numpy's
    float product, bound 0 (the products are small integers, exact in float32); and the session the
    backend opens uses basic optimizations there (which do not fuse QDQ)."""
    import onnxruntime as ort

    from edgevlm.compiler.backends.base import Artifact
    from edgevlm.quant import ort_cpu

    k = _qdq_matmul(tmp_path / "m.onnx")
    monkeypatch.setattr(ort_cpu, "u8s8_saturates", lambda: True)
    levels = []
    real = ort.InferenceSession

    def spy(path, opts=None, **kw):
        levels.append(opts.graph_optimization_level)
        return real(path, opts, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    (y,) = get_backend("onnx").execute(Artifact("onnx", "m", "m.onnx"), tmp_path, [np.full((4, k), 255, np.float32)])
    assert levels == [ort.GraphOptimizationLevel.ORT_ENABLE_BASIC]
    assert np.abs(y - 255.0 * 127 * k).max() == 0
