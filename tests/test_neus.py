import pytest
import torch

from atom.geometry import Mesh, build_tet_grid, marching_tets
from atom.render import Cameras, NeuSRenderer, render_mesh, sample_light_directions


def _cameras() -> Cameras:
    return Cameras(torch.tensor([20.0, -5.0]), torch.tensor([30.0, 200.0]), torch.tensor([3.0, 2.8]), torch.tensor([40.0, 45.0]))


def _analytic_disc(cameras: Cameras, size: int, radius: float) -> torch.Tensor:
    """(B, H, W) rays that hit the sphere of `radius` at the origin."""
    o, d = cameras.rays(size, size)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - radius**2
    return (b * b - c) > 0


def test_sphere_opacity_matches_the_analytic_disc_and_gradients_reach_the_field():
    radius = torch.tensor(0.6, requires_grad=True)
    albedo = torch.tensor([0.8, 0.3, 0.2], requires_grad=True)

    def field(points):
        return points.norm(dim=-1) - radius, albedo.expand(*points.shape[:-1], 3)

    renderer = NeuSRenderer(num_samples=64, init_sharpness=80.0)
    cameras = _cameras()
    out = renderer(field, cameras, 48, light_dir=sample_light_directions(cameras, 0.0), stratified=False)
    mask = out["alpha"][:, 0] > 0.5
    disc = _analytic_disc(cameras, 48, 0.6)
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou >= 0.97
    # The surface normal at the disc center faces the camera.
    normal = out["normal"][0, :, 24, 24]
    to_camera = torch.nn.functional.normalize(cameras.position[0], dim=0)
    assert (normal * to_camera).sum() > 0.95
    # Depth at the center: the camera distance minus the radius.
    assert out["depth"][0, 0, 24, 24].item() == pytest.approx(3.0 - 0.6, abs=0.03)
    (out["rgb"].mean() + out["alpha"].mean()).backward()
    assert radius.grad is not None and radius.grad.abs() > 0
    assert albedo.grad is not None and albedo.grad.abs().sum() > 0
    assert renderer.variance.grad is not None


def test_neus_and_rasterized_silhouettes_agree():
    cameras = _cameras()
    grid = build_tet_grid(48)
    verts, faces = marching_tets(grid.verts, grid.verts.norm(dim=-1) - 0.6, grid.tets)
    raster = render_mesh(Mesh(verts, faces), cameras, 48, shading="albedo")["alpha"][:, 0] > 0.5
    volume = NeuSRenderer(init_sharpness=200.0)(
        lambda p: (p.norm(dim=-1) - 0.6, torch.ones_like(p)), cameras, 48, shading="albedo", stratified=False
    )["alpha"][:, 0] > 0.5
    assert (raster & volume).sum() / (raster | volume).sum() >= 0.97


def test_eikonal_term_and_importance_samples():
    scale = torch.tensor(2.0, requires_grad=True)

    def field(points):  # |grad| = scale, so the eikonal penalty is (scale - 1)^2
        return scale * (points.norm(dim=-1) - 0.5), torch.ones_like(points)

    renderer = NeuSRenderer(num_samples=16, num_importance=16, init_sharpness=50.0)
    out = renderer(field, _cameras(), 16, shading="albedo", eikonal_points=256)
    assert out["eikonal"].item() == pytest.approx(1.0, rel=1e-3)
    out["eikonal"].backward()
    assert scale.grad.item() == pytest.approx(2.0, rel=1e-3)
    assert out["alpha"].max() > 0.9


def test_eikonal_points_at_the_surface_see_a_steep_surface_band():
    """A field with |grad f| = 3 within 0.05 of its surface and 1 elsewhere: uniform eikonal points
    are mostly empty space and barely see the band; points drawn by the rendering weights do."""

    def field(points):
        r = points.norm(dim=-1) - 0.5
        band = 0.05
        steep = 3 * r.clamp(-band, band) + (r - r.clamp(-band, band))
        return steep, torch.ones_like(points)

    renderer = NeuSRenderer(num_samples=64, init_sharpness=20.0)
    cameras = _cameras()

    def eikonal(fraction: float) -> float:
        gen = torch.Generator().manual_seed(0)
        out = renderer(field, cameras, 16, shading="albedo", eikonal_points=512,
                       eikonal_surface_fraction=fraction, generator=gen, stratified=False)
        return out["eikonal"].item()

    uniform, surface = eikonal(0.0), eikonal(1.0)
    assert surface > 2.0 > 4 * uniform  # (3 - 1)^2 = 4 in the band
    assert uniform < eikonal(0.5) < surface
    with pytest.raises(ValueError, match="eikonal_surface_fraction"):
        eikonal(1.5)


def test_empty_field_is_transparent_background():
    out = NeuSRenderer(num_samples=8)(
        lambda p: (torch.ones(p.shape[:-1]), torch.zeros_like(p)), _cameras(), 8, shading="albedo", background=(0, 0, 1)
    )
    assert out["alpha"].max() < 1e-3
    assert torch.allclose(out["rgb"][:, 2], torch.ones(2, 8, 8), atol=1e-3)


def test_empty_space_skipping_keeps_images_and_gradients():
    """The no-grad pre-pass only drops samples whose weight is negligible."""
    cameras = _cameras()
    results = []
    for skip in (0.0, 1e-6):
        radius = torch.tensor(0.55, requires_grad=True)
        tint = torch.tensor([0.2, 0.5, 0.7], requires_grad=True)

        def field(points):
            return points.norm(dim=-1) - radius, (tint + 0.1 * points).clamp(0, 1)

        out = NeuSRenderer(num_samples=32, init_sharpness=40.0, skip_weight=skip)(
            field, cameras, 24, light_dir=sample_light_directions(cameras, 0.0), stratified=False
        )
        out["rgb"].mean().backward()
        results.append((out["rgb"].detach(), radius.grad.clone(), tint.grad.clone()))
    (rgb_a, r_a, t_a), (rgb_b, r_b, t_b) = results
    assert torch.allclose(rgb_a, rgb_b, atol=1e-6)
    assert torch.allclose(r_a, r_b, rtol=1e-3) and torch.allclose(t_a, t_b, rtol=1e-3, atol=1e-7)
