"""Does a teacher's score distillation hold a shape at its true size and place?

    python benchmarks/sds_size_bias.py --teacher pretrained/shapes-prior
    python benchmarks/sds_size_bias.py --teacher pretrained/shapes-prior --scales 0.9 1.0 1.1 --draws 64
    python benchmarks/sds_size_bias.py --deformation shift_y --values -0.1 0 0.1 --shapes cone
    python benchmarks/sds_size_bias.py --renderer neus --resolution 32 --max_step_percent 0.6
    python benchmarks/sds_size_bias.py --model pretrained/atom-shapes64 --deformation hole --shapes torus
    python benchmarks/sds_size_bias.py --model pretrained/atom-shapes64 --renderer raster --shapes cone \
        --deformation shift_y --elevation_range -30 45

Each Shapes-world shape is deformed by a parameter p and rendered (lambertian, lights near the
camera, white background, view-dependent prompts); the SDS gradient d loss / d p is averaged
over --draws random cameras, colors, timesteps and noises. What is rendered:
  --renderer raster  the ground-truth mesh, rasterized as stage 2 renders AToM (default);
  --renderer neus    the exact SDF, volume rendered as stage 1 renders AToM (NeuS, --samples,
                     --sharpness);
  --model PIPELINE   the SDF and colors an AToM pipeline generates for "a {color} {shape}",
                     volume rendered as stage 1 does (--renderer neus, the default with --model),
                     or its marched meshes rasterized as stage 2 does (--renderer raster): where
                     SDS would move the trained model's shapes.
Cameras are drawn as training draws them, at elevations in --elevation_range (degrees).
`--deformation`:
  scale      points * s about the center, p = log s (--scales / --values are s);
  stretch_y  y * s (height only), p = log s;
  shift_y    y + d (moved up by d world units), p = d;
  rotate_y   turned about Y by a degrees, p = a in radians (the view of cube and pyramid);
  round      square cross-sections blended by b toward circles of the same area, p = b (cube
             and pyramid: b = 1 makes a cylinder and a cone; meshes are subdivided 4 times);
  hole       (SDFs only) a vertical hole of radius r carved along the Y axis, p = r;
  cut_below  (SDFs only) everything below y = c cut off, p = c.
An SDF is moved by evaluating it at the inversely moved point (a distance field again up to
the factor s of scale and stretch_y). Gradient descent moves p against the mean: for scale, a
positive mean shrinks the object, a negative one grows it; for shift_y, a positive mean moves
it down; for hole, a negative mean widens the hole; for round, a negative mean rounds the
corners. A teacher whose samples match the data gives a mean near 0 at the true shape (s = 1,
d = 0), of opposite signs on either side; where the sign changes is where SDS drives a shape to.
Prints, per shape and value, the mean and its standard error.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from atom.data import COLORS, SHAPES, prompt_for, view_word
from atom.data.renders import BACKGROUND, mesh_for
from atom.data.sdf import shape_sdf
from atom.geometry import Mesh
from atom.guidance import DiffusionTeacher
from atom.guidance.sds import ScoreDistillation
from atom.guidance.teacher_prompts import TeacherPrompts
from atom.render import NeuSRenderer, render_mesh, sample_cameras, sample_light_directions
from atom.render.neus import Field

Y = torch.tensor([0.0, 1.0, 0.0])


def _round_xz(points: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Points moved radially about Y so that an axis-aligned square cross-section of half-width h
    becomes, at b = 1, the circle of the same area (radius 2 h / sqrt(pi))."""
    x, y, z = points.unbind(-1)
    square = torch.maximum(x.abs(), z.abs()) / torch.hypot(x, z).clamp_min(1e-9)  # max(|cos|, |sin|) of the angle
    factor = 1 + b * (2 / math.sqrt(math.pi) * square - 1)
    return torch.stack([x * factor, y, z * factor], -1)


def _rotate_y(points: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    x, y, z = points.unbind(-1)
    return torch.stack([a.cos() * x + a.sin() * z, y, -a.sin() * x + a.cos() * z], -1)


class Deformation(NamedTuple):
    value_name: str  # what --values gives
    param_name: str  # p, the parameter the gradient is taken with respect to
    to_param: Callable[[float], float]  # value -> p
    default_values: tuple[float, ...]
    # (..., 3) points and p (...,) (or a scalar) -> the points moved by p; None: carves an SDF instead
    move: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    # (..., 3) points, p -> (...,) SDF of the region carved away (the deformed SDF is max(sdf, carve))
    carve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    subdivisions: int = 0  # of the rasterized mesh (each splits every triangle in 4), so that it can bend


DEFORMATIONS = {
    "scale": Deformation("s", "log s", math.log, (0.9, 1.0, 1.1), move=lambda v, p: v * p.exp().unsqueeze(-1)),
    "stretch_y": Deformation("s", "log s", math.log, (0.9, 1.0, 1.1),
                             move=lambda v, p: v * (1 + Y * (p.exp() - 1).unsqueeze(-1))),
    "shift_y": Deformation("d", "d", float, (-0.1, 0.0, 0.1), move=lambda v, p: v + Y * p.unsqueeze(-1)),
    "rotate_y": Deformation("a", "a (rad)", math.radians, (-22.5, 0.0, 22.5), move=_rotate_y),
    "round": Deformation("b", "b", float, (-0.2, 0.0, 0.2, 0.5), move=_round_xz, subdivisions=4),
    "hole": Deformation("r", "r", float, (0.05, 0.15, 0.25, 0.35),
                        carve=lambda v, p: p - v[..., [0, 2]].norm(dim=-1)),
    "cut_below": Deformation("c", "c", float, (-0.7, -0.6, -0.55, -0.5), carve=lambda v, p: p - v[..., 1]),
}


def deformed_field(field: Field, deformation: Deformation, p: torch.Tensor) -> Field:
    """`field` deformed by `p (B,)`, one value per image."""
    def deformed(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if deformation.move is not None:
            return field(deformation.move(points, -p.view(-1, 1)))
        sdf, albedo = field(points)
        return torch.maximum(sdf, deformation.carve(points, p.view(-1, 1))), albedo
    return deformed


def subdivided(mesh: Mesh, times: int) -> Mesh:
    """`mesh` with every triangle split in 4 `times` times (same surface, one color throughout)."""
    if times == 0:
        return mesh
    import trimesh

    tri = trimesh.Trimesh(mesh.verts.numpy(), mesh.faces.numpy(), process=False)
    for _ in range(times):
        tri = tri.subdivide()
    verts = torch.tensor(tri.vertices, dtype=torch.float32)
    return Mesh(verts, torch.tensor(tri.faces, dtype=torch.int64), mesh.colors[:1].expand_as(verts))


def true_field(shape: str, colors: torch.Tensor) -> Field:
    """The exact SDF of `shape`, colored `colors (B, 3)` per image."""
    return lambda points: (shape_sdf(shape, points), colors.view(-1, 1, 3).expand(*points.shape))


def model_triplanes(pipeline, shape: str) -> torch.Tensor:
    """(len(COLORS), 3, C, R, R) triplanes `pipeline` generates for "a {color} {shape}", in COLORS order."""
    return pipeline([prompt_for(shape, c) for c in COLORS], output_type="latent").triplanes


def model_field(pipeline, triplanes: torch.Tensor) -> Field:
    """The SDF and colors `pipeline`'s generator reads from `triplanes (B, 3, C, R, R)`, one per image."""
    return lambda points: pipeline.mesh_generator.sdf_and_color(triplanes, points)


def deformation_gradients(teacher: DiffusionTeacher, prompts: TeacherPrompts, shape: str, value: float, draws: int,
                          resolution: int, batch: int, guidance_scale: float, max_step_percent: float, seed: int,
                          deformation: str = "scale", view_guidance_scale: float = 0.0,
                          neus: NeuSRenderer | None = None, pipeline=None,
                          elevation_range: tuple[float, float] = (-10.0, 45.0)) -> torch.Tensor:
    """(draws,) d SDS / d p at the deformation `value` (s; d for shift_y; degrees for rotate_y; ...),
    one per render (each with its own camera, light, color, t, noise), cameras at elevations in
    `elevation_range`. The true mesh is rasterized, or `pipeline`'s meshes if given; with `neus`,
    the true SDF is volume rendered instead, or `pipeline`'s SDF if given."""
    kind = DEFORMATIONS[deformation]
    if neus is None and kind.move is None:
        raise ValueError(f"--deformation {deformation} carves an SDF: use --renderer neus or --model")
    sds = ScoreDistillation(teacher, guidance_scale, 0.02, max_step_percent, view_guidance_scale=view_guidance_scale)
    gen = torch.Generator().manual_seed(seed)
    colors = list(COLORS)
    if neus is None and pipeline is not None:
        meshes = pipeline([prompt_for(shape, c) for c in colors], output_type="mesh").meshes
    elif neus is None:
        meshes = [subdivided(mesh_for(shape, c), kind.subdivisions) for c in colors]
    elif pipeline is not None:
        planes = model_triplanes(pipeline, shape)  # once per shape, not per batch
    grads = []
    for start in range(0, draws, batch):
        n = min(batch, draws - start)
        cams = sample_cameras(n, elevation_range=elevation_range, generator=gen)
        light = sample_light_directions(cams, 30.0, generator=gen)
        color_idx = torch.randint(len(colors), (n,), generator=gen).tolist()
        p = torch.full((n,), kind.to_param(value), requires_grad=True)
        if neus is not None:
            field = (model_field(pipeline, planes[color_idx]) if pipeline is not None
                     else true_field(shape, torch.tensor([COLORS[colors[c]] for c in color_idx])))
            images = neus(deformed_field(field, kind, p), cams, resolution, light_dir=light, shading="lambertian",
                          background=BACKGROUND, generator=gen)["rgb"]
        else:
            images = torch.cat([
                render_mesh(Mesh(kind.move(meshes[c].verts, p[i]), meshes[c].faces, meshes[c].colors),
                            cams[i : i + 1], resolution, light[i : i + 1], "lambertian", BACKGROUND)["rgb"]
                for i, c in enumerate(color_idx)
            ])
        texts = [f"{prompt_for(shape, colors[c])}, {view_word(float(e), float(a))}"
                 for c, e, a in zip(color_idx, cams.elevation, cams.azimuth)]
        loss = sds(images, prompts.condition(texts, cams), generator=gen)["loss"]
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
                             "degrees for rotate_y (default -22.5 0 22.5), b for round (default -0.2 0 0.2 0.5), "
                             "r for hole, c for cut_below")
    parser.add_argument("--renderer", choices=["raster", "neus"], default=None,
                        help="raster (default) or neus (the default with --model)")
    parser.add_argument("--model", default=None, help="an AToM pipeline whose shapes are deformed")
    parser.add_argument("--elevation_range", nargs=2, type=float, default=[-10.0, 45.0],
                        help="camera elevations in degrees (stage 1 of shapes64.yaml; its stage 2: -30 45)")
    parser.add_argument("--samples", type=int, default=48, help="NeuS samples per ray (stage 1 of shapes64.yaml)")
    parser.add_argument("--sharpness", type=float, default=60.0, help="NeuS sharpness s (the shipped model's ~60)")
    parser.add_argument("--draws", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64,
                        help="render side in pixels (64: stage 2 of shapes64.yaml; its stage 1 renders 32)")
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
    pipeline = None
    if args.model is not None:
        from atom import AToMPipeline

        pipeline = AToMPipeline.from_pretrained(args.model)
    neus = None
    renderer = args.renderer or ("neus" if pipeline is not None else "raster")
    if renderer == "neus":
        neus = NeuSRenderer(args.samples, 0, args.sharpness).train()  # stratified samples, as in training
    rows = []
    for shape in args.shapes:
        for value in values:
            g = deformation_gradients(teacher, prompts, shape, value, args.draws, args.resolution, args.batch,
                                      args.guidance_scale, args.max_step_percent, args.seed, args.deformation,
                                      args.view_guidance_scale, neus, pipeline, tuple(args.elevation_range))
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
