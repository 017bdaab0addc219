"""The zoo's word-level tokenizer (Hugging Face ``tokenizers``), shipped as zoo/weights/tokenizer.json.

Ids 0..4 are the special tokens <pad>, <bos>, <eos>, <image>, <unk> (pad, bos
and eos at LFM2's default ids), followed by the shapes data set's words.
Text is lower-cased and split on whitespace and punctuation.
"""
from pathlib import Path

from edgevlm.errors import CheckpointError, InputError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<image>", "<unk>")
SHIPPED = Path(__file__).parent / "zoo" / "weights" / "tokenizer.json"


def build_shapes_tokenizer():
    """Build the word-level tokenizer over the shapes vocabulary (deterministic ids)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    from edgevlm.data.shapes import VOCABULARY

    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + VOCABULARY)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


class TextTokenizer:
    """encode/decode plus the special ids the VLM needs."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise CheckpointError(f"tokenizer lacks special token(s) {missing}", f"a zoo tokenizer needs {', '.join(SPECIAL_TOKENS)}")
        self.pad_id, self.bos_id, self.eos_id, self.image_id, self.unk_id = (ids[t] for t in SPECIAL_TOKENS)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        if not isinstance(text, str):
            raise InputError(f"prompt must be a string, got {type(text).__name__}", "pass text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # e.g. argv bytes that are not UTF-8 (surrogateescape)
            raise InputError(f"prompt is not valid UTF-8 text ({exc.reason} at character {exc.start})",
                             "pass the prompt as UTF-8 text") from None
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        """Words of ``ids`` joined by spaces, special tokens dropped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def save(self, path) -> None:
        self.tokenizer.save(str(path))


def load_tokenizer(path=None) -> TextTokenizer:
    """Load a tokenizer.json (default: the shipped one)."""
    from tokenizers import Tokenizer

    path = Path(path) if path is not None else SHIPPED
    if not path.is_file():
        raise CheckpointError(f"tokenizer file '{path}' not found", "reinstall edgevlm, or pass the checkpoint's tokenizer.json")
    try:
        return TextTokenizer(Tokenizer.from_file(str(path)))
    except Exception as exc:  # tokenizers raises bare Exception subclasses on bad JSON
        raise CheckpointError(f"cannot read tokenizer '{path}': {exc}", "re-export tokenizer.json") from None
