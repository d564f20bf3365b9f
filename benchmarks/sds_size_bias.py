"""Does a teacher's score distillation hold the true primitives at their true size and place?

    python benchmarks/sds_size_bias.py --teacher pretrained/shapes-prior
    python benchmarks/sds_size_bias.py --teacher pretrained/shapes-prior --scales 0.9 1.0 1.1 --draws 64
    python benchmarks/sds_size_bias.py --deformation shift_y --values -0.1 0 0.1 --shapes cone

Each ground-truth Shapes-world mesh is deformed by a parameter p and rendered as stage 2
renders AToM (rasterized at --resolution, lambertian, lights near the camera, white background,
view-dependent prompts); the SDS gradient d loss / d p is averaged over --draws random cameras,
timesteps and noises. `--deformation`:
  scale      verts * s about the center, p = log s (--scales / --values are s);
  stretch_y  y * s (height only), p = log s;
  shift_y    y + d (moved up by d world units), p = d;
  rotate_y   turned about Y by a degrees, p = a in radians (the view of cube and pyramid).
Gradient descent moves p against the mean: for scale, a positive mean shrinks the object, a
negative one grows it; for shift_y, a positive mean moves it down. A teacher whose samples match
the data gives a mean near 0 at the true mesh (s = 1, d = 0), of opposite signs on either side;
where the sign changes is where SDS drives a mesh to. Prints, per shape and value, the mean and
its standard error.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from atom.data import COLORS, SHAPES, view_word
from atom.data.renders import BACKGROUND, mesh_for
from atom.geometry import Mesh
from atom.guidance import DiffusionTeacher
from atom.guidance.sds import ScoreDistillation
from atom.guidance.teacher_prompts import TeacherPrompts
from atom.render import render_mesh, sample_cameras, sample_light_directions


class Deformation(NamedTuple):
    value_name: str  # what --values gives
    param_name: str  # p, the parameter the gradient is taken with respect to
    to_param: Callable[[float], float]  # value -> p
    default_values: tuple[float, ...]


DEFORMATIONS = {
    "scale": Deformation("s", "log s", math.log, (0.9, 1.0, 1.1)),
    "stretch_y": Deformation("s", "log s", math.log, (0.9, 1.0, 1.1)),
    "shift_y": Deformation("d", "d", float, (-0.1, 0.0, 0.1)),
    "rotate_y": Deformation("a", "a (rad)", math.radians, (-22.5, 0.0, 22.5)),
}


def deform(verts: torch.Tensor, deformation: str, p: torch.Tensor) -> torch.Tensor:
    """(V, 3) vertices moved by the scalar parameter `p` (see the module docstring)."""
    if deformation == "scale":
        return verts * p.exp()
    axis = torch.tensor([0.0, 1.0, 0.0])
    if deformation == "stretch_y":
        return verts * (1 + axis * (p.exp() - 1))
    if deformation == "shift_y":
        return verts + axis * p
    if deformation == "rotate_y":
        x, y, z = verts.unbind(-1)
        return torch.stack([p.cos() * x + p.sin() * z, y, -p.sin() * x + p.cos() * z], -1)
    raise ValueError(f"unknown deformation {deformation!r}; one of {list(DEFORMATIONS)}")


def deformation_gradients(teacher: DiffusionTeacher, prompts: TeacherPrompts, shape: str, value: float, draws: int,
                          resolution: int, batch: int, guidance_scale: float, max_step_percent: float, seed: int,
                          deformation: str = "scale", view_guidance_scale: float = 0.0) -> torch.Tensor:
    """(draws,) d SDS / d p at the deformation `value` (s; d for shift_y; degrees for rotate_y),
    one per render (each with its own camera, light, color, t, noise)."""
    sds = ScoreDistillation(teacher, guidance_scale, 0.02, max_step_percent, view_guidance_scale=view_guidance_scale)
    gen = torch.Generator().manual_seed(seed)
    colors = list(COLORS)
    meshes = [mesh_for(shape, c) for c in colors]
    start_p = DEFORMATIONS[deformation].to_param(value)
    grads = []
    for start in range(0, draws, batch):
        n = min(batch, draws - start)
        cams = sample_cameras(n, generator=gen)
        light = sample_light_directions(cams, 30.0, generator=gen)
        color_idx = torch.randint(len(colors), (n,), generator=gen).tolist()
        p = torch.full((n,), start_p, requires_grad=True)
        images = []
        for i, c in enumerate(color_idx):
            base = meshes[c]
            mesh = Mesh(deform(base.verts, deformation, p[i]), base.faces, base.colors)
            images.append(render_mesh(mesh, cams[i : i + 1], resolution, light[i : i + 1], "lambertian", BACKGROUND)["rgb"])
        texts = [f"a {colors[c]} {shape}, {view_word(float(e), float(a))}"
                 for c, e, a in zip(color_idx, cams.elevation, cams.azimuth)]
        loss = sds(torch.cat(images), prompts.condition(texts, cams), generator=gen)["loss"]
        (grad,) = torch.autograd.grad(loss * n, p)  # the loss is a batch mean; per-render gradients
        grads.append(grad)
    return torch.cat(grads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="pretrained/shapes-prior")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--deformation", choices=list(DEFORMATIONS), default="scale")
    parser.add_argument("--values", "--scales", nargs="+", type=float, default=None,
                        help="s for scale / stretch_y (default 0.9 1.0 1.1), d for shift_y (default -0.1 0 0.1), "
                             "degrees for rotate_y (default -22.5 0 22.5)")
    parser.add_argument("--draws", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64, help="render side in pixels (stage 2 of shapes64.yaml)")
    parser.add_argument("--guidance_scale", type=float, default=7.5)
    parser.add_argument("--view_guidance_scale", type=float, default=0.0)
    parser.add_argument("--max_step_percent", type=float, default=0.98)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    kind = DEFORMATIONS[args.deformation]
    values = args.values or list(kind.default_values)
    teacher = DiffusionTeacher.from_pretrained(args.teacher)
    prompts = TeacherPrompts.for_teacher(args.teacher)
    rows = []
    for shape in args.shapes:
        for value in values:
            g = deformation_gradients(teacher, prompts, shape, value, args.draws, args.resolution, args.batch,
                                      args.guidance_scale, args.max_step_percent, args.seed, args.deformation,
                                      args.view_guidance_scale)
            rows.append({"shape": shape, "deformation": args.deformation, "value": value, "mean": g.mean().item(),
                         "stderr": (g.std() / len(g) ** 0.5).item()})
            if not args.json:
                r = rows[-1]
                print(f"{shape:9s} {args.deformation} {kind.value_name}={value:+5.2f}  dL/d{kind.param_name} = "
                      f"{r['mean']:+8.1f} +- {r['stderr']:6.1f}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
