"""Soft silhouettes: the antialias every rasterizer backend uses, so that images are
differentiable with respect to vertex positions where a surface meets the background.

A pixel beside a silhouette (an empty pixel next to a covered one, or a covered pixel next to an
empty one) is given the coverage a box filter would give a straight edge at the signed distance d
from its centre to the covered region's boundary: `0.5 - d / edge_width` outside, `0.5 + d /
edge_width` inside, clamped to [0, 1], and blended with its covered (outside) or empty (inside)
neighbour's color. d is measured to the nearest silhouette edge of the mesh (an edge between a
front- and a back-facing triangle, or a boundary edge); outside, also to the neighbours'
triangles if one is nearer. A silhouette moving by one pixel so changes one pixel of coverage per
pixel of its length, as the image does: gradients match finite differences, and silhouettes stay
where they are (a ramp outside the edge only, as here before, draws them half a pixel too wide).
Occlusion edges between two surfaces are left hard.

Why silhouette edges: on a dense mesh the triangle that covers a rim pixel's neighbour lies
several triangles inside the silhouette (the surface turns away there), so the distance to it
overestimates d (a 20k-face sphere got 0.70-0.79 of the finite-difference gradient with triangle
distances alone). nvdiffrast's own antialias was measured to lose these gradients on dense meshes
entirely (0.00-0.02 at 20k faces; ../shared/GPU_FACTS.md), which is why the nvdiffrast backend
uses this one too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .screen_geometry import pixels_in_boxes, point_segment_distance_2d, point_triangle_distance_2d, screen_coords

_DIST_BITS = 31  # quantized distance in the packed (distance, edge id) key of the nearest-edge search


def soft_antialias(
    color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor, edge_width: float = 1.0,
    edge_radius: int = 1, max_pairs: int = 1 << 22,
) -> torch.Tensor:
    """Blends the pixels on both sides of silhouettes in `color` (see the module docstring).

    Args:
        color: (B, H, W, C) shaded image, OpenGL rows (row 0 at the bottom).
        rast: (B, H, W, 4) as a rasterizer's `rasterize` returns it (triangle id + 1 last).
        pos: (B, V, 4) clip-space positions the image was rasterized from.
        tri: (T, 3) int triangles.
        edge_width: width, in pixels, of the coverage ramp centred on silhouettes (<= edge_radius).
        edge_radius: how far, in pixels, to look for a neighbour across a silhouette.
        max_pairs: bound on (silhouette edge, pixel) pairs tested at once; bounds memory.

    Returns:
        (B, H, W, C): `color` blended beside silhouettes; differentiable w.r.t. `pos` there.
    """
    batch, height, width, _ = rast.shape
    r = edge_radius
    face_id = rast[..., 3].detach().long()  # 0 = empty
    padded = F.pad(face_id, (r, r, r, r), value=-1)  # -1: outside the image, neither empty nor covered
    k = 2 * r + 1
    neighbours = padded.unfold(1, k, 1).unfold(2, k, 1).reshape(batch, height, width, k * k)
    outer = (face_id == 0) & (neighbours > 0).any(-1)
    inner = (face_id > 0) & (neighbours == 0).any(-1)
    if not outer.any():
        return color
    pos = pos.float()
    offsets = torch.stack(
        torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij"), -1
    ).reshape(-1, 2).to(rast.device)  # (k*k, 2) as (dy, dx)
    nearest = _nearest_edges(outer | inner, pos, tri, edge_width / 2, max_pairs)

    # Outside: coverage 0.5 - d, the color of the covered neighbour whose triangle is nearest.
    b, iy, ix = outer.nonzero().unbind(1)
    cand = neighbours[b, iy, ix]  # (N, k*k), <= 0 where the neighbour is not covered
    n, m = cand.shape
    valid = cand > 0
    rows = torch.arange(n, device=rast.device).unsqueeze(1).expand(n, m)[valid]
    x, y, _ = screen_coords(pos[b[rows].unsqueeze(1), tri.long()[cand[valid] - 1]], height, width)
    d = point_triangle_distance_2d(ix[rows].to(x.dtype), iy[rows].to(x.dtype), x, y)
    d_full = torch.full((n, m), float("inf"), device=d.device, dtype=d.dtype).index_put((valid,), d)
    best = d_full.argmin(-1)
    dist = torch.minimum(d_full.gather(1, best.unsqueeze(1)).squeeze(1), _edge_distance(nearest, b, iy, ix, pos))
    alpha = (0.5 - dist / edge_width).clamp(0, 1).unsqueeze(-1).to(color.dtype)
    src = (b, (iy + offsets[best, 0]).clamp(0, height - 1), (ix + offsets[best, 1]).clamp(0, width - 1))
    out_values = alpha * color[src] + (1 - alpha) * color[b, iy, ix]

    # Inside: coverage 0.5 + d, the rest from an empty neighbour (the background).
    bi, yi, xi = inner.nonzero().unbind(1)
    empty = (neighbours[bi, yi, xi] == 0).to(torch.uint8).argmax(-1)  # the first empty neighbour
    cover = (0.5 + _edge_distance(nearest, bi, yi, xi, pos) / edge_width).clamp(0, 1).unsqueeze(-1).to(color.dtype)
    bg = color[bi, (yi + offsets[empty, 0]).clamp(0, height - 1), (xi + offsets[empty, 1]).clamp(0, width - 1)]
    in_values = cover * color[bi, yi, xi] + (1 - cover) * bg
    return color.index_put((b, iy, ix), out_values).index_put((bi, yi, xi), in_values)


def silhouette_edges(pos: torch.Tensor, tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mesh's silhouette edges as each camera sees them.

    Args:
        pos: (B, V, 4) clip-space positions.
        tri: (T, 3) int triangles.

    Returns:
        batch index (S,) and vertex pairs (S, 2) int64 of the edges that have a front- and a
        back-facing triangle (screen-space winding), or only one triangle (a boundary), and no
        vertex behind the camera.
    """
    t = tri.long()
    ends = torch.stack([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]], 1).reshape(-1, 2).sort(-1).values  # (3T, 2)
    key = ends[:, 0] * pos.shape[1] + ends[:, 1]
    order = key.argsort()
    key, face = key[order], order // 3
    start = torch.ones_like(key, dtype=torch.bool)
    start[1:] = key[1:] != key[:-1]
    first = start.nonzero().squeeze(1)  # (E,) the first of each edge's (one or two) faces
    second = (first + 1).clamp(max=key.shape[0] - 1)
    paired = (second != first) & (key[second] == key[first])
    edges = ends[order[first]]  # (E, 2)
    x, y, _ = screen_coords(pos[:, t], 1, 1)  # (B, T, 3); orientation only, any scale
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (y[..., 1] - y[..., 0])
    front = area > 0  # (B, T)
    contour = ~paired | (front[:, face[first]] != front[:, face[second]])  # (B, E)
    contour &= (pos[:, edges, 3] > 1e-8).all(-1)
    b, e = contour.nonzero().unbind(1)
    return b, edges[e]


@torch.no_grad()
def _nearest_edges(search: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor, radius: float,
                   max_pairs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nearest silhouette edge within `radius` pixels of the centre of each `search` pixel.

    Returns:
        per pixel (B, H, W) the index of that edge into the next two, or -1; the edges' batch
        index (S,) and vertex pairs (S, 2).
    """
    batch, height, width = search.shape
    edge_batch, edges = silhouette_edges(pos.detach(), tri)
    best = torch.full((batch * height * width,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=search.device)
    x, y, _ = screen_coords(pos.detach()[edge_batch.unsqueeze(1), edges], height, width)  # (S, 2)
    for edge, px, py in pixels_in_boxes(x, y, height, width, max_pairs, margin=radius):
        keep = search[edge_batch[edge], py, px]
        edge, px, py = edge[keep], px[keep], py[keep]
        d = point_segment_distance_2d(px.to(x.dtype), py.to(x.dtype), x[edge], y[edge])
        near = d <= radius
        dq = (d[near] / radius * ((1 << _DIST_BITS) - 1)).long()
        pixel = (edge_batch[edge[near]] * height + py[near]) * width + px[near]
        best.scatter_reduce_(0, pixel, (dq << 32) | edge[near], reduce="amin")
    found = best != torch.iinfo(torch.int64).max
    index = torch.where(found, best & ((1 << 32) - 1), torch.full_like(best, -1)).view(batch, height, width)
    return index, edge_batch, edges


def _edge_distance(nearest: tuple, b: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Distance (N,) from the pixels (b, iy, ix) to their nearest silhouette edge (`_nearest_edges`),
    inf where none was found; differentiable w.r.t. `pos`."""
    index, edge_batch, edges = nearest
    height, width = index.shape[1:]
    out = torch.full(b.shape, float("inf"), device=pos.device, dtype=pos.dtype)
    chosen = index[b, iy, ix]
    hit = chosen >= 0
    if not hit.any():
        return out
    chosen = chosen[hit]
    x, y, _ = screen_coords(pos[edge_batch[chosen].unsqueeze(1), edges[chosen]], height, width)
    return out.index_put((hit,), point_segment_distance_2d(ix[hit].to(x.dtype), iy[hit].to(x.dtype), x, y))
