"""The C GGUF reader on a corpus of broken files: each gives its own error code, never a crash."""
import pytest

from edgevlm.runtime import Model, RuntimeLoadError
from gguf_corpus import corpus, truncations, valid_model, valid_qwen2

CASES = corpus()


def test_valid_model_loads(tmp_path):
    p = tmp_path / "ok.gguf"
    p.write_bytes(valid_model().to_bytes())
    m = Model.load(p)
    assert m.info["n_layer"] == 2 and m.info["n_attn_layers"] == 1
    assert m.token_text(3) == b"t3"


def test_valid_qwen2_loads_and_runs(tmp_path):
    p = tmp_path / "qwen2.gguf"
    p.write_bytes(valid_qwen2().to_bytes())
    m = Model.load(p)
    assert m.info["arch"] == "qwen2" and m.info["n_attn_layers"] == 2 and m.info["conv_l_cache"] == 0
    logits = m.session(8).prefill(ids=[1, 2, 3])
    assert logits.shape == (m.n_vocab,) and abs(float(logits.max())) > 0


@pytest.mark.parametrize("name,data,code", CASES, ids=[c[0] for c in CASES])
def test_bad_file_gives_its_error_code(tmp_path, name, data, code):
    p = tmp_path / f"{name}.gguf"
    p.write_bytes(data)
    with pytest.raises(RuntimeLoadError) as exc:
        Model.load(p)
    assert exc.value.name == code, str(exc.value)
    assert exc.value.fix


def test_truncated_anywhere_is_an_error(tmp_path):
    allowed = {"EV_ERR_TRUNCATED", "EV_ERR_BAD_STRING", "EV_ERR_BAD_OFFSET", "EV_ERR_BAD_MAGIC", "EV_ERR_BAD_COUNT"}
    for i, data in enumerate(truncations()):
        p = tmp_path / f"cut{i}.gguf"
        p.write_bytes(data)
        with pytest.raises(RuntimeLoadError) as exc:
            Model.load(p)
        assert exc.value.name in allowed, (len(data), str(exc.value))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(RuntimeLoadError) as exc:
        Model.load(tmp_path / "nope.gguf")
    assert exc.value.name == "EV_ERR_IO"
    with pytest.raises(RuntimeLoadError) as exc:
        Model.load(tmp_path)
    assert exc.value.name == "EV_ERR_IO"
