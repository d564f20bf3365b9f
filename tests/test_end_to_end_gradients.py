"""Gradients flow from rendered pixels, through rasterization and marching tets, to SDF values
and deformation offsets (what training stage 2 relies on)."""
import torch

from atom.geometry import Mesh, build_tet_grid, marching_tets
from atom.render import Cameras, render_mesh, sample_light_directions


def test_pixels_to_sdf_and_deformation():
    grid = build_tet_grid(16)
    sdf = (grid.verts.norm(dim=-1) - 0.55).requires_grad_(True)
    deformation = torch.zeros_like(grid.verts, requires_grad=True)
    verts, faces = marching_tets(grid.verts + deformation, sdf, grid.tets)
    colors = torch.full_like(verts, 0.5)
    cameras = Cameras(torch.tensor([15.0, 40.0]), torch.tensor([0.0, 120.0]), torch.full((2,), 3.0), torch.full((2,), 40.0))
    out = render_mesh(Mesh(verts, faces, colors), cameras, 64, light_dir=sample_light_directions(cameras))
    # A loss that asks for a bigger, darker silhouette.
    loss = (1 - out["alpha"]).mean() + out["rgb"].mean()
    loss.backward()
    assert sdf.grad is not None and sdf.grad.abs().sum() > 0
    assert deformation.grad is not None and deformation.grad.abs().sum() > 0
    # Growing the silhouette means lowering the SDF near the surface: the gradient w.r.t. the
    # SDF at surface-adjacent vertices is mostly positive (descent lowers it).
    touched = sdf.grad.abs() > 0
    assert (sdf.grad[touched] > 0).float().mean() > 0.5
