"""`edgevlm estimate`: estimated latency of a timm or zoo model on a target (roofline; nothing runs on the target)."""
import json

from edgevlm.core.stage import StageKind

NAME = "estimate"
HELP = "estimate a model's latency on a target from its roofline (a timm model or a zoo model)"
ORDER = 40


def add_arguments(parser):
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--timm", metavar="NAME", help="any timm model name (random weights, nothing is downloaded)")
    what.add_argument("--model", metavar="ZOO_NAME", help="an edgevlm zoo model (see `edgevlm models`): one row per stage")
    parser.add_argument("--target", default="sa8295p", help="target name (see `edgevlm targets`; default sa8295p)")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="input resolution for --timm (default: the model's own, else 224)")
    parser.add_argument("--quant", default=None, help="scheme (w8a16, w8a8, w4a16, float, or per stage kind "
                        "'encoder=w8a16,llm=w4a16'); default: the target's")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args) -> int:
    from edgevlm.errors import InputError
    from edgevlm.quant.schemes import parse_quant_spec
    from edgevlm.targets import get_target

    target = get_target(args.target)
    schemes = parse_quant_spec(args.quant, target)
    if args.image_size is not None and not 8 <= args.image_size <= 4096:
        raise InputError(f"--image-size {args.image_size} is out of range", "give a resolution between 8 and 4096")
    if args.timm:
        rows = [_estimate_timm(args.timm, args.image_size, target, schemes.get(StageKind.ENCODER))]
        title = f"{args.timm} on {target.name}"
    else:
        if args.image_size is not None:
            raise InputError("--image-size applies to --timm models only", "zoo models have fixed stage shapes; drop --image-size")
        rows = _estimate_zoo(args.model, target, schemes)
        title = f"{args.model} on {target.name}"
    if args.json:
        print(json.dumps({"label": "estimated", "title": title, "target": target.name,
                          "total_ms": sum(est.total_ms for _, est in rows),
                          "stages": [{"stage": name, **est.to_dict()} for name, est in rows]}, indent=2))
        return 0
    _print_tables(title, rows)
    return 0


def _scheme_name(scheme) -> str:
    return "float" if scheme is None else scheme.name


def _estimate_timm(name, image_size, target, scheme):
    import torch

    from edgevlm.compiler.estimate import estimate_latency, timm_model

    model = timm_model(name)
    size = image_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    est = estimate_latency(model, (torch.zeros(1, 3, size, size),), target, _scheme_name(scheme))
    return f"{name} @{size}px", est


def _estimate_zoo(name, target, schemes):
    from edgevlm.models import build_model
    from edgevlm.compiler.estimate import estimate_latency

    bundle = build_model(name)
    return [(stage.name, estimate_latency(stage.module, stage.example_inputs, target,
                                          _scheme_name(schemes.get(stage.kind, schemes.get(StageKind.ENCODER)))))
            for stage in bundle.stages]


def _print_tables(title, rows):
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for name, est in rows:
        table = Table(title=f"{name}: estimated latency by op class ({est.scheme} on {est.target})")
        for col in ("op class", "ops", "GMACs", "DRAM MB", "estimated ms"):
            table.add_column(col, justify="left" if col == "op class" else "right")
        for op_class, agg in est.by_class().items():
            table.add_row(op_class, str(agg["ops"]), f"{agg['macs'] / 1e9:.3f}", f"{agg['bytes'] / 1e6:.2f}", f"{agg['ms']:.3f}")
        table.add_row("total", str(len(est.rows)), f"{est.macs / 1e9:.3f}",
                      f"{sum(r.bytes for r in est.rows) / 1e6:.2f}", f"{est.total_ms:.3f}", style="bold")
        console.print(table)
    if len(rows) > 1:
        table = Table(title=f"{title}: estimated latency per stage")
        table.add_column("stage")
        table.add_column("scheme")
        table.add_column("estimated ms", justify="right")
        for name, est in rows:
            table.add_row(name, est.scheme, f"{est.total_ms:.3f}")
        table.add_row("total", "", f"{sum(e.total_ms for _, e in rows):.3f}", style="bold")
        console.print(table)
    total = sum(e.total_ms for _, e in rows)
    console.print(f"{title}: [bold]{total:.3f} ms (estimated)[/bold] — roofline model, efficiencies "
                  f"{rows[0][1].efficiency.source}; not a measurement.")
