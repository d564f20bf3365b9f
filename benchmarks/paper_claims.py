"""The paper's claims, measured at Shapes scale with the project's own scripts: one table.

    python benchmarks/paper_claims.py all --work_dir runs/paper-claims       # rerun to resume
    python benchmarks/paper_claims.py stages hypernetwork --work_dir runs/paper-claims
    python benchmarks/paper_claims.py all --quick                             # tiny scale (the tests)

Claims (../shared/PAPER_NOTES.md) and what each trains, all with `train/train_atom.py` on the
`--config` recipe (default train/configs/shapes64.yaml), every variant at the same step budget
`--steps` (stage 1 for the recipe's share of it) on the seen prompts, scored by
`train/evaluate.py` on the seen and held-out prompts:

- cost: per-prompt runs (`train/train_per_prompt.py`, same generator, teacher, SDS and stages) on
  one seen prompt per shape, with a snapshot every `--per_prompt_snapshot` steps, each run until
  its first snapshot as good as the amortized model (`--amortized`) on that prompt (right shape
  and color if it has them, and a Chamfer distance no larger) or `--per_prompt_steps`; that
  snapshot's training time is the prompt's cost. Amortized: its training time over its prompts.
- stages: stage 1 alone, stage 2 alone (DMTet from the sphere start), stage 1 then 2 (`--seeds`);
  a second seed of either alone when its first is within the baseline's seed spread.
- hypernetwork: the triplane network against an ATT3D-style hypernetwork of about its size
  (`<preset>-hyper`), `--seeds` each; stability from the training logs.
- aware_conv: the text-to-triplane network with and without 3D-aware convolution, `--seeds` each.
- interpolation: meshes for blends of prompt pairs (`AToMPipeline.interpolate`) of `--amortized`;
  the Chamfer and albedo distance between neighbouring blends.
- inference: seconds per prompt of `--amortized`, batch 1 and 8.

Each row of the table names the commit its claim was measured at (`git show <commit>:train/configs/
shapes64.yaml` gives that recipe): the recipe is part of each run's key, so a changed config trains
its runs afresh, and a claim keeps the row of its last sitting until it is run again.

Every training run lives in `work_dir/<name>` and resumes from its checkpoints. Each scored run
(its scores, training time and loss curve, keyed by its arguments, the recipe, the teacher's
weights and the scoring settings) and each claim merge into the results file `--json`
(docs/paper_claims.json, committed), which later sittings reuse even on a machine without the run
folders; `docs/paper_claims.md` (`--markdown`) and its figures are written from it
(benchmarks/claims_report.py; the measures are in benchmarks/claims_metrics.py). Runs of a claim
can train side by side, one process a shard, then be scored in one sitting:

    OMP_NUM_THREADS=1 python benchmarks/paper_claims.py hypernetwork --train_only --shard 0/2 &
    OMP_NUM_THREADS=1 python benchmarks/paper_claims.py hypernetwork --train_only --shard 1/2
    python benchmarks/paper_claims.py hypernetwork
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "train"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import claims_report  # noqa: E402
import evaluate as evaluation  # noqa: E402
import train_atom  # noqa: E402
import train_per_prompt  # noqa: E402
from card import SUMMARY_FILE, stage_seconds_total  # noqa: E402
from claims_metrics import (  # noqa: E402
    interpolation_pairs, parameter_counts, path_smoothness, per_prompt_name, per_prompt_subset, quality, stability,
    time_to_match)
from prompt_sets import load_prompts  # noqa: E402

from atom.__main__ import slugify  # noqa: E402
from atom.data import HELD_OUT, SEEN  # noqa: E402
from atom.pipeline import AToMPipeline  # noqa: E402

logger = logging.getLogger("paper_claims")
CLAIMS = ("cost", "stages", "hypernetwork", "aware_conv", "interpolation", "inference")
# 1,050 steps per variant (875 NeuS + 175 DMTet at shapes64.yaml's 1,500 / 1,800 split). Measured on this
# 2-core CPU, one thread per run with a second run beside it: a recipe-split run 0.83-0.91 h (NeuS 2.1-3.3 s a
# step, DMTet ~7.3 s); stage 2 alone 1.96 h (4.4-5.5 s a DMTet step on 2 threads alone, ~9.5 s beside another
# run); a per-prompt run ~4 s a step, stopped at its first snapshot as good as the amortized model.
FULL = {"config": "train/configs/shapes64.yaml", "steps": 1050, "seeds": [0, 1], "per_prompt_steps": 400,
        "per_prompt_snapshot": 50, "amortized": "pretrained/atom-shapes64", "eval_samples": 10_000,
        "blends": 9, "marching_resolution": None}
QUICK = {"config": "train/configs/tiny.yaml", "steps": 4, "seeds": [0], "per_prompt_steps": 2,
         "per_prompt_snapshot": 1, "amortized": None, "eval_samples": 300, "blends": 3, "marching_resolution": 12}


class Harness:
    """Runs (or reuses) the training runs and scores of the claims under `work_dir`; every scored
    run is kept in the results file (`store`), so that a later sitting on a machine without the
    run folders reuses it."""

    def __init__(self, args: argparse.Namespace, store: dict):
        self.args = args
        self.store = store
        store.setdefault("runs", {})
        self.work = Path(args.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        with open(args.config) as f:
            self.recipe = yaml.safe_load(f) or {}
        self.teacher = args.teacher or self.recipe.get("teacher")
        prompts = load_prompts(self.recipe.get("prompts", "shapes64-seen"))
        self.seen = list(dict.fromkeys(prompts))
        held = [r.prompt for r in HELD_OUT]
        self.held_out = held if set(self.seen) == {r.prompt for r in SEEN} else []
        self.eval_prompts = self.seen + self.held_out
        # Read once: every run's key holds them.
        teacher_files = sorted(Path(self.teacher).rglob("*.safetensors")) if self.teacher else []
        self.teacher_weights = [hashlib.sha1(f.read_bytes()).hexdigest() for f in teacher_files]

    # ---- the runs of each claim ------------------------------------------------------------

    def planned_runs(self, claim: str) -> list[tuple[str, list[str] | str]]:
        """(name, train_atom.py arguments) of the claim's runs, or (name, prompt) of its per-prompt ones."""
        def seeds(prefix: str, extra: list[str]) -> list[tuple[str, list[str]]]:
            return [(f"{prefix}-s{seed}", [*extra, "--seed", str(seed)]) for seed in self.args.seeds]

        triplane = seeds("triplane", [])
        if claim == "stages":  # apart: seeds_needed reads the results file, which the other claims need not
            return (triplane + self.seeds_needed(seeds("stage1-only", ["--stage", "1"]), triplane)
                    + self.seeds_needed(seeds("stage2-only", ["--stage", "2"]), triplane))
        preset = self.recipe.get("model_preset", "shapes")
        first = triplane[:1]
        return {
            "hypernetwork": triplane + seeds("hyper", ["--model_preset", f"{preset}-hyper"]),
            "aware_conv": triplane + seeds("no-aware", ["--model_overrides", "{aware_conv: false}"]),
            "cost": [(per_prompt_name(p), p) for p in per_prompt_subset(self.seen)] + ([] if self.args.amortized else first),
            "interpolation": [] if self.args.amortized else first,
            "inference": [] if self.args.amortized else first,
        }[claim]

    def seeds_needed(self, runs: list[tuple[str, list[str]]], baseline: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
        """A variant's seeds (`runs`): the first, and the others once the first is scored and does
        not differ from the triplane `baseline` runs by more than their seed spread (the
        acceptance: two seeds where a difference is within the seed-to-seed spread)."""
        first = self.cached(runs[0][0], self.run_key(runs[0][1]))
        base = [self.cached(name, self.run_key(extra)) for name, extra in baseline]
        if first is None or None in base or len(base) < 2:
            return runs if first else runs[:1]
        prefix = runs[0][0].rsplit("-s", 1)[0]
        verdict = claims_report.compare(claims_report.variant_means(base, "triplane"),
                                        claims_report.variant_means([first], prefix), claims_report.seed_spread(base))
        return runs[:1] if verdict in ("better", "worse") else runs

    def train_only(self, claims: list[str]) -> list[str]:
        """Trains (or resumes) the runs of `claims` in shard K of N (`--shard K/N`: every Nth run not in
        the results file yet, from the Kth), without scoring: N such processes train side by side, a
        later sitting scores. Returns the names trained."""
        planned = dict(item for claim in claims for item in self.planned_runs(claim))
        todo = [name for name in planned if not self.cached(name, self.run_key(planned[name]))]
        index, count = self.args.shard
        mine = todo[index::count]
        references = None
        for name in mine:
            if isinstance(planned[name], str):
                references = references or self.references()
                self.train_per_prompt(planned[name], references[planned[name]])
            else:
                self.train(name, planned[name])
        return mine

    # ---- training and scoring --------------------------------------------------------------

    def budget_args(self, steps: int) -> list[str]:
        """The same step budget for every variant: stage 1 for the recipe's share of it."""
        total = self.recipe.get("max_train_steps", train_atom.AtomConfig.max_train_steps)
        stage1 = self.recipe.get("stage1_steps", train_atom.AtomConfig.stage1_steps)
        return ["--max_train_steps", str(steps), "--stage1_steps", str(round(steps * min(stage1, total) / total))]

    def common_args(self) -> list[str]:
        teacher = ["--teacher", str(self.teacher)] if self.args.teacher else []
        return ["--config", self.args.config, *teacher, "--validation_steps", "1000000000", "--push_to_hub", "false"]

    def run_key(self, extra: list[str] | str) -> str:
        """What a run's scores depend on: its arguments, the recipe (parsed: comments do not count),
        the teacher's weights and the scoring settings. Code changes do not count: delete a run from
        the results file to train it again."""
        argv = self.per_prompt_argv(extra) if isinstance(extra, str) else [*self.common_args(), *self.budget_args(self.args.steps), *extra]
        settings = [argv, self.recipe, self.teacher_weights, self.eval_prompts, self.args.eval_samples,
                    self.args.marching_resolution]
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def cached(self, name: str, key: str) -> dict | None:
        entry = self.store["runs"].get(name)
        return entry if entry and entry["key"] == key else None

    def save(self) -> None:
        """The results file, after every scored run: a killed sitting keeps what it scored."""
        Path(self.args.json).write_text(json.dumps(self.store, indent=2))

    def train(self, name: str, extra: list[str]) -> Path:
        """train_atom.py into work_dir/name (resumed from its latest checkpoint; skipped when its
        pipeline is saved). Returns the run folder."""
        out = self.work / name
        if not (out / "pipeline" / SUMMARY_FILE).is_file():
            logger.info("training %s", name)
            train_atom.main([*self.common_args(), *self.budget_args(self.args.steps), *extra,
                             "--output_dir", str(out), "--resume_from_checkpoint", "latest"])
        return out

    def run(self, name: str, extra: list[str]) -> dict:
        """The scored summary of run `name`: from the results file when it was scored with the same
        settings, else trained (or resumed) and scored, with its stage-1 model at the switch when it
        saved one (kept as `name/pipeline-stage1`)."""
        key = self.run_key(extra)
        if not self.cached(name, key):
            out = self.train(name, extra)
            for folder, label in (("pipeline", name), ("pipeline-stage1", f"{name}/pipeline-stage1")):
                if (out / folder / SUMMARY_FILE).is_file():
                    self.store["runs"][label] = {"key": key, **self.run_summary(out / folder, label)}
            self.save()
        return self.store["runs"][name]

    def score(self, folder: Path, prompts: list[str] | None = None) -> dict:
        """train/evaluate.py's records and summary of the pipeline in `folder` on `prompts`
        (default: seen and held-out), as JSON (an empty mesh's Chamfer is null)."""
        pipe = AToMPipeline.from_pretrained(folder)
        result = evaluation.evaluate(pipe, prompts or self.eval_prompts, marching_resolution=self.args.marching_resolution,
                                     num_samples=self.args.eval_samples, progress=False)
        return evaluation.json_safe({k: v for k, v in result.items() if k != "meshes"})

    def run_summary(self, folder: Path, name: str) -> dict:
        """Scores, training time and stability of one run's pipeline folder."""
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        result = self.score(folder)
        return {"name": name, "steps": summary["steps"], "train_seconds": sum(stage_seconds_total(summary).values()),
                **quality(result["records"]), **stability(folder.parent / "train_log.jsonl")}

    def amortized_folder(self) -> Path:
        """The amortized model the cost, interpolation and inference claims use: `--amortized`,
        else (quick mode) the triplane run of the first seed."""
        if self.args.amortized:
            return Path(self.args.amortized)
        name, extra = self.planned_runs("stages")[0]
        return self.train(name, extra) / "pipeline"

    def per_prompt_argv(self, prompt: str) -> list[str]:
        """train/train_per_prompt.py's arguments for `prompt`, but its --output_dir and --prompts file."""
        teacher = ["--teacher", str(self.teacher)] if self.args.teacher else []
        return ["--config", self.args.config, "--prompt", prompt, "--steps", str(self.args.per_prompt_steps),
                "--resume", "true", "--evaluate", "false", "--snapshot_steps", str(self.args.per_prompt_snapshot),
                "--validation_steps", "1000000000", *teacher]

    def references(self) -> dict[str, dict]:
        """What each per-prompt run must match: the amortized model's correct / Chamfer on its prompt."""
        records = self.score(self.amortized_folder(), per_prompt_subset(self.seen))["records"]
        return {r["prompt"]: {k: r[k] for k in ("correct", "chamfer")} for r in records}

    def train_per_prompt(self, prompt: str, reference: dict) -> Path:
        """train/train_per_prompt.py on one prompt into work_dir/per-prompt (resumed) until a snapshot
        is as good as `reference` (`time_to_match`) or the budget ends; returns its snapshot folder."""
        out = self.work / "per-prompt"
        prompts_file = out / f"{slugify(prompt)}.json"
        out.mkdir(parents=True, exist_ok=True)
        prompts_file.write_text(json.dumps([prompt]))
        argv = self.per_prompt_argv(prompt)
        argv[argv.index("--prompt"):argv.index("--prompt") + 2] = ["--prompts", str(prompts_file), "--output_dir", str(out)]

        def matched(prompt: str, step: int, snapshot: Path) -> bool:
            return time_to_match([self.snapshot_point(prompt, snapshot)], reference)["matched"]

        train_per_prompt.main(argv, on_snapshot=matched)
        return out / slugify(prompt) / "snapshots"

    def snapshot_point(self, prompt: str, snapshot: Path) -> dict:
        """Steps, training seconds, correct and Chamfer of a per-prompt snapshot on its prompt."""
        record = self.score(snapshot, [prompt])["records"][0]
        seconds = json.loads((snapshot / SUMMARY_FILE).read_text())["wall_seconds"]
        return {"steps": int(snapshot.name.split("-")[1]), "seconds": seconds, "correct": record["correct"],
                "chamfer": record["chamfer"]}

    def per_prompt_curve(self, prompt: str, reference: dict) -> list[dict]:
        """The scored snapshots of the per-prompt run of `prompt`, up to the first as good as
        `reference` or the budget (kept in the results file as `per-prompt/<prompt>`). A kept curve
        serves while it reaches the budget or a snapshot as good as `reference`; else it is run again."""
        name, key = per_prompt_name(prompt), self.run_key(prompt)
        entry = self.cached(name, key)
        if entry and (entry["curve"][-1]["steps"] >= self.args.per_prompt_steps
                      or time_to_match(entry["curve"], reference)["matched"]):
            return entry["curve"]
        if entry:  # stopped at a reference this one beats: the kept run ends too soon
            shutil.rmtree(self.work / "per-prompt" / slugify(prompt), ignore_errors=True)
        snapshots = self.train_per_prompt(prompt, reference)
        self.store["runs"][name] = {"key": key, "curve": [self.snapshot_point(prompt, s) for s in sorted(snapshots.iterdir())]}
        self.save()
        return self.store["runs"][name]["curve"]

    # ---- the claims ------------------------------------------------------------------------

    def stages(self) -> dict:
        runs = {}
        while todo := [r for r in self.planned_runs("stages") if r[0] not in runs]:  # a scored run may call for its second seed
            for name, extra in todo:
                runs[name] = self.run(name, extra)
        switches = []
        for name, run in runs.items():
            switch = self.store["runs"].get(f"{name}/pipeline-stage1")
            if name.startswith("triplane") and switch and switch["key"] == run["key"]:
                switches.append({**switch, "name": f"stage 1 of the same run ({name}, at the switch)"})
        return {"runs": [*runs.values(), *switches], "steps": self.args.steps}

    def hypernetwork(self) -> dict:
        preset = self.recipe.get("model_preset", "shapes")
        return {"runs": [self.run(*r) for r in self.planned_runs("hypernetwork")], "steps": self.args.steps,
                "parameters": parameter_counts(preset)}

    def aware_conv(self) -> dict:
        return {"runs": [self.run(*r) for r in self.planned_runs("aware_conv")], "steps": self.args.steps}

    def cost(self) -> dict:
        amortized = self.amortized_folder()
        summary = json.loads((amortized / SUMMARY_FILE).read_text())
        amortized_seconds = sum(stage_seconds_total(summary).values())
        prompts = []
        for prompt, reference in self.references().items():
            curve = self.per_prompt_curve(prompt, reference)
            prompts.append({"prompt": prompt, "amortized": reference, "curve": curve, **time_to_match(curve, reference)})
        inference = self.inference()["batch_1_seconds"]
        return {"amortized": str(amortized), "amortized_seconds": amortized_seconds,
                "amortized_prompts": summary.get("prompts"), "prompts": prompts, "held_out": len(self.held_out),
                "per_prompt_steps": self.args.per_prompt_steps, "inference_seconds": inference}

    def interpolation(self) -> dict:
        pipe = AToMPipeline.from_pretrained(self.amortized_folder())
        pairs = []
        for a, b in interpolation_pairs(self.seen, self.held_out):
            meshes, finer = (pipe.interpolate(a, b, num=num, marching_resolution=self.args.marching_resolution).meshes
                             for num in (self.args.blends, 2 * self.args.blends - 1))
            path, fine = path_smoothness(meshes, self.args.eval_samples), path_smoothness(finer, self.args.eval_samples)
            # Halving the blend step halves a continuous path's largest step; a jump keeps its size.
            refinement = {f"{k}_refinement": max(fine[f"{k}_steps"]) / max(max(path[f"{k}_steps"]), 1e-9)
                          for k in ("geometry", "color")}
            pairs.append({"from": a, "to": b, **path, **refinement, "meshes": meshes})
        claims_report.save_interpolation_figure(pairs, self.figures / "interpolation.png")
        for pair in pairs:
            pair.pop("meshes")
        return {"pairs": pairs, "blends": self.args.blends, "figure": "interpolation.png"}

    def inference(self) -> dict:
        pipe = AToMPipeline.from_pretrained(self.amortized_folder())
        prompts = (self.eval_prompts * 2)[:16]
        pipe(prompts[:2])  # warm-up: tet grids, kernels
        single = []
        for prompt in prompts[:8]:
            tic = time.perf_counter()
            pipe(prompt)
            single.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        pipe(prompts[:8], batch_size=8)
        batched = (time.perf_counter() - tic) / 8
        return {"batch_1_seconds": statistics.median(single), "batch_8_seconds_per_prompt": batched,
                "threads": torch.get_num_threads(), "device": "cpu"}

    @property
    def figures(self) -> Path:
        return Path(self.args.figures)


# ---- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("claims", nargs="+", choices=[*CLAIMS, "all"])
    parser.add_argument("--quick", action="store_true", help="tiny scale: train/configs/tiny.yaml, a few steps")
    parser.add_argument("--config", help=f"train_atom.py recipe (default {FULL['config']})")
    parser.add_argument("--teacher", help="override the recipe's teacher (quick: an untrained tiny prior is built)")
    parser.add_argument("--steps", type=int, help=f"step budget of every variant (default {FULL['steps']})")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"seeds of the ablations (default {FULL['seeds']})")
    parser.add_argument("--per_prompt_steps", type=int, help=f"per-prompt budget (default {FULL['per_prompt_steps']})")
    parser.add_argument("--per_prompt_snapshot", type=int, help="steps between per-prompt snapshots")
    parser.add_argument("--amortized", help=f"the amortized model (default {FULL['amortized']}; quick: the triplane run)")
    parser.add_argument("--eval_samples", type=int, help="surface samples per mesh for the Chamfer distances")
    parser.add_argument("--blends", type=int, help="meshes per interpolation path")
    parser.add_argument("--marching_resolution", type=int, help="tet grid for scoring (default: each model's)")
    parser.add_argument("--work_dir", default="runs/paper-claims")
    parser.add_argument("--json", help="the results file: every scored run and claim, merged over sittings and reused "
                        "(default docs/paper_claims.json; quick: work_dir/claims.json)")
    parser.add_argument("--markdown", default=None, help="the report (default docs/paper_claims.md; quick: work_dir)")
    parser.add_argument("--figures", default=None, help="figure folder (default: beside the report)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--train_only", action="store_true",
                        help="train (or resume) the claims' runs missing from the results file, score nothing")
    parser.add_argument("--shard", default="0/1", metavar="K/N",
                        help="with --train_only: every Nth of those runs from the Kth (N processes side by side)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.markdown is None:
        args.markdown = str(Path(args.work_dir) / "paper_claims.md") if args.quick else "docs/paper_claims.md"
    if args.figures is None:
        args.figures = str(Path(args.markdown).with_suffix(""))
    if args.json is None:
        args.json = str(Path(args.work_dir) / "claims.json") if args.quick else str(Path(args.markdown).with_suffix(".json"))
    try:
        index, count = (int(v) for v in args.shard.split("/"))
        assert 0 <= index < count
    except (ValueError, AssertionError):
        parser.error(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
    args.shard = (index, count)
    for key in ("steps", "per_prompt_steps", "per_prompt_snapshot", "eval_samples"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.blends < 2:
        parser.error(f"--blends must be >= 2, got {args.blends}")
    args.claims = list(CLAIMS) if "all" in args.claims else list(dict.fromkeys(args.claims))
    return args


def source_commit(outputs: tuple[str, ...] = (), root: Path = ROOT) -> str | None:
    """The commit of the checkout at `root` (short hash, "-dirty" with uncommitted changes to tracked
    files other than the harness's own `outputs`, which every sitting rewrites), or None outside a
    git checkout: each claim of the table says which code and recipe it was measured with, since the
    claims are refreshed one sitting at a time."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()

    root = root.resolve()
    inside = [path for path in (Path(p).resolve() for p in outputs) if path.is_relative_to(root)]
    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", str(root), *(f":(exclude){p}" for p in inside))
        return commit + ("-dirty" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def quick_teacher(work_dir: Path) -> Path:
    """An untrained tiny shapes-prior (the mechanics of the claims, not their numbers)."""
    from atom.guidance.shapes_prior import ShapesPriorPipeline, build_prior_scheduler, build_prior_unet

    folder = work_dir / "teacher-tiny"
    if not (folder / "model_index.json").is_file():
        torch.manual_seed(0)
        ShapesPriorPipeline(build_prior_unet("tiny"), build_prior_scheduler()).save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick and not args.teacher:
        args.teacher = str(quick_teacher(Path(args.work_dir)))
    path = Path(args.json)
    store = json.loads(path.read_text()) if path.is_file() else {}
    harness = Harness(args, store)
    if args.train_only:
        logger.info("trained: %s", ", ".join(harness.train_only(args.claims)) or "nothing (all in the results file)")
        return {}
    harness.figures.mkdir(parents=True, exist_ok=True)
    claims = store.setdefault("claims", {})
    commit = source_commit((args.json, args.markdown, args.figures))  # the code this sitting loaded, once
    for claim in args.claims:
        tic = time.perf_counter()
        claims[claim] = {**getattr(harness, claim)(), "harness_seconds": time.perf_counter() - tic,
                         "command": "python benchmarks/paper_claims.py " + " ".join(sys.argv[1:] if argv is None else argv),
                         "commit": commit}
        harness.save()  # after each claim: a killed sitting keeps the rest
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(claims_report.render(claims, harness.figures, Path(args.markdown).parent, store["runs"]))
    print(Path(args.markdown).read_text())
    return claims


if __name__ == "__main__":
    main()
