"""The Backend interface: one file per backend in this package.

A backend module defines ``BACKEND``, an object with:

- ``name``: e.g. ``"onnx"``; ``extra``: the pip extra that installs it;
- ``available() -> (ok, reason)``: never raises; a missing SDK is a reason;
- ``lower(stage: CapturedStage, plan: Plan) -> Artifact``: writes files under
  ``plan.out_dir`` and returns what it wrote; a backend that lowers another
  backend's artifact names it in ``consumes`` and gets it as a third argument;
- ``execute(artifact, inputs) -> list[np.ndarray]`` where this machine can run
  the artifact; ``can_execute`` says whether it can;
- ``load(artifact, build_dir) -> fn(inputs) -> outputs``: the artifact loaded
  once for many runs (`edgevlm run`, profiling).
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgevlm.targets.base import Target


@dataclass(frozen=True)
class Plan:
    """How to lower: the target, where to write, and the quantization plan."""

    target: Target
    out_dir: Path
    quant: object = None  # an edgevlm.quant scheme (or per-stage mapping), None = float
    options: dict = field(default_factory=dict)


@dataclass
class Artifact:
    """Files a backend wrote for one stage (paths relative to the build dir)."""

    backend: str
    stage: str
    path: str  # the main file or directory
    files: list[str] = field(default_factory=list)  # every file written, incl. path
    info: dict = field(default_factory=dict)  # backend facts for the report (opset, dtypes, ...)


class Backend:
    """Base class with the defaults; subclasses override what they support."""

    name: str = ""
    extra: str | None = None  # pip extra, e.g. "executorch"
    can_execute: bool = False
    # The backend whose artifact of the same stage this one lowers (qnn: "onnx"'s QDQ model).
    # The pipeline lowers that backend first and passes its Artifact as ``lower(stage, plan, source)``.
    consumes: str | None = None
    measures_latency: bool = True  # False where running here says nothing of speed (a simulator)

    def verify_samples(self, stage, plan: Plan):
        """(input tuples to verify the artifact on, time budget in seconds or None); None skips verification."""
        return [stage.example_inputs], None

    def reference(self, plan: Plan) -> str:
        """What the parity figure compares, for the report."""
        return "float PyTorch model, example inputs"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def lower(self, stage, plan: Plan) -> Artifact:
        raise NotImplementedError

    def load(self, artifact: Artifact, build_dir: Path, threads: int = 0):
        """A function inputs -> outputs running ``artifact`` (loaded once, run many times).

        Backends that only define ``execute`` get a loader that calls it each run.
        """
        if type(self).execute is Backend.execute:
            raise NotImplementedError(f"backend {self.name} cannot run artifacts on this machine")
        return lambda inputs: self.execute(artifact, build_dir, inputs)

    def execute(self, artifact: Artifact, build_dir: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if type(self).load is Backend.load:  # neither defined: this backend cannot run artifacts
            raise NotImplementedError(f"backend {self.name} cannot run artifacts on this machine")
        return self.load(artifact, build_dir)(inputs)
