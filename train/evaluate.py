"""Ground-truth metrics of an AToM pipeline on a prompt set (the Shapes world's R-precision).

    python train/evaluate.py --model pretrained/atom-shapes64 --prompts shapes64 \
        --json runs/eval/atom.json --grid runs/eval/atom.png [--resolution 64] [--views 4] [--write_card] \
        [--overview pretrained/atom-shapes64/samples.png]
    python train/evaluate.py --model runs/atom-shapes64/checkpoint-800   # a training checkpoint

For every prompt: parse it to (shape, color) with `atom.data.parse_prompt`, generate its mesh
(batched), and score it with `atom.data.evaluate_mesh` (Chamfer distance and volume IoU to the
true primitive, nearest primitive, nearest color, `correct` = both nearest are right). Each
prompt gets a split: "seen" or "held_out" when the prompt is exactly one of `SEEN` /
`HELD_OUT` (AToM trains on the seen prompts only), "other" otherwise (synonyms, new prompts).
A prompt outside the Shapes world ("a teapot") is generated and listed, without GT metrics.

Prints a per-prompt table and a summary (overall and per split, via `atom.data.summarize`),
writes everything as JSON (`--json`; non-finite numbers become null) and a turntable grid
(`--grid`; one row per prompt, one column per view, lambertian light from the camera, white
background, a label strip naming the prompt and the verdict), and an overview (`--overview`; one
view per prompt as the shape x color table, held-out pairs framed black, wrong meshes red), both
drawn by train/eval_figures.py.

The training script and the model card call `evaluate(pipe, prompts)` and
`card_metrics(result)`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from card import SUMMARY_FILE, write_card
from eval_figures import save_grid, save_overview
from prompt_sets import load_prompts

from atom.data import HELD_OUT, SEEN, evaluate_mesh, parse_prompt, summarize

logger = logging.getLogger("evaluate")

SPLITS = ("seen", "held_out", "other")
METRIC_KEYS = ("accuracy", "shape_accuracy", "color_accuracy", "mean_chamfer", "mean_iou")
_SEEN_PROMPTS = frozenset(r.prompt for r in SEEN)
_HELD_OUT_PROMPTS = frozenset(r.prompt for r in HELD_OUT)
_SEEN_PAIRS = frozenset((r.shape, r.color) for r in SEEN)
_HELD_OUT_PAIRS = frozenset((r.shape, r.color) for r in HELD_OUT)

# For the model card (`atom.hub.render_model_card`'s "metrics_description"), with `card_metrics`.
METRICS_DESCRIPTION = (
    "Ground truth of the Shapes world, per prompt: the mesh's nearest of the 8 primitives (symmetric Chamfer "
    "distance, 10,000 surface samples) and nearest of the 8 colors (area-weighted mean albedo). Accuracy: both "
    "right (the stand-in for CLIP R-precision). Mean Chamfer distance (world units) and volume IoU (64^3 grid) "
    "to the prompt's primitive. Seen: the 56 training prompts; held_out: the 8 diagonal prompts AToM never saw."
)

# A model is an AToMPipeline (batched) or any callable prompt -> trimesh.Trimesh.
MeshModel = Callable[[str], trimesh.Trimesh]


def prompt_split(prompt: str) -> str:
    """"seen" / "held_out" if `prompt` is exactly a prompt of `SEEN` / `HELD_OUT`, else "other"."""
    if prompt in _SEEN_PROMPTS:
        return "seen"
    return "held_out" if prompt in _HELD_OUT_PROMPTS else "other"


def pair_split(shape: str | None, color: str | None) -> str | None:
    """The split of the (shape, color) pair a prompt names, whatever its wording ("a red ball"
    names the held-out pair of "a red sphere"); None for prompts outside the Shapes world."""
    if (shape, color) in _SEEN_PAIRS:
        return "seen"
    return "held_out" if (shape, color) in _HELD_OUT_PAIRS else None


def _is_pipeline(model: Any) -> bool:
    return hasattr(model, "mesh_generator") and hasattr(model, "text_to_triplane")


def generate_meshes(
    model: Any,
    prompts: Sequence[str],
    marching_resolution: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[list[trimesh.Trimesh], list[float]]:
    """One mesh per prompt.

    Args:
        model: an `AToMPipeline` (called in chunks of `batch_size` prompts) or a callable
            prompt (str) -> `trimesh.Trimesh` (e.g. a baseline or the true primitives).
        marching_resolution: for a pipeline; None is the model's default.

    Returns:
        (meshes, seconds): the meshes, and the generation time per prompt (a chunk's time is
        shared equally by its prompts).
    """
    meshes, seconds = [], []
    if _is_pipeline(model):
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="generating", unit="batch", disable=not progress):
            chunk = list(prompts[start : start + batch_size])
            tic = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # empty meshes are reported in the table
                out = model(chunk, marching_resolution=marching_resolution, batch_size=batch_size, progress=False)
            elapsed = time.perf_counter() - tic
            meshes.extend(out.meshes)
            seconds.extend([elapsed / len(chunk)] * len(chunk))
    elif callable(model):
        for prompt in tqdm(prompts, desc="generating", unit="prompt", disable=not progress):
            tic = time.perf_counter()
            meshes.append(model(prompt))
            seconds.append(time.perf_counter() - tic)
    else:
        raise TypeError(f"model must be an AToMPipeline or a callable prompt -> trimesh.Trimesh, got {type(model).__name__}")
    if len(meshes) != len(prompts):
        raise ValueError(f"the model returned {len(meshes)} meshes for {len(prompts)} prompts")
    return meshes, seconds


def surface_genus(mesh: trimesh.Trimesh) -> int | None:
    """Genus of the mesh's largest connected part (1 for a torus with its hole, 0 for a disc
    without one), or None when that part is not a closed surface or the mesh is empty. The
    nearest-primitive metric alone calls a flat disc a torus."""
    if len(mesh.faces) == 0:
        return None
    merged = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    largest = max(merged.split(only_watertight=False), key=lambda part: len(part.faces))
    if not largest.is_watertight:
        return None
    return int(round((2 - largest.euler_number) / 2))


def score_mesh(prompt: str, mesh: trimesh.Trimesh, num_samples: int = 10_000, seed: int = 0) -> dict:
    """The record of one prompt: its split, mesh size, and the GT metrics when it parses.

    Returns:
        dict with `prompt`, `split`, `pair_split`, `parsed`, `num_vertices`, `num_faces`,
        `empty`, `genus` (see `surface_genus`), and (parsed prompts) the fields of
        `evaluate_mesh`; for a prompt that does not parse, `shape`/`color` and every metric
        are None.
    """
    parsed = parse_prompt(prompt)
    record = {
        "prompt": prompt,
        "split": prompt_split(prompt),
        "pair_split": pair_split(*parsed) if parsed else None,
        "parsed": parsed is not None,
        "num_vertices": len(mesh.vertices),
        "num_faces": len(mesh.faces),
        "empty": bool(len(mesh.faces) == 0),
        "genus": surface_genus(mesh),
    }
    if parsed is None:
        record.update(dict.fromkeys(("shape", "color", "chamfer", "volume_iou", "nearest_shape", "mean_albedo",
                                     "nearest_color", "shape_correct", "color_correct", "correct")))
        return record
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty / uncolored meshes: scored as wrong, flagged by `empty`
        record.update(evaluate_mesh(mesh, *parsed, num_samples=num_samples, seed=seed))
    return record


def evaluate(
    model: Any,
    prompts: Sequence[str],
    marching_resolution: int | None = None,
    batch_size: int = 8,
    num_samples: int = 10_000,
    seed: int = 0,
    progress: bool = True,
    return_meshes: bool = False,
) -> dict:
    """Ground-truth metrics of `model` on `prompts`.

    Args:
        model: an `AToMPipeline` or a callable prompt -> `trimesh.Trimesh` (see `generate_meshes`).
        prompts: the prompts (see `train/prompt_sets.py`'s `load_prompts` for named sets).
        marching_resolution: tet-grid resolution for a pipeline (None: its default).
        batch_size: prompts per pipeline call.
        num_samples: surface samples per mesh for the Chamfer distance (`evaluate_mesh`).
        seed: seeds the surface sampling.
        return_meshes: also return the meshes (not JSON-serializable) under "meshes".

    Returns:
        dict with
        "records": one dict per prompt, in order (see `score_mesh`; plus `generate_seconds`);
        "summary": `summarize` over the prompts that parse (count, accuracy, shape_accuracy,
            color_accuracy, mean_chamfer, mean_iou, and "splits": {split: the same}), or None
            when none parses;
        "unparsed": prompts outside the Shapes world;
        "settings": the arguments; "seconds": {"generate", "score", "total"}.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("evaluate needs at least one prompt")
    tic = time.perf_counter()
    meshes, gen_seconds = generate_meshes(model, prompts, marching_resolution, batch_size, progress)
    generated = time.perf_counter()
    records = []
    for prompt, mesh, sec in tqdm(list(zip(prompts, meshes, gen_seconds)), desc="scoring", unit="prompt", disable=not progress):
        record = score_mesh(prompt, mesh, num_samples=num_samples, seed=seed)
        record["generate_seconds"] = sec
        records.append(record)
    done = time.perf_counter()
    scored = [r for r in records if r["parsed"]]
    result = {
        "records": records,
        "summary": summarize(scored) if scored else None,
        "unparsed": [r["prompt"] for r in records if not r["parsed"]],
        "settings": {"marching_resolution": marching_resolution, "batch_size": batch_size,
                     "num_samples": num_samples, "seed": seed, "num_prompts": len(prompts)},
        "seconds": {"generate": generated - tic, "score": done - generated, "total": done - tic},
    }
    if return_meshes:
        result["meshes"] = meshes
    return result


def ordered_splits(summary: dict) -> list[tuple[str, dict]]:
    """The per-split summaries in the order seen, held_out, other (those present)."""
    splits = summary.get("splits", {})
    return [(name, splits[name]) for name in sorted(splits, key=lambda n: SPLITS.index(n) if n in SPLITS else len(SPLITS))]


def card_metrics(result: dict) -> dict[str, dict[str, float]]:
    """{split: {metric: value}} for the model card (`atom.hub.render_model_card`'s "metrics"):
    the splits present, then "all"; accuracies in percent, Chamfer and IoU rounded."""
    summary = result["summary"]
    if summary is None:
        return {}

    def row(s: dict) -> dict[str, float]:
        return {
            "prompts": s["count"],
            "accuracy (%)": round(100 * s["accuracy"], 1),
            "shape accuracy (%)": round(100 * s["shape_accuracy"], 1),
            "color accuracy (%)": round(100 * s["color_accuracy"], 1),
            "mean Chamfer": round(s["mean_chamfer"], 4) if math.isfinite(s["mean_chamfer"]) else float("inf"),
            "mean volume IoU": round(s["mean_iou"], 3),
        }

    rows = {name: row(s) for name, s in ordered_splits(summary)}
    rows["all"] = row(summary)
    return rows


# ---- report --------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf"
    return format(value, spec)


def format_table(result: dict) -> str:
    """The per-prompt table and the summary, as text."""
    width = max(24, *(len(r["prompt"]) for r in result["records"]))
    head = f"{'prompt':<{width}}  {'split':<8}  {'chamfer':>8}  {'IoU':>5}  {'nearest shape':<13}  {'nearest color':<13}  ok"
    lines = [head, "-" * len(head)]
    for r in result["records"]:
        ok = "-" if not r["parsed"] else ("yes" if r["correct"] else "NO")
        lines.append(
            f"{r['prompt']:<{width}}  {r['split']:<8}  {_fmt(r['chamfer'], '8.4f'):>8}  {_fmt(r['volume_iou'], '5.3f'):>5}  "
            f"{_fmt(r['nearest_shape'], ''):<13}  {_fmt(r['nearest_color'], ''):<13}  {ok}"
            + ("  (empty mesh)" if r["empty"] else "")
        )
    summary = result["summary"]
    lines.append("")
    if summary is None:
        lines.append("no prompt of the Shapes world: no ground-truth metrics")
    else:
        head = f"{'split':<10} {'prompts':>7} {'accuracy':>9} {'shape acc':>9} {'color acc':>9} {'chamfer':>8} {'IoU':>6}"
        lines += [head, "-" * len(head)]
        for name, s in [*ordered_splits(summary), ("all", summary)]:
            lines.append(
                f"{name:<10} {s['count']:>7} {100 * s['accuracy']:>8.1f}% {100 * s['shape_accuracy']:>8.1f}% "
                f"{100 * s['color_accuracy']:>8.1f}% {_fmt(s['mean_chamfer'], '8.4f'):>8} {s['mean_iou']:>6.3f}"
            )
    if result["unparsed"]:
        lines.append(f"not in the Shapes world (no GT metrics): {', '.join(result['unparsed'])}")
    tori = [r for r in result["records"] if r["parsed"] and r["shape"] == "torus"]
    if tori:
        holes = sum(1 for r in tori if r["genus"] is not None and r["genus"] >= 1)
        lines.append(f"torus prompts whose mesh has a hole (genus >= 1): {holes} of {len(tori)}")
    empty = sum(r["empty"] for r in result["records"])
    if empty:
        lines.append(f"{empty} empty mesh(es): scored as wrong, Chamfer inf (the mean Chamfer is then inf)")
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """Non-finite floats -> None (strict JSON), tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(result: dict, path: str | Path, extra: dict | None = None) -> Path:
    """Writes `result` (without meshes) plus `extra` as strict JSON (inf / nan -> null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in result.items() if k != "meshes"}
    data.update(extra or {})
    path.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    return path


# ---- loading -------------------------------------------------------------------------------


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a train_atom.py checkpoint folder (`<run>/checkpoint-N`)."""
    path = Path(path)
    return (path / "model.safetensors").is_file() and (path / "trainer_state.json").is_file()


def load_model(name_or_path: str, device: str = "cpu"):
    """An AToMPipeline from a pipeline folder, a Hub id, or a train_atom.py checkpoint folder.

    A checkpoint holds the trained modules only: the pipeline is rebuilt as its run built it
    (`train_atom.build_pipeline` on the run's config.json), and the checkpoint's
    text-to-triplane and mesh-generator weights are loaded into it."""
    from safetensors.torch import load_file

    from atom.pipeline import AToMPipeline

    if not is_checkpoint(name_or_path):
        return AToMPipeline.from_pretrained(name_or_path).to(device)
    config_path = Path(name_or_path).parent / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{name_or_path} looks like a checkpoint, but its run folder has no config.json")
    from train_atom import AtomConfig, build_pipeline

    pipe = build_pipeline(AtomConfig(**json.loads(config_path.read_text())))
    state = load_file(Path(name_or_path) / "model.safetensors")
    for name in ("text_to_triplane", "mesh_generator"):
        prefix = name + "."
        getattr(pipe, name).load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return pipe.to(device)


# ---- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="AToM pipeline folder, Hub repo id, or a train_atom.py checkpoint folder (<run>/checkpoint-N)")
    parser.add_argument("--prompts", default="shapes64",
                        help="named set (shapes64, shapes64-seen, shapes64-held-out, ...), .txt / .json file")
    parser.add_argument("--resolution", type=int, default=None, help="marching resolution (default: the model's)")
    parser.add_argument("--batch_size", type=int, default=8, help="prompts per forward pass")
    parser.add_argument("--num_samples", type=int, default=10_000, help="surface samples per mesh (Chamfer)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the surface sampling")
    parser.add_argument("--json", default=None, help="write every record and the summary here")
    parser.add_argument("--grid", default=None, help="write a turntable image grid here (.png)")
    parser.add_argument("--views", type=int, default=4, help="turntable views per prompt in the grid")
    parser.add_argument("--grid_resolution", type=int, default=96, help="pixels per grid cell")
    parser.add_argument("--overview", default=None,
                        help="write one view per prompt as the shape x color table here (.png; the model card's samples.png)")
    parser.add_argument("--device", default="cpu", help="torch device for the pipeline")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is much faster when another job shares a 2-core machine)")
    parser.add_argument("--write_card", action="store_true",
                        help="(re)write the model folder's README.md card with these metrics (train/card.py)")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.views < 1:
        raise ValueError(f"--views must be >= 1, got {args.views}")
    if args.write_card and not (Path(args.model) / SUMMARY_FILE).is_file():
        raise ValueError(f"--write_card needs a local folder that train_atom.py saved ({args.model}/{SUMMARY_FILE} is missing)")
    if args.threads:
        torch.set_num_threads(args.threads)

    prompts = load_prompts(args.prompts)
    tic = time.perf_counter()
    pipe = load_model(args.model, args.device)
    load_seconds = time.perf_counter() - tic
    result = evaluate(pipe, prompts, args.resolution, args.batch_size, args.num_samples, args.seed,
                      progress=not args.no_progress, return_meshes=bool(args.grid or args.overview))
    result["seconds"]["load"] = load_seconds
    print(format_table(result))
    print(f"\n{len(prompts)} prompts: load {load_seconds:.1f} s, generate {result['seconds']['generate']:.1f} s, "
          f"score {result['seconds']['score']:.1f} s")
    if args.grid:
        tic = time.perf_counter()
        path = save_grid(result, args.grid, args.views, args.grid_resolution, progress=not args.no_progress)
        result["seconds"]["grid"] = time.perf_counter() - tic
        print(f"grid: {path}")
    if args.overview:
        tic = time.perf_counter()
        path = save_overview(result, args.overview, args.grid_resolution, progress=not args.no_progress)
        result["seconds"]["overview"] = time.perf_counter() - tic
        print(f"overview: {path}")
    if args.json:
        path = write_json(result, args.json, {"model": args.model, "prompt_set": args.prompts,
                                              "card_metrics": card_metrics(result)})
        print(f"json: {path}")
    if args.write_card:
        print(f"card: {write_card(args.model, card_metrics(result), METRICS_DESCRIPTION, pipe, repo_id=args.model)}")
    return result


if __name__ == "__main__":
    main()
