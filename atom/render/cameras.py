"""Cameras: look-at poses, perspective projection, random training views and turntables.

Conventions (OpenGL, as nvdiffrast): world Y is up; a camera looks down its own -Z axis with
+Y up and +X right. Spherical placement: `elevation` in degrees above the XZ plane,
`azimuth` in degrees around +Y with 0 on the +Z axis (the "front") and 90 on +X,
`distance` from the origin. Images are (H, W) with row 0 at the top.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..tensor_utils import full_precision


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-world matrices (B, 4, 4) for cameras at `eye (B, 3)` looking at `target (B, 3)`."""
    target = torch.zeros_like(eye) if target is None else target.expand_as(eye)
    up = torch.tensor([0.0, 1.0, 0.0], device=eye.device, dtype=eye.dtype) if up is None else up
    back = torch.nn.functional.normalize(eye - target, dim=-1)  # camera +Z points away from the target
    right = torch.linalg.cross(up.expand_as(back), back, dim=-1)
    # Looking straight up or down: any right vector perpendicular to `back` will do.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], device=eye.device, dtype=eye.dtype), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(back, right, dim=-1)
    c2w = torch.eye(4, device=eye.device, dtype=eye.dtype).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, back, eye
    return c2w


def perspective(fovy: torch.Tensor, aspect: float = 1.0, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
    """OpenGL projection matrices (B, 4, 4) for vertical fields of view `fovy (B,)` in radians."""
    f = 1.0 / torch.tan(fovy / 2)
    proj = torch.zeros(fovy.shape[0], 4, 4, device=fovy.device, dtype=fovy.dtype)
    proj[:, 0, 0] = f / aspect
    proj[:, 1, 1] = f
    proj[:, 2, 2] = -(far + near) / (far - near)
    proj[:, 2, 3] = -2 * far * near / (far - near)
    proj[:, 3, 2] = -1.0
    return proj


def spherical_to_position(elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """(B, 3) positions from elevation / azimuth in degrees and distance (all (B,))."""
    el, az = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    return torch.stack(
        [distance * torch.cos(el) * torch.sin(az), distance * torch.sin(el), distance * torch.cos(el) * torch.cos(az)], -1
    )


@dataclass
class Cameras:
    """A batch of pinhole cameras looking at the origin.

    Attributes:
        elevation, azimuth: (B,) degrees (see the module docstring).
        distance: (B,) world units from the origin.
        fovy: (B,) vertical field of view in degrees.
    """

    elevation: torch.Tensor
    azimuth: torch.Tensor
    distance: torch.Tensor
    fovy: torch.Tensor

    def __post_init__(self) -> None:
        shapes = {t.shape for t in (self.elevation, self.azimuth, self.distance, self.fovy)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"camera parameters must all be (B,) tensors, got shapes {shapes}")

    def __len__(self) -> int:
        return self.elevation.shape[0]

    def __getitem__(self, index) -> "Cameras":
        return Cameras(*(t[index].reshape(-1) for t in (self.elevation, self.azimuth, self.distance, self.fovy)))

    @property
    def device(self) -> torch.device:
        return self.elevation.device

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(*(t.to(device) for t in (self.elevation, self.azimuth, self.distance, self.fovy)))

    def turned(self, degrees: float | torch.Tensor) -> "Cameras":
        """The same cameras orbited about Y by `degrees` of azimuth."""
        return Cameras(self.elevation, self.azimuth + degrees, self.distance, self.fovy)

    @property
    def position(self) -> torch.Tensor:
        """(B, 3) camera centers in world space."""
        return spherical_to_position(self.elevation, self.azimuth, self.distance)

    @property
    def c2w(self) -> torch.Tensor:
        """(B, 4, 4) camera-to-world matrices."""
        return look_at(self.position)

    def world_to_clip(self, aspect: float = 1.0, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
        """(B, 4, 4) float32 model-view-projection matrices mapping world points to clip space
        (computed with autocast off)."""
        with full_precision(self.device):
            return perspective(torch.deg2rad(self.fovy.float()), aspect, near, far) @ torch.linalg.inv(self.c2w.float())

    def rays(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through pixel centers, the same pixels the rasterizer samples.

        Returns:
            origins: (B, H, W, 3) world space.
            directions: (B, H, W, 3) unit length, world space. Row 0 is the top of the image.
        """
        c2w = self.c2w
        tan_half = torch.tan(torch.deg2rad(self.fovy) / 2).view(-1, 1, 1)
        aspect = width / height
        ys = 1 - (torch.arange(height, device=self.device, dtype=c2w.dtype) + 0.5) / height * 2  # top row: y > 0
        xs = (torch.arange(width, device=self.device, dtype=c2w.dtype) + 0.5) / width * 2 - 1
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        d_cam = torch.stack(
            [x * tan_half * aspect, y.expand_as(x) * tan_half, -torch.ones_like(x).expand(len(self), -1, -1)], -1
        )
        with full_precision(self.device):  # directions in float32 under autocast too
            directions = torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3].float(), d_cam.float())
        directions = torch.nn.functional.normalize(directions, dim=-1)
        origins = c2w[:, None, None, :3, 3].float().expand_as(directions)
        return origins, directions

    def conditioning(self, azimuth_frequencies: int = 1) -> torch.Tensor:
        """(B, 2 k + 2) camera features for diffusion conditioning: sin/cos of k * azimuth for
        k = 1 .. `azimuth_frequencies`, then sin/cos of the elevation.

        Higher azimuth frequencies let a small network tell views apart that a single sin/cos
        pair barely separates: the image of a cube repeats every 90 degrees, a function of
        sin/cos(4 a) that an MLP on sin/cos(a) must first learn to build.
        """
        az, el = torch.deg2rad(self.azimuth), torch.deg2rad(self.elevation)
        features = [f(k * az) for k in range(1, azimuth_frequencies + 1) for f in (torch.sin, torch.cos)]
        return torch.stack(features + [torch.sin(el), torch.cos(el)], -1)


def camera_feature_count(azimuth_frequencies: int) -> int:
    """Width of `Cameras.conditioning(azimuth_frequencies)`."""
    return 2 * azimuth_frequencies + 2


def azimuth_frequencies_for(feature_count: int) -> int | None:
    """The `azimuth_frequencies` whose features are `feature_count` wide (None: no match)."""
    k, rest = divmod(feature_count - 2, 2)
    return k if k >= 1 and rest == 0 else None


def sample_cameras(
    batch_size: int,
    elevation_range: tuple[float, float] = (-10.0, 45.0),
    azimuth_range: tuple[float, float] = (-180.0, 180.0),
    distance_range: tuple[float, float] = (2.8, 3.2),
    fovy_range: tuple[float, float] = (38.0, 42.0),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Cameras:
    """Random training cameras, each parameter uniform in its range (degrees, world units)."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(batch_size, generator=generator)

    return Cameras(
        elevation=uniform(*elevation_range),
        azimuth=uniform(*azimuth_range),
        distance=uniform(*distance_range),
        fovy=uniform(*fovy_range),
    ).to(device)


def turntable_cameras(
    num_views: int, elevation: float = 20.0, distance: float = 3.0, fovy: float = 40.0, device: torch.device | str = "cpu",
    start_azimuth: float = 0.0,
) -> Cameras:
    """`num_views` cameras evenly spaced in azimuth starting at `start_azimuth` (0: the front), for validation."""
    full = lambda v: torch.full((num_views,), float(v))  # noqa: E731
    return Cameras(
        elevation=full(elevation),
        azimuth=start_azimuth + torch.arange(num_views) * (360.0 / num_views),
        distance=full(distance),
        fovy=full(fovy),
    ).to(device)

