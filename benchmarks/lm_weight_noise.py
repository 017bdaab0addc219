"""How much logits SQNR weight rounding alone leaves an LFM2 LM, and how much the network amplifies any error.

    python benchmarks/lm_weight_noise.py --checkpoint /work/ckpt/lfm2-vl-450m [--branch-gains 4,1] [--mse]
                                         [--out benchmarks/results/lm_weight_noise]

The checkpoint's language model (transformers' Lfm2 classes, float32,
PyTorch) runs on 128 random token ids (seed 0, ids 500-8000) with all
positions' logits compared to float's:
- "input noise 40 dB": float weights, Gaussian noise 40 dB under the input
  embeddings: how much the network amplifies an error (a well-conditioned
  network keeps ~40 dB at the logits);
- "weight noise 40 dB": every Linear weight (the tied head included) plus
  Gaussian noise 40 dB under that weight's own power, activations float:
  the amplification of a weight error of known size (40 minus this column);
- "argmax = input token": the fraction of positions whose float logits'
  argmax is the token given there; near 1 means the blocks hardly move the
  tied head's answer (a conditioning that buys a low amplification that way
  makes the SQNR figures easy and meaningless);
- "w4 rtn" / "w8 rtn": every Linear weight, the tied head included, rounded
  to nearest on a symmetric per-output-channel grid with scale max|w|/7
  (max|w|/127), the grid QNN HTP v68 takes (compiler's linear_to_conv form);
  activations stay float, so this is the weight error alone; "w4 rtn
  weights" is that rounding's SQNR over all the weights rounded (the
  logits' SQNR is about this minus the amplification);
- with ``--mse``, "w4 mse": the same grid with each channel's scale clipped to
  the one of 26 ratios in [0.5, 1] that minimizes the channel's weight MSE
  (scale estimation, data-free).
``--branch-gains``: the residual branches' output projections (out_proj, w2)
rescaled from hf_checkpoints.py's gain 4 to each gain given, to show how the
random checkpoint's construction sets the amplification (unit-gain
checkpoints only; a ``--init trained-like`` one is measured as written, row
label "as written").
Writes <out>.json and <out>.md.
"""
import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

from _results import write_results

WRITTEN_BRANCH_GAIN = 4.0  # hf_checkpoints.BRANCH_GAIN, the gain the checkpoints are written with
BRANCH_OUTPUTS = ("out_proj", "w2")


def _round(w, bits: int, mse: bool):
    import torch

    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().amax(1, keepdim=True).clamp_min(1e-12)
    best_err, best_scale = None, amax / qmax
    for ratio in torch.linspace(0.5, 1.0, 26) if mse else [1.0]:
        scale = amax * ratio / qmax
        err = ((torch.clamp(torch.round(w / scale), -qmax, qmax) * scale - w) ** 2).sum(1, keepdim=True)
        if best_err is None:
            best_err, best_scale = err, scale
        else:
            better = err < best_err
            best_err, best_scale = torch.where(better, err, best_err), torch.where(better, scale, best_scale)
    return torch.clamp(torch.round(w / best_scale), -qmax, qmax) * best_scale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--branch-gains", default=None, help="comma-separated gains of the residual branches' outputs "
                    "(unit-gain checkpoints; default: as written)")
    ap.add_argument("--mse", action="store_true", help="also w4 with MSE-clipped scales (slow: 26 trial grids)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/lm_weight_noise"))
    args = ap.parse_args(argv)

    import torch

    from edgevlm._compat import import_timm

    import_timm()
    import transformers

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    info_path = args.checkpoint / "edgevlm_checkpoint.json"
    init = json.loads(info_path.read_text()).get("lm_init", {}) if info_path.is_file() else {}
    if args.branch_gains is not None and init.get("init", "unit-gain") != "unit-gain":
        ap.error(f"--branch-gains rescales a unit-gain checkpoint's branches; {args.checkpoint} is {init['init']}")
    gains = [float(g) for g in (args.branch_gains or str(WRITTEN_BRANCH_GAIN)).split(",")]
    model = transformers.Lfm2VlForConditionalGeneration.from_pretrained(str(args.checkpoint), dtype=torch.float32).eval()
    lm, head = model.model.language_model, model.lm_head
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ids = torch.randint(500, 8000, (1, 128), generator=gen)
        embeds = lm.embed_tokens(ids)
        noise = torch.randn(embeds.shape, generator=gen) * embeds.pow(2).mean().sqrt() * 10 ** (-40 / 20)
    linears = {n: m for n, m in lm.named_modules() if isinstance(m, torch.nn.Linear)}
    written = {n: m.weight.detach().clone() for n, m in linears.items()}
    head_w = head.weight.detach().clone()  # tied to the embeddings: restored after each run

    def logits(x):
        return head(lm(inputs_embeds=x, use_cache=False).last_hidden_state).double()

    def sqnr(ref, test) -> float:
        return round(10 * math.log10(float(ref.pow(2).sum() / (ref - test).pow(2).sum())), 2)

    rows = []
    with torch.no_grad():
        for gain in gains:
            base = {n: w * (gain / WRITTEN_BRANCH_GAIN if n.endswith(BRANCH_OUTPUTS) else 1.0) for n, w in written.items()}
            for n, m in linears.items():
                m.weight.copy_(base[n])
            ref = logits(embeds)
            # a tied-head LM whose blocks add little to the stream predicts the token it was given
            repeat = round(float((ref.argmax(-1) == ids).double().mean()), 3)
            row = {"branch_gain": gain, "argmax = input token": repeat, "input noise 40 dB": sqnr(ref, logits(embeds + noise))}
            wgen = torch.Generator().manual_seed(1)
            for n, m in linears.items():
                m.weight.add_(torch.randn(m.weight.shape, generator=wgen) * m.weight.pow(2).mean().sqrt() * 1e-2)
            head.weight.add_(torch.randn(head_w.shape, generator=wgen) * head_w.pow(2).mean().sqrt() * 1e-2)
            row["weight noise 40 dB"] = sqnr(ref, logits(embeds))
            head.weight.copy_(head_w)
            for label, bits, mse in [("w4 rtn", 4, False), ("w8 rtn", 8, False)] + ([("w4 mse", 4, True)] if args.mse else []):
                for n, m in linears.items():
                    m.weight.copy_(_round(base[n], bits, mse))
                head.weight.copy_(_round(head_w, bits, mse))
                row[label] = sqnr(ref, logits(embeds))
                if not mse:  # the rounding's own SQNR over all these weights: logits dB = this - amplification
                    ws = sum(float(base[n].double().pow(2).sum()) for n in linears) + float(head_w.double().pow(2).sum())
                    we = sum(float((m.weight.double() - base[n].double()).pow(2).sum()) for n, m in linears.items())
                    we += float((head.weight.double() - head_w.double()).pow(2).sum())
                    row[f"{label} weights"] = round(10 * math.log10(ws / we), 2)
                head.weight.copy_(head_w)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"checkpoint": str(args.checkpoint), "layers": len(lm.layers), "tokens": 128, "lm_init": init,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "metric": "SQNR of all positions' logits vs float, dB (weights rounded, activations float)",
            "load_avg": os.getloadavg(), "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "command": "python benchmarks/lm_weight_noise.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    cols = [k for k in rows[0] if k != "branch_gain"]
    label = f"{init.get('init', 'unit-gain')}, residual growth {init['residual_growth']:g}" if "residual_growth" in init else None
    md = ["| branch gain | " + " | ".join(cols) + " |", "|---:|" + "---:|" * len(cols)]
    md += [f"| {label or format(r['branch_gain'], 'g')} | " + " | ".join(f"{r[c]:.3f}" if c.startswith("argmax") else f"{r[c]:.1f}" for c in cols) + " |" for r in rows]
    write_results(args.out, {"meta": meta, "rows": rows}, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
