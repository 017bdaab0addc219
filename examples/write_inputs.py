"""Write the inputs of examples/c_app: one image's embeddings plus the prompt's token ids.

    python examples/write_inputs.py BUILD_DIR IMAGE "what color is the circle?" -o inputs.bin

The vision half of the VLM (encoder + projector) runs here in Python through
the build's artifacts; the C app then runs the language model from the
build's llm.gguf with nothing but edgevlm.h.

File format (all little-endian; the C reader checks every field):

    offset  size                  field
    0       4                     magic b"EVIN"
    4       4                     u32 version = 1
    8       4                     u32 n_image   image tokens, 1..4096
    12      4                     u32 hidden    embedding width = the model's n_embd, 1..16384
    16      4                     u32 n_prompt  prompt token ids after the image, 0..65536
    20      4 * n_image * hidden  f32 image embeddings, row-major [n_image, hidden]
    ...     4 * n_prompt          i32 prompt token ids

The file ends right after the ids.  The C app runs <bos>, the image
embeddings, then the prompt ids: the sequence BuildRunner.prompt_ids() makes,
with the image placeholders replaced by the embeddings.
"""
import argparse
import struct
import sys

import numpy as np

from edgevlm.errors import EdgeVLMError
from edgevlm.runner import BuildRunner, open_image

MAGIC, VERSION = b"EVIN", 1
MAX_IMAGE, MAX_HIDDEN, MAX_PROMPT = 4096, 16384, 65536  # the same limits as main.c


def encode_inputs(embeds: np.ndarray, prompt_ids: list[int]) -> bytes:
    """The file's bytes for image embeddings [n_image, hidden] and the prompt's token ids."""
    n_image, hidden = embeds.shape
    if not (1 <= n_image <= MAX_IMAGE and 1 <= hidden <= MAX_HIDDEN and len(prompt_ids) <= MAX_PROMPT):
        raise ValueError(f"{n_image} image tokens x {hidden}, {len(prompt_ids)} prompt ids: outside the format's limits")
    header = MAGIC + struct.pack("<4I", VERSION, n_image, hidden, len(prompt_ids))
    return header + np.ascontiguousarray(embeds, dtype="<f4").tobytes() + np.asarray(prompt_ids, dtype="<i4").tobytes()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir", help="a directory written by `edgevlm compile`")
    ap.add_argument("image", help="a PNG or JPEG file")
    ap.add_argument("prompt", help='e.g. "describe the image."')
    ap.add_argument("-o", "--out", default="inputs.bin", help="output file (default: inputs.bin)")
    args = ap.parse_args(argv)
    try:
        runner = BuildRunner(args.build_dir, threads=1)
        ids = runner.prompt_ids(args.prompt)  # [bos] + [image] * N + prompt words
        embeds = runner.select_image_tokens(runner.image_embeds(open_image(args.image)), ids)
    except EdgeVLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    words = [i for i in ids[1:] if i != runner.meta["image_token_id"]]
    try:
        data = encode_inputs(embeds, words)
        with open(args.out, "wb") as f:
            f.write(data)
    except (ValueError, OSError) as exc:
        print(f"error: cannot write '{args.out}': {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {embeds.shape[0]} image tokens x {embeds.shape[1]}, {len(words)} prompt ids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
