"""The representation's ceiling: how close AToM's generator gets to the Shapes world with no teacher.

    python benchmarks/ceiling.py --json runs/ceiling-recipe.json            # the recipe's resolutions
    python benchmarks/ceiling.py --scale up --json runs/ceiling-up.json     # tet grid 64, raster 128
    python benchmarks/ceiling.py --quick                                    # a tiny run (the tests)
    python benchmarks/ceiling.py --shapes torus --skip_stage2_alone         # one prompt, not amortized

The generator (text -> triplane -> SDF / deformation / color, the `shapes` preset with MiniLM) is
fitted, amortized over 8 prompts (one per shape; one color each, seen pairs) as training is, to
ground-truth renders of the true primitives at the same cameras and lights: a photometric loss
instead of SDS, with every other piece of `train/train_atom.py` as the recipe sets it (AToMModel's
renders and regularizers, cameras, lights, learning rates, warm-up and decay, clipping). Runs:

- "stage 1": `--stage1_steps` steps of NeuS volume rendering at `stage1_resolution`;
- "stage 1 + 2": then `--stage2_steps` steps of DMTet rasterization at `stage2_resolution` on the
  tet grid `stage2_tet_resolution`, deformation included (the same run, measured at both points);
- "stage 2 alone": `stage1_steps + stage2_steps` steps of stage 2 from the sphere start.

Each model is scored with train/evaluate.py (Chamfer to the true primitive per shape, accuracy) at
the model's own marching resolution and at the stage-2 tet resolution. What this splits: error that
remains here is the representation's or the renderer's (tet resolution, deformation bound, NeuS
bias, rasterizer gradients), error beyond it in a distilled model is the teacher's.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "train"))
import evaluate as evaluation  # noqa: E402
import train_atom  # noqa: E402
from stage_schedule import apply_step_schedule, elevation_range_of  # noqa: E402

from atom.data import COLORS, SHAPES, prompt_for  # noqa: E402
from atom.data.renders import mesh_for  # noqa: E402
from atom.pipeline import AToMPipeline  # noqa: E402
from atom.render import render_mesh, sample_cameras, sample_light_directions  # noqa: E402

# One seen (shape, color) pair per shape: shape i with color i + 1 (the diagonal is held out).
PAIRS = [(shape, list(COLORS)[(i + 1) % len(COLORS)]) for i, shape in enumerate(SHAPES)]
SCALES = {
    "recipe": {},  # train/configs/shapes64.yaml as it is
    "up": {"stage2_tet_resolution": 64, "stage2_resolution": 128},
    "quick": {"model_preset": "tiny", "prompts_per_step": 2, "stage1_resolution": 16, "stage1_samples": 16,
              "eikonal_points": 64, "stage2_resolution": 24, "stage2_tet_resolution": 12, "warmup_steps": 1},
}


def photometric_loss(rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 |x - x_true|^2 per image in the teacher's model space (x = 2 rgb - 1), summed over
    pixels and averaged over the batch: SDS's loss with the true image as its target.

    Args:
        rgb, target: (B, 3, H, W) in [0, 1].
    """
    return 0.5 * F.mse_loss(2 * rgb - 1, 2 * target - 1, reduction="sum") / rgb.shape[0]


@torch.no_grad()
def true_renders(pairs: list[tuple[str, str]], cameras, light, resolution: int, cfg) -> torch.Tensor:
    """(B, 3, H, W) renders of the true primitives, one per (pair, camera), shaded as training
    renders (and the teacher's data: 2x supersampled)."""
    images = []
    for i, (shape, color) in enumerate(pairs):
        out = render_mesh(mesh_for(shape, color), cameras[i : i + 1], resolution * 2, light[i : i + 1], cfg.shading,
                          cfg.background)
        images.append(F.avg_pool2d(out["rgb"], 2))
    return torch.cat(images)


def fit(pipe: AToMPipeline, cfg, stages: list[tuple[int, int]], seed: int, on_stage_end, progress: bool = True,
        pairs: list[tuple[str, str]] = PAIRS) -> list:
    """Trains `pipe` in place on `pairs` through `stages` [(stage, steps), ...] with one optimizer,
    as train_atom.py does; calls `on_stage_end(stage_index)` after each. Returns the loss curve."""
    model = train_atom.AToMModel(pipe, cfg)
    optimizer = train_atom.build_optimizer(model, cfg)
    embeds, mask = pipe.encode_prompt([prompt_for(s, c) for s, c in pairs])
    total = sum(steps for _, steps in stages)
    # The learning rates as train_atom.py schedules these stages: a run of one stage, or of stage 1
    # then stage 2 switching after the first.
    if [stage for stage, _ in stages] not in ([1], [2], [1, 2]):
        raise ValueError(f"stages must be [(1, n)], [(2, n)] or [(1, n), (2, m)], got {stages}")
    cfg.max_train_steps = total
    cfg.stage, cfg.stage1_steps = (0, stages[0][1]) if len(stages) == 2 else (stages[0][0], total)
    curve, step = [], 0
    bar = tqdm(total=total, desc="ceiling", disable=not progress)
    for index, (stage, steps) in enumerate(stages):
        for _ in range(steps):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            rng = random.Random(gen.initial_seed())
            pick = [rng.randrange(len(pairs)) for _ in range(cfg.prompts_per_step)]
            views = [pairs[i] for i in pick for _ in range(cfg.views_per_prompt)]
            cameras = sample_cameras(len(views), elevation_range=elevation_range_of(stage, cfg),
                                     distance_range=tuple(cfg.distance_range), fovy_range=tuple(cfg.fovy_range), generator=gen)
            light = sample_light_directions(cameras, cfg.light_jitter_deg, generator=gen)
            apply_step_schedule(step, cfg, optimizer, model.neus)
            out = model(embeds[pick], mask[pick], cameras, light, stage)
            target = true_renders(views, cameras, light, out["rgb"].shape[-1], cfg)
            loss = photometric_loss(out["rgb"], target) + out["regularizer"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            curve.append(round(loss.item(), 4))
            step += 1
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{loss.item():.3f}")
        on_stage_end(index)
    bar.close()
    return curve


def score(pipe: AToMPipeline, resolutions: list[int], pairs: list[tuple[str, str]] = PAIRS) -> dict:
    """Chamfer per shape, mean Chamfer, volume IoU and accuracy at each marching resolution."""
    prompts = [prompt_for(s, c) for s, c in pairs]
    scores = {}
    for res in dict.fromkeys(resolutions):
        result = evaluation.evaluate(pipe, prompts, marching_resolution=res, num_samples=5000, progress=False)
        records = result["records"]
        scores[str(res)] = {
            "chamfer": {r["shape"]: r["chamfer"] for r in records},
            "mean_chamfer": result["summary"]["mean_chamfer"],
            "mean_iou": result["summary"]["mean_iou"],
            "accuracy": result["summary"]["accuracy"],
            "tori_with_hole": sum(r["genus"] == 1 for r in records if r["shape"] == "torus"),
        }
    return scores


def run(scale: str, stage1_steps: int, stage2_steps: int, seed: int, config: Path, progress: bool = True,
        stage2_alone: bool = True, shapes: list[str] | None = None) -> dict:
    """The runs of the module docstring at one scale ("stage 2 alone" only if `stage2_alone`), on
    the pairs of `shapes` (default: all 8); returns their scores and costs."""
    pairs = [pair for pair in PAIRS if pair[0] in shapes] if shapes else PAIRS
    values = yaml.safe_load(config.read_text())
    values.update(SCALES[scale])
    values["seed"] = seed
    results = {"scale": scale, "settings": {k: values.get(k) for k in (
        "model_preset", "stage1_resolution", "stage1_samples", "stage2_resolution", "stage2_tet_resolution",
        "learning_rate", "prompts_per_step", "elevation_range", "model_overrides")}, "pairs": pairs,
        "steps": {"stage 1": stage1_steps, "stage 2": stage2_steps}, "runs": {}}

    def new_pipe(cfg) -> AToMPipeline:
        torch.manual_seed(seed)
        return AToMPipeline.from_components(cfg.model_preset, **cfg.model_overrides)

    cfg = train_atom.AtomConfig(**values)
    pipe = new_pipe(cfg)
    resolutions = [pipe.mesh_generator.config.tet_resolution, cfg.stage2_tet_resolution]
    clock = {"start": time.perf_counter()}

    def after_stage(index: int) -> None:
        name = ["stage 1", "stage 1 + 2"][index]
        results["runs"][name] = {"seconds": time.perf_counter() - clock["start"], "scores": score(pipe, resolutions, pairs)}

    curve = fit(pipe, cfg, [(1, stage1_steps), (2, stage2_steps)], seed, after_stage, progress, pairs)
    results["runs"]["stage 1"]["loss"] = curve[:stage1_steps]
    results["runs"]["stage 1 + 2"]["loss"] = curve[stage1_steps:]

    if not stage2_alone:
        return results
    cfg = train_atom.AtomConfig(**values)
    pipe = new_pipe(cfg)
    clock["start"] = time.perf_counter()

    def after_stage2_alone(index: int) -> None:
        results["runs"]["stage 2 alone"] = {"seconds": time.perf_counter() - clock["start"],
                                            "scores": score(pipe, resolutions, pairs)}

    results["runs"]["stage 2 alone"] = {}
    curve = fit(pipe, cfg, [(2, stage1_steps + stage2_steps)], seed, after_stage2_alone, progress, pairs)
    results["runs"]["stage 2 alone"]["loss"] = curve
    return results


def format_table(results: dict) -> str:
    """One row per (run, marching resolution): Chamfer per shape and the mean."""
    shapes = [shape for shape, _ in results["pairs"]]
    head = ["run", "res", *shapes, "mean", "IoU", "acc", "tori", "min"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, run_result in results["runs"].items():
        for res, s in run_result["scores"].items():
            cells = [name, res, *(f"{s['chamfer'][shape]:.4f}" for shape in shapes), f"**{s['mean_chamfer']:.4f}**",
                     f"{s['mean_iou']:.3f}", f"{100 * s['accuracy']:.0f} %", str(s["tori_with_hole"]),
                     f"{run_result['seconds'] / 60:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=("recipe", "up"), default="recipe")
    parser.add_argument("--config", type=Path, default=ROOT / "train" / "configs" / "shapes64.yaml")
    parser.add_argument("--stage1_steps", type=int, default=600)
    parser.add_argument("--stage2_steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes, a few steps (tests)")
    parser.add_argument("--json", type=Path, help="write the scores, loss curves and settings here")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, help="fit only these shapes' pairs (default: all 8)")
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument("--skip_stage2_alone", action="store_true", help="only stage 1 and stage 1 + 2")
    args = parser.parse_args(argv)
    if args.stage1_steps < 1 or args.stage2_steps < 1:
        parser.error("--stage1_steps and --stage2_steps must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = "quick" if args.quick else args.scale
    results = run(scale, args.stage1_steps, args.stage2_steps, args.seed, args.config, progress=not args.no_progress,
                  stage2_alone=not args.skip_stage2_alone, shapes=args.shapes)
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
