"""The shapes data set: deterministic files, valid labels, answers consistent with the objects drawn."""
import hashlib
import json

import pytest

from edgevlm.cli import main
from edgevlm.data.shapes import COLORS, POSITIONS, SHAPES, all_questions, make_sample
from edgevlm.errors import InputError
from edgevlm.models.tokenizer import load_tokenizer


def _digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_same_seed_writes_identical_files(tmp_path):
    assert main(["data", "shapes", "--out", str(tmp_path / "a"), "--n", "12", "--seed", "3"]) == 0
    assert main(["data", "shapes", "--out", str(tmp_path / "b"), "--n", "12", "--seed", "3"]) == 0
    main(["data", "shapes", "--out", str(tmp_path / "c"), "--n", "12", "--seed", "4"])
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 13
    assert a != c
    rows = [json.loads(line) for line in (tmp_path / "a" / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(set(r) == {"image", "prompt", "answer"} for r in rows)
    assert all((tmp_path / "a" / r["image"]).is_file() for r in rows)


def test_sample_depends_only_on_seed_and_index():
    assert make_sample(5, 7).prompt == make_sample(5, 7).prompt
    assert make_sample(5, 7).image.tobytes() == make_sample(5, 7).image.tobytes()


def test_answers_match_objects_and_tokenize_without_unknowns():
    tok = load_tokenizer()
    for i in range(200):
        s = make_sample(1, i)
        assert s.answer in all_questions_answers(s)
        for color, shape, pos in s.objects:
            assert color in COLORS and shape in SHAPES and pos in POSITIONS
        assert tok.unk_id not in tok.encode(s.prompt) + tok.encode(s.answer)


def all_questions_answers(s):
    return {a for p, a in all_questions(s.objects) if p == s.prompt}


def test_color_is_drawn_where_the_answer_says():
    # The pixel at the centre of the answered cell has the answered colour for "what color" questions.
    for i in range(100):
        s = make_sample(2, i)
        if s.prompt.startswith("what color") and "cross" not in s.prompt:
            color, shape, pos = next(o for o in s.objects if o[1] in s.prompt)
            row, col = divmod(POSITIONS.index(pos), 3)
            cell = s.image.size[0] / 3
            px = s.image.getpixel((int((col + 0.5) * cell), int((row + 0.5) * cell)))
            assert max(abs(a - b) for a, b in zip(px, COLORS[color])) < 40 or shape == "triangle"


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="positive integer"):
        from edgevlm.data.shapes import write_dataset

        write_dataset(tmp_path / "x", n=0, seed=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert main(["data", "shapes", "--out", str(tmp_path / "full"), "--n", "2"]) == 2
