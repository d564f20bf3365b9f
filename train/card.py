"""The model card (README.md) of a trained AToM pipeline folder.

Training facts come from the folder's `training_summary.json` (written by train_atom.py: teacher,
prompts, wall time per stage, hardware, the command); evaluation metrics, when given, from
train/evaluate.py. `atom.hub.render_model_card` renders the text, the same card `push_to_hub`
uploads.

    python train/evaluate.py --model runs/atom-shapes64/pipeline --prompts shapes64 --write_card
"""
from __future__ import annotations

import json
from pathlib import Path

from atom.hub import pipeline_architecture, render_model_card

SUMMARY_FILE = "training_summary.json"
# The overview `evaluate.py --overview` writes; the card shows it when the folder holds it.
SAMPLES_FILE = "samples.png"
SAMPLES_CAPTION = ("One view per prompt (rows: shapes, columns: colors; framed black: held-out prompts, "
                   "framed red: a mesh scored wrong)")


def card_data(
    folder: str | Path,
    metrics: dict | None = None,
    metrics_description: str | None = None,
    pipe=None,
    repo_id: str | None = None,
) -> dict:
    """`render_model_card` data for the pipeline in `folder`.

    Args:
        folder: a pipeline folder with `training_summary.json` (and, shown when there,
            `samples.png`).
        metrics: {split: {name: value}} (`evaluate.card_metrics`), or None.
        metrics_description: how the metrics were measured.
        pipe: the loaded pipeline, for the architecture table (parameter counts).
        repo_id: the name the usage example loads (a Hub id or a path).

    Raises:
        FileNotFoundError: no training summary in `folder`.
    """
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the card is written for folders that train_atom.py saved")
    summary = json.loads(path.read_text())
    has_samples = (Path(folder) / SAMPLES_FILE).is_file()
    data = {
        "repo_id": repo_id,
        "architecture": pipeline_architecture(pipe) if pipe is not None else None,
        "base_model": summary.get("teacher"),
        "prompt_set": summary.get("prompt_set"),
        "train_prompts": summary.get("train_prompts"),
        "heldout_prompts": summary.get("heldout_prompts"),
        "training_time": training_time(summary) or None,
        "hardware": summary.get("hardware"),
        "training_command": summary.get("training_command"),
        "limitations": summary.get("limitations"),  # measured shortcomings, added to the defaults
        "results": summary.get("results"),  # markdown added after evaluation (e.g. the two-stage ablation)
        "metrics": metrics or None,
        "metrics_description": metrics_description if metrics else None,
        "samples_image": SAMPLES_FILE if has_samples else None,
        "samples_caption": SAMPLES_CAPTION if has_samples else None,
    }
    return {key: value for key, value in data.items() if value is not None}  # missing: left out


def stage_seconds_total(summary: dict) -> dict[str, float]:
    """{"k": seconds} of each stage, summed over this run and the runs it started from
    (`earlier_stage_seconds`): a fine-tune of a stage adds to that stage's time."""
    seconds = dict(summary.get("earlier_stage_seconds", {}))
    for k, v in summary.get("stage_seconds", {}).items():
        if v > 0:
            seconds[k] = seconds.get(k, 0.0) + v
    return seconds


def training_time(summary: dict) -> dict[str, float]:
    """{"stage k": seconds} over this run and the runs it started from."""
    seconds = stage_seconds_total(summary)
    return {f"stage {k}": seconds[k] for k in sorted(seconds)}


def write_card(folder: str | Path, metrics: dict | None = None, metrics_description: str | None = None,
               pipe=None, repo_id: str | None = None) -> Path:
    """Writes `folder/README.md` (arguments as for `card_data`); returns its path."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(card_data(folder, metrics, metrics_description, pipe, repo_id)), encoding="utf-8")
    return path
