"""Canonical triangle meshes of the primitives and uniform samples of their true surfaces.

The solids of revolution are their (rho, y) profile revolved around Y (64 sections, about 64
segments per full circle of profile), so profile corners stay sharp (cylinder and cone rims,
cone apex) and the snowman is one closed surface: the union's outer surface, creased where the
spheres meet. Cube and pyramid are their exact 12 and 6 triangles. Every mesh is watertight with
outward faces; vertices are shared across sharp edges, so shade flat (face normals) or split
them (`mesh.smooth_shaded`) for rendering.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import trimesh

from .sdf import shape_sdf
from .world import (
    CAPSULE_HEIGHT,
    CAPSULE_RADIUS,
    COLORS,
    CONE_HEIGHT,
    CONE_RADIUS,
    CUBE_SIDE,
    CYLINDER_HEIGHT,
    CYLINDER_RADIUS,
    PYRAMID_HEIGHT,
    PYRAMID_SIDE,
    SNOWMAN_CREASE_Y,
    SNOWMAN_SPHERES,
    SPHERE_RADIUS,
    TORUS_MAJOR_RADIUS,
    TORUS_MINOR_RADIUS,
    check_color,
    check_shape,
)

_SECTIONS = 64  # around the Y axis, and segments per full circle of a profile arc
_FLAT = ("cube", "pyramid")  # meshed exactly: their faces are the true surface
# The pyramid's 5 corners and 6 triangles (2 for the base), counter-clockwise seen from outside.
_S, _H = PYRAMID_SIDE / 2, PYRAMID_HEIGHT / 2
_PYRAMID_VERTS = np.array([[-_S, -_H, -_S], [_S, -_H, -_S], [_S, -_H, _S], [-_S, -_H, _S], [0.0, _H, 0.0]])
_PYRAMID_FACES = np.array([[0, 1, 2], [0, 2, 3], [3, 2, 4], [2, 1, 4], [1, 0, 4], [0, 3, 4]])
# trimesh revolves around Z: this maps (x, y, z) -> (x, z, -y), i.e. +Z onto +Y.
_Z_TO_Y = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])


def _arc(center_y: float, radius: float, start: float, end: float, center_rho: float = 0.0) -> np.ndarray:
    """(K, 2) points (rho, y) of a circle arc from angle `start` to `end` (radians, 0 = +rho)."""
    count = max(2, math.ceil(abs(end - start) / (2 * math.pi) * _SECTIONS))
    t = np.linspace(start, end, count + 1)
    return np.stack([center_rho + radius * np.cos(t), center_y + radius * np.sin(t)], 1)


def _profile(name: str) -> np.ndarray:
    """(K, 2) profile (rho, y) of a solid of revolution, bottom to top (closed loop for the torus)."""
    half = math.pi / 2
    if name == "sphere":
        profile = _arc(0.0, SPHERE_RADIUS, -half, half)
    elif name == "cylinder":
        r, h = CYLINDER_RADIUS, CYLINDER_HEIGHT / 2
        profile = np.array([[0, -h], [r, -h], [r, h], [0, h]])
    elif name == "cone":
        r, h = CONE_RADIUS, CONE_HEIGHT / 2
        profile = np.array([[0, -h], [r, -h], [0, h]])
    elif name == "torus":
        profile = _arc(0.0, TORUS_MINOR_RADIUS, -math.pi, math.pi, center_rho=TORUS_MAJOR_RADIUS)[:-1]
        profile = np.concatenate([profile, profile[:1]])  # exactly closed
    elif name == "capsule":
        r, h = CAPSULE_RADIUS, CAPSULE_HEIGHT / 2 - CAPSULE_RADIUS
        profile = np.concatenate([_arc(-h, r, -half, 0), _arc(h, r, 0, half)])
    else:  # snowman: the bottom sphere up to the crease, then the top sphere
        (y0, r0), (y1, r1) = SNOWMAN_SPHERES
        bottom = _arc(y0, r0, -half, math.asin((SNOWMAN_CREASE_Y - y0) / r0))
        top = _arc(y1, r1, math.asin((SNOWMAN_CREASE_Y - y1) / r1), half)
        profile = np.concatenate([bottom, top[1:]])
    profile[np.abs(profile[:, 0]) < 1e-12, 0] = 0.0  # poles exactly on the axis
    return profile


@functools.lru_cache(maxsize=None)
def _canonical_mesh(name: str) -> trimesh.Trimesh:
    if name == "cube":
        mesh = trimesh.creation.box(extents=(CUBE_SIDE,) * 3)
    elif name == "pyramid":
        mesh = trimesh.Trimesh(_PYRAMID_VERTS, _PYRAMID_FACES)
    else:
        mesh = trimesh.creation.revolve(_profile(name), sections=_SECTIONS)
        mesh.apply_transform(_Z_TO_Y)
    if mesh.volume < 0:
        mesh.invert()
    assert mesh.is_watertight, name
    return mesh


def shape_mesh(name: str, color: str | None = None) -> trimesh.Trimesh:
    """A canonical watertight mesh of primitive `name` (a fresh copy of a cached mesh).

    Args:
        name: one of `SHAPES`.
        color: optional name in `COLORS`; sets RGBA uint8 vertex colors round(255 x albedo).

    Returns:
        `trimesh.Trimesh`, Y up, world units, faces counter-clockwise seen from outside.
    """
    mesh = _canonical_mesh(check_shape(name)).copy()
    if color is not None:
        rgb = np.round(255 * np.array(COLORS[check_color(color)]))
        mesh.visual.vertex_colors = np.append(rgb, 255).astype(np.uint8)
    return mesh


def _project_to_surface(name: str, points: np.ndarray) -> np.ndarray:
    """Moves (N, 3) points near the surface onto it: one Newton step along the SDF gradient
    (exact for an exact SDF wherever the nearest surface point is unique)."""
    p = torch.as_tensor(points, dtype=torch.float64).requires_grad_(True)
    d = shape_sdf(name, p)
    (grad,) = torch.autograd.grad(d.sum(), p)
    return (p - (d / (grad * grad).sum(-1).clamp(min=1e-12))[:, None] * grad).detach().numpy()


def sample_surface(name: str, n: int, seed: int = 0) -> np.ndarray:
    """`n` points uniformly distributed on the true (analytic) outer surface of primitive `name`.

    Samples the canonical mesh by area; unless its faces are the true surface (cube, pyramid),
    projects the points onto the zero set of `shape_sdf` and drops the rare ones that do not
    land on the outer surface (e.g. next to the snowman's crease).

    Args:
        name: one of `SHAPES`.
        n: number of points, >= 0.
        seed: seeds numpy's generator; the same (name, n, seed) gives the same points.

    Returns:
        (n, 3) float64 array, world units.
    """
    mesh = _canonical_mesh(check_shape(name))
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    rng = np.random.default_rng(seed)
    kept, count = [], 0
    while count < n:
        points, _ = trimesh.sample.sample_surface(mesh, int(1.05 * (n - count)) + 16, seed=rng)
        if name not in _FLAT:
            points = _project_to_surface(name, points)
            points = points[np.abs(shape_sdf(name, torch.from_numpy(points)).numpy()) < 1e-9]
        kept.append(points)
        count += len(points)
    return np.concatenate(kept)[:n] if kept else np.zeros((0, 3))
