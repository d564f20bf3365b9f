"""Acceptance check of the shapes-prior teacher: does it draw the prompt's shape and color, from
the requested view?

    python train/evaluate_prior.py --model runs/shapes-prior/pipeline --output_dir runs/prior-eval
    python train/evaluate_prior.py --model pretrained/shapes-prior --renders runs/shapes-prior/renders-256x32.pt
    (add --threads 1 on a 2-core machine shared with a training job: two threads wait on each other)

1. A small CNN classifier is trained on ground-truth renders of the Shapes world (`render_shapes`,
   `--classifier_views` random cameras per (shape, color) pair at the prior's resolution,
   shaded as the prior's training data, or an existing renders file with `--renders`) for at
   most `--classifier_seconds`; its accuracy on a held-out set of fresh renders (another seed)
   is printed, so the judge's own reliability is known. Weights are cached (safetensors) in
   `<output_dir>/classifier/`; a rerun with the same settings skips training.
2. The prior draws `--samples_per_prompt` (8) images for each of the 64 Shapes64 prompts at
   random training-range cameras with classifier-free guidance (`--guidance_scale` 1.25, the
   shipped prior's best measured scale: at 1.5 a prompt-independent cube-like block takes many samples, at 3 most; `--steps` 50 DDIM steps), in batches of `--batch_size`, seeded;
   `--view_guidance_scale` adds view guidance (`atom.guidance.teacher.guide`).
3. Every sample is classified; the same classifier also scores fresh ground-truth renders at the
   very same cameras (the reference: what a perfect prior would score).
   `--judge nearest` replaces the classifier by the closest of the 64 (shape, color) ground-truth
   renders at each sample's own camera, cube and pyramid at four turns (no training; see
   `nearest_render_judge`), and
   `--samples runs/prior-eval/samples.pt` rescores an earlier run's samples without sampling.

Acceptance: color accuracy >= 95 %, shape accuracy >= 85 %, view accuracy >= 70 %.

View accuracy and symmetry. With a uniform albedo and the light placed at the camera (jittered
randomly around it, never fixed in the world), an image carries no cue of the azimuth beyond the
shape's own geometry. Six primitives are solids of revolution about Y (sphere, cylinder, cone,
torus, capsule, snowman): every azimuth gives the same image, so no view can be checked on them.
Cube and pyramid (square base, edges along X and Z) have 4-fold symmetry about Y: the image
fixes the azimuth modulo 90 degrees only. So the view is scored on cube and pyramid samples
only, comparing azimuths modulo 90. The tolerance is the requested 45 degrees of a full circle
scaled to that period: 45 x 90 / 360 = 11.25 degrees modulo 90. This keeps the chance rate of
the full-circle criterion (a +-45 window is 1/4 of 360 degrees; +-11.25 is 1/4 of 90): an
unscaled 45-degree window modulo 90 would accept every image, since no two azimuths are more
than 45 degrees apart modulo 90. The classifier predicts (cos 4a, sin 4a), the azimuth on the
quotient circle, and is trained with horizontal flips (a mirror image of either shape is the
view from azimuth -a). Elevation is reported as a diagnostic (median absolute error on every
shape but the sphere, which looks the same from any direction); it is no acceptance criterion.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from atom.data import COLORS, HELD_OUT, SHAPES, SHAPES64
from atom.render import Cameras, sample_cameras

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import json_safe  # noqa: E402
from prior_judges import (  # noqa: E402
    COLOR_NAMES, VIEW_SHAPES, ClassifierConfig, aggregate, classify, load_or_train_classifier, nearest_render_judge,
    render_gt, score_predictions)

logger = logging.getLogger("evaluate_prior")

ACCEPTANCE = {"color_accuracy": 0.95, "shape_accuracy": 0.85, "view_accuracy": 0.70}


# ---- sampling the prior -------------------------------------------------------------------


@dataclass
class SampleSet:
    """N = P x S samples of P prompts, prompt-major: images (N, 3, H, W) float in [0, 1],
    prompt_index into SHAPES64, the cameras they were drawn at, and the prompts as given to the
    prior."""

    images: torch.Tensor
    prompt_index: torch.Tensor
    cameras: Cameras
    prompts: list[str]

    @property
    def shape_index(self) -> torch.Tensor:
        return torch.tensor([SHAPES.index(SHAPES64[i].shape) for i in self.prompt_index.tolist()])

    @property
    def color_index(self) -> torch.Tensor:
        return torch.tensor([COLOR_NAMES.index(SHAPES64[i].color) for i in self.prompt_index.tolist()])


def sample_prior(pipe, samples_per_prompt: int = 8, guidance_scale: float = 1.5, steps: int = 50, batch_size: int = 128,
                 seed: int = 0, view_words: bool = False, progress: bool = True, view_guidance_scale: float = 0.0,
                 prompt_indices: Sequence[int] | None = None) -> SampleSet:
    """Draws `samples_per_prompt` images for every Shapes64 prompt (or those at `prompt_indices`)
    at random cameras (`sample_cameras`' training ranges, seeded by `seed`), in batches of
    `batch_size`; batch k draws its noise from a generator seeded with seed x 1000 + k."""
    from atom.data import view_word

    indices = torch.arange(len(SHAPES64)) if prompt_indices is None else torch.as_tensor(prompt_indices)
    prompt_index = indices.repeat_interleave(samples_per_prompt)
    cameras = sample_cameras(len(prompt_index), generator=torch.Generator().manual_seed(seed))
    prompts = [SHAPES64[i].prompt for i in prompt_index.tolist()]
    if view_words:
        prompts = [f"{p}, {view_word(float(e), float(a))}" for p, e, a in zip(prompts, cameras.elevation, cameras.azimuth)]
    images = []
    starts = range(0, len(prompts), batch_size)
    bar = tqdm(total=len(prompts), desc=f"sampling the prior ({steps} steps, CFG {guidance_scale:g}, view {view_guidance_scale:g})",
               unit="img", disable=not progress)
    for k, first in enumerate(starts):
        idx = slice(first, first + batch_size)
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        out = pipe(prompts[idx], cameras=cameras[torch.arange(len(prompts))[idx]], guidance_scale=guidance_scale,
                   view_guidance_scale=view_guidance_scale, num_inference_steps=steps, generator=generator,
                   output_type="pt", progress=False)
        images.append(out.images.float().cpu())
        bar.update(len(prompts[idx]))
    bar.close()
    return SampleSet(torch.cat(images), prompt_index, cameras, prompts)


def save_samples(samples: SampleSet, path: Path) -> None:
    cameras = samples.cameras
    torch.save({"images": (samples.images * 255).round().to(torch.uint8), "prompt_index": samples.prompt_index,
                "cameras": torch.stack([cameras.elevation, cameras.azimuth, cameras.distance, cameras.fovy], 1),
                "prompts": samples.prompts}, path)


def load_samples(path: str | Path) -> SampleSet:
    """The SampleSet `save_samples` wrote (images back to float in [0, 1], to 1/255)."""
    data = torch.load(path)
    cams = data["cameras"].float()
    return SampleSet(data["images"].float() / 255, data["prompt_index"], Cameras(*cams.unbind(1)), data["prompts"])


# ---- report -------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "    -" if value is None else f"{100 * value:5.1f}%"


def _deg(value: float | None) -> str:
    return "   -" if value is None else f"{value:5.1f}"


def per_prompt(verdicts: dict[str, torch.Tensor], pred: dict[str, torch.Tensor], samples: SampleSet) -> list[dict]:
    """One record per Shapes64 prompt: its accuracies and the classifier's most common answers."""
    rows = []
    for i, record in enumerate(SHAPES64):
        mask = samples.prompt_index == i
        if not mask.any():
            continue
        row = {"prompt": record.prompt, "shape": record.shape, "color": record.color, **aggregate(verdicts, mask)}
        row["predicted"] = [f"{COLOR_NAMES[c]} {SHAPES[s]}" for s, c in zip(pred["shape"][mask].tolist(), pred["color"][mask].tolist())]
        rows.append(row)
    return rows


def format_report(result: dict, worst: int = 12) -> str:
    lines = []
    if result["classifier"] is None:
        lines.append("judge: nearest ground-truth render at each sample's camera (64 (shape, color) pairs, cube / pyramid "
                     "also turned by 22.5 / 45 / 67.5 deg so that the shape is judged whatever the view; cube / pyramid "
                     "azimuth from 16 turned renders), distances after 2x2 average pooling")
    else:
        val = result["classifier"]["validation"]
        lines.append(f"judge: classifier; on held-out GT renders ({val['val_images']} images, {val['train_steps']} steps / "
                     f"{val['train_epochs']} epochs in {val['train_seconds']} s on {val['train_images']} renders):")
        lines.append(f"  shape {_pct(val['shape_accuracy'])}  color {_pct(val['color_accuracy'])}  "
                     f"view {_pct(val['view_accuracy'])} (cube+pyramid, {val['view_count']} images; azimuth error "
                     f"median {_deg(val['view_error_median'])} deg, p90 {_deg(val['view_error_p90'])} deg mod 90)  "
                     f"elevation error median {_deg(val['elevation_error_median'])} deg")
    tol = result["settings"]["view_tolerance"]
    lines.append("")
    lines.append(f"view accuracy: cube and pyramid only (the other six shapes are solids of revolution: no azimuth to "
                 f"recover); azimuth compared modulo 90 (4-fold symmetry) within {tol:g} x 90/360 = {tol / 4:g} deg, "
                 f"the {tol:g}-degree full-circle window scaled to the period (same {tol / 180:.0%} chance rate).")
    lines.append("")
    head = f"{'':<34} {'shape':>6} {'color':>6} {'both':>6} {'view':>6} {'az err med':>10} {'elev err med':>12}"
    lines += [head, "-" * len(head)]
    for name, key in (("prior samples", "samples"), ("GT renders at the same cameras", "reference")):
        s = result[key]
        lines.append(f"{name:<34} {_pct(s['shape_accuracy'])} {_pct(s['color_accuracy'])} {_pct(s['accuracy'])} "
                     f"{_pct(s['view_accuracy'])} {_deg(s['view_error_median']):>10} {_deg(s['elevation_error_median']):>12}")
    s = result["samples"]
    if s.get("shape_accuracy_at_requested_view") is not None:
        lines.append(f"  (prior shape accuracy judged at the requested view only: {_pct(s['shape_accuracy_at_requested_view'])})")
    if s["view_accuracy_right_shape"] is not None:
        lines.append(f"  (prior view accuracy among cube / pyramid samples classified as the right shape: "
                     f"{_pct(s['view_accuracy_right_shape'])})")
    for name, split in result.get("splits", {}).items():
        lines.append(f"  {'AToM ' + name + ' prompts':<32} {_pct(split['shape_accuracy'])} {_pct(split['color_accuracy'])} "
                     f"{_pct(split['accuracy'])} {_pct(split['view_accuracy'])}")
    lines.append("")
    rows = sorted(result["per_prompt"], key=lambda r: (r["accuracy"], r["shape_accuracy"], r["view_accuracy"] or 1.0))
    lines.append(f"worst {min(worst, len(rows))} prompts (of {len(rows)}):")
    head = f"{'prompt':<22} {'shape':>6} {'color':>6} {'both':>6} {'view':>6}  classified as"
    lines += [head, "-" * len(head)]
    for r in rows[:worst]:
        counts: dict[str, int] = {}
        for p in r["predicted"]:
            counts[p] = counts.get(p, 0) + 1
        common = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"{r['prompt']:<22} {_pct(r['shape_accuracy'])} {_pct(r['color_accuracy'])} {_pct(r['accuracy'])} "
                     f"{_pct(r['view_accuracy'])}  {common}")
    lines.append("")
    for key, threshold in ACCEPTANCE.items():
        value = s[key]
        verdict = "PASS" if value is not None and value >= threshold else "FAIL"
        lines.append(f"{key:<15} {_pct(value)}  (>= {100 * threshold:.0f}%)  {verdict}")
    lines.append(f"acceptance: {'PASS' if result['passed'] else 'FAIL'} (prior samples; the GT row above is the judge's ceiling)")
    return "\n".join(lines)


def _to_pil(images: torch.Tensor, rows: int, cols: int, scale: int, pad: int = 2,
            frames: torch.Tensor | None = None) -> Image.Image:
    """(rows x cols, 3, H, W) images in [0, 1] -> a grid, upscaled by `scale` (nearest), with a
    red frame around images where `frames` is True."""
    n, _, h, w = images.shape
    cell_h, cell_w = h * scale + 2 * pad, w * scale + 2 * pad
    canvas = Image.new("RGB", (cols * cell_w, rows * cell_h), (160, 160, 160))
    for i in range(n):
        array = (images[i].clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()
        tile = Image.fromarray(np.ascontiguousarray(array)).resize((w * scale, h * scale), Image.NEAREST)
        r, c = divmod(i, cols)
        if frames is not None and bool(frames[i]):
            ImageDraw.Draw(canvas).rectangle([c * cell_w, r * cell_h, (c + 1) * cell_w - 1, (r + 1) * cell_h - 1], fill=(220, 0, 0))
        canvas.paste(tile, (c * cell_w + pad, r * cell_h + pad))
    return canvas


def _with_labels(grid: Image.Image, labels: list[str], row_height: int, width: int = 150) -> Image.Image:
    out = Image.new("RGB", (grid.width + width, grid.height), "white")
    out.paste(grid, (width, 0))
    draw, font = ImageDraw.Draw(out), ImageFont.load_default()
    for i, label in enumerate(labels):
        draw.multiline_text((4, i * row_height + 4), label, fill=(0, 0, 0), font=font)
    return out


def save_grids(path: Path, samples: SampleSet, reference: torch.Tensor, verdicts: dict[str, torch.Tensor],
               detail_prompts: list[int]) -> list[Path]:
    """`path`: the first sample of every prompt, 8 x 8 (rows: shapes, columns: colors, the
    Shapes64 order); `<stem>-detail.png`: for a few prompts, a row of all their samples above a
    row of GT renders at the same cameras. Red frames: samples classified wrong (shape or color)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    per = int((samples.prompt_index == 0).sum())
    first = torch.tensor([int(torch.nonzero(samples.prompt_index == i)[0]) for i in range(len(SHAPES64))])
    grid = _to_pil(samples.images[first], len(SHAPES), len(COLORS), 3, frames=~verdicts["correct"][first])
    grid = _with_labels(grid, list(SHAPES), grid.height // len(SHAPES), width=70)
    header = Image.new("RGB", (grid.width, 16), "white")
    draw = ImageDraw.Draw(header)
    for c, name in enumerate(COLOR_NAMES):
        draw.text((70 + c * (grid.width - 70) // len(COLORS) + 4, 2), name, fill=(0, 0, 0), font=ImageFont.load_default())
    full = Image.new("RGB", (grid.width, grid.height + 16), "white")
    full.paste(header, (0, 0))
    full.paste(grid, (0, 16))
    full.save(path)

    tiles, frames, labels = [], [], []
    for i in detail_prompts:
        idx = torch.nonzero(samples.prompt_index == i).flatten()
        tiles += [samples.images[idx], reference[idx].float() / 255]
        frames += [~verdicts["correct"][idx], torch.zeros(len(idx), dtype=torch.bool)]
        labels += [f"{SHAPES64[i].prompt}\nprior samples", "ground truth,\nsame cameras"]
    detail = _to_pil(torch.cat(tiles), len(labels), per, 3, frames=torch.cat(frames))
    detail = _with_labels(detail, labels, detail.height // len(labels))
    detail_path = path.with_name(f"{path.stem}-detail{path.suffix}")
    detail.save(detail_path)
    return [path, detail_path]


# ---- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="ShapesPriorPipeline folder or Hub repo id")
    parser.add_argument("--output_dir", default="runs/prior-eval", help="classifier cache, samples, default JSON / grid")
    parser.add_argument("--guidance_scale", type=float, default=1.25, help="CFG scale (see the shapes-prior card)")
    parser.add_argument("--view_guidance_scale", type=float, default=0.0,
                        help="view guidance (ShapesPriorPipeline; see the shapes-prior card); 0 = off")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--samples_per_prompt", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=128, help="images per sampling batch")
    parser.add_argument("--seed", type=int, default=0, help="seeds cameras, noise, the classifier and its renders")
    parser.add_argument("--view_words", action="store_true",
                        help="append the camera's view word to each prompt ('a red cube, side view'), as AToM's SDS does")
    parser.add_argument("--view_tolerance", type=float, default=45.0,
                        help="full-circle azimuth tolerance in degrees (scaled by the shape's symmetry order)")
    parser.add_argument("--judge", choices=("classifier", "nearest"), default="classifier",
                        help="classifier: a CNN trained on GT renders; nearest: the closest GT render at the sample's camera")
    parser.add_argument("--classifier_views", type=int, default=64, help="GT renders per (shape, color) pair for training")
    parser.add_argument("--classifier_val_views", type=int, default=16, help="held-out GT renders per pair")
    parser.add_argument("--classifier_seconds", type=float, default=120.0, help="training time budget")
    parser.add_argument("--classifier_epochs", type=int, default=30, help="training epoch budget")
    parser.add_argument("--classifier_noise", type=float, default=0.15,
                        help="max std of the pixel noise the classifier is trained with (0.04 before 2026-11-28)")
    parser.add_argument("--classifier_blotches", type=float, default=0.1,
                        help="max amplitude of the smooth color noise the classifier is trained with (0 before)")
    parser.add_argument("--renders", default=None, help="train the classifier on this ShapeRenders file instead of rendering")
    parser.add_argument("--samples", default=None,
                        help="score the samples saved in this samples.pt (from an earlier run) instead of sampling")
    parser.add_argument("--retrain", action="store_true", help="ignore the cached classifier")
    parser.add_argument("--json", default=None, help="default <output_dir>/prior_eval.json")
    parser.add_argument("--grid", default=None, help="default <output_dir>/samples.png (+ samples-detail.png)")
    parser.add_argument("--worst", type=int, default=12, help="prompts listed in the worst-prompts table")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is faster when another job shares a 2-core machine)")
    parser.add_argument("--no_progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from atom.guidance.shapes_prior import ShapesPriorPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    tic = time.perf_counter()
    pipe = ShapesPriorPipeline.from_pretrained(args.model).to(args.device)
    resolution = int(pipe.unet.config.sample_size)
    timings["load"] = time.perf_counter() - tic

    cfg = ClassifierConfig(resolution=resolution, views_per_pair=args.classifier_views,
                           val_views_per_pair=args.classifier_val_views, max_seconds=args.classifier_seconds,
                           max_epochs=args.classifier_epochs, seed=args.seed, renders=args.renders,
                           noise=args.classifier_noise, blotches=args.classifier_blotches)
    classifier, info = None, None
    if args.judge == "classifier":
        tic = time.perf_counter()
        classifier, info = load_or_train_classifier(cfg, out_dir / "classifier", args.retrain, progress)
        timings["classifier"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if args.samples:
        samples = load_samples(args.samples)
    else:
        samples = sample_prior(pipe, args.samples_per_prompt, args.guidance_scale, args.steps, args.batch_size,
                               args.seed, args.view_words, progress, args.view_guidance_scale)
        save_samples(samples, out_dir / "samples.pt")
    timings["sample"] = time.perf_counter() - tic

    tic = time.perf_counter()
    shape_index, color_index = samples.shape_index, samples.color_index
    reference = render_gt(shape_index, color_index, samples.cameras, resolution, cfg.supersample, seed=30_000 + args.seed,
                          progress=progress)
    timings["reference_renders"] = time.perf_counter() - tic
    tic = time.perf_counter()
    if classifier is not None:
        judge = lambda images: classify(classifier, images)  # noqa: E731
    else:
        judge = nearest_render_judge(samples.cameras, shape_index, color_index, resolution, cfg.supersample,
                                     progress=progress)
    pred = judge(samples.images)
    verdicts = score_predictions(pred, shape_index, color_index, samples.cameras, args.view_tolerance)
    ref_verdicts = score_predictions(judge(reference), shape_index, color_index, samples.cameras, args.view_tolerance)
    timings["judge"] = time.perf_counter() - tic
    summary = aggregate(verdicts)
    result = {
        "model": args.model,
        "settings": {k: getattr(args, k) for k in ("guidance_scale", "view_guidance_scale", "steps", "samples_per_prompt", "batch_size", "seed",
                                                   "view_words", "view_tolerance", "samples", "judge")} | {"resolution": resolution},
        "acceptance": ACCEPTANCE,
        "passed": all(summary[k] is not None and summary[k] >= v for k, v in ACCEPTANCE.items()),
        "samples": summary,
        "reference": aggregate(ref_verdicts),
        "splits": {},
        "per_prompt": per_prompt(verdicts, pred, samples),
        "classifier": info,
        "view_rule": (f"cube and pyramid only; azimuth modulo 90 within {args.view_tolerance:g}/4 deg "
                      f"(solids of revolution have no recoverable azimuth)"),
    }
    held_out = torch.tensor([SHAPES64[i] in HELD_OUT for i in samples.prompt_index.tolist()])
    result["splits"] = {"seen": aggregate(verdicts, ~held_out), "held_out": aggregate(verdicts, held_out)}
    print(format_report(result, args.worst))

    grid_path = Path(args.grid) if args.grid else out_dir / "samples.png"
    # Detail rows: the view-checked shapes in two colors, then the four worst prompts.
    detail = [i for i, r in enumerate(SHAPES64) if r.shape in VIEW_SHAPES and r.color in ("red", "cyan")]
    detail += [i for i in sorted(range(len(SHAPES64)), key=lambda i: result["per_prompt"][i]["accuracy"])[:4] if i not in detail]
    paths = save_grids(grid_path, samples, reference, verdicts, detail)
    timings["total"] = sum(timings.values())
    result["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    json_path = Path(args.json) if args.json else out_dir / "prior_eval.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
    print(f"grids: {', '.join(map(str, paths))}\njson: {json_path}\ntimes (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    return result


if __name__ == "__main__":
    main()
