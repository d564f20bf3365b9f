"""Times `AToMPipeline` on the CPU, prompt to GLB, stage by stage.

    python benchmarks/bench_pipeline.py                          # a table
    python benchmarks/bench_pipeline.py --model DIR --resolution 64 --repeats 9 --json

The model is `--model` (a pipeline folder or Hub id); by default `pretrained/atom-shapes64`
if it exists, else a randomly initialized `shapes` preset (same sizes, random weights: the
timings are representative, the meshes are spheres; the output says so).

For each batch size: milliseconds per prompt, the median of --repeats runs after one warm-up
run (which also builds and caches the tet grid). The stages call the components in the order
of `AToMPipeline.__call__` and `TriplaneMeshGenerator.extract_mesh(coarse_to_fine=True)`;
the plain `pipe(...)` call is timed separately so that the sum of the stages can be checked
against it, and the staged meshes are checked to be the pipeline's.
"""
from __future__ import annotations

import argparse
import inspect
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from atom.data import SHAPES64
from atom.geometry import Mesh, marching_tets
from atom.pipeline import AToMPipeline

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "pretrained" / "atom-shapes64"
STAGES = (
    "text encoder",
    "text-to-triplane",
    "SDF + deformation on the grid",
    "marching tets",
    "color",
    "to trimesh",
    "GLB export",
)


def clocks() -> np.ndarray:
    """(wall, CPU) seconds: wall clock, and this process's CPU time over all its threads."""
    return np.array([time.perf_counter(), time.process_time()])


class Laps:
    """(wall, CPU) milliseconds between successive calls, by stage name."""

    def __init__(self):
        self.ms: dict[str, np.ndarray] = {}
        self._last = clocks()

    def __call__(self, stage: str) -> None:
        now = clocks()
        self.ms[stage] = 1000 * (now - self._last)
        self._last = now


@torch.no_grad()
def staged_run(pipe: AToMPipeline, prompts: list[str], resolution: int) -> tuple[dict[str, np.ndarray], list]:
    """One prompt-to-GLB run, component by component. Returns ({stage: (wall, CPU) ms}, trimesh meshes)."""
    generator = pipe.mesh_generator
    defaults = inspect.signature(generator.extract_mesh).parameters
    laps = Laps()
    embeds, mask = pipe.encode_prompt(prompts)
    laps("text encoder")
    planes = pipe.text_to_triplane(embeds, mask)
    laps("text-to-triplane")
    grid = generator.tet_grid(resolution, planes.device)
    sdf, offsets = generator._coarse_to_fine_fields(
        planes, grid, defaults["coarse_factor"].default, defaults["band"].default, deform=True
    )
    laps("SDF + deformation on the grid")
    verts = grid.verts.to(sdf.dtype)
    surfaces = [marching_tets((verts + offsets[i]).clamp(-1.0, 1.0), sdf[i], grid.tets) for i in range(len(prompts))]
    laps("marching tets")
    padded = pad_sequence([surface_verts for surface_verts, _ in surfaces], batch_first=True)
    colors = generator.color(planes, padded) if padded.shape[1] else None
    laps("color")
    meshes = [
        (Mesh(v, f, colors[i, : v.shape[0]]) if f.shape[0] else Mesh.empty()).to_trimesh()
        for i, (v, f) in enumerate(surfaces)
    ]
    laps("to trimesh")
    for mesh in meshes:
        mesh.export(file_type="glb")
    laps("GLB export")
    return laps.ms, meshes


def timed_pipe(pipe: AToMPipeline, prompts: list[str], resolution: int) -> tuple[np.ndarray, list]:
    """`pipe(prompts)` in one batch. Returns ((wall, CPU) ms, trimesh meshes)."""
    start = clocks()
    meshes = pipe(prompts, marching_resolution=resolution, batch_size=len(prompts), progress=False).meshes
    return 1000 * (clocks() - start), meshes


def benchmark(pipe: AToMPipeline, batch: int, resolution: int, repeats: int) -> dict:
    """Median (wall, CPU) ms per prompt of each stage, their sum, and of `pipe(...)`, for one batch size."""
    prompts = [SHAPES64[(9 * i) % len(SHAPES64)].prompt for i in range(batch)]
    stage_ms, meshes = staged_run(pipe, prompts, resolution)  # warm-up
    _, pipe_meshes = timed_pipe(pipe, prompts, resolution)
    matches = all(
        np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces) for a, b in zip(meshes, pipe_meshes)
    )
    stage_runs: dict[str, list[np.ndarray]] = {stage: [] for stage in STAGES}
    pipe_runs = []
    for _ in range(repeats):
        stage_ms, _ = staged_run(pipe, prompts, resolution)
        for stage in STAGES:
            stage_runs[stage].append(stage_ms[stage])
        pipe_runs.append(timed_pipe(pipe, prompts, resolution)[0])

    def median(runs: list[np.ndarray], clock: int) -> float:
        return statistics.median(run[clock] for run in runs) / batch

    result = {}
    for clock, name in enumerate(("wall", "cpu")):
        stages = {stage: median(runs, clock) for stage, runs in stage_runs.items()}
        result[name] = {
            "stages_ms_per_prompt": stages,
            "stages_sum_without_export_ms_per_prompt": sum(v for k, v in stages.items() if k != "GLB export"),
            "pipe_ms_per_prompt": median(pipe_runs, clock),
            "end_to_end_ms_per_prompt": median(pipe_runs, clock) + stages["GLB export"],
        }
    return {
        **result,
        "staged_meshes_equal_pipe": matches,
        "faces_per_mesh": float(np.mean([len(m.faces) for m in meshes])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=None, help=f"pipeline folder or Hub id (default: {DEFAULT_MODEL} if present)"
    )
    parser.add_argument("--resolution", type=int, default=None, help="marching resolution (default: the model's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.resolution is not None and not 4 <= args.resolution <= 512:
        parser.error(f"--resolution must be in [4, 512], got {args.resolution}")
    if args.repeats < 1 or min(args.batch_sizes) < 1:
        parser.error(f"--repeats and --batch-sizes must be >= 1, got {args.repeats} and {args.batch_sizes}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model = args.model or (str(DEFAULT_MODEL) if DEFAULT_MODEL.is_dir() else None)
    if model is None:
        torch.manual_seed(0)
        pipe = AToMPipeline.from_components("shapes")
        model_name = "random `shapes` preset"
    else:
        pipe = AToMPipeline.from_pretrained(model)
        model_name = model
    resolution = args.resolution if args.resolution is not None else pipe.mesh_generator.config.tet_resolution
    results = {batch: benchmark(pipe, batch, resolution, args.repeats) for batch in args.batch_sizes}

    if args.json:
        report = {
            "model": model_name,
            "random_weights": model is None,
            "resolution": resolution,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "batches": {str(batch): result for batch, result in results.items()},
        }
        print(json.dumps(report, indent=2))
        return

    print(f"AToMPipeline on CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"model: {model_name}")
    if model is None:
        print(f"NOTE: {DEFAULT_MODEL} not found: RANDOM weights (the meshes are spheres); timings only.")
    print(f"marching resolution {resolution}, coarse-to-fine; median of {args.repeats} runs after a warm-up")
    print("ms per prompt: wall clock, and this process's CPU time over all threads (less disturbed by other jobs)")
    header = f"{'stage':<34}" + "".join(f"{f'b{b} wall':>11}{f'b{b} CPU':>11}" for b in results)
    print(header)
    print("-" * len(header))

    def row(name: str, key: str, stage: str | None = None) -> None:
        cells = []
        for result in results.values():
            for clock in ("wall", "cpu"):
                value = result[clock][key]
                cells.append(value[stage] if stage else value)
        print(f"{name:<34}" + "".join(f"{v:>11.1f}" for v in cells))

    for stage in STAGES:
        row(stage, "stages_ms_per_prompt", stage)
    print("-" * len(header))
    row("sum of stages without GLB export", "stages_sum_without_export_ms_per_prompt")
    row("pipe(...) total", "pipe_ms_per_prompt")
    row("pipe(...) + GLB export", "end_to_end_ms_per_prompt")
    print("faces per mesh: " + ", ".join(f"batch {b}: {r['faces_per_mesh']:.0f}" for b, r in results.items()))
    print("staged meshes equal pipe(...)'s: " + ", ".join(
        f"batch {b}: {'yes' if r['staged_meshes_equal_pipe'] else 'NO'}" for b, r in results.items()
    ))


if __name__ == "__main__":
    main()
