"""ONNX files with external data: written only above the size limit, listed for the manifest, same values read back."""
import numpy as np
import onnx
import onnx.helper as h
import onnxruntime as ort

from edgevlm.quant import onnx_files


def _model():
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "W")
    shape = onnx.numpy_helper.from_array(np.array([1, -1], np.int64), "S")
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["y"]), h.make_node("Reshape", ["y", "S"], ["z"])], "g",
                     [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 64])],
                     [h.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None)], [w, shape])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 21)])


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_small_model_stays_one_file_and_large_gets_a_data_file(tmp_path, monkeypatch):
    model = _model()
    single = onnx_files.save(model, tmp_path / "a.onnx")
    assert single == [tmp_path / "a.onnx"] and onnx_files.files(single[0]) == single
    assert (tmp_path / "a.onnx").read_bytes() == model.SerializeToString()  # exactly what onnx.save_model writes
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_ABOVE", 1000)  # 16 KiB of weights is "large" now
    written = onnx_files.save(model, tmp_path / "b.onnx")
    assert written == [tmp_path / "b.onnx", tmp_path / "b.onnx.data"] and onnx_files.files(written[0]) == written
    assert (tmp_path / "b.onnx").stat().st_size < 1000 < (tmp_path / "b.onnx.data").stat().st_size
    x = np.ones((2, 64), np.float32)
    assert np.array_equal(_run(tmp_path / "a.onnx", x), _run(tmp_path / "b.onnx", x))
    # the model saved stays usable in memory: its weights are its own again, not references to the file
    assert all(t.data_location != onnx.TensorProto.EXTERNAL and not t.external_data for t in model.graph.initializer)
    for got, want in zip(model.graph.initializer, _model().graph.initializer):
        assert np.array_equal(onnx.numpy_helper.to_array(got), onnx.numpy_helper.to_array(want))


def test_structure_keeps_types_without_the_weights():
    model = _model()
    graph_only = onnx_files.structure(model)
    assert graph_only.ByteSize() < model.ByteSize() / 10
    assert onnx_files.float_tensor_names(graph_only) == onnx_files.float_tensor_names(model) == ["x", "y", "z"]
    assert onnx.numpy_helper.to_array(graph_only.graph.initializer[1]).tolist() == [1, -1]  # small ones kept whole


def test_load_graph_reads_small_initializers_and_refers_to_large_ones(tmp_path):
    """A model saved with external data, read back as its graph: the 16 KiB weight stays a reference to the data
    file (the message is < 1/10 of the model's) and reads back equal through to_array(t, base_dir); the shape
    constant, written to the data file too (size_threshold=0), is read into the message."""
    model = _model()
    path = tmp_path / "m.onnx"
    onnx.save_model(_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    graph = onnx_files.load_graph(path)
    w, shape = graph.graph.initializer
    assert w.data_location == onnx.TensorProto.EXTERNAL and graph.ByteSize() < model.ByteSize() / 10
    assert shape.data_location != onnx.TensorProto.EXTERNAL and not shape.external_data
    assert onnx.numpy_helper.to_array(shape).tolist() == [1, -1]
    assert np.array_equal(onnx.numpy_helper.to_array(w, str(tmp_path)),
                          onnx.numpy_helper.to_array(_model().graph.initializer[0]))
    single = tmp_path / "one.onnx"
    onnx.save_model(model, str(single))
    assert onnx_files.load_graph(single) == model  # one file: read whole
