"""The report of benchmarks/paper_claims.py: one markdown table (claim, what ran, numbers, verdict),
the details of each claim, and small figures (interpolation paths, loss curves).

Verdicts follow fixed rules, stated in the report, so that they come from the numbers:
- cost: the per-prompt / amortized training-cost ratio for the seen prompts; >= 10 holds (the
  paper's ~10x), >= 3 holds partly, below does not hold.
- stages, hypernetwork, 3D-aware convolution: a difference counts when it exceeds the spread
  between the two seeds of the triplane baseline (mean Chamfer and seen accuracy).
- interpolation: smooth when no step between neighbouring blends is more than 3x the median step,
  in geometry and in color, on every path.
- inference: under 1 s per prompt.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))
from claims_metrics import failed  # noqa: E402
from eval_figures import labeled_grid, render_views  # noqa: E402

from atom.render import turntable_cameras  # noqa: E402

JUMP_LIMIT = 3.0
COST_HOLDS, COST_PARTLY = 10.0, 3.0
COLUMNS = "| claim (paper) | what ran | numbers | verdict |\n| --- | --- | --- | --- |"


def save_interpolation_figure(pairs: list[dict], path: Path, resolution: int = 80) -> Path:
    """One row per path (its meshes from left to right, seen from azimuth 30 deg), labelled."""
    camera = turntable_cameras(12, elevation=20.0)[1:2]
    rows, labels = [], []
    for pair in pairs:
        views = render_views(pair["meshes"], camera, resolution, progress=False)
        rows.append(torch.cat(views))  # (blends, 3, H, W)
        labels.append(f"{pair['from']}\n-> {pair['to']}")
    labeled_grid(rows, labels, label_width=170).save(path)
    return path


def save_loss_figure(runs: list[dict], path: Path, size: tuple[int, int] = (520, 260)) -> Path:
    """SDS loss per logged step of each run, one line each, on a shared log scale."""
    width, height = size
    margin = 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    curves = {run["name"]: [(s, v) for s, v in run["loss_curve"] if v is not None and np.isfinite(v) and v > 0]
              for run in runs}
    values = [v for curve in curves.values() for _, v in curve]
    steps = [s for curve in curves.values() for s, _ in curve]
    if not values:
        draw.text((margin, height // 2), "no logged losses", fill="black", font=font)
        image.save(path)
        return path
    low, high = np.log10(min(values)), np.log10(max(values)) + 1e-9
    last = max(steps)
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    draw.rectangle([margin, 10, width - 10, height - margin], outline="black")
    for i, (name, curve) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        points = [(margin + (width - 10 - margin) * s / last,
                   height - margin - (height - margin - 10) * (np.log10(v) - low) / (high - low)) for s, v in curve]
        if len(points) > 1:
            draw.line(points, fill=color, width=1)
        draw.text((width - 150, 14 + 12 * i), name, fill=color, font=font)  # top right: the losses fall
    draw.text((margin, height - margin + 6), f"step 0 .. {last}", fill="black", font=font)
    draw.text((4, 10), f"{10 ** high:.3g}", fill="black", font=font)
    draw.text((4, height - margin - 10), f"{10 ** low:.3g}", fill="black", font=font)
    image.save(path)
    return path


# ---- the table -----------------------------------------------------------------------------------


def relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def seed_spread(runs: list[dict], prefix: str = "triplane") -> dict:
    """The largest difference between the seeds of one variant (mean Chamfer, seen accuracy)."""
    mine = [r for r in runs if r["name"].startswith(f"{prefix}-s")]
    if len(mine) < 2:
        return {"chamfer": 0.0, "accuracy": 0.0, "seeds": len(mine)}
    chamfers, accuracies = [r["mean_chamfer"] for r in mine], [r["seen_accuracy"] for r in mine]
    return {"chamfer": max(chamfers) - min(chamfers), "accuracy": max(accuracies) - min(accuracies), "seeds": len(mine)}


def variant_means(runs: list[dict], prefix: str) -> dict:
    mine = [r for r in runs if r["name"].startswith(f"{prefix}-s")]
    return {"chamfer": float(np.mean([r["mean_chamfer"] for r in mine])),
            "accuracy": float(np.mean([r["seen_accuracy"] for r in mine])),
            "held_out": None if mine[0]["held_out_accuracy"] is None else float(np.mean([r["held_out_accuracy"] for r in mine])),
            "failed": sum(failed(r) for r in mine), "runs": len(mine),
            "empty": sum(r.get("empty_meshes", 0) for r in mine)}


def relation(word: str, other: str) -> str:
    """A `compare` result in words: 'better than X', 'within the seed spread of X', ..."""
    return {"same": f"within the seed spread of {other}",
            "mixed": f"better in one measure and worse in the other than {other}"}.get(word, f"{word} than {other}")


def compare(better: dict, worse: dict, spread: dict) -> str:
    """'better', 'worse' or 'same' for `better` against `worse`, beyond the seed spread."""
    d_chamfer = worse["chamfer"] - better["chamfer"]
    d_accuracy = better["accuracy"] - worse["accuracy"]
    tie = 1e-9  # accuracies are fractions of prompts: a difference equal to the spread must not win by rounding
    wins = (d_chamfer > spread["chamfer"] + tie) + (d_accuracy > spread["accuracy"] + tie)
    losses = (-d_chamfer > spread["chamfer"] + tie) + (-d_accuracy > spread["accuracy"] + tie)
    return "better" if wins and not losses else "worse" if losses and not wins else "same" if not wins else "mixed"


def cost_row(c: dict) -> tuple[str, str, str]:
    prompts = c["prompts"]
    per_prompt = float(np.mean([p["match_seconds"] for p in prompts]))
    bound = "" if all(p["matched"] for p in prompts) else ">= "
    n_seen = c["amortized_prompts"]
    ratio = n_seen * per_prompt / c["amortized_seconds"]
    numbers = (f"amortized: {c['amortized_seconds'] / 3600:.2f} h for {n_seen} prompts ({c['amortized_seconds'] / n_seen:.0f} s "
               f"each), measured; per-prompt: {bound}{per_prompt:.0f} s to match it, measured on {len(prompts)} prompts "
               f"({sum(p['matched'] for p in prompts)} matched within {c['per_prompt_steps']} steps), "
               f"x {n_seen} scaled = {bound}{n_seen * per_prompt / 3600:.2f} h: **{bound}{ratio:.1f}x**. "
               f"{c['held_out']} held-out prompts: AToM {c['held_out'] * c['inference_seconds']:.1f} s of inference, "
               f"per-prompt {bound}{c['held_out'] * per_prompt / 3600:.2f} h (scaled)")
    verdict = ("holds" if ratio >= COST_HOLDS else "holds partly" if ratio >= COST_PARTLY else "does not hold at this scale")
    why = f"the paper reports ~10x; here {bound}{ratio:.1f}x"
    return numbers, verdict, why


def spread_note(spread: dict) -> str:
    """Said beside a comparison whose baseline has fewer than two seeds: any difference counts."""
    return "" if spread["seeds"] >= 2 else f" ({spread['seeds']} seed of the baseline: no seed spread measured, any difference counts)"


def means_cells(name: str, m: dict) -> str:
    empty = f", {m['empty']} empty meshes" if m.get("empty") else ""
    return (f"{name} ({m['runs']} seed{'s' if m['runs'] > 1 else ''}): seen {pct(m['accuracy'])}, held-out "
            f"{pct(m['held_out'])}, Chamfer {fmt(m['chamfer'])}{empty}, failed runs {m['failed']}")


def stages_row(c: dict, spread: dict) -> tuple[str, str, str]:
    both, one, two = (variant_means(c["runs"], prefix) for prefix in ("triplane", "stage1-only", "stage2-only"))
    vs_one, vs_two = compare(both, one, spread), compare(both, two, spread)
    numbers = "; ".join(means_cells(name, m) for name, m in (("stage 1 alone", one), ("stage 2 alone", two),
                                                              ("stage 1 then 2", both)))
    verdict = ("holds" if vs_one == vs_two == "better" else
               "holds partly" if "better" in (vs_one, vs_two) else "does not hold at this scale")
    why = f"stage 1 then 2 is {relation(vs_one, 'stage 1 alone')} and {relation(vs_two, 'stage 2 alone')}"
    return numbers, verdict, why + spread_note(spread)


def ablation_row(c: dict, spread: dict, baseline: str, variant: str, label: str) -> tuple[str, str, str]:
    base, other = variant_means(c["runs"], baseline), variant_means(c["runs"], variant)
    verdict_word = compare(base, other, spread)
    numbers = "; ".join(means_cells(name, m) for name, m in ((baseline, base), (variant, other)))
    verdict = {"better": "holds", "mixed": "holds partly"}.get(verdict_word, "does not hold at this scale")
    return numbers, verdict, f"the triplane network is {relation(verdict_word, label)}" + spread_note(spread)


def interpolation_row(c: dict) -> tuple[str, str, str]:
    smooth = [p["geometry_jump"] <= JUMP_LIMIT and p["color_jump"] <= JUMP_LIMIT for p in c["pairs"]]
    numbers = "; ".join(f"{p['from']} -> {p['to']}: largest step / median {p['geometry_jump']:.1f} (geometry), "
                        f"{p['color_jump']:.1f} (color)" for p in c["pairs"])
    verdict = "holds" if all(smooth) else "holds partly" if any(smooth) else "does not hold at this scale"
    why = f"{sum(smooth)}/{len(smooth)} paths without a jump (> {JUMP_LIMIT:g}x the median step)"
    if all("color_refinement" in p for p in c["pairs"]):
        why += (f"; at {2 * c['blends'] - 1} blends instead of {c['blends']} the largest step is "
                + ", ".join(f"{p['geometry_refinement']:.2f}x / {p['color_refinement']:.2f}x" for p in c["pairs"])
                + " (geometry / color) of what it was (a continuous path: ~0.5x; a jump: ~1x; Chamfer's sampling "
                "noise, ~0.01, floors the geometry steps)")
    return numbers, verdict, why


def inference_row(c: dict) -> tuple[str, str, str]:
    numbers = (f"{1000 * c['batch_1_seconds']:.0f} ms per prompt at batch 1, {1000 * c['batch_8_seconds_per_prompt']:.0f} ms "
               f"at batch 8 ({c['device']}, {c['threads']} threads)")
    return numbers, "holds" if c["batch_1_seconds"] < 1 else "does not hold at this scale", "the paper: < 1 s per prompt"


def render(results: dict, figures: Path, report_dir: Path, runs: dict) -> str:
    """The markdown report of the merged claim results; `runs`: every scored run of the results
    file by name, whose training seconds the harness's cost adds up for the runs the claims use."""
    triplane = results.get("hypernetwork", results.get("aware_conv", {})).get("runs", [])
    spread = seed_spread(triplane)
    rows, details = [], []
    claims = {
        "cost": ("~10x lower training cost than per-prompt optimization", lambda c: cost_row(c)),
        "stages": ("both stages are needed (stage 1 then 2 beats either alone)", lambda c: stages_row(c, spread)),
        "hypernetwork": ("the triplane network beats ATT3D's hypernetwork, which is unstable",
                         lambda c: ablation_row(c, spread, "triplane", "hyper", "the hypernetwork")),
        "aware_conv": ("3D-aware convolution helps",
                       lambda c: ablation_row(c, spread, "triplane", "no-aware", "the same network without it")),
        "interpolation": ("blends of prompts give smooth, plausible meshes (Fig. 8)", interpolation_row),
        "inference": ("under 1 s of inference per prompt", inference_row),
    }
    for name, (claim, row) in claims.items():
        if name not in results:
            rows.append(f"| {claim} | not run yet | | |")
            continue
        numbers, verdict, why = row(results[name])
        at = f" at commit {results[name]['commit']}" if results[name].get("commit") else ""
        rows.append(f"| {claim} | `{results[name]['command']}`{at} | {numbers} | **{verdict}**: {why} |")
        details.append(detail(name, results[name], figures, report_dir))
    # The runs the claims use: the results file keeps runs of earlier recipes under the same names.
    used = {r["name"] for c in results.values() for r in c.get("runs", [])}
    train_seconds = {name: runs[name]["train_seconds"] for name in used if name in runs and "train_seconds" in runs[name]}
    recipe_seconds = sum(train_seconds.values())
    per_prompt = sum(p["curve"][-1]["seconds"] for p in results.get("cost", {}).get("prompts", []))
    sitting = sum(c.get("harness_seconds", 0.0) for c in results.values())
    lines = [
        "# The paper's claims at Shapes scale", "",
        "Written by `benchmarks/paper_claims.py` from its runs (rules for the verdicts: "
        "`benchmarks/claims_report.py`). Seed spread of the triplane baseline: Chamfer "
        f"{spread['chamfer']:.4f}, seen accuracy {pct(spread['accuracy'])} ({spread['seeds']} seeds). Mean Chamfer is over "
        "the seen prompts, an empty mesh counted as 1.0 (the size of the box).", "",
        COLUMNS, *rows, "",
        f"Cost of the harness: {(recipe_seconds + per_prompt) / 3600:.2f} h of training, each run timed by "
        f"its own clock: {recipe_seconds / 3600:.2f} h in {len(train_seconds)} runs of the recipe's budget and "
        f"{per_prompt / 3600:.2f} h of per-prompt training (two runs at a time, one thread each, share the 2 cores: the "
        f"machine's time is then half of theirs); {sitting / 3600:.2f} h of wall time in the latest sitting of each claim "
        "(training included when it ran then).", "",
        *details,
    ]
    return "\n".join(lines) + "\n"


def detail(name: str, c: dict, figures: Path, report_dir: Path) -> str:
    """A section per claim: the per-run table (or paths, prompts) and its figure."""
    lines = [f"## {name}", ""]
    if "runs" in c:
        shapes = list(c["runs"][0]["chamfer_per_shape"])
        lines += [f"Step budget {c['steps']} for every run." if "steps" in c else "", "",
                  "| run | seen | held-out | mean Chamfer | " + " | ".join(shapes) + " | tori with hole | pyramids | "
                  "failed | late loss std | train h |",
                  "| --- " * (9 + len(shapes)) + "|"]
        for r in c["runs"]:
            lines.append(f"| {r['name']} | {pct(r['seen_accuracy'])} | {pct(r['held_out_accuracy'])} | {fmt(r['mean_chamfer'])} | "
                         + " | ".join(fmt(r["chamfer_per_shape"][s]) for s in shapes)
                         + f" | {r['tori_with_hole']} | {r['pyramids']} | {'yes' if failed(r) else 'no'} | "
                         f"{fmt(r['late_loss_std'])} | {r['train_seconds'] / 3600:.2f} |")
        # A run's stage-1 model at the switch shares that run's curve: drawn once.
        distinct = list({json.dumps(r["loss_curve"]): r for r in c["runs"][::-1]}.values())
        distinct.sort(key=c["runs"].index)
        figure = save_loss_figure(distinct, figures / f"loss-{name}.png")
        lines += ["", f"![SDS loss per logged step]({relative(figure, report_dir)})"]
        if "parameters" in c:
            lines += ["", "Parameters: " + ", ".join(f"{k} {v:,}" for k, v in c["parameters"].items())]
    elif name == "cost":
        lines += ["| prompt | amortized correct / Chamfer | per-prompt matched at | steps | s |", "| --- | --- | --- | --- | --- |"]
        for p in c["prompts"]:
            lines.append(f"| {p['prompt']} | {p['amortized']['correct']} / {fmt(p['amortized']['chamfer'])} | "
                         f"{'yes' if p['matched'] else 'no (budget)'} | {p['match_steps']} | {p['match_seconds']:.0f} |")
    elif name == "interpolation":
        lines += ["| path | nearest (color shape) along the path | geometry steps | color steps |", "| --- | --- | --- | --- |"]
        for p in c["pairs"]:
            lines.append(f"| {p['from']} -> {p['to']} | {' / '.join(p['labels'])} | "
                         + ", ".join(f"{v:.3f}" for v in p["geometry_steps"]) + " | "
                         + ", ".join(f"{v:.3f}" for v in p["color_steps"]) + " |")
        lines += ["", f"![interpolation paths]({relative(figures / c['figure'], report_dir)})"]
    else:
        lines.append(", ".join(f"{k}: {v}" for k, v in c.items() if k not in ("command", "commit")))
    return "\n".join(lines) + "\n"

