"""The README's sweep table and throughput from sweep directories written by `edgevlm sweep`.

    python benchmarks/sweep_table.py DIR [--runs LOG ...] [--out benchmarks/results/sweep_nano_sa8295p.md]

The table: every finished point of DIR/sweep.jsonl, per target, sorted by estimated TTFT, with the
Pareto-front marks and the recommended point of edgevlm.sweep.page.  ``--runs`` takes the stdout
logs of the sweep runs (each ends with "sweep: ... (N s)" and says its engine on the first line);
throughput per run = the points it ran / its wall time, as points per hour.
"""
import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevlm.sweep import execute, page  # noqa: E402


def table(records: list[dict]) -> str:
    out = []
    good = [r for r in records if page.usable(r)]
    for target in dict.fromkeys(r["settings"]["target"] for r in good):
        pts = [r for r in good if r["settings"]["target"] == target]
        f_ttft = page.pareto(pts, "ttft_ms", True)
        f_dec = page.pareto(pts, "decode_tokens_per_s", False)
        chosen, floor = page.recommend(pts)
        out.append(f"**{target}** ({len(pts)} points; exact match on n={pts[0]['n']} shapes samples through "
                   f"{pts[0]['vision_backend']} vision + C runtime; TTFT and decode: roofline estimates)\n")
        out.append("| quant | vision tokens | reduction | exact match | TTFT est. (ms) | decode est. (tokens/s) | Pareto front | compile s | eval s |")
        out.append("|---|---|---|---:|---:|---:|---|---:|---:|")
        for r in sorted(pts, key=lambda r: (r["estimate"]["ttft_ms"], -r["exact_match"])):
            s, e = r["settings"], r["estimate"]
            marks = ", ".join(m for m, f in (("TTFT", f_ttft), ("decode", f_dec)) if r["key"] in f) or "-"
            star = " **(recommended)**" if r is chosen else ""
            out.append(f"| {s['quant']}{star} | {s['vision_tokens'] or 'all'} | {s['token_reduce'] or '-'} | "
                       f"{r['exact_match']:.3f} | {e['ttft_ms']:.3f} | {e['decode_tokens_per_s']:.0f} | {marks} | "
                       f"{r['compile_s']:.0f} | {r['eval_s']:.0f} |")
        out.append(f"\nRecommended: {page.label(chosen)} (the lowest estimated TTFT within one standard error of the "
                   f"most accurate point: exact match >= {floor:.3f}).\n")
    return "\n".join(out)


def throughput(log: Path) -> str:
    text = log.read_text()
    head = re.search(r"(\d+) already in sweep.jsonl, (\d+) to run on (.+)$", text, flags=re.M)
    done = len(re.findall(r"^edgevlm: sweep point \d+/\d+ .*exact_match", text, flags=re.M))
    tail = re.search(r"^sweep: .*\((\d+) s\)", text, flags=re.M)
    if not (head and tail):
        return f"- {log.name}: no complete run in the log ({done} points finished before it stopped)"
    wall = int(tail.group(1))
    rate = done / wall * 3600 if wall else float("nan")
    return f"- {log.name}: {done} points on {head.group(3)} in {wall} s: {rate:.1f} points/hour"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--runs", type=Path, nargs="*", default=[])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    records, _ = execute.read_records(args.dir / execute.JSONL)
    text = table(list(records.values()))
    if args.runs:
        text += "\n" + "\n".join(throughput(p) for p in args.runs) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        (args.out.with_suffix(".jsonl")).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records.values()))


if __name__ == "__main__":
    main()
