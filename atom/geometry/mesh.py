"""A small tensor triangle mesh and the measurements the tests and metrics need.

Inside the package meshes stay tensors (differentiable); they become `trimesh.Trimesh` only at
the edges (pipeline output, export, app) through `Mesh.to_trimesh`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def face_normals(verts: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """(F, 3) face normals of `verts (V, 3)`, `faces (F, 3)`; unnormalized ones have length 2 x area."""
    v0, v1, v2 = verts[faces].unbind(1)
    n = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    return torch.nn.functional.normalize(n, dim=-1) if normalize else n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3) unit vertex normals: the area-weighted mean of the adjacent face normals."""
    fn = face_normals(verts, faces, normalize=False)
    vn = torch.zeros_like(verts).index_add(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return torch.nn.functional.normalize(vn, dim=-1, eps=1e-12)


def surface_area(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Total area (scalar) of the triangles."""
    return 0.5 * face_normals(verts, faces, normalize=False).norm(dim=-1).sum()


def enclosed_volume(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Signed volume (scalar) enclosed by a closed mesh; positive when faces wind outward."""
    v0, v1, v2 = verts[faces].unbind(1)
    return (v0 * torch.linalg.cross(v1, v2, dim=-1)).sum() / 6.0


@dataclass
class Mesh:
    """A triangle mesh.

    Attributes:
        verts: (V, 3) float positions, world units.
        faces: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
        colors: optional (V, 3) float RGB in [0, 1].
    """

    verts: torch.Tensor
    faces: torch.Tensor
    colors: torch.Tensor | None = None

    @classmethod
    def empty(cls, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "Mesh":
        return cls(
            verts=torch.zeros(0, 3, device=device, dtype=dtype),
            faces=torch.zeros(0, 3, device=device, dtype=torch.int64),
            colors=torch.zeros(0, 3, device=device, dtype=dtype),
        )

    @property
    def is_empty(self) -> bool:
        return self.faces.shape[0] == 0

    def vertex_normals(self) -> torch.Tensor:
        return vertex_normals(self.verts, self.faces)

    def to_trimesh(self):
        """A `trimesh.Trimesh` with vertex colors (RGBA uint8 = round(255 x color)); never merges or reorders."""
        import trimesh

        verts = self.verts.detach().float().cpu().numpy()
        faces = self.faces.detach().cpu().numpy()
        kwargs = {}
        if self.colors is not None:
            rgb = np.round(self.colors.detach().float().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
            kwargs["vertex_colors"] = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
        return trimesh.Trimesh(verts, faces, process=False, **kwargs)
