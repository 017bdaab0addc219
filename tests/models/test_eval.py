"""`edgevlm eval` and `edgevlm models` from the command line."""
import json

from edgevlm.cli import main


def test_eval_json(capsys):
    assert main(["eval", "autoneural-nano", "--n", "20", "--seed", "77", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["exact_match"] <= 1.0 and result["n"] == 20 and result["seed"] == 77


def test_eval_errors(tmp_path, capsys):
    assert main(["eval", "no-such-model", "--n", "5"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["eval", str(tmp_path), "--n", "5"]) == 2
    assert "is damaged: cannot read manifest.json" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text(json.dumps({"model": "m", "target": "t", "artifacts": []}))
    assert main(["eval", str(tmp_path), "--n", "5"]) == 2
    assert "no evaluation backend can run the build" in capsys.readouterr().err
    assert main(["eval", "autoneural-nano", "--n", "0"]) == 2


def test_models_lists_vlms_and_encoders(capsys):
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {v["name"] for v in listing["vlms"]}
    assert {"autoneural-nano", "autoneural-small", "fastvlm-nano", "fastvlm-small", "vit-nano", "vit-small"} <= names
    nano = next(v for v in listing["vlms"] if v["name"] == "autoneural-nano")
    assert nano["params"] > nano["params_llm"] > 0 and nano["macs"]["llm-decode"] > 0
    assert {e["name"] for e in listing["encoders"]} >= {"mobilenetv5", "fastvithd", "vit"}


def test_models_listing_is_counted_once_and_kept_in_the_cache(tmp_path, monkeypatch, capsys):
    """Counting params and MACs builds every model; `edgevlm models` keeps the result in EDGEVLM_CACHE_DIR,
    reads it back the next time, and counts again when the cache file is damaged or cannot be written."""
    from edgevlm.models.arch import encoders
    from edgevlm.models.zoo import vlms

    calls = []
    monkeypatch.setattr(vlms, "describe", lambda name: calls.append(name) or {
        "name": name, "encoder": "e nano", "image_size": 8, "image_tokens": 1, "params": 2, "params_llm": 1,
        "macs": {"encoder": 1, "llm-prefill": 1, "llm-decode": 1}, "trained": False})
    monkeypatch.setattr(encoders, "list_encoders", lambda: [])
    monkeypatch.setenv("EDGEVLM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["models", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert calls == list(vlms.SPECS)
    (cache,) = (tmp_path / "cache").iterdir()
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first and calls == list(vlms.SPECS)  # read back, not counted
    cache.write_text('{"vlms": [')  # damaged: counted again, and rewritten whole
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first and len(calls) == 2 * len(vlms.SPECS)
    assert json.loads(cache.read_text())["vlms"] == first["vlms"]
    monkeypatch.setenv("EDGEVLM_CACHE_DIR", str(cache / "not-a-dir"))  # cannot be written: still lists
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first
