"""Mesh regularizers of the DMTet lineage (stage 2 options)."""
from __future__ import annotations

import torch

from .mesh import face_normals


def _interior_edges(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of faces (E,), (E,) that share an edge (each interior edge once)."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values  # (3F, 2)
    face_id = torch.arange(faces.shape[0], device=faces.device).repeat(3)
    key = edges[:, 0] * (int(faces.max()) + 1) + edges[:, 1]
    order = torch.argsort(key)
    key, face_id = key[order], face_id[order]
    same = key[1:] == key[:-1]
    return face_id[:-1][same], face_id[1:][same]


def normal_consistency(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cos) between the normals of faces sharing an edge: 0 for a plane."""
    a, b = _interior_edges(faces)
    if a.numel() == 0:
        return verts.sum() * 0
    n = face_normals(verts, faces)
    return (1 - (n[a] * n[b]).sum(-1)).mean()


def laplacian_smoothing(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of each vertex to the mean of its neighbours (uniform weights)."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = torch.cat([edges, edges.flip(1)])
    neighbour_sum = torch.zeros_like(verts).index_add(0, edges[:, 0], verts[edges[:, 1]])
    degree = torch.zeros(verts.shape[0], device=verts.device).index_add(0, edges[:, 0], torch.ones(edges.shape[0], device=verts.device))
    offset = verts - neighbour_sum / degree.clamp_min(1).unsqueeze(-1)
    return (offset**2).sum(-1).mean()
