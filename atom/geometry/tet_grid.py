"""A tetrahedral grid built procedurally: a cube grid, each cube split into 6 tetrahedra.

The Kuhn (Freudenthal) split cuts every cube along its main diagonal, so neighbouring cubes
share their face diagonals and the tetrahedra form a conforming mesh (no T-junctions).
No tet files are downloaded: any resolution is a few tensor ops away.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch

# Corners of the unit cube as (i, j, k) offsets.
_CUBE_CORNERS = torch.tensor(list(itertools.product((0, 1), repeat=3)), dtype=torch.int64)


def _kuhn_tets() -> torch.Tensor:
    """The 6 tetrahedra of the Kuhn split of the unit cube, as corner indices (6, 4).

    Each tet walks from corner (0,0,0) to (1,1,1) adding one axis at a time, in one of the
    3! axis orders. The tets come out with mixed handedness; they are reordered here so that
    every tet has positive volume, which the marching-tets lookup table relies on.
    """
    corner_index = {tuple(c.tolist()): n for n, c in enumerate(_CUBE_CORNERS)}
    tets = []
    for order in itertools.permutations(range(3)):
        point = [0, 0, 0]
        tet = [corner_index[tuple(point)]]
        for axis in order:
            point[axis] = 1
            tet.append(corner_index[tuple(point)])
        corners = _CUBE_CORNERS[tet].double()
        if torch.linalg.det(corners[1:] - corners[0]) < 0:
            tet[2], tet[3] = tet[3], tet[2]
        tets.append(tet)
    return torch.tensor(tets, dtype=torch.int64)


@dataclass(frozen=True)
class TetGrid:
    """A tetrahedral grid over the cube [-scale, scale]^3.

    Attributes:
        verts: (V, 3) float32 vertex positions, V = (resolution + 1)^3, laid out as a
            C-ordered (R+1, R+1, R+1) array over (x, y, z): `verts.view(R+1, R+1, R+1, 3)`.
        tets: (T, 4) int64 vertex indices, T = 6 * resolution^3, all positively oriented.
        resolution: cubes per axis.
    """

    verts: torch.Tensor
    tets: torch.Tensor
    resolution: int

    @property
    def cell_size(self) -> float:
        """Edge length of one cube of the grid, in world units."""
        return float(self.verts[-1, 0] - self.verts[0, 0]) / self.resolution

    def to(self, device: torch.device | str) -> "TetGrid":
        return TetGrid(self.verts.to(device), self.tets.to(device), self.resolution)


@functools.lru_cache(maxsize=8)
def _build_cpu(resolution: int, scale: float) -> TetGrid:
    n = resolution + 1
    axis = torch.linspace(-scale, scale, n)
    verts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)

    cube = torch.arange(resolution)
    ci, cj, ck = torch.meshgrid(cube, cube, cube, indexing="ij")
    cube_origin = (ci * n * n + cj * n + ck).reshape(-1, 1)  # (C, 1) index of corner (0,0,0)
    corner_offset = _CUBE_CORNERS @ torch.tensor([n * n, n, 1])  # (8,)
    cube_corners = cube_origin + corner_offset  # (C, 8)
    tets = cube_corners[:, _kuhn_tets()].reshape(-1, 4)  # (6C, 4)
    return TetGrid(verts=verts, tets=tets, resolution=resolution)


def build_tet_grid(resolution: int, scale: float = 1.0, device: torch.device | str = "cpu") -> TetGrid:
    """Builds (and caches) the tetrahedral grid of `resolution` cubes per axis over [-scale, scale]^3.

    Args:
        resolution: cubes per axis, >= 1. 32 gives 196,608 tets; 64 gives 1.57 M.
        scale: half the side of the grid's bounding cube, in world units.
        device: where the returned tensors live.
    """
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    return _build_cpu(resolution, float(scale)).to(device)
