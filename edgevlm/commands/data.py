"""`edgevlm data shapes`: write the synthetic shapes data set (PNGs + labels.jsonl)."""
NAME = "data"
HELP = "write a synthetic data set: `edgevlm data shapes --out DIR --n N --seed S`"
ORDER = 60


def add_arguments(parser):
    parser.add_argument("dataset", choices=["shapes"], help="data set to generate")
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    parser.add_argument("--n", type=int, default=500, help="number of samples (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed: the same seed writes identical files (default 0)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")


def run(args) -> int:
    from edgevlm.data.shapes import write_dataset

    out = write_dataset(args.out, n=args.n, seed=args.seed, image_size=args.image_size)
    print(f"wrote {args.n} samples (seed {args.seed}) to {out}/: *.png and labels.jsonl (image, prompt, answer)")
    return 0
