"""Mixed precision: raise the most sensitive layers until a quality target is met.

Starting from a scheme (e.g. w8a8 or w4a16), the layers are ranked once by
the SQNR lost across them (:func:`edgevlm.quant.analysis.sensitivity`); then,
one layer at a time, its output activations are raised to 16 bits and its
weights to 8 bits (each only if the scheme is lower and the target allows
it), the model is re-quantized and re-measured, until the target is met or
nothing is left to raise.

The candidates are cumulative (candidate k raises the first k layers), so
they are known before any is measured: with Ray installed and an SQNR target,
they are re-quantized and measured as Ray tasks, as many at a time as there
are CPUs, in ranking order, and the search stops at the first that meets the
target: the same steps and the same model as the serial search, which
``workers=0`` (or Ray missing) runs.
"""
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgevlm import parallel
from edgevlm.errors import InputError
from edgevlm.quant.analysis import sensitivity, stage_sqnr
from edgevlm.quant.onnx_qdq import quantize_onnx
from edgevlm.quant.schemes import get_scheme
from edgevlm.targets import get_target


@dataclass
class MixedPrecisionResult:
    """Outcome of :func:`search_mixed_precision`.

    ``achieved`` is the final figure in ``metric`` units (``"sqnr_db"``:
    higher is better; ``"accuracy_drop"``: points, lower is better);
    ``steps`` holds one entry per re-quantization: the node raised and the
    figure after it.
    """

    overrides: dict[str, int]
    metric: str
    achieved: float
    target_value: float
    met: bool
    steps: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    path: str = ""

    def to_dict(self) -> dict:
        return {"overrides": self.overrides, "metric": self.metric, "achieved": self.achieved,
                "target": self.target_value, "met": self.met, "steps": self.steps, "path": self.path}


def search_mixed_precision(float_onnx_path, out_path, scheme, calibration, target, *,
                           min_sqnr_db: float | None = None, accuracy_drop=None,
                           max_accuracy_drop: float = 1.0, eval_data=None, observer: str = "minmax",
                           max_steps: int | None = None, base_overrides: dict[str, int] | None = None,
                           workers: int | None = None, weight_algo: str = "rtn") -> MixedPrecisionResult:
    """Quantize with ``scheme``, raising sensitive layers until the quality target holds.

    Give exactly one target: ``min_sqnr_db`` (worst stage-output SQNR in dB
    on ``eval_data``, default the calibration data) or ``accuracy_drop``, a
    callable taking the quantized model's path and returning the accuracy
    drop vs float in points, met when <= ``max_accuracy_drop``.  The model
    written last to ``out_path`` is the returned one.  ``base_overrides``
    (e.g. the KV cache at 8 bits under kv8) hold throughout and are never raised.
    ``workers``: Ray CPUs for the candidates (None: Ray's, when it is installed; 0: serial here).
    ``weight_algo``: how every candidate rounds its weights (see quantize_onnx).
    """
    if (min_sqnr_db is None) == (accuracy_drop is None):
        raise InputError("give exactly one quality target: min_sqnr_db or accuracy_drop")
    scheme, target = get_scheme(scheme), get_target(target)
    calibration = list(calibration)
    data = calibration if eval_data is None else list(eval_data)
    raise_acts = scheme.act_bits < 16 and "int16" in target.activation_dtypes
    raise_weights = scheme.weight_bits < 8 and "int8" in target.weight_dtypes

    if min_sqnr_db is not None:
        metric, goal = "sqnr_db", float(min_sqnr_db)

        def measure() -> float:
            return stage_sqnr(float_onnx_path, out_path, data)["sqnr_db"]

        def met(value: float) -> bool:
            return value >= goal
    else:
        metric, goal = "accuracy_drop", float(max_accuracy_drop)

        def measure() -> float:
            return float(accuracy_drop(Path(out_path)))

        def met(value: float) -> bool:
            return value <= goal

    overrides: dict[str, int] = dict(base_overrides or {})
    info = quantize_onnx(float_onnx_path, out_path, scheme, calibration, target, observer=observer, overrides=overrides,
                         weight_algo=weight_algo)
    value = measure()
    steps = [{"raised": None, metric: value}]
    if not met(value) and (raise_acts or raise_weights):
        plan = _candidates(sensitivity(float_onnx_path, out_path, data), overrides, raise_acts, raise_weights, max_steps)
        engine = parallel.start(workers=workers) if min_sqnr_db is not None and len(plan) > 1 else parallel.Engine("serial", 1)
        if engine.kind == "serial":
            for row, new, cand in plan:
                overrides = cand
                info = quantize_onnx(float_onnx_path, out_path, scheme, calibration, target,
                                     observer=observer, overrides=overrides,
                                     weight_algo=weight_algo)
                value = measure()
                steps.append({"raised": row["node"], "tensors": sorted(new), metric: value})
                if met(value):
                    break
        else:
            try:
                overrides, value = _search_in_parallel(engine, plan, steps, met, float_onnx_path, scheme, calibration,
                                                       target, observer, data, overrides, value, weight_algo)
            finally:
                parallel.stop(engine)
            if len(steps) > 1:  # the chosen candidate, written where the serial search leaves it
                info = quantize_onnx(float_onnx_path, out_path, scheme, calibration, target,
                                     observer=observer, overrides=overrides,
                                     weight_algo=weight_algo)
    result = MixedPrecisionResult(overrides=overrides, metric=metric, achieved=value, target_value=goal,
                                  met=met(value), steps=steps, info=info, path=str(out_path))
    # The quantization info of the final model carries the search, ready for report.json.
    info["mixed_precision"] = {k: v for k, v in result.to_dict().items() if k != "path"}
    return result


def _candidates(ranking, overrides, raise_acts, raise_weights, max_steps) -> list[tuple[dict, dict, dict]]:
    """The serial search's re-quantizations in order: (ranking row, tensors it raises, all overrides after it)."""
    plan, current = [], dict(overrides)
    for row in ranking:
        if max_steps is not None and len(plan) >= max_steps:
            break
        new = {}
        if raise_acts:
            new.update({t: 16 for t in row["outputs"] if t not in current})
        if raise_weights:
            new.update({w: 8 for w in row["weights"] if w not in current})
        if new:
            current = {**current, **new}
            plan.append((row, new, current))
    return plan


def _requantize_sqnr(float_onnx_path, out_path, scheme, calibration, target, observer, overrides, data,
                     weight_algo="rtn") -> float:
    """One candidate (a Ray task): its stage SQNR (dB) on ``data``."""
    quantize_onnx(float_onnx_path, out_path, scheme, calibration, target, observer=observer, overrides=overrides,
                  weight_algo=weight_algo)
    return stage_sqnr(float_onnx_path, out_path, data)["sqnr_db"]


def _search_in_parallel(engine, plan, steps, met, float_onnx_path, scheme, calibration, target, observer, data,
                        overrides, value, weight_algo="rtn"):
    """Measure ``plan`` in batches of ``engine.workers`` candidates; append the serial search's steps up to the
    first candidate that meets the target; return (its overrides, its value)."""
    with tempfile.TemporaryDirectory(prefix="edgevlm-mp-") as tmp:
        for at in range(0, len(plan), engine.workers):
            batch = plan[at:at + engine.workers]
            args = [(str(float_onnx_path), str(Path(tmp) / f"candidate{at + k}.onnx"), scheme, calibration, target,
                     observer, cand, data, weight_algo) for k, (_, _, cand) in enumerate(batch)]
            values = dict(parallel.as_completed(engine, _requantize_sqnr, args))
            for k, (row, new, cand) in enumerate(batch):
                overrides, value = cand, values[k]
                steps.append({"raised": row["node"], "tensors": sorted(new), "sqnr_db": value})
                if met(value):
                    return overrides, value
    return overrides, value
