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

from atom.geometry import Mesh, build_tet_grid, marching_tets
from atom.geometry.tet_grid import _build_cpu
from atom.models import TriplaneMeshGenerator, atom_model_config
from atom.render import NeuSRenderer, get_rasterizer, render_mesh, sample_light_directions, turntable_cameras


def timed(fn, repeats: int, device: torch.device | str = "cpu") -> tuple[float, float]:
    """Median wall-clock and process CPU milliseconds of `fn()` after one warm-up call (CPU time
    counts all threads and is steadier than wall time when other jobs share the machine). On a
    CUDA `device` the clock is read only after the queued kernels have finished."""
    cuda = torch.device(device).type == "cuda"
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def sphere_mesh(num_faces: int, device) -> Mesh:
    """A marching-tets sphere with about `num_faces` faces, vertex colors attached."""
    resolution = {5000: 22, 20000: 44}[num_faces]
    grid = build_tet_grid(resolution, device=device)
    verts, faces = marching_tets(grid.verts, grid.verts.norm(dim=-1) - 0.6, grid.tets)
    return Mesh(verts, faces, (verts * 0.5 + 0.5).clamp(0, 1))


def shapes_field(device):
    """The `shapes` preset's SDF + color field on random triplanes, as stage 1 queries it."""
    _, generator_kwargs = atom_model_config("shapes")
    generator = TriplaneMeshGenerator(**generator_kwargs).to(device)
    planes = (0.1 * torch.randn(1, 3, generator.config.triplane_channels, 32, 32, device=device)).requires_grad_(True)
    return lambda points: generator.sdf_and_color(planes, points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows: list[tuple[str, tuple[float, float]]] = []

    def add(name: str, fn) -> None:
        rows.append((name, timed(fn, args.repeats, device)))

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

    field = shapes_field(device)
    variants = (
        ("", {}, {"skip_weight": 0.0}),
        (", skipping negligible samples", {}, {}),
        (" + eikonal normals at all samples", {"eikonal_points": 64 * 64 * 64}, {"skip_weight": 0.0}),
    )
    for label, call_kwargs, renderer_kwargs in variants:
        renderer = NeuSRenderer(num_samples=64, **renderer_kwargs).to(device)

        def neus(r=renderer, kw=call_kwargs):
            out = r(field, camera, 64, light_dir=light, **kw)
            (out["rgb"].mean() + out.get("eikonal", 0.0)).backward()

        add(f"NeuS 64x64 rays x 64 samples fwd+bwd{label}", neus)

    if args.json:
        result = {name: {"wall_ms": wall, "cpu_ms": cpu} for name, (wall, cpu) in rows}
        print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "ms": result}, indent=2))
    else:
        print(f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats}")
        width = max(len(name) for name, _ in rows)
        print(f"{'':<{width}}  {'wall ms':>9}  {'cpu ms':>9}")
        for name, (wall, cpu) in rows:
            print(f"{name:<{width}}  {wall:9.1f}  {cpu:9.1f}")

if __name__ == "__main__":
    main()
