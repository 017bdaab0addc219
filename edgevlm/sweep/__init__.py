"""Design-space sweeps: `edgevlm sweep` compiles and evaluates every point of a settings grid.

grid.py      the points (quant schemes x vision tokens x reductions x targets), keyed by their settings
execute.py   one point = compile + eval through the deployed path + the target estimate; Ray or serial;
             records streamed into DIR/sweep.jsonl (a rerun resumes)
page.py      DIR/sweep.html: accuracy vs estimated TTFT / decode rate per target, Pareto fronts, table,
             recommended point
"""
