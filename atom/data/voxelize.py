"""Inside tests of a triangle mesh on a regular grid, by counting signed ray crossings.

Each grid column (x_i, y_j) casts a ray along +Z. A triangle crossed by the ray adds +1 to
the winding number of the grid points below the crossing if it faces +Z, -1 if it faces -Z;
a point is inside when its winding number is nonzero. This is exact for closed meshes
(including overlapping closed parts) and takes a few tens of milliseconds for ~20k faces at
64^3. Rays through an edge or vertex are counted once (the rasterizers' top-left rule,
with edge functions computed the same way for both triangles that share the edge).
"""
from __future__ import annotations

import numpy as np

_MAX_PAIRS = 1 << 22  # (triangle, column) pairs processed at once


def grid_centers(resolution: int) -> np.ndarray:
    """(R,) coordinates of the cell centers of a regular R-cell partition of [-1, 1]."""
    return -1.0 + (2.0 * np.arange(resolution) + 1.0) / resolution


def _edge_function(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2D orientation of `p` against the edge a -> b, all (K, 2): returns (value, owned).

    The value is computed with the endpoints in lexicographic order and then negated when
    needed, so the edge b -> a gives exactly the opposite value; `owned` marks the direction
    that keeps points exactly on the edge (dy > 0, or dy == 0 and dx < 0).
    """
    swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    lo = np.where(swap[:, None], b, a)
    hi = np.where(swap[:, None], a, b)
    value = (hi[:, 0] - lo[:, 0]) * (p[:, 1] - lo[:, 1]) - (hi[:, 1] - lo[:, 1]) * (p[:, 0] - lo[:, 0])
    value = np.where(swap, -value, value)
    d = b - a
    owned = (d[:, 1] > 0) | ((d[:, 1] == 0) & (d[:, 0] < 0))
    return value, owned


def voxelize(vertices: np.ndarray, faces: np.ndarray, resolution: int = 64) -> np.ndarray:
    """Which cell centers of a `resolution`^3 grid over [-1, 1]^3 lie inside a closed mesh.

    Args:
        vertices: (V, 3) float positions, world units.
        faces: (F, 3) int vertex indices (either consistent orientation works).
        resolution: cells per axis.

    Returns:
        (R, R, R) bool, indexed [x, y, z] at `grid_centers(R)`.
    """
    r = resolution
    centers = grid_centers(r)
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]  # (F, 3, 3)
    area2 = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (tri[:, 2, 0] - tri[:, 0, 0]) * (
        tri[:, 1, 1] - tri[:, 0, 1]
    )
    tri = tri[area2 != 0]  # triangles parallel to the rays are never crossed
    facing = np.sign(area2[area2 != 0])  # +1 faces +Z: the ray leaves the solid there
    tri[facing < 0] = tri[facing < 0][:, [0, 2, 1]]  # counter-clockwise in xy from now on

    # Columns under each triangle's xy bounding box.
    lo = np.clip(np.ceil((tri[:, :, :2].min(1) - centers[0]) * r / 2), 0, r).astype(np.int64)
    hi = np.clip(np.floor((tri[:, :, :2].max(1) - centers[0]) * r / 2), -1, r - 1).astype(np.int64)
    span = np.maximum(hi - lo + 1, 0)  # (F, 2)
    pairs_per_face = span[:, 0] * span[:, 1]

    winding = np.zeros(r * r * (r + 1), dtype=np.int64)  # difference array per column, over z
    starts = np.concatenate([[0], np.cumsum(pairs_per_face)])
    face_lo = 0
    while face_lo < len(tri):
        face_hi = int(np.searchsorted(starts, starts[face_lo] + _MAX_PAIRS, side="right")) - 1
        face_hi = max(face_hi, face_lo + 1)
        counts = pairs_per_face[face_lo:face_hi]
        face = np.repeat(np.arange(face_lo, face_hi), counts)
        local = np.arange(len(face)) - np.repeat(starts[face_lo:face_hi] - starts[face_lo], counts)
        col_i = lo[face, 0] + local // span[face, 1]
        col_j = lo[face, 1] + local % span[face, 1]
        p = np.stack([centers[col_i], centers[col_j]], 1)
        a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
        w = [_edge_function(u[:, :2], v[:, :2], p) for u, v in ((b, c), (c, a), (a, b))]  # weights of a, b, c
        hit = np.ones(len(face), dtype=bool)
        for value, owned in w:
            hit &= (value > 0) | ((value == 0) & owned)
        total = w[0][0] + w[1][0] + w[2][0]
        z = (w[0][0] * a[:, 2] + w[1][0] * b[:, 2] + w[2][0] * c[:, 2])[hit] / total[hit]
        column = (col_i * r + col_j)[hit]
        below = np.searchsorted(centers, z, side="left")  # grid points with center z_k < z
        sign = facing[face][hit]
        winding += np.bincount(column * (r + 1), sign, minlength=len(winding)).astype(np.int64)
        winding -= np.bincount(column * (r + 1) + below, sign, minlength=len(winding)).astype(np.int64)
        face_lo = face_hi
    winding = np.cumsum(winding.reshape(r * r, r + 1), axis=1)[:, :r]
    return (winding != 0).reshape(r, r, r)
