"""Per-prompt baseline: the same generator, teacher and SDS as train_atom.py, but a fresh model
optimized for one prompt at a time, as per-prompt methods (DreamFusion, Magic3D) work. This is
the training-cost comparison of the paper: N prompts cost N runs here, one run amortized.

    accelerate launch train/train_per_prompt.py --config train/configs/shapes64.yaml \
        --steps 300 --limit 8 --output_dir runs/per-prompt
    (add --resume true to continue a killed run: finished prompts are skipped, the current one
    resumes from its latest checkpoint)

Each prompt's run is train_atom.py with `--prompts [prompt]` (every step renders
`prompts_per_step` views of that one prompt), `--max_train_steps --steps` and `stage1_steps`
scaled by the config's stage-1 share; any other `--field value` is passed on to it. Results go to
`output_dir/<prompt-slug>/pipeline`; `output_dir/per_prompt_summary.json` gathers each prompt's
wall-clock time and, with `--evaluate true` (default), the ground-truth metrics of every
prompt's own model on its prompt (train/evaluate.py), next to the total cost.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as evaluation  # noqa: E402
import train_atom  # noqa: E402
from card import SUMMARY_FILE  # noqa: E402
from prompt_sets import load_prompts  # noqa: E402

from atom.__main__ import slugify  # noqa: E402
from atom.pipeline import AToMPipeline  # noqa: E402

logger = logging.getLogger("train_per_prompt")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="train_atom.py YAML config")
    parser.add_argument("--output_dir", default="runs/per-prompt")
    parser.add_argument("--prompts", default=None, help="named set, .txt/.json file (default: the config's prompts)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--steps", type=int, default=None, help="steps per prompt (default: the config's max_train_steps)")
    parser.add_argument("--resume", type=yaml.safe_load, default=False, help="skip finished prompts, resume the current one")
    parser.add_argument("--evaluate", type=yaml.safe_load, default=True, help="score every prompt's model (train/evaluate.py)")
    args, passthrough = parser.parse_known_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    return args, passthrough


def run_argv(args: argparse.Namespace, cfg: dict, prompt: str, run_dir: Path, passthrough: list[str]) -> list[str]:
    """train_atom.py's command line for one prompt."""
    total = args.steps or cfg.get("max_train_steps", train_atom.AtomConfig.max_train_steps)
    full = cfg.get("max_train_steps", train_atom.AtomConfig.max_train_steps)
    stage1 = cfg.get("stage1_steps", train_atom.AtomConfig.stage1_steps)
    argv = [
        "--config", args.config,
        "--output_dir", str(run_dir),
        "--prompts", json.dumps([prompt]),
        "--validation_prompts", json.dumps([prompt]),
        "--max_train_steps", str(total),
        "--stage1_steps", str(round(total * min(stage1, full) / full)),
        "--init_from", "null",
        "--push_to_hub", "false",
    ]
    if args.resume:
        argv += ["--resume_from_checkpoint", "latest"]
    return argv + passthrough


def main(argv: list[str] | None = None, on_snapshot: Callable[[str, int, Path], bool] | None = None) -> dict:
    """Runs every prompt (see the module docstring). `on_snapshot(prompt, step, folder)`, called
    after each of a prompt's snapshots (`--snapshot_steps`), ends that prompt's run when it
    returns True: a run until it is as good as a reference."""
    args, passthrough = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with open(args.config) as f:
        cfg = yaml.safe_load(f) or {}
    prompts = load_prompts(args.prompts or cfg.get("prompts", train_atom.AtomConfig.prompts))[: args.limit]
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    runs = []
    for i, prompt in enumerate(prompts):
        run_dir = out_dir / slugify(prompt)
        summary_file = run_dir / "pipeline" / SUMMARY_FILE
        if args.resume and summary_file.is_file():
            logger.info("[%d/%d] %s: done already, skipped", i + 1, len(prompts), prompt)
        else:
            logger.info("[%d/%d] %s", i + 1, len(prompts), prompt)
            stop = None if on_snapshot is None else partial(on_snapshot, prompt)
            train_atom.main(run_argv(args, cfg, prompt, run_dir, passthrough), on_snapshot=stop)
        runs.append({"prompt": prompt, "pipeline": str(run_dir / "pipeline"), **json.loads(summary_file.read_text())})

    total = sum(r["wall_seconds"] for r in runs)
    result = {
        "prompts": len(runs),
        "steps_per_prompt": max(r["steps"] for r in runs),  # a run that on_snapshot stopped has fewer
        "total_wall_seconds": round(total, 1),
        "mean_wall_seconds_per_prompt": round(total / len(runs), 1),
        "runs": runs,
    }
    if args.evaluate:
        pipes = {r["prompt"]: AToMPipeline.from_pretrained(r["pipeline"]) for r in runs}
        scores = evaluation.evaluate(lambda p: pipes[p](p).meshes[0], [r["prompt"] for r in runs], progress=False)
        result["evaluation"] = {"summary": scores["summary"], "records": scores["records"]}
        print(evaluation.format_table(scores))
    evaluation.write_json(result, out_dir / "per_prompt_summary.json")
    logger.info("%d prompts, %.0f s in all (%.0f s per prompt): %s", result["prompts"], result["total_wall_seconds"],
                result["mean_wall_seconds_per_prompt"], out_dir / "per_prompt_summary.json")
    return result


if __name__ == "__main__":
    main()
