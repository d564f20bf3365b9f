"""Geometry: the procedural tetrahedral grid, marching tetrahedra and a small tensor mesh type."""
from .marching_tets import marching_tets
from .mesh import Mesh, enclosed_volume, face_normals, surface_area, vertex_normals
from .tet_grid import TetGrid, build_tet_grid

__all__ = [
    "Mesh",
    "TetGrid",
    "build_tet_grid",
    "enclosed_volume",
    "face_normals",
    "marching_tets",
    "surface_area",
    "vertex_normals",
]
