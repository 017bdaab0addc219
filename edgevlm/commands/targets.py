"""`edgevlm targets`: the deployment targets as a table."""
import json

NAME = "targets"
HELP = "list deployment targets: backends, dtypes, constraints, roofline"
ORDER = 20


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from edgevlm.commands._table import print_table
    from edgevlm.targets import list_targets

    targets = list_targets()
    if args.json:
        print(json.dumps([_as_dict(t) for t in targets], indent=2))
        return 0
    columns = ("name", "HTP", "backends", "activations", "weights", "KV", "float graphs", "int8 TMAC/s", "DRAM GB/s", "on-chip", "constraints")
    rows = [(t.name, f"v{t.htp.arch} soc {t.htp.soc_model}" if t.htp else "-", ",".join(t.backends), "/".join(t.activation_dtypes), "/".join(t.weight_dtypes),
             "/".join(t.kv_dtypes), "yes" if t.float_graphs else "no", f"{t.roofline.int8_macs_per_s / 1e12:.2f}",
             f"{t.roofline.dram_gb_per_s:g}", f"{t.roofline.onchip_bytes // 2**20} MB", "; ".join(t.constraints))
            for t in targets]
    print_table("edgevlm targets", columns, rows, right=("int8 TMAC/s", "DRAM GB/s", "on-chip"))
    print("Roofline figures are nominal (vendor specifications), not measurements.")
    return 0


def _as_dict(t) -> dict:
    r = t.roofline
    return {
        "name": t.name, "description": t.description, "kind": t.kind, "backends": list(t.backends),
        "activation_dtypes": list(t.activation_dtypes), "weight_dtypes": list(t.weight_dtypes),
        "kv_dtypes": list(t.kv_dtypes), "weight_granularities": list(t.weight_granularities),
        "float_graphs": t.float_graphs, "memory_bytes": t.memory_bytes, "default_quant": dict(t.default_quant),
        "constraints": list(t.constraints),
        "htp": None if t.htp is None else {"arch": t.htp.arch, "soc_model": t.htp.soc_model, "soc_name": t.htp.soc_name,
                                           "vtcm_mb": t.htp.vtcm_mb},
        "roofline": {"int8_macs_per_s": r.int8_macs_per_s, "int16_macs_per_s": r.int16_macs_per_s,
                     "float_macs_per_s": r.float_macs_per_s, "dram_gb_per_s": r.dram_gb_per_s,
                     "onchip_bytes": r.onchip_bytes, "source": r.source},
    }
