"""Rendering: cameras, the NeuS volume renderer, the mesh rasterizer (nvdiffrast or torch) and shading."""
from .cameras import Cameras, look_at, perspective, sample_cameras, turntable_cameras
from .mesh_renderer import render_mesh
from .neus import NeuSRenderer, ray_box_intersection
from .antialias import silhouette_edges, soft_antialias
from .rasterizer import (
    NvdiffrastRasterizer,
    Rasterizer,
    TorchRasterizer,
    get_rasterizer,
    nvdiffrast_available,
    nvdiffrast_import_error,
)
from .shading import SHADING_MODES, sample_light_directions, shade

__all__ = [
    "Cameras",
    "NeuSRenderer",
    "NvdiffrastRasterizer",
    "Rasterizer",
    "SHADING_MODES",
    "TorchRasterizer",
    "get_rasterizer",
    "look_at",
    "nvdiffrast_available",
    "nvdiffrast_import_error",
    "perspective",
    "ray_box_intersection",
    "render_mesh",
    "sample_cameras",
    "sample_light_directions",
    "shade",
    "silhouette_edges",
    "soft_antialias",
    "turntable_cameras",
]
