"""What each benchmark leaves in benchmarks/results: ``<out>.json`` (rows and meta) and ``<out>.md`` (the table)."""
import json
from pathlib import Path


def write_results(out: Path, data: dict, table: str, *, indent: int = 2, echo: bool = True) -> None:
    """Write ``data`` to ``<out>.json`` and the markdown ``table`` to ``<out>.md``, creating their folder.

    ``out`` may name either file of the pair or neither (``results/fuzz``,
    ``results/fuzz.json``); any other dot stays in the name (``fastvlm-0.5b``),
    which ``Path.with_suffix`` would cut.  ``echo`` also prints the table.
    """
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".json", ".md") else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_name(stem.name + ".json").write_text(json.dumps(data, indent=indent) + "\n")
    stem.with_name(stem.name + ".md").write_text(table)
    if echo:
        print(table, end="")
