"""Caption every image in a folder with a compiled edgevlm build.

    python examples/caption_folder.py BUILD_DIR IMAGE_DIR [--prompt "describe the image."] [--threads N]

Prints one line per image (file name, caption, time to answer in ms), then a
summary line.  Files that are not images are skipped with a warning; images
that cannot be read are reported, counted as failed, and make the exit
status 1.
A bad build directory or a folder without images exits with status 2.
"""
import argparse
import sys
import time
from pathlib import Path

from PIL import Image

from edgevlm.errors import EdgeVLMError
from edgevlm.runner import BuildRunner, open_image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir", help="a directory written by `edgevlm compile`")
    ap.add_argument("image_dir", help="a folder of images (PNG, JPEG, ...)")
    ap.add_argument("--prompt", default="describe the image.", help='question asked of every image (default: "describe the image.")')
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for the vision stages and the C runtime (default: 2)")
    args = ap.parse_args(argv)

    try:
        runner = BuildRunner(args.build_dir, threads=args.threads)
        runner.prompt_ids(args.prompt)  # a prompt too long for the build fails here, once
    except EdgeVLMError as exc:
        return fail(str(exc))
    folder = Path(args.image_dir)
    if not folder.is_dir():
        return fail(f"'{folder}' is not a folder")
    image_suffixes = {s for s, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    images = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in image_suffixes:
            images.append(path)
        else:
            print(f"warning: skipping '{path.name}': not an image file", file=sys.stderr)
    if not images:
        return fail(f"'{folder}' holds no image files")

    times_ms, failed = [], 0
    for path in images:
        try:
            image = open_image(path)
            t0 = time.perf_counter()
            caption = runner.answer(image, args.prompt).text
        except EdgeVLMError as exc:  # an unreadable image, or the runtime refused it
            print(f"{path.name}: failed: {exc.cause}", file=sys.stderr)
            failed += 1
            continue
        times_ms.append((time.perf_counter() - t0) * 1e3)
        print(f"{path.name}: {caption} ({times_ms[-1]:.1f} ms)")
    mean = f"{sum(times_ms) / len(times_ms):.1f} ms" if times_ms else "n/a"
    print(f"captioned {len(times_ms)} images, {failed} failed, mean {mean} per image")
    return 1 if failed else 0


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
