"""`edgevlm sweep`: compile + evaluate every point of a settings grid, on Ray when installed.

    edgevlm sweep --model autoneural-nano --target sa8295p \\
        --quant 'encoder=w8a16|w8a8,llm=w4a16|w8a16' --vision-tokens 'all|4|1' --token-reduce 'dct|merge' \\
        --eval-n 300 --out sweeps/nano

Each point gets its own build under DIR/builds/; its record (accuracy through the deployed path,
estimated TTFT and decode tokens/s) is appended to DIR/sweep.jsonl as it finishes, and a rerun
skips the points already there.  DIR/sweep.html is rewritten at the end (see edgevlm.sweep.page).
"""
import sys
import time
from pathlib import Path

from edgevlm.errors import InputError

NAME = "sweep"
HELP = "compile + evaluate a grid of schemes / vision tokens / reductions / targets; Pareto page of accuracy vs estimated latency"
ORDER = 55


def add_arguments(parser):
    parser.add_argument("--model", default="autoneural-nano", help="zoo VLM name or checkpoint directory (default autoneural-nano)")
    parser.add_argument("--target", required=True, help="target or comma-separated targets, e.g. sa8295p,snapdragon-8-gen3")
    parser.add_argument("--quant", action="append", default=None, metavar="SPEC",
                        help="schemes with '|' alternatives, e.g. 'encoder=w8a16|w8a8,llm=w4a16|w8a16' (4 settings); "
                        "repeat to add settings (default: the target's)")
    parser.add_argument("--vision-tokens", default="all", metavar="LIST", help="'all' and/or token counts, e.g. 'all|4|1' (default all)")
    parser.add_argument("--token-reduce", default="dct", metavar="LIST", help="reductions for the reduced counts, e.g. 'dct|merge' (default dct)")
    parser.add_argument("--eval-n", type=int, default=300, metavar="N", help="shapes samples per point (default 300)")
    parser.add_argument("--seed", type=int, default=12345, help="evaluation seed (default 12345)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated backends to build (default: the target's; `qnn` builds only onnx + qnn, the deployed path)")
    parser.add_argument("--no-htp-verify", action="store_true", help="skip each compile's HTP-simulation verification (the eval still runs qnn)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join a Ray cluster (auto or ray://host:10001); default: a local Ray with this machine's cores")
    parser.add_argument("--workers", type=int, default=None, metavar="K",
                        help="CPUs of the local Ray (default: all cores; 0: no Ray, points one by one in this process)")
    parser.add_argument("--out", required=True, metavar="DIR", help="sweep directory: builds/, sweep.jsonl, sweep.html")
    parser.add_argument("--hub", action="store_true",
                        help="also compile + profile each point on a device through Qualcomm AI Hub (needs qai-hub credentials; "
                        "without them each point says the hub step was skipped)")


class _Lines:
    """One line per finished point (stdout not a terminal)."""

    def __init__(self, total):
        self.total, self.n = total, 0

    def done(self, point, rec):
        self.n += 1
        print(f"edgevlm: sweep point {self.n}/{self.total} {_describe(point)}: {_outcome(rec)}", flush=True)

    def close(self):
        pass


class _Rich:
    """A rich progress bar with the last finished point under it (stdout a terminal)."""

    def __init__(self, total):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.description}"))
        self.task = self.progress.add_task("", total=total)
        self.progress.start()

    def done(self, point, rec):
        self.progress.console.print(f"{_describe(point)}: {_outcome(rec)}", highlight=False)
        self.progress.update(self.task, advance=1)

    def close(self):
        self.progress.stop()


def _describe(p) -> str:
    return f"{p.target} {p.quant or 'default'} tokens {p.tokens_label}"


def _outcome(rec: dict) -> str:
    if rec.get("status") != "ok":
        return f"FAILED: {rec.get('error')}"
    est = rec["estimate"]
    ttft = "-" if est["ttft_ms"] is None else f"{est['ttft_ms']:.2f} ms"
    dec = "-" if est["decode_tokens_per_s"] is None else f"{est['decode_tokens_per_s']:.0f} tokens/s"
    hub = rec.get("hub")
    measured = ""
    if hub:
        stages = ", ".join(f"{s} {ms:.2f} ms" for s, ms in hub["stages_ms"].items())
        measured = f"; AI Hub {hub['status']}" + (f": {stages} on {hub['device']}" if stages else f" ({hub['reason']})")
    return (f"exact_match {rec['exact_match']:.3f} (n={rec['n']}, {rec['vision_backend']}), estimated TTFT {ttft}, "
            f"decode {dec} (compile {rec['compile_s']:.0f} s, eval {rec['eval_s']:.0f} s){measured}")


def run(args) -> int:
    from edgevlm import parallel
    from edgevlm.commands._table import is_terminal
    from edgevlm.sweep import execute, grid, page

    points = grid.expand(args.model, args.target, args.quant or [""], args.vision_tokens, args.token_reduce,
                         args.eval_n, args.seed, htp_verify=not args.no_htp_verify)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' exists and is not a directory", "pass a directory for the sweep")
    view = None

    def on_start(todo, done_before):
        nonlocal view
        print(f"edgevlm: sweep of {len(points)} points into {out}/: {done_before} already in {execute.JSONL}, "
              f"{len(todo)} to run on {engine.describe()}", flush=True)
        view = (_Rich if is_terminal(sys.stdout) else _Lines)(len(todo))

    t0 = time.perf_counter()
    with parallel.session(args.ray_address, args.workers) as engine:
        try:
            records = execute.run_sweep(points, out, engine, backends, on_start=on_start,
                                        on_done=lambda p, r: view.done(p, r), hub=args.hub)
        except KeyboardInterrupt:
            print(f"sweep: stopped; the finished points are in {out / execute.JSONL}: run the same command again "
                  "to resume", file=sys.stderr, flush=True)
            raise
        finally:
            if view is not None:
                view.close()
    wanted = [records[p.key] for p in points if p.key in records]
    html_path = out / "sweep.html"
    html_path.write_text(page.render(wanted, f"edgevlm sweep: {args.model}"))
    failed = sum(r.get("status") != "ok" for r in wanted)
    for t in dict.fromkeys(p.target for p in points):
        chosen, _ = page.recommend([r for r in wanted if page.usable(r) and r["settings"]["target"] == t])
        if chosen:
            print(f"recommended on {t}: {page.label(chosen)}: {_outcome(chosen)}")
    print(f"sweep: {len(wanted) - failed}/{len(points)} points ok, {failed} failed ({time.perf_counter() - t0:.0f} s); "
          f"{out / execute.JSONL}, {html_path}")
    return 1 if failed else 0
