"""Integer quantization: schemes, calibration, ecosystem quantizers, checks and error analysis.

- schemes.py         QuantScheme (frozen, validated), named schemes, ``--quant`` parsing per target
- qdq.py             reference QuantizeLinear/DequantizeLinear (ONNX opset 21 semantics)
- observers.py       calibration ranges: minmax, percentile, entropy (onnxruntime), MSE
- calibration.py     calibration images from a directory; checked calibration samples
- onnx_qdq.py        float ONNX -> QDQ ONNX with onnxruntime.quantization (QNN rules on HTP)
- checker.py         integer-only check of a QDQ graph
- analysis.py        stage / per-layer SQNR vs float, sensitivity, scheme comparison
- mixed_precision.py raise sensitive layers until a quality target is met
- pt2e.py            torchao pt2e with ExecuTorch's XNNPACK / QNN quantizers

Submodules import their heavy dependencies themselves; import them directly.
"""
