"""Analytic signed distance functions of the 8 primitives (negative inside), in torch.

Every SDF is exact, the snowman's too (inside the union, the `min` of the two sphere SDFs
would only bound the distance near the crease). The solids of revolution are written as 2D
distances in the (rho, y) half-plane, rho = |(x, z)|. All functions are vectorized, keep the
input dtype/device and have finite gradients everywhere (norms use a zero-safe square root).
"""
from __future__ import annotations

import math

import torch

from .world import (
    CAPSULE_HEIGHT,
    CAPSULE_RADIUS,
    CONE_HEIGHT,
    CONE_RADIUS,
    CUBE_SIDE,
    CYLINDER_HEIGHT,
    CYLINDER_RADIUS,
    PYRAMID_HEIGHT,
    PYRAMID_SIDE,
    SNOWMAN_CREASE_RHO,
    SNOWMAN_CREASE_Y,
    SNOWMAN_SPHERES,
    SPHERE_RADIUS,
    TORUS_MAJOR_RADIUS,
    TORUS_MINOR_RADIUS,
    check_shape,
)


def _sqrt0(x: torch.Tensor) -> torch.Tensor:
    """sqrt(x) for x >= 0 with a zero (not NaN) gradient at x = 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _length(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis, zero-safe."""
    return _sqrt0((v * v).sum(-1))


def _box(q: torch.Tensor, half: torch.Tensor | float) -> torch.Tensor:
    """Exact SDF of the axis-aligned box [-half, half] (any dimension, last axis)."""
    d = q.abs() - half
    return _length(d.clamp(min=0)) + d.max(-1).values.clamp(max=0)


def _isosceles(px: torch.Tensor, py: torch.Tensor, half_width: float, height: float) -> torch.Tensor:
    """Exact signed 2D distance to the isosceles triangle with its apex at the origin and its base
    from (-half_width, -height) to (half_width, -height), for px >= 0 (Quilez's sdTriangleIsosceles)."""
    t = ((px * half_width - py * height) / (half_width**2 + height**2)).clamp(0, 1)
    to_side = (px - half_width * t) ** 2 + (py + height * t) ** 2
    to_base = (px - half_width * (px / half_width).clamp(0, 1)) ** 2 + (py + height) ** 2
    outside = torch.maximum(px * height + py * half_width, -(py + height))  # > 0 beyond the side or the base
    return _sqrt0(torch.minimum(to_side, to_base)) * torch.sign(outside)


def _pyramid(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Exact SDF of the pyramid. By symmetry the nearest point lies on the face looking along
    +u = +max(|x|, |z|) or on the base, so only those two are measured."""
    s, height = PYRAMID_SIDE / 2, PYRAMID_HEIGHT
    slant = math.hypot(s, height)
    u, w = torch.maximum(x.abs(), z.abs()), torch.minimum(x.abs(), z.abs())
    du, dy = u - s, y + height / 2  # from the face's base edge
    normal = (height * du + s * dy) / slant  # signed distance to the face's plane
    up = (height * dy - s * du) / slant  # in that plane, from the base edge towards the apex
    in_face = _isosceles(w, up - slant, s, slant).clamp(min=0)
    to_face = normal**2 + in_face**2
    to_base = du.clamp(min=0) ** 2 + (w - s).clamp(min=0) ** 2 + dy**2
    return _sqrt0(torch.minimum(to_face, to_base)) * torch.sign(torch.maximum(normal, -dy))


def _snowman(rho: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact SDF of the union of the two spheres: the surface is the bottom sphere below the
    crease circle and the top sphere above it."""
    to_crease = _sqrt0((rho - SNOWMAN_CREASE_RHO) ** 2 + (y - SNOWMAN_CREASE_Y) ** 2)
    signed, unsigned = [], []
    for (center_y, radius), sign in zip(SNOWMAN_SPHERES, (1, -1)):
        to_center = _sqrt0(rho * rho + (y - center_y) ** 2)
        # Does the radial projection onto this sphere land on its part of the union's surface?
        on_part = sign * (y - center_y) <= sign * (SNOWMAN_CREASE_Y - center_y) / radius * to_center
        signed.append(to_center - radius)
        unsigned.append(torch.where(on_part, (to_center - radius).abs(), to_crease))
    return torch.minimum(*unsigned) * torch.sign(torch.minimum(*signed))


def shape_sdf(name: str, points: torch.Tensor) -> torch.Tensor:
    """Signed distance from `points` to the surface of primitive `name` (negative inside).

    Args:
        name: one of `SHAPES`.
        points: (..., 3) float tensor of world positions (Y up).

    Returns:
        (...,) tensor, same dtype and device, differentiable w.r.t. `points`.
    """
    check_shape(name)
    if points.shape[-1] != 3:
        raise ValueError(f"points must be (..., 3), got {tuple(points.shape)}")
    p = points.reshape(-1, 3)
    x, y, z = p.unbind(-1)
    rho = _sqrt0(x * x + z * z)
    if name == "sphere":
        d = _length(p) - SPHERE_RADIUS
    elif name == "cube":
        d = _box(p, CUBE_SIDE / 2)
    elif name == "cylinder":
        d = _box(torch.stack([rho, y], -1), p.new_tensor([CYLINDER_RADIUS, CYLINDER_HEIGHT / 2]))
    elif name == "cone":
        d = _isosceles(rho, y - CONE_HEIGHT / 2, CONE_RADIUS, CONE_HEIGHT)
    elif name == "torus":
        d = _sqrt0((rho - TORUS_MAJOR_RADIUS) ** 2 + y * y) - TORUS_MINOR_RADIUS
    elif name == "pyramid":
        d = _pyramid(x, y, z)
    elif name == "capsule":
        half_segment = CAPSULE_HEIGHT / 2 - CAPSULE_RADIUS
        d = _sqrt0(rho * rho + (y - y.clamp(-half_segment, half_segment)) ** 2) - CAPSULE_RADIUS
    else:  # snowman
        d = _snowman(rho, y)
    return d.reshape(points.shape[:-1])
