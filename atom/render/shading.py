"""Shading shared by the volume and mesh renderers (the DreamFusion lineage's model).

`lambertian`: albedo x (ambient + diffuse x max(0, n.l)), with the light placed near the camera
at random during training. `textureless`: the same with a white albedo, to judge geometry.
`albedo`: unlit color. `normal`: world normals mapped to [0, 1].
"""
from __future__ import annotations

import torch

from .cameras import Cameras

SHADING_MODES = ("lambertian", "textureless", "albedo", "normal")
AMBIENT = 0.35
DIFFUSE = 0.65


def sample_light_directions(
    cameras: Cameras, jitter_deg: float = 30.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, 3) unit vectors toward the light: the camera direction turned by up to `jitter_deg` degrees."""
    to_camera = torch.nn.functional.normalize(cameras.position, dim=-1)
    if jitter_deg <= 0:
        return to_camera
    noise = torch.randn(to_camera.shape, generator=generator).to(to_camera)
    noise = noise - (noise * to_camera).sum(-1, keepdim=True) * to_camera  # tangent direction
    angle = torch.deg2rad(torch.rand(len(cameras), 1, generator=generator).to(to_camera) * jitter_deg)
    return torch.nn.functional.normalize(
        torch.cos(angle) * to_camera + torch.sin(angle) * torch.nn.functional.normalize(noise, dim=-1), dim=-1
    )


def shade(
    albedo: torch.Tensor,
    normal: torch.Tensor,
    light_dir: torch.Tensor | None,
    mode: str = "lambertian",
    ambient: float = AMBIENT,
    diffuse: float = DIFFUSE,
) -> torch.Tensor:
    """Shaded color, channel-last.

    Args:
        albedo: (..., 3) in [0, 1].
        normal: (..., 3) unit world-space normals.
        light_dir: (..., 3) unit vectors toward the light, broadcastable to `normal`;
            unused by "albedo" and "normal".
        mode: one of SHADING_MODES.

    Returns:
        (..., 3) color in [0, 1].
    """
    if mode == "albedo":
        return albedo
    if mode == "normal":
        return (normal * 0.5 + 0.5).clamp(0, 1)
    if mode not in SHADING_MODES:
        raise ValueError(f"shading mode must be one of {SHADING_MODES}, got {mode!r}")
    if light_dir is None:
        raise ValueError(f"shading mode {mode!r} needs light_dir")
    lit = ambient + diffuse * (normal * light_dir).sum(-1, keepdim=True).clamp_min(0)
    base = torch.ones_like(albedo) if mode == "textureless" else albedo
    return (base * lit).clamp(0, 1)
