"""NeuS volume rendering of a signed distance field (training stage 1).

Opacity of the interval between consecutive samples p_i, p_{i+1} on a ray (NeuS, eq. 13):
alpha_i = max(0, (Phi(s f(p_i)) - Phi(s f(p_{i+1}))) / Phi(s f(p_i))), Phi the logistic
sigmoid and s a learnable sharpness. This discrete form needs no SDF gradient per sample, so
the eikonal term's normals are an option (they cost a double backward), not a requirement.
Samples lie inside the [-1, 1]^3 box; optional importance samples follow a no-grad coarse pass.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..tensor_utils import pack_selected
from .cameras import Cameras
from .shading import shade

# field(points (B, M, 3)) -> (sdf (B, M), albedo (B, M, 3) in [0, 1])
Field = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def ray_box_intersection(
    origins: torch.Tensor, directions: torch.Tensor, half_size: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry and exit distances (...,) of rays with the box [-half_size, half_size]^3, and a hit mask."""
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (-half_size - origins) / safe
    t1 = (half_size - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near
    return near, torch.where(hit, far, near), hit


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, num: int) -> torch.Tensor:
    """`num` sorted samples (..., num) from the piecewise-constant pdf `weights (..., K)` on `bins (..., K+1)`."""
    pdf = (weights + 1e-5) / (weights + 1e-5).sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], -1)
    u = torch.linspace(0.5 / num, 1 - 0.5 / num, num, device=bins.device, dtype=bins.dtype).expand(*cdf.shape[:-1], num)
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).clamp(1, cdf.shape[-1] - 1)
    lo, hi = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    b_lo, b_hi = bins.gather(-1, idx - 1), bins.gather(-1, idx)
    frac = ((u - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    return b_lo + frac * (b_hi - b_lo)


class NeuSRenderer(nn.Module):
    """Volume renders an SDF field with NeuS weights; holds the learnable sharpness.

    Args:
        num_samples: stratified samples per ray inside the box.
        num_importance: extra samples per ray drawn from a no-grad coarse pass (0 = off).
        init_sharpness: initial s (inverse standard deviation of the logistic density).
        box_half_size: samples lie in [-box_half_size, box_half_size]^3.
        skip_weight: when gradients are on, the field is first evaluated without autograd at
            every sample, and again with autograd only at the end points of intervals whose
            rendering weight exceeds this (empty space and occluded samples carry no
            gradient worth its cost). The images are identical; 0 disables the skipping.
    """

    def __init__(
        self,
        num_samples: int = 64,
        num_importance: int = 0,
        init_sharpness: float = 20.0,
        box_half_size: float = 1.0,
        skip_weight: float = 1e-6,
    ):
        super().__init__()
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        self.num_samples = num_samples
        self.num_importance = num_importance
        self.box_half_size = box_half_size
        self.skip_weight = skip_weight
        # NeuS parameterization: s = exp(10 * variance), which keeps the learning rate scale-free.
        self.variance = nn.Parameter(torch.tensor(math.log(init_sharpness) / 10.0))

    @property
    def sharpness(self) -> torch.Tensor:
        return torch.exp(10.0 * self.variance).clamp(1.0, 1e4)

    @torch.no_grad()
    def set_sharpness(self, sharpness: float) -> None:
        """Sets s (>= 1), as a training schedule that ramps it does each step."""
        self.variance.fill_(math.log(sharpness) / 10.0)

    def _alpha(self, sdf: torch.Tensor) -> torch.Tensor:
        """Interval opacities (..., K-1) from SDF values at K consecutive samples."""
        cdf = torch.sigmoid(sdf * self.sharpness)
        return ((cdf[..., :-1] - cdf[..., 1:]) / cdf[..., :-1].clamp_min(1e-5)).clamp(0, 1)

    def forward(
        self,
        field: Field,
        cameras: Cameras,
        resolution: int | tuple[int, int],
        light_dir: torch.Tensor | None = None,
        shading: str = "lambertian",
        background: torch.Tensor | tuple[float, float, float] = (1.0, 1.0, 1.0),
        stratified: bool | None = None,
        eikonal_points: int = 0,
        eikonal_surface_fraction: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Renders B images, one per camera; `field` sees the points of image b at batch index b.

        Args:
            field: (B, M, 3) points -> sdf (B, M), albedo (B, M, 3).
            cameras: B cameras.
            resolution: H = W, or (H, W).
            light_dir: (B, 3) unit vectors toward the light, for lit shading.
            shading: see `atom.render.shading.SHADING_MODES`; lit modes shade the composited
                albedo with the SDF normal at the expected surface point of each ray.
            background: RGB in [0, 1], (3,) or (B, 3).
            stratified: jitter samples within their strata (default: `self.training`).
            eikonal_points: if > 0, this many of each image's sample points are fed to the
                field again with autograd, and the output has "eikonal" = mean (|grad f| - 1)^2.
            eikonal_surface_fraction: the share of those points drawn in proportion to the
                rendering weights, i.e. in the band around the visible surface, the rest
                uniformly from all samples. Uniform points are mostly empty space; a field can
                steepen in the surface band (sharpening the render as a larger s would) while
                the uniform term hardly notices. NeuS's importance samples put its eikonal term
                there; 0 keeps the draw uniform.

        Returns:
            dict of channel-first images, row 0 at the top: "rgb" (B, 3, H, W) over the
            background, "alpha" (B, 1, H, W) opacity, "depth" (B, 1, H, W) opacity-weighted
            distance along the view axis, "normal" (B, 3, H, W) world normals of the expected
            surface (zero where the opacity is zero, and when shading needs none); plus
            "eikonal" (scalar) when asked.
        """
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
        stratified = self.training if stratified is None else stratified
        device = self.variance.device
        cameras = cameras.to(device)
        batch = len(cameras)
        origins, dirs = cameras.rays(height, width)
        origins, dirs = origins.reshape(batch, -1, 3), dirs.reshape(batch, -1, 3)
        near, far, hit = ray_box_intersection(origins, dirs, self.box_half_size)  # (B, R)

        steps = torch.linspace(0, 1, self.num_samples, device=device)
        t = near.unsqueeze(-1) + (far - near).unsqueeze(-1) * steps  # (B, R, N)
        if stratified:
            jitter = (torch.rand(t.shape, generator=generator).to(device) - 0.5) / (self.num_samples - 1)
            t = t + (far - near).unsqueeze(-1) * jitter
            t = torch.minimum(torch.maximum(t, near.unsqueeze(-1)), far.unsqueeze(-1)).sort(-1).values
        if self.num_importance > 0:
            with torch.no_grad():
                sdf, _ = field((origins.unsqueeze(2) + dirs.unsqueeze(2) * t.unsqueeze(-1)).reshape(batch, -1, 3))
                weights = self._weights(sdf.reshape(t.shape), hit)  # the N samples bound N-1 bins
                extra = sample_pdf(t, weights, self.num_importance)
            t = torch.cat([t, extra], -1).sort(-1).values

        points = origins.unsqueeze(2) + dirs.unsqueeze(2) * t.unsqueeze(-1)  # (B, R, K, 3)
        outputs: dict[str, torch.Tensor] = {}
        if self.skip_weight > 0 and torch.is_grad_enabled():
            sdf, albedo = self._field_where_visible(field, points.reshape(batch, -1, 3), t.shape, hit)
        else:
            sdf, albedo = field(points.reshape(batch, -1, 3))
        sdf = sdf.reshape(t.shape)
        albedo = albedo.reshape(*t.shape, 3)

        weights = self._weights(sdf, hit)  # (B, R, K-1)
        if eikonal_points > 0:
            outputs["eikonal"] = self._eikonal(field, points.reshape(batch, -1, 3), eikonal_points, generator,
                                               weights, eikonal_surface_fraction)
        opacity = weights.sum(-1, keepdim=True)  # (B, R, 1)
        mid_albedo = 0.5 * (albedo[..., :-1, :] + albedo[..., 1:, :])
        color = (weights.unsqueeze(-1) * mid_albedo).sum(-2)  # premultiplied albedo
        t_mid = 0.5 * (t[..., :-1] + t[..., 1:])
        ray_t = (weights * t_mid).sum(-1, keepdim=True)
        view_axis = -cameras.c2w[:, :3, 2].to(device)  # (B, 3) camera forward
        cos_view = (dirs * view_axis.unsqueeze(1)).sum(-1, keepdim=True)
        depth = ray_t * cos_view

        normal = torch.zeros_like(dirs)
        if shading != "albedo":
            surface = origins + dirs * (ray_t / opacity.clamp_min(1e-6))
            normal = self._surface_normals(field, surface) * (opacity > 1e-4)
        albedo_px = color / opacity.clamp_min(1e-6)
        light = None if light_dir is None else light_dir.to(device).view(batch, 1, 3)
        shaded = shade(albedo_px, normal, light, shading)
        bg = torch.as_tensor(background, device=device, dtype=shaded.dtype).reshape(-1, 1, 3)
        rgb = opacity * shaded + (1 - opacity) * bg

        def to_image(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()

        outputs.update(rgb=to_image(rgb), alpha=to_image(opacity), depth=to_image(depth), normal=to_image(normal))
        return outputs

    def _weights(self, sdf: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
        """Rendering weights (B, R, K-1) of the intervals between K samples per ray."""
        alpha = self._alpha(sdf) * hit.unsqueeze(-1)
        transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1] + 1e-7], -1), -1)
        return alpha * transmittance

    def _field_where_visible(
        self, field: Field, points: torch.Tensor, shape: torch.Size, hit: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The field at `points (B, M, 3)`, with autograd only at samples that bound a visible interval."""
        with torch.no_grad():
            sdf, albedo = field(points)
            visible = self._weights(sdf.reshape(shape), hit) > self.skip_weight  # (B, R, K-1)
            needed = torch.zeros(shape, dtype=torch.bool, device=points.device)
            needed[..., :-1] |= visible
            needed[..., 1:] |= visible
            needed = needed.reshape(points.shape[0], -1)
        if not needed.any():  # nothing visible: keep a gradient path all the same
            return field(points)
        rows, cols, slots, packed = pack_selected(needed)
        sdf_grad, albedo_grad = field(torch.gather(points, 1, packed.unsqueeze(-1).expand(-1, -1, 3)))
        sdf = sdf.index_put((rows, cols), sdf_grad[rows, slots])
        albedo = albedo.index_put((rows, cols), albedo_grad[rows, slots])
        return sdf, albedo

    @staticmethod
    def _surface_normals(field: Field, surface: torch.Tensor) -> torch.Tensor:
        """Unit SDF gradients (B, R, 3) at the expected surface points, differentiable when grad is enabled."""
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            points = surface if (create_graph and surface.requires_grad) else surface.detach().requires_grad_(True)
            sdf, _ = field(points)
            (grad,) = torch.autograd.grad(sdf.sum(), points, create_graph=create_graph)
        return torch.nn.functional.normalize(grad, dim=-1)

    @staticmethod
    def _eikonal(
        field: Field, points: torch.Tensor, count: int, generator: torch.Generator | None,
        weights: torch.Tensor, surface_fraction: float,
    ) -> torch.Tensor:
        """Mean (|grad f| - 1)^2 over `count` of the `points (B, R*K, 3)` per image (a fresh, smaller
        field call): `surface_fraction` of them drawn per image in proportion to the rendering
        `weights (B, R, K-1)` of the intervals each bounds, the rest uniformly (the same indices
        for every image)."""
        if not 0.0 <= surface_fraction <= 1.0:
            raise ValueError(f"eikonal_surface_fraction must be in [0, 1], got {surface_fraction!r}")
        batch, total = points.shape[:2]
        count = min(count, total)
        at_surface = round(count * surface_fraction)
        idx = torch.randperm(total, generator=generator)[: count - at_surface].expand(batch, -1)
        if at_surface:
            point_weights = nn.functional.pad(weights, (0, 1)) + nn.functional.pad(weights, (1, 0))
            # + a floor, so that an image with nothing visible draws uniformly
            probs = point_weights.reshape(batch, -1).detach().float().cpu() + 1e-12
            idx = torch.cat([idx, torch.multinomial(probs, at_surface, replacement=True, generator=generator)], 1)
        idx = idx.to(points.device)
        subset = torch.gather(points, 1, idx.unsqueeze(-1).expand(-1, -1, 3)).detach().requires_grad_(True)
        sdf, _ = field(subset)
        (grad,) = torch.autograd.grad(sdf.sum(), subset, create_graph=True)
        return ((grad.norm(dim=-1) - 1) ** 2).mean()
