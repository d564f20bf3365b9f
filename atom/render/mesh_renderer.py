"""Renders a triangle mesh from a batch of cameras through a `Rasterizer` (stage 2 and the data)."""
from __future__ import annotations

import torch

from ..geometry.mesh import Mesh, vertex_normals
from ..tensor_utils import full_precision
from .cameras import Cameras
from .rasterizer import Rasterizer, get_rasterizer
from .shading import shade


def render_mesh(
    mesh: Mesh,
    cameras: Cameras,
    resolution: int | tuple[int, int],
    light_dir: torch.Tensor | None = None,
    shading: str = "lambertian",
    background: torch.Tensor | tuple[float, float, float] = (1.0, 1.0, 1.0),
    rasterizer: Rasterizer | None = None,
) -> dict[str, torch.Tensor]:
    """Rasterizes and shades one mesh from every camera.

    Args:
        mesh: verts (V, 3), faces (F, 3), colors (V, 3) in [0, 1] (white when None).
        cameras: B cameras.
        resolution: H = W, or (H, W).
        light_dir: (B, 3) unit vectors toward the light (needed by lit shading modes).
        shading: see `atom.render.shading.SHADING_MODES`.
        background: RGB in [0, 1], a (3,) tensor or tuple, or a (B, 3) tensor.
        rasterizer: defaults to `get_rasterizer(mesh.verts.device)`.

    Returns:
        dict of channel-first images, row 0 at the top:
        "rgb" (B, 3, H, W) in [0, 1] composited over the background (antialiased silhouettes);
        "alpha" (B, 1, H, W) soft coverage; "depth" (B, 1, H, W) distance along the camera's
        view axis (0 on background); "normal" (B, 3, H, W) world normals (0 on background).
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    # Images and geometry in float32 whatever the mesh's dtype or an enclosing autocast: a bf16
    # projection moves silhouettes, and bf16 triangle ids are exact only up to 256.
    device, dtype = mesh.verts.device, torch.float32
    batch = len(cameras)
    bg = torch.as_tensor(background, device=device, dtype=dtype).reshape(-1, 1, 1, 3).expand(batch, 1, 1, 3)
    if mesh.is_empty:
        return {
            "rgb": bg.expand(batch, height, width, 3).permute(0, 3, 1, 2).contiguous(),
            "alpha": torch.zeros(batch, 1, height, width, device=device, dtype=dtype),
            "depth": torch.zeros(batch, 1, height, width, device=device, dtype=dtype),
            "normal": torch.zeros(batch, 3, height, width, device=device, dtype=dtype),
        }
    rasterizer = rasterizer or get_rasterizer(device)
    cameras = cameras.to(device)
    verts = mesh.verts.float()
    mvp = cameras.world_to_clip(aspect=width / height)
    verts_h = torch.cat([verts, torch.ones_like(verts[:, :1])], -1)
    with full_precision(device):
        pos = torch.einsum("bij,vj->bvi", mvp, verts_h)  # (B, V, 4) clip space
    tri = mesh.faces.int()
    rast = rasterizer.rasterize(pos, tri, (height, width))
    covered = (rast[..., 3:4] > 0).to(dtype)

    colors = mesh.colors.float() if mesh.colors is not None else torch.ones_like(verts)
    view_depth = pos[..., 3:4]  # clip w = distance along the view axis
    normals = vertex_normals(verts, mesh.faces)
    attrs = rasterizer.interpolate(torch.cat([colors.expand(batch, -1, -1), view_depth, normals.expand(batch, -1, -1)], -1), rast, tri)
    albedo, depth, normal = attrs[..., :3], attrs[..., 3:4], torch.nn.functional.normalize(attrs[..., 4:7], dim=-1)
    light = None if light_dir is None else light_dir.to(device, dtype).view(batch, 1, 1, 3)
    rgb = shade(albedo, normal, light, shading)
    rgb = covered * rgb + (1 - covered) * bg
    # One antialias pass over color and coverage together, as nvdiffrast users do.
    smooth = rasterizer.antialias(torch.cat([rgb, covered], -1), rast, pos, tri)
    rgb, alpha = smooth[..., :3], smooth[..., 3:4]

    def to_image(t: torch.Tensor) -> torch.Tensor:
        return t.flip(1).permute(0, 3, 1, 2).contiguous()  # OpenGL rows (bottom first) -> image rows

    return {
        "rgb": to_image(rgb),
        "alpha": to_image(alpha),
        "depth": to_image(depth * covered),
        "normal": to_image(normal * covered),
    }
