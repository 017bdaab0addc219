"""Graph passes, one per file (``<verb>_<noun>_pass.py``), run in ``PIPELINE`` order.

Each pass: ``run(gm, target) -> PassResult(gm, changed)``, pure and
idempotent; the graph is linted after each.
"""
from edgevlm.compiler.passes import (
    fold_batchnorm_pass,
    fold_constants_pass,
    legalize_for_target_pass,
    linear_to_conv_pass,
)
from edgevlm.compiler.passes.base import PassResult, lint

PIPELINE = [
    fold_constants_pass,
    fold_batchnorm_pass,
    legalize_for_target_pass,
    linear_to_conv_pass,
]


def run_pipeline(gm, target, passes=None):
    """Run the passes in order; returns (gm, log) with log = [(pass name, changed)]."""
    log = []
    for p in passes if passes is not None else PIPELINE:
        result = p.run(gm, target)
        gm = result.graph_module
        lint(gm)
        log.append((p.__name__.rsplit(".", 1)[-1], result.changed))
    return gm, log


__all__ = ["PIPELINE", "PassResult", "run_pipeline"]
