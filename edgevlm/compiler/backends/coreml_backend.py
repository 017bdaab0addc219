"""Core ML backend: an ML Program .mlpackage (iOS 17+) for the Apple Neural Engine.

Quantization by the stage's scheme (int8 activations through pt2e, weight-only
compression, palettization) is the ``coreml`` quantizer's
(compiler/quantizers/coreml_quantizer.py), which the pipeline runs between
``export`` and ``finish``; ``finish`` converts and applies the weight
compression that quantizer chose.

Linux cannot run Core ML predictions: there the package is verified by
reloading it (without compiling) and reading its ops and dtypes into
``info``; on macOS ``execute`` runs it.
"""
import json
import sys
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from edgevlm.compiler.backends.base import Artifact, Backend, Plan
from edgevlm.compiler.quantizers import Quantized
from edgevlm.compiler.quantizers.coreml_quantizer import CoreMLProgram, import_coremltools, quiet
from edgevlm.errors import BackendUnavailableError

EXTRA = "coreml"
INSTALL = f"pip install 'edgevlm[{EXTRA}]'"
# coremltools stamps the conversion date into the spec; dropped so that two
# builds of the same model are byte-identical.
DATE_KEY = "com.github.apple.coremltools.conversion_date"


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
    ct, _ = import_coremltools()
    with quiet():
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
    """Make two saves of the same model byte-identical: stable item ids in Manifest.json, map keys sorted in the spec.

    coremltools names package items with uuid4; the ids only have to be unique
    within the package, so uuid5 of the item path keeps it valid.
    coremltools writes the spec with plain ``SerializeToString()``, which emits
    map fields (an op's ``attributes`` and ``inputs``, ``functions``, metadata)
    in the order of the protobuf runtime's hash table; with the upb runtime that
    order changes from process to process even at a fixed PYTHONHASHSEED, so
    the spec is rewritten with ``deterministic=True`` (map entries sorted by key).
    The weights file is written in op order and needs nothing.
    """
    ct, _ = import_coremltools()
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    spec_path = package / "Data" / manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
    spec = ct.proto.Model_pb2.Model.FromString(spec_path.read_bytes())
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    renamed = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, entry["path"])).upper()
               for old, entry in manifest["itemInfoEntries"].items()}
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in sorted(manifest["itemInfoEntries"].items(), key=lambda kv: kv[1]["path"])}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


class CoreMLBackend(Backend):
    name = "coreml"
    extra = EXTRA
    quantizer = "coreml"
    can_execute = sys.platform == "darwin"  # Core ML predictions need macOS

    def available(self):
        try:
            import_coremltools()
        except ImportError as exc:
            return False, f"coremltools not installed ({exc.name or exc}): {INSTALL}"
        return True, ""

    def export(self, stage, plan: Plan, workdir: Path) -> CoreMLProgram:
        """The captured program at contiguous inputs (Core ML converts only the default dim order)."""
        ok, _ = self.available()
        if not ok:
            raise BackendUnavailableError("coremltools not installed", INSTALL)
        return CoreMLProgram(*stage.contiguous_program())

    def finish(self, stage, plan: Plan, form: CoreMLProgram, quantized: Quantized | None) -> Artifact:
        """The ML program of ``form`` (or ``quantized.form``), weight-compressed as the quantizer chose, saved and inspected."""
        ct, cto = import_coremltools()
        form = form if quantized is None else quantized.form
        notes = {} if quantized is None else dict(quantized.notes)
        deployment = ct.target.iOS18 if form.ios18 else ct.target.iOS17
        info: dict = {"compute_precision": "float16"}
        names = list(stage.stage.input_names)
        inputs = [ct.TensorType(name=n, shape=tuple(x.shape), dtype=x.detach().cpu().numpy().dtype)
                  for n, x in zip(names, form.example, strict=True)]
        outputs = None
        out_names = stage.stage.graph_output_names()  # an LLM stage's state outputs are named apart from its inputs
        if out_names:
            outputs = [ct.TensorType(name=n) for n in out_names]
            if out_names != list(stage.stage.output_names):
                info["output_names"] = dict(zip(stage.stage.output_names, out_names))
        with quiet():
            model = ct.convert(
                form.program.run_decompositions({}),
                inputs=inputs,
                outputs=outputs,
                convert_to="mlprogram",
                minimum_deployment_target=deployment,
                compute_precision=ct.precision.FLOAT16,
            )
            if form.compression is not None:
                compress = cto.coreml.linear_quantize_weights if "linear" in form.weight_kind else cto.coreml.palettize_weights
                model = compress(model, form.compression)
        del model.user_defined_metadata[DATE_KEY]
        rel = f"{stage.name}.mlpackage"
        path = Path(plan.out_dir) / rel
        with quiet():
            model.save(str(path))
        make_deterministic(path)
        info["deployment_target"] = "iOS18" if deployment == ct.target.iOS18 else "iOS17"
        info.update(inspect_package(path))
        info["verified"] = ("reloaded and inspected (ops, dtypes); Core ML predictions need macOS"
                            if not self.can_execute else "reloaded and inspected; run on macOS")
        return Artifact(self.name, stage.name, rel, [rel], info, notes=notes,
                        quant=None if quantized is None else quantized.record)

    def execute(self, artifact: Artifact, build_dir, inputs):
        if not self.can_execute:
            return super().execute(artifact, build_dir, inputs)
        ct, _ = import_coremltools()
        model = ct.models.MLModel(str(Path(build_dir) / artifact.path))
        spec = model.get_spec()
        feeds = {f.name: np.asarray(x) for f, x in zip(spec.description.input, inputs, strict=True)}
        result = model.predict(feeds)
        return [np.asarray(result[f.name]) for f in spec.description.output]


BACKEND = CoreMLBackend()
