"""`edgevlm models`: the named models and the vision encoders, with params and MACs."""
import json

from edgevlm.core.stage import StageName

NAME = "models"
HELP = "list the model zoo (named VLMs and vision encoders) with params and MACs"
ORDER = 30


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _m(x: int) -> str:
    return f"{x / 1e6:.2f} M"


def run(args) -> int:
    from edgevlm.models import DEFAULT_MODEL, list_models
    from edgevlm.models.arch.encoders import list_encoders
    from edgevlm.models.zoo.vlms import SPECS, describe

    vlms = [describe(name) for name in SPECS]
    others = [{"name": e.name, "family": e.family, "description": e.description}
              for e in list_models() if e.name not in SPECS]
    encoders = list_encoders()
    if args.json:
        print(json.dumps({"default": DEFAULT_MODEL, "vlms": vlms, "other_models": others, "encoders": encoders}, indent=2))
        return 0
    from edgevlm.commands._table import print_table

    print_table("edgevlm vision-language models (MACs per stage at batch 1; prefill at its compiled length)",
                ("name", "encoder", "image", "tokens", "params", "LLM params", "encoder MACs", "prefill MACs",
                 "decode MACs/token", "weights"),
                [(v["name"] + (" (default)" if v["name"] == DEFAULT_MODEL else ""), v["encoder"], f"{v['image_size']} px",
                  str(v["image_tokens"]), _m(v["params"]), _m(v["params_llm"]), _m(v["macs"][StageName.ENCODER]),
                  _m(v["macs"][StageName.LLM_PREFILL]), _m(v["macs"][StageName.LLM_DECODE]),
                  "trained (shipped)" if v["trained"] else "random init") for v in vlms])
    print_table("vision encoders (MACs at the default image size)",
                ("name", "size", "image", "tokens", "dim", "params", "MACs", "note"),
                [(e["name"], e["size"], f"{e['image_size']} px", str(e["tokens"]), str(e["out_dim"]), _m(e["params"]),
                  _m(e["macs"]), e["note"]) for e in encoders])
    if others:
        print_table("other models", ("name", "family", "description"),
                    [(o["name"], o["family"], o["description"]) for o in others])
    print("MACs count conv, linear, matmul and attention ops (torch FlopCounterMode / 2); elementwise ops are not counted.")
    return 0
