"""`edgevlm models`: the named models and the vision encoders, with params and MACs."""
import hashlib
import json
import os
from pathlib import Path

from edgevlm.core.stage import StageName

NAME = "models"
HELP = "list the model zoo (named VLMs and vision encoders) with params and MACs"
ORDER = 30


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _m(x: int) -> str:
    return f"{x / 1e6:.2f} M"


def _cache_path() -> Path:
    """Where the counted listing is kept: $EDGEVLM_CACHE_DIR, else $XDG_CACHE_HOME/edgevlm, else ~/.cache/edgevlm.

    The file name is a hash of every file under edgevlm/models (the code that builds the models and counts
    them, and the shipped weights behind "trained") and of the torch and timm versions, so a change to any
    of them counts again.
    """
    from importlib.metadata import version

    import edgevlm.models

    root = Path(edgevlm.models.__file__).parent
    h = hashlib.sha256(f"torch {version('torch')} timm {version('timm')}".encode())  # without importing timm
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f"{f.relative_to(root)}\0{f.stat().st_size}\0".encode())
        h.update(f.read_bytes())
    base = os.environ.get("EDGEVLM_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgevlm"
    return Path(base) / f"models-{h.hexdigest()[:32]}.json"


def _counted() -> dict:
    """{"vlms": [...], "encoders": [...]}, with params and MACs.

    Counting builds each VLM and each encoder size on the meta device (about 20 s on 2 cores, most of it
    the reference-size encoders), so the result is kept on disk (_cache_path) and read back the next
    time.  A cache that cannot be read or written is counted again, never an error.
    """
    from edgevlm.models.arch.encoders import list_encoders
    from edgevlm.models.zoo.vlms import SPECS, describe

    path = _cache_path()
    try:
        cached = json.loads(path.read_text())
        if set(cached) == {"vlms", "encoders"}:
            return cached
    except (OSError, ValueError):
        pass
    counted = {"vlms": [describe(name) for name in SPECS], "encoders": list_encoders()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(counted))
        os.replace(tmp, path)  # whole or not at all, also with two listings at once
    except OSError:
        pass
    return counted


def run(args) -> int:
    from edgevlm.models import DEFAULT_MODEL, list_models
    from edgevlm.models.zoo.vlms import SPECS

    counted = _counted()
    vlms, encoders = counted["vlms"], counted["encoders"]
    others = [{"name": e.name, "family": e.family, "description": e.description}
              for e in list_models() if e.name not in SPECS]
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
