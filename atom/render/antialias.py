"""Soft silhouettes: the antialias every rasterizer backend uses, so that images are
differentiable with respect to vertex positions where a surface meets the background.

An empty pixel next to a covered one takes a share `1 - d / edge_width` (clamped to [0, 1]) of
its nearest covered neighbour's color, d being the screen distance from its centre to the
covered region: to the nearest silhouette edge of the mesh (an edge between a front- and a
back-facing triangle, or a boundary edge), or to a neighbour's triangle if that is nearer.
The ramp's slope integrates to one pixel of coverage per pixel an edge moves, so silhouette
gradients match finite differences of the image, as nvdiffrast's analytic antialias means to
(a sigmoid of d would give about half). Occlusion edges between two surfaces are left hard.

Why silhouette edges: on a dense mesh the triangle that covers a rim pixel's neighbour lies
several triangles inside the silhouette (the surface turns away there), so the distance to it
overestimates d, and rim pixels within a pixel of the true edge got no coverage (a 20k-face
sphere: 0.70-0.79 of finite differences with triangle distances alone). nvdiffrast's own
antialias was measured to lose these gradients on dense meshes entirely (0.00-0.02 at 20k
faces; ../shared/GPU_FACTS.md), which is why the nvdiffrast backend uses this one too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .screen_geometry import point_segment_distance_2d, point_triangle_distance_2d, screen_coords

_DIST_BITS = 31  # quantized distance in the packed (distance, edge id) key of the nearest-edge search


def soft_antialias(
    color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor, edge_width: float = 1.0,
    edge_radius: int = 1, max_pairs: int = 1 << 22,
) -> torch.Tensor:
    """Blends the rim pixels of `color` (see the module docstring).

    Args:
        color: (B, H, W, C) shaded image, OpenGL rows (row 0 at the bottom).
        rast: (B, H, W, 4) as a rasterizer's `rasterize` returns it (triangle id + 1 last).
        pos: (B, V, 4) clip-space positions the image was rasterized from.
        tri: (T, 3) int triangles.
        edge_width: width, in pixels, of the coverage ramp outside silhouettes (<= edge_radius).
        edge_radius: how far, in pixels, to look for a covered neighbour.
        max_pairs: bound on (silhouette edge, pixel) pairs tested at once; bounds memory.

    Returns:
        (B, H, W, C): `color` with its rim pixels blended; differentiable w.r.t. `pos` there.
    """
    batch, height, width, _ = rast.shape
    r = edge_radius
    face_id = rast[..., 3].detach().long()  # 0 = empty
    padded = F.pad(face_id, (r, r, r, r))  # (B, H+2r, W+2r)
    k = 2 * r + 1
    neighbours = padded.unfold(1, k, 1).unfold(2, k, 1).reshape(batch, height, width, k * k)
    rim = (face_id == 0) & (neighbours > 0).any(-1)
    if not rim.any():
        return color
    pos = pos.float()
    b, iy, ix = rim.nonzero().unbind(1)
    cand = neighbours[b, iy, ix]  # (N, k*k), 0 where the neighbour is empty
    offsets = torch.stack(
        torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij"), -1
    ).reshape(-1, 2).to(rast.device)  # (k*k, 2) as (dy, dx)
    n, m = cand.shape
    valid = cand > 0
    rows = torch.arange(n, device=rast.device).unsqueeze(1).expand(n, m)[valid]
    faces = cand[valid] - 1
    x, y, _ = screen_coords(pos[b[rows].unsqueeze(1), tri.long()[faces]], height, width)
    d = point_triangle_distance_2d(ix[rows].to(x.dtype), iy[rows].to(x.dtype), x, y)
    # The covered neighbour whose triangle is nearest gives the color (ties: any).
    d_full = torch.full((n, m), float("inf"), device=d.device, dtype=d.dtype).index_put((valid,), d)
    best = d_full.argmin(-1)
    dist = d_full.gather(1, best.unsqueeze(1)).squeeze(1)
    dist = torch.minimum(dist, _silhouette_distance(rim, b, iy, ix, pos, tri, edge_width, max_pairs))
    src_y = (iy + offsets[best, 0]).clamp(0, height - 1)
    src_x = (ix + offsets[best, 1]).clamp(0, width - 1)
    alpha = (1 - dist / edge_width).clamp(0, 1).unsqueeze(-1).to(color.dtype)
    blended = alpha * color[b, src_y, src_x] + (1 - alpha) * color[b, iy, ix]
    return color.index_put((b, iy, ix), blended)


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
def _nearest_edges(rim, batch_index, x, y, edge_width, max_pairs) -> torch.Tensor:
    """For every pixel, the index into `edges` of the nearest silhouette edge within `edge_width`
    of its centre, or -1; only `rim` pixels are searched. x, y: (S, 2) screen end points."""
    batch, height, width = rim.shape
    x0 = (x.amin(-1) - edge_width).ceil().clamp(0, width).long()
    x1 = (x.amax(-1) + edge_width).floor().clamp(-1, width - 1).long()
    y0 = (y.amin(-1) - edge_width).ceil().clamp(0, height).long()
    y1 = (y.amax(-1) + edge_width).floor().clamp(-1, height - 1).long()
    box_w, box_h = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
    count = box_w * box_h
    best = torch.full((batch * height * width,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=rim.device)
    ends = torch.cumsum(count, 0)
    start = 0
    while start < count.shape[0]:
        base = ends[start - 1] if start > 0 else 0
        stop = max(int(torch.searchsorted(ends, base + max_pairs, right=True)), start + 1)
        n = count[start:stop]
        edge = torch.arange(start, stop, device=rim.device).repeat_interleave(n)
        offset = torch.arange(int(n.sum()), device=rim.device) - (torch.cumsum(n, 0) - n).repeat_interleave(n)
        px = x0[edge] + offset % box_w[edge]
        py = y0[edge] + offset // box_w[edge]
        keep = rim[batch_index[edge], py, px]
        edge, px, py = edge[keep], px[keep], py[keep]
        d = point_segment_distance_2d(px.to(x.dtype), py.to(x.dtype), x[edge], y[edge])
        near = d <= edge_width
        dq = (d[near] / edge_width * ((1 << _DIST_BITS) - 1)).long()
        pixel = (batch_index[edge[near]] * height + py[near]) * width + px[near]
        best.scatter_reduce_(0, pixel, (dq << 32) | edge[near], reduce="amin")
        start = stop
    found = best != torch.iinfo(torch.int64).max
    return torch.where(found, best & ((1 << 32) - 1), torch.full_like(best, -1))


def _silhouette_distance(rim, b, iy, ix, pos, tri, edge_width, max_pairs) -> torch.Tensor:
    """Distance (N,) from the rim pixels (b, iy, ix) to their nearest silhouette edge, inf where
    none lies within `edge_width`; differentiable w.r.t. `pos`."""
    batch, height, width = rim.shape
    inf = torch.full(b.shape, float("inf"), device=pos.device, dtype=pos.dtype)
    edge_batch, edges = silhouette_edges(pos.detach(), tri)
    if edges.shape[0] == 0:
        return inf
    x, y, _ = screen_coords(pos.detach()[edge_batch.unsqueeze(1), edges], height, width)  # (S, 2)
    nearest = _nearest_edges(rim, edge_batch, x, y, edge_width, max_pairs).view(batch, height, width)[b, iy, ix]
    hit = nearest >= 0
    if not hit.any():
        return inf
    chosen = nearest[hit]
    ex, ey, _ = screen_coords(pos[edge_batch[chosen].unsqueeze(1), edges[chosen]], height, width)
    return inf.index_put((hit,), point_segment_distance_2d(ix[hit].to(ex.dtype), iy[hit].to(ex.dtype), ex, ey))
