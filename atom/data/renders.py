"""Renders of the Shapes world, shaded exactly like AToM's training renders (the teacher's data)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..geometry.mesh import Mesh
from ..render.cameras import Cameras, sample_cameras
from ..render.mesh_renderer import render_mesh
from ..render.shading import sample_light_directions
from .meshes import shape_mesh
from .world import COLORS, SHAPES

BACKGROUND = (1.0, 1.0, 1.0)


@dataclass
class ShapeRenders:
    """N renders with their labels.

    Attributes:
        images: (N, 3, H, W) uint8, row 0 at the top.
        shape_index, color_index: (N,) int64 into `SHAPES` and `COLORS`.
        cameras: N cameras (elevation, azimuth, distance, fovy).
    """

    images: torch.Tensor
    shape_index: torch.Tensor
    color_index: torch.Tensor
    cameras: Cameras

    def __len__(self) -> int:
        return self.images.shape[0]

    def state_dict(self) -> dict[str, torch.Tensor]:
        c = self.cameras
        return {
            "images": self.images,
            "shape_index": self.shape_index,
            "color_index": self.color_index,
            "cameras": torch.stack([c.elevation, c.azimuth, c.distance, c.fovy], 1),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "ShapeRenders":
        return cls(state["images"], state["shape_index"], state["color_index"], Cameras(*state["cameras"].unbind(1)))


def mesh_for(shape: str, color: str, device: torch.device | str = "cpu") -> Mesh:
    """The canonical mesh of `shape` with the albedo of `color` on every vertex.

    Vertices are split along sharp edges (over 30 degrees), so interpolated vertex normals keep
    the cube, pyramid and cylinder edges crisp while curved surfaces stay smooth.
    """
    mesh = shape_mesh(shape).smooth_shaded
    verts = torch.tensor(mesh.vertices, dtype=torch.float32, device=device)
    colors = torch.tensor(COLORS[color], dtype=torch.float32, device=device).expand_as(verts)
    return Mesh(verts, torch.tensor(mesh.faces, dtype=torch.int64, device=device), colors)


@torch.no_grad()
def render_shapes(
    views_per_pair: int,
    resolution: int = 32,
    supersample: int = 2,
    seed: int = 0,
    light_jitter_deg: float = 30.0,
    camera_kwargs: dict | None = None,
    progress: bool = True,
) -> ShapeRenders:
    """Renders every (shape, color) pair from `views_per_pair` random cameras.

    Args:
        views_per_pair: cameras per pair, drawn by `sample_cameras(**camera_kwargs)`.
        resolution: output H = W in pixels.
        supersample: render at `resolution * supersample` and average-pool (antialiasing).
        seed: seeds cameras and lights; the same seed gives the same renders.
        light_jitter_deg: light direction spread around the camera (as in AToM training).
    """
    generator = torch.Generator().manual_seed(seed)
    images, shape_index, color_index, cameras = [], [], [], []
    pairs = [(s, c) for s in range(len(SHAPES)) for c in range(len(COLORS))]
    for s, c in tqdm(pairs, desc="rendering the Shapes world", disable=not progress):
        cams = sample_cameras(views_per_pair, generator=generator, **(camera_kwargs or {}))
        light = sample_light_directions(cams, light_jitter_deg, generator=generator)
        out = render_mesh(mesh_for(SHAPES[s], list(COLORS)[c]), cams, resolution * supersample, light, background=BACKGROUND)
        rgb = F.avg_pool2d(out["rgb"], supersample) if supersample > 1 else out["rgb"]
        images.append((rgb.clamp(0, 1) * 255).round().to(torch.uint8))
        shape_index.append(torch.full((views_per_pair,), s))
        color_index.append(torch.full((views_per_pair,), c))
        cameras.append(torch.stack([cams.elevation, cams.azimuth, cams.distance, cams.fovy], 1))
    cams = torch.cat(cameras)
    return ShapeRenders(torch.cat(images), torch.cat(shape_index), torch.cat(color_index), Cameras(*cams.unbind(1)))
