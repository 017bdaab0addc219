"""Train a named zoo VLM on the shapes data set, on CPU, in minutes.

    python -m edgevlm.models.train --model autoneural-nano --out DIR [--steps 1000] [--seed 0]

Teacher forcing: each sequence is ``<bos> <image> x N prompt answer <eos>``
and the loss is the cross-entropy of the answer tokens and ``<eos>`` only.
Samples are rendered on the fly from shapes seed ``--seed`` (0 by default;
evaluation uses other seeds).

An auxiliary loss (``--cell-loss``, on by default) supervises the encoder
directly: its token grid is average-pooled to the shapes' 3x3 cells and a
linear head, used only during training and never saved, predicts each cell's
colour and shape (or "empty").  Without it the answer loss alone reaches the
encoder too weakly: trained that way, autoneural-nano learned count and
position but answered colour and shape at chance (13% / 14%, n=300).  The result is a saved model directory
(config.json, model.safetensors, tokenizer.json) that ``build_model(DIR)``
loads; ``--ship`` also copies it into the package's weights/ directory.

``--qat-int4`` (with ``--init``) fine-tunes a trained model for the int4
weights of its LM stages: every LM weight the compiler quantizes (linear
layers, the short-conv kernels, the tied embedding / output matrix) is
fake-quantized per output channel on the compiler's symmetric int4 grid
(see ``fake_quant_int4``), with a straight-through gradient; the encoder and
projector are frozen.  The saved weights are snapped onto that grid, so the
compiler's int4 quantization of the LM reproduces them (up to the float16 of
the shipped weights).
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from edgevlm.errors import EdgeVLMError, InputError


class CellHead(torch.nn.Module):
    """Training-only probe: encoder tokens [B,N,C] -> per-cell colour and shape logits of the 3x3 shapes grid."""

    def __init__(self, dim: int):
        from edgevlm.data.shapes import COLORS, SHAPES

        super().__init__()
        self.color = torch.nn.Linear(dim, len(COLORS) + 1)  # class 0: empty cell
        self.shape = torch.nn.Linear(dim, len(SHAPES) + 1)

    def forward(self, tokens: torch.Tensor):
        b, n, c = tokens.shape
        side = math.isqrt(n)
        if side * side != n:
            raise InputError(f"the cell loss needs a square token grid, got {n} tokens", "train with --no-cell-loss")
        grid = tokens.transpose(1, 2).reshape(b, c, side, side)
        cells = F.adaptive_avg_pool2d(grid, 3).flatten(2).transpose(1, 2)  # [B, 9, C], row-major cells
        return self.color(cells), self.shape(cells)


def cell_labels(objects_per_image) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour, shape) class per cell [I, 9] of each image's objects; 0 marks an empty cell."""
    from edgevlm.data.shapes import COLORS, POSITIONS, SHAPES

    colors, shapes = list(COLORS), list(SHAPES)
    col = torch.zeros(len(objects_per_image), len(POSITIONS), dtype=torch.long)
    shp = torch.zeros_like(col)
    for i, objects in enumerate(objects_per_image):
        for color, shape, position in objects:
            col[i, POSITIONS.index(position)] = colors.index(color) + 1
            shp[i, POSITIONS.index(position)] = shapes.index(shape) + 1
    return col, shp


def make_batch(vlm, tok, seed: int, start: int, images: int):
    """Samples start..start+images-1 of ``seed``, each image with every question it allows.

    Returns (pixel_values [I,3,S,S], image index per sequence [B], ids [B,L],
    loss mask [B,L], objects of each image).  Asking all questions of an image shares one encoder
    pass among ~6 sequences: the encoder dominates the cost of a step.
    """
    from edgevlm.data.shapes import all_questions, make_sample

    pics, owner, seqs, masks, objects = [], [], [], [], []
    for i in range(start, start + images):
        s = make_sample(seed, i, vlm.image_size)
        for prompt_text, answer_text in all_questions(s.objects):
            prompt = vlm.prompt_ids(tok.encode(prompt_text), tok.bos_id)
            answer = tok.encode(answer_text) + [tok.eos_id]
            owner.append(len(pics))
            seqs.append(prompt + answer)
            # Position t predicts token t+1: the answer is predicted from the last prompt token on.
            masks.append([0] * (len(prompt) - 1) + [1] * len(answer) + [0])
        pics.append(s.image)
        objects.append(s.objects)
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), tok.pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), length)
    for row, (seq, m) in enumerate(zip(seqs, masks)):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(m)] = torch.tensor(m, dtype=torch.float32)
    return vlm.pixel_values(pics), torch.tensor(owner), ids, mask, objects


# The compiler's symmetric int4 weights (edgevlm.quant.onnx_qdq): per output channel (dim 0),
# scale = max|w| / 7, q = clip(round_half_even(w / scale), -8, 7), so a channel's largest weight is on the grid.
INT4_QMIN, INT4_QMAX = -8, 7


def int4_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel int4 scale of ``w`` as the compiler computes it, shaped to broadcast."""
    amax = w.detach().abs().flatten(1).amax(1)
    # An all-zero channel quantizes exactly whatever the scale; 1.0 is onnxruntime's choice too.
    scale = torch.where(amax > 0, amax / INT4_QMAX, torch.ones_like(amax))
    return scale.view(-1, *([1] * (w.dim() - 1)))


def fake_quant_int4(w: torch.Tensor) -> torch.Tensor:
    """``w`` rounded to its int4 grid in the forward pass; identity gradient (straight-through)."""
    scale = int4_scale(w)
    q = torch.clamp(torch.round(w / scale), INT4_QMIN, INT4_QMAX) * scale  # torch.round: half to even, as numpy
    return w + (q - w).detach()


class FakeQuantInt4(torch.nn.Module):
    """A parametrization: the module's weight as its int4-rounded values."""

    def forward(self, w):
        return fake_quant_int4(w)


def int4_weights(lm: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """(module, "weight") of every LM weight the compiler quantizes to int4, by module type."""
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)
    return [(m, "weight") for m in lm.modules() if isinstance(m, kinds)]


@torch.no_grad()
def snap_int4_(w: torch.Tensor) -> None:
    """Move ``w`` onto its int4 grid in place: re-quantizing it then reproduces it (the scales stay)."""
    w.copy_(fake_quant_int4(w))


def _rescale_layer_scales(encoder, value: float = 0.1) -> None:
    """Set LayerScale gammas to ``value`` before training from scratch.

    timm initializes them to 1e-5, which suits fine-tuning a pretrained net;
    from scratch (MobileNetV5's stride-2 blocks scale their only path by it)
    the encoder's features stay ~97% identical across images and training
    stalls with the LM ignoring colour and shape.
    """
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if name.endswith("layer_scale.gamma") or name.endswith(".gamma"):
                p.fill_(value)


def _trainable(vlm, lr: float, encoder_lr_mult: float, cell_loss: float, qat_int4: bool):
    """(optimizer parameter groups, frozen parts, cell head or None, int4 fake-quantized (module, attr) pairs).

    ``qat_int4`` freezes encoder and projector and fake-quantizes the LM's weights to int4; otherwise
    everything trains, the encoder (and the cell head, when ``cell_loss`` > 0) at ``encoder_lr_mult`` x lr.
    """
    if qat_int4:
        frozen = (vlm.encoder, vlm.projector)
        for part in frozen:
            part.eval().requires_grad_(False)
        quantized = int4_weights(vlm.lm)
        for module, attr in quantized:
            torch.nn.utils.parametrize.register_parametrization(module, attr, FakeQuantInt4())
        return [{"params": list(vlm.lm.parameters()), "lr": lr}], frozen, None, quantized
    head = CellHead(vlm.encoder.out_dim) if cell_loss > 0 else None
    groups = [{"params": list(vlm.encoder.parameters()) + (list(head.parameters()) if head else []),
               "lr": lr * encoder_lr_mult},
              {"params": list(vlm.projector.parameters()) + list(vlm.lm.parameters()), "lr": lr}]
    return groups, (), head, []


def _loss(vlm, head, batch: tuple, frozen: tuple, cell_loss: float):
    """Masked next-token cross-entropy of one ``make_batch`` batch, plus ``cell_loss`` x the cell head's loss."""
    px, owner, ids, mask, objects = batch
    with torch.set_grad_enabled(not frozen):
        tokens = vlm.encoder(px)
        embeds = vlm.projector(tokens)[owner]
    logits = vlm.lm(vlm.splice(ids, embeds))[:, :-1]
    loss = (F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none") * mask[:, :-1]).sum() / mask.sum()
    if head is not None:
        col_logits, shp_logits = head(tokens)
        col, shp = cell_labels(objects)
        loss = loss + cell_loss * (F.cross_entropy(col_logits.flatten(0, 1), col.flatten())
                                   + F.cross_entropy(shp_logits.flatten(0, 1), shp.flatten()))
    return loss


def train(name: str, out: Path, steps: int, batch: int, lr: float, seed: int, log_every: int = 50,
          encoder_lr_mult: float = 0.3, init: Path | None = None, first_index: int = 0, cell_loss: float = 1.0,
          qat_int4: bool = False):
    """Train model ``name`` and save it to ``out``; returns (vlm, tokenizer, config).

    Starts from the seeded random initialization, or from the saved model
    ``init`` (to continue a run; ``first_index`` then skips the samples
    already seen).  The encoder's learning rate is ``encoder_lr_mult`` times
    the LM's: with 3x, runs stalled at a higher loss than with 0.3x
    (observed on autoneural-nano, 64 px, 300 steps).  ``cell_loss`` weighs
    the auxiliary per-cell loss (0 turns it off).  ``qat_int4`` fine-tunes
    the LM only, with int4 fake-quantized weights (needs ``init``); the saved
    LM weights lie on the int4 grid.
    """
    from edgevlm.models.zoo import vlms
    from edgevlm.models.tokenizer import load_tokenizer

    if name not in vlms.SPECS:
        raise InputError(f"unknown zoo VLM '{name}'", f"use one of: {', '.join(vlms.SPECS)}")
    if steps < 1 or batch < 1 or not lr > 0:
        raise InputError("--steps, --batch and --lr must be positive", "pass e.g. --steps 1000 --batch 12 --lr 1e-3")
    if qat_int4 and init is None:
        raise InputError("--qat-int4 fine-tunes a trained model", "pass --init DIR of a saved model")
    tok = load_tokenizer()
    if init is not None:
        bundle = vlms.load_saved_model(Path(init))
        vlm, cfg = bundle.modules["vlm"], bundle.meta["config"]
    else:
        cfg = vlms.default_config(name)
        vlm = vlms.build_vlm(cfg)
        _rescale_layer_scales(vlm.encoder)
    vlm.train()
    groups, frozen, head, quantized = _trainable(vlm, lr, encoder_lr_mult, cell_loss, qat_int4)
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    t0, running = time.time(), None
    for step in range(steps):
        loss = _loss(vlm, head, make_batch(vlm, tok, seed, first_index + step * batch, batch), frozen, cell_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Clip each part on its own: the encoder's gradient (behind RMS-normalized outputs) is ~1000x the
        # LM's, and one global clip would shrink the LM's updates to nothing.
        for part in (vlm.encoder, vlm.projector, vlm.lm) + ((head,) if head else ()):
            if part not in frozen:
                torch.nn.utils.clip_grad_norm_(part.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % log_every == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {running:.4f}  {time.time() - t0:6.0f} s", flush=True)
    vlm.eval()
    if qat_int4:
        for module, attr in quantized:
            torch.nn.utils.parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
            snap_int4_(getattr(module, attr))
        vlm.requires_grad_(True)
    vlms.save_model(vlm, cfg, out, tok)
    return vlm, tok, cfg


def ship(vlm, cfg: dict, name: str) -> None:
    """Copy trained weights into the package (fp16 safetensors + config json) so the model works offline."""
    import json

    from safetensors.torch import save_file

    from edgevlm.models.zoo.vlms import WEIGHTS_DIR

    state = {k: v.detach().half().contiguous() for k, v in vlm.state_dict().items()}
    save_file(state, str(WEIGHTS_DIR / f"{name}.safetensors"), metadata={"format": "pt", "dtype": "float16"})
    (WEIGHTS_DIR / f"{name}.json").write_text(json.dumps(cfg, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevlm.models.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="autoneural-nano", help="zoo VLM to train")
    parser.add_argument("--out", required=True, type=Path, help="output model directory")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=12, help="images per step (each asked all its questions)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="shapes seed of the training samples")
    parser.add_argument("--encoder-lr-mult", type=float, default=0.3, help="encoder learning rate / --lr (default 0.3)")
    parser.add_argument("--cell-loss", type=float, default=1.0, help="weight of the auxiliary per-cell colour/shape loss on the encoder (0: off)")
    parser.add_argument("--init", type=Path, default=None, help="continue from this saved model directory")
    parser.add_argument("--first-index", type=int, default=0, help="index of the first training sample (to continue a run on unseen samples)")
    parser.add_argument("--qat-int4", action="store_true",
                        help="with --init: fine-tune the LM with int4 fake-quantized weights (encoder and projector frozen)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core machine: 2 threads oversubscribe)")
    parser.add_argument("--eval-n", type=int, default=200, help="evaluate on this many samples of seed 12345 after training (0: skip)")
    parser.add_argument("--ship", action="store_true", help="also write the weights into edgevlm/models/zoo/weights/")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        vlm, tok, cfg = train(args.model, args.out, args.steps, args.batch, args.lr, args.seed,
                              encoder_lr_mult=args.encoder_lr_mult, init=args.init, first_index=args.first_index,
                              cell_loss=args.cell_loss, qat_int4=args.qat_int4)
        if args.eval_n:
            from edgevlm.data.evaluate import evaluate
            from edgevlm.models.arch.vlm import make_answerer

            result = evaluate(make_answerer(vlm, tok), n=args.eval_n, seed=12345, image_size=vlm.image_size)
            print(f"exact_match {result['exact_match']:.4f} on {args.eval_n} samples of seed 12345")
        if args.ship:
            ship(vlm, cfg, args.model)
    except EdgeVLMError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
