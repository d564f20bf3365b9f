import math

import pytest
import torch

from atom.geometry import Mesh, build_tet_grid, enclosed_volume, marching_tets, surface_area, vertex_normals


def sphere_sdf(p: torch.Tensor, r: float = 0.6) -> torch.Tensor:
    return p.norm(dim=-1) - r


def torus_sdf(p: torch.Tensor, major: float = 0.5, minor: float = 0.18) -> torch.Tensor:
    q = torch.stack([torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2) - major, p[:, 1]], -1)
    return q.norm(dim=-1) - minor


def test_tet_grid_is_a_positively_oriented_conforming_grid():
    grid = build_tet_grid(4)
    assert grid.verts.shape == (5**3, 3)
    assert grid.tets.shape == (6 * 4**3, 4)
    v = grid.verts[grid.tets]
    volumes = torch.linalg.det(v[:, 1:] - v[:, :1]) / 6
    assert (volumes > 0).all()
    # The tets tile the cube [-1, 1]^3 exactly.
    assert volumes.sum().item() == pytest.approx(8.0, rel=1e-5)
    # Conforming: every interior triangle is shared by exactly two tets, boundary ones by one.
    faces = torch.cat([grid.tets[:, [0, 1, 2]], grid.tets[:, [0, 1, 3]], grid.tets[:, [0, 2, 3]], grid.tets[:, [1, 2, 3]]])
    _, counts = torch.unique(faces.sort(1).values, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    assert (counts == 1).sum().item() == 6 * 4 * 4 * 2  # 2 triangles per boundary square
    assert grid.cell_size == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_tet_grid_rejects_bad_resolution(bad):
    with pytest.raises(ValueError, match="resolution"):
        build_tet_grid(bad)


def test_sphere_at_resolution_64_is_watertight_outward_and_accurate():
    grid = build_tet_grid(64)
    verts, faces = marching_tets(grid.verts, sphere_sdf(grid.verts), grid.tets)
    mesh = Mesh(verts, faces).to_trimesh()
    assert mesh.is_watertight and mesh.is_winding_consistent
    area, volume = surface_area(verts, faces).item(), enclosed_volume(verts, faces).item()
    assert area == pytest.approx(4 * math.pi * 0.6**2, rel=0.02)
    assert volume == pytest.approx(4 / 3 * math.pi * 0.6**3, rel=0.02)
    # Outward: each vertex normal points away from the center.
    normals = vertex_normals(verts, faces)
    assert ((normals * torch.nn.functional.normalize(verts, dim=-1)).sum(-1) > 0.9).all()


def test_torus_has_euler_characteristic_zero():
    grid = build_tet_grid(48)
    verts, faces = marching_tets(grid.verts, torus_sdf(grid.verts), grid.tets)
    mesh = Mesh(verts, faces).to_trimesh()
    assert mesh.is_watertight
    assert mesh.euler_number == 0


def test_no_sign_change_gives_an_empty_mesh():
    grid = build_tet_grid(8)
    for sdf in (torch.ones(len(grid.verts)), -torch.ones(len(grid.verts))):
        verts, faces = marching_tets(grid.verts, sdf, grid.tets)
        assert verts.shape == (0, 3) and faces.shape == (0, 3)


def test_marching_tets_is_differentiable_in_sdf_and_positions():
    grid = build_tet_grid(12)
    offset = torch.zeros_like(grid.verts, requires_grad=True)
    radius = torch.tensor(0.5, requires_grad=True)
    sdf = grid.verts.norm(dim=-1) - radius
    verts, faces = marching_tets(grid.verts + offset, sdf, grid.tets)
    volume = enclosed_volume(verts, faces)
    volume.backward()
    # d(volume)/d(radius) of a sphere is its area, 4 pi r^2.
    assert radius.grad.item() == pytest.approx(4 * math.pi * 0.5**2, rel=0.05)
    assert offset.grad.abs().sum() > 0


def test_rejects_mismatched_shapes():
    grid = build_tet_grid(2)
    with pytest.raises(ValueError, match="sdf"):
        marching_tets(grid.verts, torch.zeros(3), grid.tets)
