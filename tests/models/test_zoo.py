"""Model discovery: ``edgevlm.models.list_models`` imports the zoo's modules, not checkpoint import or training."""
import json
import subprocess
import sys

LIST = """
import json, sys
from edgevlm.models import list_models
names = [m.name for m in list_models()]
print(json.dumps({"names": names, "modules": sorted(m for m in sys.modules if m.startswith("edgevlm.models"))}))
"""


def test_discovery_imports_the_zoo_only():
    out = json.loads(subprocess.run([sys.executable, "-c", LIST], check=True, capture_output=True, text=True).stdout)
    # one entry from each zoo module: zoo/vlms.py, zoo/encoders.py, zoo/tinyconv.py
    assert {"autoneural-nano", "enc-mobilenetv5-nano", "tinyconv"} <= set(out["names"])
    assert {"edgevlm.models.zoo.vlms", "edgevlm.models.zoo.encoders", "edgevlm.models.zoo.tinyconv"} <= set(out["modules"])
    assert not [m for m in out["modules"] if m.startswith(("edgevlm.models.hf", "edgevlm.models.train"))]
