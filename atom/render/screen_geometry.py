"""2D geometry in screen space, shared by the rasterizer and the antialias: pixel coordinates of
clip-space points, barycentrics, distances from pixel centres to triangles and segments."""
from __future__ import annotations

from collections.abc import Iterator

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


def pixels_in_boxes(
    x: torch.Tensor, y: torch.Tensor, height: int, width: int, max_pairs: int, margin: float = 0.0,
    keep: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every (item, pixel) pair whose pixel centre lies in the item's screen bounding box, in
    chunks of at most `max_pairs` pairs (an item whose box alone is larger comes alone).

    Args:
        x, y: (N, K) pixel coordinates of each item's K points (triangle corners, segment ends).
        height, width: the image; boxes are clipped to it.
        max_pairs: bound on the pairs of one chunk; bounds memory.
        margin: pixels added on every side of each box.
        keep: (N,) bool, items to enumerate (default: all).

    Yields:
        item (P,) index into N, px (P,), py (P,) pixel columns and rows (row 0 at the bottom).
    """
    x0 = (x.amin(-1) - margin).ceil().clamp(0, width).long()
    x1 = (x.amax(-1) + margin).floor().clamp(-1, width - 1).long()
    y0 = (y.amin(-1) - margin).ceil().clamp(0, height).long()
    y1 = (y.amax(-1) + margin).floor().clamp(-1, height - 1).long()
    box_w = (x1 - x0 + 1).clamp_min(0)
    count = box_w * (y1 - y0 + 1).clamp_min(0)
    if keep is not None:
        count = torch.where(keep, count, torch.zeros_like(count))
    ends = torch.cumsum(count, 0)
    start = 0
    while start < count.shape[0]:
        base = ends[start - 1] if start > 0 else 0
        stop = max(int(torch.searchsorted(ends, base + max_pairs, right=True)), start + 1)
        n = count[start:stop]
        total = int(n.sum())
        if total:
            item = torch.arange(start, stop, device=x.device).repeat_interleave(n)
            offset = torch.arange(total, device=x.device) - (torch.cumsum(n, 0) - n).repeat_interleave(n)
            yield item, x0[item] + offset % box_w[item], y0[item] + offset // box_w[item]
        start = stop
