"""Mixed precision: raise the most sensitive layers until a quality target is met.

Starting from a scheme (e.g. w8a8 or w4a16), the layers are ranked once by
the SQNR lost across them (:func:`edgevlm.quant.analysis.sensitivity`: one
run of the float and the quantized model, whatever the number of layers).
Candidate k raises the first k layers of that ranking: its output
activations to 16 bits and its weights to 8 bits (each only if the scheme is
lower and the target allows it; weights only below RAISE_WEIGHTS_BELOW_DB).  Which candidate is kept:

- ``search="bisect"`` (default): the candidate with every ranked layer
  raised is measured first (if even it misses the target, it is the
  result); then the smallest candidate that meets the target is found by
  bisection over the ranking, assuming the figure rises with k.  At most
  ``max_requantizations`` candidates are re-quantized, a constant: the
  search's cost is that many re-quantizations plus one sensitivity run,
  each linear in the model's size, so it grows linearly with the number of
  layers (the linear search re-quantizes once per layer, quadratic: 618 s
  on enc-mobilenetv5-nano).  When the budget ends before the bisection
  does, the smallest candidate measured to meet the target is kept.
- ``search="linear"``: one candidate after the other in ranking order,
  stopping at the first that meets the target (the fewest layers raised
  under this ranking).  The candidates are known before any is measured:
  with Ray installed and an SQNR target, they are re-quantized and measured
  as Ray tasks, as many at a time as there are CPUs, in ranking order: the
  same steps and the same model as the serial search, which ``workers=0``
  (or Ray missing) runs.
"""
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgevlm import parallel
from edgevlm.core.stage import StageName
from edgevlm.errors import InputError
from edgevlm.quant.analysis import sensitivity, stage_sqnr
from edgevlm.quant.onnx_qdq import quantize_onnx
from edgevlm.quant.schemes import get_scheme
from edgevlm.targets import get_target

SEARCHES = ("bisect", "linear")
MAX_REQUANTIZATIONS = 8  # bisect: candidates measured at most (resolves 2^7 = 128 ranked layers to one)
# A weight is raised to 8 bits only below this weight SQNR: int8 per channel gives ~44 dB on a weight off any
# grid (autoneural-nano's LM: 43.8-45.5 dB), so one already above it (trained onto the int4 grid: ~71 dB, or
# a constant held at 16 bits) would lose precision: raising all of that LM's weights took llm-prefill 35.5 -> 29.8 dB.
RAISE_WEIGHTS_BELOW_DB = 40.0


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
                           workers: int | None = None, weight_algo: str = "rtn", search: str = "bisect",
                           max_requantizations: int = MAX_REQUANTIZATIONS) -> MixedPrecisionResult:
    """Quantize with ``scheme``, raising sensitive layers until the quality target holds.

    Give exactly one target: ``min_sqnr_db`` (worst stage-output SQNR in dB
    on ``eval_data``, default the calibration data) or ``accuracy_drop``, a
    callable taking the quantized model's path and returning the accuracy
    drop vs float in points, met when <= ``max_accuracy_drop``.  The model
    written last to ``out_path`` is the returned one.  ``base_overrides``
    (e.g. the KV cache at 8 bits under kv8) hold throughout and are never raised.
    ``workers``: Ray CPUs for the candidates (None: Ray's, when it is installed; 0: serial here).
    ``weight_algo``: how every candidate rounds its weights (see quantize_onnx).
    ``search``: ``bisect`` or ``linear`` (module docstring); ``max_requantizations``: bisect's budget (>= 1).
    """
    if (min_sqnr_db is None) == (accuracy_drop is None):
        raise InputError("give exactly one quality target: min_sqnr_db or accuracy_drop")
    if search not in SEARCHES:
        raise InputError(f"unknown mixed-precision search '{search}'", f"use one of {', '.join(SEARCHES)}")
    if max_requantizations < 1:
        raise InputError(f"max_requantizations is {max_requantizations}", "give at least 1")
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
    plan = []
    if not met(value) and (raise_acts or raise_weights):
        plan = _candidates(sensitivity(float_onnx_path, out_path, data), overrides, raise_acts, raise_weights, max_steps)
    if plan:

        def requantize(k: int) -> tuple[dict, float]:
            result = quantize_onnx(float_onnx_path, out_path, scheme, calibration, target, observer=observer,
                                   overrides=plan[k][2], weight_algo=weight_algo)
            return result, measure()

        if search == "bisect":
            overrides, value, info = _bisect(plan, requantize, met, steps, metric, max_requantizations)
        else:
            overrides, value, info = _linear(plan, requantize, met, steps, metric, workers, min_sqnr_db is not None,
                                             (float_onnx_path, scheme, calibration, target, observer, data,
                                              weight_algo), (overrides, value, info))
    result = MixedPrecisionResult(overrides=overrides, metric=metric, achieved=value, target_value=goal,
                                  met=met(value), steps=steps, info=info, path=str(out_path))
    # The quantization info of the final model carries the search, ready for report.json.
    info["mixed_precision"] = {k: v for k, v in result.to_dict().items() if k != "path"}
    return result


def _linear(plan, requantize, met, steps, metric, workers, sqnr_target, task_args, start):
    """One candidate after the other (as Ray tasks when there is more than one and an SQNR target)."""
    overrides, value, info = start
    engine = parallel.start(workers=workers) if sqnr_target and len(plan) > 1 else parallel.Engine("serial", 1)
    if engine.kind == "serial":
        for k, (row, new, cand) in enumerate(plan):
            info, value = requantize(k)
            overrides = cand
            steps.append({"raised": row["node"], "tensors": sorted(new), metric: value})
            if met(value):
                break
        return overrides, value, info
    float_onnx_path, scheme, calibration, target, observer, data, weight_algo = task_args
    try:
        overrides, value = _search_in_parallel(engine, plan, steps, met, float_onnx_path, scheme, calibration,
                                               target, observer, data, overrides, value, weight_algo)
    finally:
        parallel.stop(engine)
    if len(steps) > 1:  # the chosen candidate, written where the serial search leaves it
        info, value = requantize(len(steps) - 2)
    return overrides, value, info


def _bisect(plan, requantize, met, steps, metric, budget):
    """All ranked layers raised first, then the smallest candidate that meets the target, by bisection.

    Candidate k (0-based) raises plan[:k + 1]; ``lo`` is the largest k known
    to miss (-1: the base model), ``hi`` the smallest known to meet.  The
    model left on disk is the one returned: re-quantized once more when the
    last candidate measured is not it.
    """
    last = len(plan) - 1  # steps: {"layers_raised": k + 1, "last": the k-th ranked node, <metric>: figure}
    info, value = requantize(last)
    steps.append({"layers_raised": len(plan), "last": plan[last][0]["node"], metric: value})
    if not met(value):
        return plan[last][2], value, info
    lo, hi, best, measured = -1, last, (info, value), 1
    while hi - lo > 1 and measured < budget:
        mid = (lo + hi) // 2
        info, value = requantize(mid)
        measured += 1
        steps.append({"layers_raised": mid + 1, "last": plan[mid][0]["node"], metric: value})
        if met(value):
            hi, best = mid, (info, value)
        else:
            lo = mid
    if steps[-1]["layers_raised"] != hi + 1:
        best = requantize(hi)
    return plan[hi][2], best[1], best[0]


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
            sqnr = row.get("weights_sqnr_db", {})
            new.update({w: 8 for w in row["weights"]
                        if w not in current and sqnr.get(w, float("-inf")) < RAISE_WEIGHTS_BELOW_DB})
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


def parse_quality_target(text: str | float | None) -> float | dict[str, float] | None:
    """``--quality-target``: one SQNR in dB for every quantized stage (``"30"``) or one per stage
    (``"llm-prefill=25,llm-decode=25"``; stages not named get no mixed precision)."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    fix = "give a number of dB (e.g. 30) or stage=dB pairs (e.g. llm-prefill=25,llm-decode=25)"
    try:
        if "=" not in text:
            return float(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        targets = {stage.strip(): float(db) for stage, db in pairs}
    except ValueError:
        raise InputError(f"--quality-target '{text}' is not a number of dB or stage=dB pairs", fix) from None
    stages = [s.value for s in StageName]
    unknown = sorted(set(targets) - set(stages))
    if unknown:
        raise InputError(f"--quality-target names unknown stage(s) {', '.join(unknown)}",
                         f"name stages among {', '.join(stages)}")
    return targets


def quality_target_for(targets: float | dict[str, float] | None, stage: str) -> float | None:
    """The SQNR target (dB) of ``stage`` under a parsed ``--quality-target`` (None: no mixed precision)."""
    return targets.get(stage) if isinstance(targets, dict) else targets
