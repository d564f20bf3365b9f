"""Which way a shapes prior misses the camera: signed azimuth offsets of its cube and pyramid samples.

    python benchmarks/prior_view_offsets.py --model pretrained/shapes-prior-64px --samples_per_prompt 8

Samples the 16 cube and pyramid prompts of Shapes64 at random training cameras (CFG 1.25, 25 DDIM
steps, as `train/evaluate_prior.py` scores a prior) and judges each sample with its nearest-render
judge: the azimuth is that of the closest of 16 renders of the requested pair turned by 0 .. 90 deg,
so offsets come in steps k of 5.625 deg, modulo the shapes' 90 deg symmetry. Prints the histogram
of k per shape, how many lie within 1 and 2 steps (2 steps = 11.25 deg is evaluate_prior's
tolerance, so "|k| <= 2" is its view accuracy), and the mean signed offset: a peak away from k = 0
would be a camera-convention error, a wide peak at 0 an imprecise camera conditioning.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "train"))
from evaluate_prior import sample_prior  # noqa: E402
from prior_judges import VIEW_ORDER, nearest_render_judge  # noqa: E402

from atom.data import SHAPES, SHAPES64  # noqa: E402
from atom.guidance.shapes_prior import ShapesPriorPipeline  # noqa: E402
from atom.render import Cameras  # noqa: E402

STEPS = 16  # the nearest-render judge's turned renders per period
PERIOD = 360.0 / VIEW_ORDER  # cube and pyramid look the same every 90 deg of azimuth


def view_offsets(images: torch.Tensor, cameras: Cameras, shape_index: torch.Tensor, color_index: torch.Tensor,
                 resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each cube / pyramid image (N, 3, H, W) in [0, 1], asked for at `cameras`, is turned
    from its requested view, by the nearest-render judge: (signed offsets (N,) in degrees in
    [-45, 45), the same in judge steps k (N,) long, in [-8, 7])."""
    pred = nearest_render_judge(cameras, shape_index, color_index, resolution)(images)
    signed = torch.remainder(pred["azimuth"] - cameras.azimuth.float() + PERIOD / 2, PERIOD) - PERIOD / 2
    return signed, torch.round(signed / (PERIOD / STEPS)).long()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pretrained/shapes-prior-64px")
    parser.add_argument("--samples_per_prompt", type=int, default=8)
    parser.add_argument("--guidance_scale", type=float, default=1.25)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = ShapesPriorPipeline.from_pretrained(args.model)
    resolution = int(pipe.unet.config.sample_size)
    tic = time.perf_counter()
    samples = sample_prior(pipe, args.samples_per_prompt, args.guidance_scale, args.steps, args.batch_size, args.seed,
                           progress=False, prompt_indices=[i for i, r in enumerate(SHAPES64) if r.shape in ("cube", "pyramid")])
    shape_index = samples.shape_index
    signed, steps = view_offsets(samples.images, samples.cameras, shape_index, samples.color_index, resolution)
    print(f"{args.model}: {resolution} px, {len(shape_index)} samples, {time.perf_counter() - tic:.0f} s")
    for name in ("cube", "pyramid", None):
        mask = torch.ones(len(shape_index), dtype=torch.bool) if name is None else shape_index == SHAPES.index(name)
        k = steps[mask]
        histogram = dict(sorted(Counter(k.tolist()).items()))
        print(f"{name or 'both'}: n {int(mask.sum())}, within 1 step {int((k.abs() <= 1).sum())}, within 2 steps "
              f"{int((k.abs() <= 2).sum())}, mean signed offset {signed[mask].mean():+.2f} deg, k histogram {histogram}")


if __name__ == "__main__":
    main()
