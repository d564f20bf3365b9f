"""2D geometry in screen space, shared by the rasterizer and the antialias: pixel coordinates of
clip-space points, barycentrics, distances from pixel centres to triangles and segments."""
from __future__ import annotations

import torch


def screen_coords(pos: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel coordinates (x, y) with pixel centers at integers, row 0 at the bottom, and NDC z."""
    ndc = pos[..., :3] / pos[..., 3:4]
    x = (ndc[..., 0] + 1) * (0.5 * width) - 0.5
    y = (ndc[..., 1] + 1) * (0.5 * height) - 0.5
    return x, y, ndc[..., 2]


def barycentric_2d(px, py, x, y):
    """Screen-space barycentrics of points (px, py) (N,) in triangles x, y (N, 3); also the doubled signed area."""
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    w0 = (x[:, 1] - px) * (y[:, 2] - py) - (x[:, 2] - px) * (y[:, 1] - py)
    w1 = (x[:, 2] - px) * (y[:, 0] - py) - (x[:, 0] - px) * (y[:, 2] - py)
    safe = torch.where(area == 0, torch.ones_like(area), area)
    b0, b1 = w0 / safe, w1 / safe
    return b0, b1, 1 - b0 - b1, area


def point_triangle_distance_2d(px, py, x, y) -> torch.Tensor:
    """Distance (N,) from points (px, py) to filled triangles (x, y) (N, 3); 0 inside."""
    b0, b1, b2, _ = barycentric_2d(px, py, x, y)
    inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
    edges = [point_segment_distance_2d(px, py, x[:, [i, j]], y[:, [i, j]]) for i, j in ((0, 1), (1, 2), (2, 0))]
    d = torch.stack(edges, -1).min(-1).values
    return torch.where(inside, torch.zeros_like(d), d)


def point_segment_distance_2d(px, py, x, y) -> torch.Tensor:
    """Distance (N,) from points (px, py) to segments with end points x, y (N, 2)."""
    ex, ey = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    t = (((px - x[:, 0]) * ex + (py - y[:, 0]) * ey) / (ex * ex + ey * ey).clamp_min(1e-12)).clamp(0, 1)
    return torch.hypot(px - x[:, 0] - t * ex, py - y[:, 0] - t * ey)
