"""The torch rasterizer against an independent reference (trimesh ray casting), its gradients,
and the nvdiffrast backend when it is importable."""
import math

import numpy as np
import pytest
import torch
import trimesh

from atom.geometry import Mesh, build_tet_grid, marching_tets
from atom.render import Cameras, TorchRasterizer, get_rasterizer, nvdiffrast_available, render_mesh, silhouette_edges


def _camera(elevation=25.0, azimuth=35.0, distance=3.0, fovy=40.0) -> Cameras:
    return Cameras(*(torch.tensor([float(v)]) for v in (elevation, azimuth, distance, fovy)))


def _reference(mesh: trimesh.Trimesh, cameras: Cameras, size: int):
    """Hit mask (H, W) and view-axis depth (H, W) from trimesh ray casting through the same pixel centers."""
    origins, dirs = cameras.rays(size, size)
    o, d = origins[0].reshape(-1, 3).numpy(), dirs[0].reshape(-1, 3).numpy()
    locations, ray_index, _ = mesh.ray.intersects_location(o, d, multiple_hits=False)
    mask = np.zeros(size * size, bool)
    mask[ray_index] = True
    forward = -cameras.c2w[0, :3, 2].numpy()
    depth = np.zeros(size * size)
    depth[ray_index] = (locations - o[ray_index]) @ forward
    return mask.reshape(size, size), depth.reshape(size, size)


@pytest.mark.parametrize(
    "mesh,size_of_object",
    [(trimesh.creation.icosphere(subdivisions=3, radius=0.6), 1.2), (trimesh.creation.box(extents=(1.0, 1.0, 1.0)), 1.0)],
    ids=["sphere", "cube"],
)
def test_matches_trimesh_ray_casting(mesh, size_of_object):
    cameras = _camera()
    ours = render_mesh(
        Mesh(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces)),
        cameras,
        128,
        shading="albedo",
        rasterizer=TorchRasterizer(),
    )
    mask = ours["depth"][0, 0].numpy() > 0
    ref_mask, ref_depth = _reference(mesh, cameras, 128)
    iou = (mask & ref_mask).sum() / (mask | ref_mask).sum()
    assert iou >= 0.99
    both = mask & ref_mask
    depth_error = np.abs(ours["depth"][0, 0].numpy()[both] - ref_depth[both]).mean()
    assert depth_error < 0.01 * size_of_object


def test_rast_follows_nvdiffrast_conventions():
    # One triangle covering the lower-left half of the screen, at depth w = 1.
    pos = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = TorchRasterizer().rasterize(pos, tri, (4, 4))
    assert rast.shape == (1, 4, 4, 4)
    # Row 0 is the bottom row: its left pixel is covered, the top-right pixel is not.
    assert rast[0, 0, 0, 3] == 1 and rast[0, 3, 3, 3] == 0
    # Pixel (x=0, y=0) center is at NDC (-0.75, -0.75): weights (0.75, 0.125, 0.125) for the 3 vertices.
    assert rast[0, 0, 0, 0].item() == pytest.approx(0.75, abs=1e-6)
    assert rast[0, 0, 0, 1].item() == pytest.approx(0.125, abs=1e-6)
    attr = torch.tensor([[1.0], [2.0], [3.0]])
    out = TorchRasterizer().interpolate(attr, rast, tri)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.75 * 1 + 0.125 * 2 + 0.125 * 3, abs=1e-5)
    assert out[0, 3, 3, 0].item() == 0.0


def test_nearest_triangle_wins():
    near = [[-1.0, -1.0, -0.5, 1.0], [1.0, -1.0, -0.5, 1.0], [-1.0, 1.0, -0.5, 1.0]]
    far = [[-1.0, -1.0, 0.5, 1.0], [1.0, -1.0, 0.5, 1.0], [-1.0, 1.0, 0.5, 1.0]]
    pos = torch.tensor([far + near])
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    rast = TorchRasterizer().rasterize(pos, tri, (8, 8))
    assert (rast[0, 0, 0, 3] == 2) and rast[0, 0, 0, 2].item() == pytest.approx(-0.5)


def test_silhouette_gradients_fit_translation_and_scale():
    torch.manual_seed(0)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    verts, faces = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    cameras = Cameras(torch.tensor([0.0, 30.0, 60.0]), torch.tensor([0.0, 90.0, 200.0]), torch.full((3,), 3.0), torch.full((3,), 40.0))
    with torch.no_grad():
        target = render_mesh(Mesh(verts * 0.7 + torch.tensor([0.2, -0.1, 0.15]), faces), cameras, 64, shading="albedo")["alpha"]
    shift = torch.zeros(3, requires_grad=True)
    log_scale = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([shift, log_scale], lr=0.02)
    losses = []
    for _ in range(120):
        alpha = render_mesh(Mesh(verts * log_scale.exp() + shift, faces), cameras, 64, shading="albedo")["alpha"]
        loss = ((alpha - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10
    assert torch.allclose(shift.detach(), torch.tensor([0.2, -0.1, 0.15]), atol=0.03)
    assert log_scale.exp().item() == pytest.approx(0.7, abs=0.03)


def available_backends() -> list:
    """(device, backend) pairs this machine can run: the torch rasterizer always, on CUDA too when
    there is a GPU, and nvdiffrast when it imports and there is a GPU."""
    found = [pytest.param("cpu", "torch", id="torch-cpu")]
    if torch.cuda.is_available():
        found.append(pytest.param("cuda", "torch", id="torch-cuda"))
        if nvdiffrast_available():
            found.append(pytest.param("cuda", "nvdiffrast", id="nvdiffrast-cuda"))
    return found


@pytest.mark.parametrize("device,backend", available_backends())
@pytest.mark.parametrize("subdivisions", [3, 5], ids=["1280-faces", "20480-faces"])
@pytest.mark.parametrize("shading", ["albedo", "lambertian"])
def test_image_gradient_matches_finite_differences(shading, subdivisions, device, backend):
    """d sum(rgb) / d scale of a dark sphere on white: the silhouette term (edges sweeping over
    background pixels) dominates and must have the size finite differences of the image give,
    not only the right sign: stage 2 learns geometry through it. Every backend this machine has,
    on a sparse and a dense mesh (DMTet meshes have 10k-100k faces)."""
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.5)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32, device=device)
    faces = torch.tensor(sphere.faces, device=device)
    colors = torch.full_like(verts, 0.3)
    cameras = Cameras(torch.tensor([0.0, 30.0, 60.0]), torch.tensor([0.0, 90.0, 200.0]), torch.full((3,), 3.0), torch.full((3,), 40.0))
    cameras = cameras.to(device)
    light = torch.nn.functional.normalize(cameras.position, dim=-1)
    rasterizer = get_rasterizer(device, backend)
    assert rasterizer.name == backend

    def image_sum(scale):
        return render_mesh(Mesh(verts * scale, faces, colors), cameras, 64, light, shading, rasterizer=rasterizer)["rgb"].sum()

    scale = torch.tensor(1.0, requires_grad=True, device=device)
    (analytic,) = torch.autograd.grad(image_sum(scale), scale)
    with torch.no_grad():
        # Steps of several pixels of silhouette motion, so the step image changes average out.
        numeric = [(image_sum(1 + h) - image_sum(1 - h)).item() / (2 * h) for h in (0.03, 0.05, 0.08)]
    reference = sum(numeric) / len(numeric)
    assert reference < 0
    # Torch backend, measured at 64 px: 1,280 faces 0.90 (albedo) / 0.86 (lambertian), 20,480
    # faces 0.89 / 0.84 (128 px: 0.96-1.07). With distances to neighbours' triangles only (before
    # silhouette edges) 20,480 faces gave 0.79 / 0.70; nvdiffrast's own antialias 0.00-0.02 there.
    assert analytic.item() == pytest.approx(reference, rel=0.25)


@pytest.mark.parametrize("size", [48, 128])
def test_antialiased_coverage_is_the_true_silhouette_area(size):
    """The soft silhouette is centred on the edge (coverage 0.5 at the edge, as a box filter): the
    summed alpha of a sphere is the area of its analytic disc in pixels (measured within 0.1 %).
    A coverage ramp outside the edge only, with distances to silhouette edges, measured +7.6 % at
    48 px (silhouettes half a pixel too wide: stage 2 would learn meshes that much too small)."""
    grid = build_tet_grid(64)
    verts, faces = marching_tets(grid.verts, grid.verts.norm(dim=-1) - 0.6, grid.tets)
    cameras = _camera(elevation=0.0, azimuth=0.0)
    alpha = render_mesh(Mesh(verts, faces), cameras, size, shading="albedo")["alpha"].sum().item()
    ndc_radius = math.tan(math.asin(0.6 / 3.0)) / math.tan(math.radians(20.0))  # a sphere's outline is a circle
    assert alpha == pytest.approx(math.pi * (ndc_radius * size / 2) ** 2, rel=0.005)


def test_silhouette_edges_of_a_cube_seen_from_a_corner():
    """A cube seen from a corner direction shows three faces: its outline is a hexagon of six
    edges, each between a front- and a back-facing triangle; the edges inside the faces (their
    diagonals) and between two visible faces are not silhouettes."""
    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    verts, faces = torch.tensor(cube.vertices, dtype=torch.float32), torch.tensor(cube.faces)
    cameras = Cameras(torch.tensor([35.26]), torch.tensor([45.0]), torch.tensor([4.0]), torch.tensor([40.0]))
    mvp = cameras.world_to_clip()
    pos = torch.einsum("bij,vj->bvi", mvp, torch.cat([verts, torch.ones(8, 1)], -1))
    batch_index, edges = silhouette_edges(pos, faces)
    assert batch_index.tolist() == [0] * 6
    hidden_or_near = {i for i, v in enumerate(cube.vertices) if (v[0] > 0) == (v[2] > 0) and (v[0] > 0) == (v[1] > 0)}
    assert not set(edges.flatten().tolist()) & hidden_or_near  # the nearest and the farthest corner are inside the outline


def test_empty_mesh_renders_background():
    out = render_mesh(Mesh.empty(), _camera(), 16, background=(0.2, 0.4, 0.6))
    assert torch.allclose(out["rgb"][0, :, 5, 5], torch.tensor([0.2, 0.4, 0.6]))
    assert out["alpha"].sum() == 0


def test_get_rasterizer_choices():
    assert get_rasterizer("cpu").name == "torch"
    with pytest.raises(ValueError, match="backend"):
        get_rasterizer("cpu", backend="opengl")
    with pytest.raises(ValueError, match="CUDA"):
        get_rasterizer("cpu", backend="nvdiffrast")


@pytest.mark.skipif(not (nvdiffrast_available() and torch.cuda.is_available()), reason="nvdiffrast with CUDA is not available here")
def test_nvdiffrast_backend_agrees_with_torch_backend():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces)
    colors = (verts * 0.5 + 0.5).clamp(0, 1)
    cameras = _camera()
    nv = get_rasterizer("cuda")
    assert nv.name == "nvdiffrast"
    cuda_verts = verts.cuda().requires_grad_(True)
    out_nv = render_mesh(Mesh(cuda_verts, faces.cuda(), colors.cuda()), cameras.to("cuda"), 128, shading="albedo", rasterizer=nv)
    out_nv["rgb"].sum().backward()
    assert cuda_verts.grad.abs().sum() > 0
    out_torch = render_mesh(Mesh(verts, faces, colors), cameras, 128, shading="albedo", rasterizer=TorchRasterizer())
    mask_nv = out_nv["depth"][0, 0].cpu() > 0
    mask_torch = out_torch["depth"][0, 0] > 0
    assert (mask_nv & mask_torch).sum() / (mask_nv | mask_torch).sum() >= 0.99
    inner = mask_nv & mask_torch
    assert (out_nv["rgb"][0].cpu()[:, inner] - out_torch["rgb"][0][:, inner]).abs().mean() < 0.01
