"""Core ML backend: an ML Program .mlpackage (iOS 17+) for the Apple Neural Engine.

Quantization by the stage's scheme:

- int8 activations: pt2e on the captured program (calibrated Q/DQ, int8
  per-channel weights), converted to Core ML ``quantize``/``dequantize`` ops.
  Core ML's own activation quantizer
  (``coremltools.optimize.coreml.linear_quantize_activations``) calibrates by
  running predictions, which only macOS can do, and coremltools' torch-side
  quantizer needs ``torch.ao.quantization.quantizer``, gone from torch 2.13;
  pt2e (torchao) does the same job everywhere.
- 8-bit weights with float activations: ``linear_quantize_weights`` (int8, per channel).
- 4-bit weights: per-group -> ``linear_quantize_weights`` int4 per block
  (needs iOS 18, so the deployment target is raised and ``info`` says so);
  otherwise 4-bit k-means palettization (iOS 16+).

Linux cannot run Core ML predictions: there the package is verified by
reloading it (without compiling) and reading its ops and dtypes into
``info``; on macOS ``execute`` runs it.
"""
import contextlib
import io
import json
import sys
import uuid
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from edgevlm.compiler.backends.base import Artifact, Backend, Plan
from edgevlm.core.records import QuantRecord
from edgevlm.errors import BackendUnavailableError, InputError

EXTRA = "coreml"
INSTALL = f"pip install 'edgevlm[{EXTRA}]'"
# coremltools stamps the conversion date into the spec; dropped so that two
# builds of the same model are byte-identical.
DATE_KEY = "com.github.apple.coremltools.conversion_date"


@contextlib.contextmanager
def _quiet():
    """coremltools prints progress bars and version warnings: keep the console ours."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _import_ct():
    with _quiet():
        import coremltools as ct
        import coremltools.optimize as cto
    return ct, cto


def _int8_activation_program(stage, program, example):
    """pt2e Q/DQ program with int8 activations and int8 per-channel weights."""
    from edgevlm.quant.pt2e import quantize_pt2e_program

    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
    except ImportError:
        raise BackendUnavailableError(
            "int8 activations for Core ML are calibrated with the pt2e int8 quantizer, which is not installed",
            "pip install 'edgevlm[executorch]'",
        ) from None
    # Symmetric int8 per-channel weights and int8 activations: the form Core ML's
    # quantize/dequantize ops (iOS 17) take.
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    return quantize_pt2e_program(program, example, quantizer, stage.calibration_inputs())


def _weight_compression(cto, scheme):
    """(OptimizationConfig, kind) for weight-only compression, or (None, None)."""
    if scheme.weight_bits == 8:
        op = cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return cto.coreml.OptimizationConfig(global_config=op), "int8 linear, per channel"
    if scheme.weight_bits == 4 and scheme.weight_granularity == "per-group":
        op = cto.coreml.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=scheme.group_size
        )
        return cto.coreml.OptimizationConfig(global_config=op), f"int4 linear, per block of {scheme.group_size}"
    if scheme.weight_bits == 4:
        op = cto.coreml.OpPalettizerConfig(nbits=4, mode="kmeans")
        return cto.coreml.OptimizationConfig(global_config=op), "4-bit palettized (k-means LUT)"
    return None, None


def _array_dtype(ct, feature) -> str:
    code = feature.type.multiArrayType.dataType
    return ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(code).lower()


def _tensor_dtype(ct, value_type) -> str | None:
    if not value_type.HasField("tensorType"):
        return None
    return ct.proto.MIL_pb2.DataType.Name(value_type.tensorType.dataType).lower()


def inspect_package(path: Path) -> dict:
    """Reload a .mlpackage without compiling it and read ops and dtypes from its MIL program.

    ``weight_storage`` maps each weight-decompression op (``constexpr_*``) to
    the dtypes of the data it holds (e.g. int8 for linear quantization, a
    uint8-packed index array plus a 2**bits entry LUT for palettization);
    ``activation_dtypes`` are the outputs of ``quantize`` ops.
    """
    ct, _ = _import_ct()
    with _quiet():
        model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    ops: Counter = Counter()
    storage: dict[str, set] = {}
    activations: set = set()
    lut_bits: set = set()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            const_dtypes = {}
            for op in block.operations:
                ops[op.type] += 1
                if op.type == "const":
                    const_dtypes.update({o.name: _tensor_dtype(ct, o.type) for o in op.outputs})
                elif op.type == "quantize":
                    activations.update(_tensor_dtype(ct, o.type) for o in op.outputs)
                elif op.type.startswith("constexpr"):
                    held = {_tensor_dtype(ct, v.type) for k, v in op.attributes.items() if k != "name"}
                    for arg in op.inputs.values():  # iOS 18 ops take their data as inputs, inline or from a const
                        held |= {_tensor_dtype(ct, b.value.type) if b.HasField("value") else const_dtypes.get(b.name)
                                 for b in arg.arguments}
                    storage.setdefault(op.type, set()).update(d for d in held if d)
                    if "lut" in op.attributes:
                        size = op.attributes["lut"].type.tensorType.dimensions[-1].constant.size
                        lut_bits.add(int(size).bit_length() - 1)
    info = {
        "spec_version": spec.specificationVersion,
        "model_type": spec.WhichOneof("Type"),
        "ops": dict(sorted(ops.items())),
        "weight_storage": {k: sorted(v) for k, v in sorted(storage.items())},
        "activation_dtypes": sorted(activations) or ["float16"],
        "inputs": {f.name: _array_dtype(ct, f) for f in spec.description.input},
        "outputs": {f.name: _array_dtype(ct, f) for f in spec.description.output},
    }
    if lut_bits:
        info["lut_bits"] = sorted(lut_bits)
    return info


def make_deterministic(package: Path) -> None:
    """Replace the random item ids in Manifest.json with ids derived from each item's path.

    coremltools names package items with uuid4; the ids only have to be unique
    within the package, so uuid5 of the item path keeps it valid and makes two
    saves of the same model byte-identical.
    """
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, entry["path"])).upper()
               for old, entry in manifest["itemInfoEntries"].items()}
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in sorted(manifest["itemInfoEntries"].items(), key=lambda kv: kv[1]["path"])}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


class CoreMLBackend(Backend):
    name = "coreml"
    extra = EXTRA
    can_execute = sys.platform == "darwin"  # Core ML predictions need macOS

    def available(self):
        try:
            _import_ct()
        except ImportError as exc:
            return False, f"coremltools not installed ({exc.name or exc}): {INSTALL}"
        return True, ""

    def lower(self, stage, plan: Plan) -> Artifact:
        ok, _ = self.available()
        if not ok:
            raise BackendUnavailableError("coremltools not installed", INSTALL)
        ct, cto = _import_ct()
        scheme = plan.quant.scheme_for(stage.stage.kind)
        info: dict = {"compute_precision": "float16"}
        deployment = ct.target.iOS17
        # Core ML converts only contiguous (default dim order) inputs.
        program, example = stage.contiguous_program()
        compression, weight_kind = (None, None)
        quant, notes = None, {}
        if scheme is not None:
            quant = {"scheme": scheme.name}
            if scheme.act_bits == 8:
                if scheme.weight_bits != 8:
                    raise InputError(
                        f"Core ML backend: scheme {scheme.name} has no Core ML form (int8 activations take int8 weights)",
                        "use w8a8, or w4a16 for 4-bit weights with float16 activations",
                    )
                program = _int8_activation_program(stage, program, example)
                quant["activations"] = "int8 (pt2e Q/DQ, calibrated)"
                quant["calibration_batches"] = len(stage.calibration_inputs())
                weight_kind = "int8 linear, per channel (pt2e)"
            else:
                quant["activations"] = f"float16 (Core ML has no int{scheme.act_bits} activations)"
                compression, weight_kind = _weight_compression(cto, scheme)
            quant["weights"] = weight_kind or "float16"
            if scheme.weight_bits == 4 and scheme.weight_granularity == "per-group":
                deployment = ct.target.iOS18
                notes["deployment_note"] = "int4 per-block weights need iOS 18: deployment target raised from iOS 17"
        names = list(stage.stage.input_names)
        inputs = [ct.TensorType(name=n, shape=tuple(x.shape), dtype=x.detach().cpu().numpy().dtype)
                  for n, x in zip(names, example, strict=True)]
        outputs = None
        if stage.stage.output_names:
            # A Core ML function cannot use one name for an input and an output
            # (the LLM stages pass their state through): such outputs get "_out".
            out_names = [f"{n}_out" if n in names else n for n in stage.stage.output_names]
            outputs = [ct.TensorType(name=n) for n in out_names]
            if out_names != list(stage.stage.output_names):
                info["output_names"] = dict(zip(stage.stage.output_names, out_names))
        with _quiet():
            model = ct.convert(
                program.run_decompositions({}),
                inputs=inputs,
                outputs=outputs,
                convert_to="mlprogram",
                minimum_deployment_target=deployment,
                compute_precision=ct.precision.FLOAT16,
            )
            if compression is not None:
                model = (cto.coreml.linear_quantize_weights if "linear" in weight_kind else cto.coreml.palettize_weights)(model, compression)
        del model.user_defined_metadata[DATE_KEY]
        rel = f"{stage.name}.mlpackage"
        path = Path(plan.out_dir) / rel
        with _quiet():
            model.save(str(path))
        make_deterministic(path)
        info["deployment_target"] = "iOS18" if deployment == ct.target.iOS18 else "iOS17"
        info.update(inspect_package(path))
        info["verified"] = ("reloaded and inspected (ops, dtypes); Core ML predictions need macOS"
                            if not self.can_execute else "reloaded and inspected; run on macOS")
        return Artifact(self.name, stage.name, rel, [rel], info, notes=notes,
                        quant=None if quant is None else QuantRecord.from_dict(quant))

    def execute(self, artifact: Artifact, build_dir, inputs):
        if not self.can_execute:
            return super().execute(artifact, build_dir, inputs)
        ct, _ = _import_ct()
        model = ct.models.MLModel(str(Path(build_dir) / artifact.path))
        spec = model.get_spec()
        feeds = {f.name: np.asarray(x) for f, x in zip(spec.description.input, inputs, strict=True)}
        result = model.predict(feeds)
        return [np.asarray(result[f.name]) for f in spec.description.output]


BACKEND = CoreMLBackend()
