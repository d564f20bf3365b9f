"""Times the building blocks: tet grid, marching tets, rasterize + shade, NeuS.

    python benchmarks/bench_core.py            # a table
    python benchmarks/bench_core.py --json     # the same numbers as JSON

Median of --repeats runs after one warm-up, in milliseconds, on the current device.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from atom.geometry import Mesh, build_tet_grid, marching_tets
from atom.geometry.tet_grid import _build_cpu
from atom.render import NeuSRenderer, get_rasterizer, render_mesh, sample_light_directions, turntable_cameras


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def sphere_mesh(num_faces: int, device) -> Mesh:
    """A marching-tets sphere with about `num_faces` faces, vertex colors attached."""
    resolution = {5000: 22, 20000: 44}[num_faces]
    grid = build_tet_grid(resolution, device=device)
    verts, faces = marching_tets(grid.verts, grid.verts.norm(dim=-1) - 0.6, grid.tets)
    return Mesh(verts, faces, (verts * 0.5 + 0.5).clamp(0, 1))


class TriplaneField(nn.Module):
    """A field the size of the `shapes` model's: (3, 32, 64, 64) triplanes and 3 x 64 MLPs."""

    def __init__(self):
        super().__init__()
        self.planes = nn.Parameter(torch.randn(3, 32, 64, 64) * 0.1)
        self.sdf = nn.Sequential(nn.Linear(32, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))
        self.rgb = nn.Sequential(nn.Linear(32, 64), nn.SiLU(), nn.Linear(64, 3), nn.Sigmoid())

    def forward(self, points):
        b, m, _ = points.shape
        coords = torch.stack([points[..., [0, 1]], points[..., [0, 2]], points[..., [1, 2]]], 1)  # (B, 3, M, 2)
        planes = self.planes.unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * 3, 32, 64, 64)
        feats = nn.functional.grid_sample(planes, coords.reshape(b * 3, m, 1, 2), align_corners=False)
        feats = feats.reshape(b, 3, 32, m).sum(1).transpose(1, 2)  # (B, M, 32)
        return self.sdf(feats).squeeze(-1) + points.norm(dim=-1) - 0.5, self.rgb(feats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows: list[tuple[str, float]] = []

    def add(name: str, fn) -> None:
        rows.append((name, timed(fn, args.repeats)))

    for res in (32, 64, 128):
        add(f"tet grid build res {res} (uncached)", lambda r=res: (_build_cpu.cache_clear(), build_tet_grid(r)))
    for res in (32, 64, 128):
        grid = build_tet_grid(res, device=device)
        sdf = grid.verts.norm(dim=-1) - 0.6
        add(f"marching tets res {res}", lambda g=grid, s=sdf: marching_tets(g.verts, s, g.tets))

    rasterizer = get_rasterizer(device)
    camera = turntable_cameras(1, device=device)
    light = sample_light_directions(camera, 0.0)
    for faces in (5000, 20000):
        mesh = sphere_mesh(faces, device)
        for px in (64, 128, 256):
            add(
                f"rasterize+shade {mesh.faces.shape[0] // 1000}k faces {px}px fwd",
                lambda m=mesh, p=px: render_mesh(m, camera, p, light, rasterizer=rasterizer),
            )

            def fwd_bwd(m=mesh, p=px):
                verts = m.verts.detach().requires_grad_(True)
                colors = m.colors.detach().requires_grad_(True)
                render_mesh(Mesh(verts, m.faces, colors), camera, p, light, rasterizer=rasterizer)["rgb"].mean().backward()

            add(f"rasterize+shade {mesh.faces.shape[0] // 1000}k faces {px}px fwd+bwd", fwd_bwd)

    field = TriplaneField().to(device)
    renderer = NeuSRenderer(num_samples=64).to(device)
    for label, kwargs in (("", {}), (" + eikonal normals at all samples", {"eikonal_points": 64 * 64 * 64})):

        def neus(kw=kwargs):
            out = renderer(field, camera, 64, light_dir=light, **kw)
            (out["rgb"].mean() + out.get("eikonal", 0.0)).backward()

        add(f"NeuS 64x64 rays x 64 samples fwd+bwd{label}", neus)

    if args.json:
        print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "ms": dict(rows)}, indent=2))
    else:
        print(f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats} (ms)")
        width = max(len(name) for name, _ in rows)
        for name, ms in rows:
            print(f"{name:<{width}}  {ms:9.1f}")


if __name__ == "__main__":
    main()
