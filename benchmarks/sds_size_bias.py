"""Does a teacher's score distillation hold the true primitives at their true size?

    python benchmarks/sds_size_bias.py --teacher pretrained/shapes-prior
    python benchmarks/sds_size_bias.py --teacher pretrained/shapes-prior --scales 0.9 1.0 1.1 --draws 64

Each ground-truth Shapes-world mesh is scaled by s about its center and rendered as stage 2
renders AToM (rasterized at --resolution, lambertian, lights near the camera, white background,
view-dependent prompts); the SDS gradient d loss / d log s is averaged over --draws random
cameras, timesteps and noises. Gradient descent moves log s against it: a positive mean shrinks
the object, a negative one grows it. A teacher whose samples match the data gives a mean near 0
at s = 1, negative below and positive above; the s where the sign changes is the size SDS
drives a mesh to. Prints, per shape and scale, the mean and its standard error.
"""
from __future__ import annotations

import argparse
import json

import torch

from atom.data import COLORS, SHAPES, view_word
from atom.data.renders import BACKGROUND, mesh_for
from atom.geometry import Mesh
from atom.guidance import DiffusionTeacher
from atom.guidance.sds import ScoreDistillation
from atom.guidance.teacher_prompts import TeacherPrompts
from atom.render import render_mesh, sample_cameras, sample_light_directions


def size_gradients(teacher: DiffusionTeacher, prompts: TeacherPrompts, shape: str, scale: float, draws: int,
                   resolution: int, batch: int, guidance_scale: float, max_step_percent: float, seed: int) -> torch.Tensor:
    """(draws,) d SDS / d log s, one per render (each with its own camera, light, color, t, noise)."""
    sds = ScoreDistillation(teacher, guidance_scale, 0.02, max_step_percent)
    gen = torch.Generator().manual_seed(seed)
    colors = list(COLORS)
    meshes = [mesh_for(shape, c) for c in colors]
    grads = []
    for start in range(0, draws, batch):
        n = min(batch, draws - start)
        cams = sample_cameras(n, generator=gen)
        light = sample_light_directions(cams, 30.0, generator=gen)
        color_idx = torch.randint(len(colors), (n,), generator=gen).tolist()
        log_s = torch.full((n,), float(torch.tensor(scale).log()), requires_grad=True)
        images = []
        for i, c in enumerate(color_idx):
            base = meshes[c]
            mesh = Mesh(base.verts * log_s[i].exp(), base.faces, base.colors)
            images.append(render_mesh(mesh, cams[i : i + 1], resolution, light[i : i + 1], "lambertian", BACKGROUND)["rgb"])
        texts = [f"a {colors[c]} {shape}, {view_word(float(e), float(a))}"
                 for c, e, a in zip(color_idx, cams.elevation, cams.azimuth)]
        loss = sds(torch.cat(images), prompts.condition(texts, cams), generator=gen)["loss"]
        (grad,) = torch.autograd.grad(loss * n, log_s)  # the loss is a batch mean; per-render gradients
        grads.append(grad)
    return torch.cat(grads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="pretrained/shapes-prior")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--scales", nargs="+", type=float, default=[0.9, 1.0, 1.1])
    parser.add_argument("--draws", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64, help="render side in pixels (stage 2 of shapes64.yaml)")
    parser.add_argument("--guidance_scale", type=float, default=7.5)
    parser.add_argument("--max_step_percent", type=float, default=0.98)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    teacher = DiffusionTeacher.from_pretrained(args.teacher)
    prompts = TeacherPrompts.for_teacher(args.teacher)
    rows = []
    for shape in args.shapes:
        for scale in args.scales:
            g = size_gradients(teacher, prompts, shape, scale, args.draws, args.resolution, args.batch,
                               args.guidance_scale, args.max_step_percent, args.seed)
            rows.append({"shape": shape, "scale": scale, "mean": g.mean().item(), "stderr": (g.std() / len(g) ** 0.5).item()})
            if not args.json:
                r = rows[-1]
                print(f"{shape:9s} s={scale:4.2f}  dL/dlog s = {r['mean']:+8.1f} +- {r['stderr']:6.1f}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
