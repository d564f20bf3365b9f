"""The measures behind benchmarks/paper_claims.py's verdicts: run quality and stability, the
per-prompt time to match the amortized model, and the smoothness of interpolation paths."""
from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from atom.__main__ import slugify
from atom.data import SHAPES, evaluate_mesh, parse_prompt
from atom.pipeline import AToMPipeline


def quality(records: list[dict]) -> dict:
    """Accuracy per split, mean and per-shape Chamfer (seen prompts), tori with a hole, pyramids
    called pyramids, empty meshes."""
    def split(name: str) -> list[dict]:
        return [r for r in records if r["split"] == name]

    seen = split("seen") or records
    shapes = {}
    for shape in SHAPES:
        mine = [r for r in seen if r["shape"] == shape]
        if mine:
            shapes[shape] = float(np.mean([finite(r["chamfer"]) for r in mine]))
    tori = [r for r in records if r["shape"] == "torus"]
    pyramids = [r for r in records if r["shape"] == "pyramid"]
    return {
        "seen_accuracy": mean_of(seen, "correct"),
        "held_out_accuracy": mean_of(split("held_out"), "correct"),
        "mean_chamfer": float(np.mean([finite(r["chamfer"]) for r in seen])),
        "chamfer_per_shape": shapes,
        "tori_with_hole": f"{sum(r['genus'] == 1 for r in tori)}/{len(tori)}",
        "pyramids": f"{sum(r['nearest_shape'] == 'pyramid' for r in pyramids)}/{len(pyramids)}",
        "empty_meshes": sum(r["empty"] for r in records),
    }


def finite(value: float | None, cap: float = 1.0) -> float:
    """A Chamfer distance with empty meshes (inf / null) counted as `cap` (the whole box)."""
    return cap if value is None or not np.isfinite(value) else float(value)


def mean_of(records: list[dict], key: str) -> float | None:
    return float(np.mean([bool(r[key]) for r in records])) if records else None


def stability(log_file: Path) -> dict:
    """From a run's train_log.jsonl: the SDS loss curve (per logged step), non-finite losses,
    logged steps with an empty mesh, and the spread of the loss over the last quarter."""
    records = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.is_file() else []
    steps = {r["step"]: r for r in records if r.get("event") == "step"}  # a resumed step: the later record
    curve = [(s, steps[s]["sds"]) for s in sorted(steps)]
    losses = np.array([v for _, v in curve], dtype=float)
    tail = losses[len(losses) * 3 // 4:]
    return {"loss_curve": curve, "nonfinite_losses": int((~np.isfinite(losses)).sum()),
            "empty_mesh_steps": sum(1 for r in steps.values() if r.get("empty_meshes")),
            "late_loss_std": float(np.nanstd(tail)) if len(tail) else None}


def failed(run: dict) -> bool:
    """A failed run: a non-finite loss, or no seen prompt right (the Shapes world's chance is 1/64)."""
    return run["nonfinite_losses"] > 0 or not run["seen_accuracy"]


def parameter_counts(preset: str) -> dict:
    counts = {}
    for name in (preset, f"{preset}-hyper"):
        pipe = AToMPipeline.from_components(name)
        counts[name] = sum(p.numel() for m in (pipe.text_to_triplane, pipe.mesh_generator) for p in m.parameters())
    return counts


def per_prompt_name(prompt: str) -> str:
    return f"per-prompt/{slugify(prompt)}"


def per_prompt_subset(seen: list[str]) -> list[str]:
    """The first seen prompt of each shape (one per shape; all of them when fewer parse)."""
    first = {}
    for prompt in seen:
        parsed = parse_prompt(prompt)
        if parsed and parsed[0] not in first:
            first[parsed[0]] = prompt
    return list(first.values()) or seen


def time_to_match(curve: list[dict], reference: dict) -> dict:
    """The first snapshot as good as the amortized model on the prompt: right where it is right,
    and a Chamfer distance no larger. `matched` False: the budget's time is a lower bound."""
    for point in curve:
        if (point["correct"] or not reference["correct"]) and finite(point["chamfer"]) <= finite(reference["chamfer"]):
            return {"matched": True, "match_steps": point["steps"], "match_seconds": point["seconds"]}
    return {"matched": False, "match_steps": curve[-1]["steps"], "match_seconds": curve[-1]["seconds"]}


def interpolation_pairs(seen: list[str], held_out: list[str]) -> list[tuple[str, str]]:
    """Two colors of one shape and two shapes of one color (seen prompts, the first such pairs),
    and the first two held-out prompts; the first two prompts when the set has none of these."""
    parsed = {p: parse_prompt(p) for p in seen if parse_prompt(p)}
    pairs = []
    for same in (0, 1):  # 0: same shape, other color; 1: same color, other shape
        found = [(a, b) for a in parsed for b in parsed if parsed[a][same] == parsed[b][same] and parsed[a] != parsed[b]]
        pairs += found[:1]
    pairs += [(held_out[0], held_out[1])] if len(held_out) >= 2 else []
    return pairs or [(seen[0], seen[1 % len(seen)])]


def surface_distance(a: trimesh.Trimesh, b: trimesh.Trimesh, samples: int) -> float:
    """Symmetric Chamfer distance between two meshes (mean nearest-neighbour distance of
    `samples` surface points each way, halved); 1.0 when either is empty."""
    if len(a.faces) == 0 or len(b.faces) == 0:
        return 1.0
    pa, _ = trimesh.sample.sample_surface(a, samples, seed=0)
    pb, _ = trimesh.sample.sample_surface(b, samples, seed=0)
    return 0.5 * float(cKDTree(pb).query(pa)[0].mean() + cKDTree(pa).query(pb)[0].mean())


def mean_albedo(mesh: trimesh.Trimesh) -> np.ndarray:
    return np.asarray(mesh.visual.vertex_colors[:, :3], dtype=float).mean(0) / 255 if len(mesh.vertices) else np.zeros(3)


def path_smoothness(meshes: list[trimesh.Trimesh], samples: int) -> dict:
    """Distances between neighbouring blends (geometry: Chamfer; color: mean albedo, RGB in
    [0, 1]), the largest step over the median step of each (a jump shows as a large ratio), and
    each blend's nearest Shapes-world color and primitive."""
    geometry = [surface_distance(a, b, samples) for a, b in zip(meshes, meshes[1:])]
    color = [float(np.linalg.norm(mean_albedo(a) - mean_albedo(b))) for a, b in zip(meshes, meshes[1:])]
    labels = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty blend is labelled "None None"
        for mesh in meshes:
            scored = evaluate_mesh(mesh, "cube", "red", num_samples=samples)  # nearest_* do not depend on the target
            labels.append(f"{scored['nearest_color']} {scored['nearest_shape']}")

    def jump(steps: list[float]) -> float:
        return max(steps) / max(statistics.median(steps), 1e-9)

    return {"geometry_steps": geometry, "color_steps": color, "geometry_jump": jump(geometry),
            "color_jump": jump(color), "labels": labels}
