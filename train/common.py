"""Small pieces both training scripts share: YAML configs with command-line overrides, and
checkpoints that rotate and resume (accelerate's save_state / load_state)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, TypeVar

import yaml

logger = logging.getLogger(__name__)
C = TypeVar("C")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def load_config(cls: type[C], argv: list[str] | None = None, description: str = "") -> tuple[C, argparse.Namespace]:
    """Builds the dataclass `cls` from `--config file.yaml`, then any `--field value` overrides.

    Every dataclass field becomes an option (`--output_dir`, `--max_train_steps`, ...). Unknown
    keys in the YAML file are an error that names them.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML file with the run's settings")
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, field in fields.items():
        parser.add_argument(f"--{name}", default=None, help=f"override {name} (default from the config)")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        values: dict[str, Any] = yaml.safe_load(f) or {}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{args.config}: unknown settings {unknown}; known: {sorted(fields)}")
    for name in fields:
        override = getattr(args, name)
        if override is not None:
            values[name] = yaml.safe_load(override)  # "3e-4" -> float, "true" -> bool, "[a, b]" -> list
    return cls(**values), args


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-<step>` folders in `output_dir`, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)))


def resolve_resume(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """The checkpoint folder to resume from: None, 'latest' (None if there is none yet) or a path."""
    if resume is None:
        return None
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume)
    if not _CHECKPOINT.match(path.name) or not path.is_dir():
        raise ValueError(f"--resume_from_checkpoint must be 'latest' or a checkpoint-<step> folder, got {resume!r}")
    return path


def checkpoint_step(path: Path) -> int:
    return int(_CHECKPOINT.match(path.name).group(1))


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, total_limit: int | None, extra: dict) -> Path:
    """Saves the accelerate state as `checkpoint-<step>` (plus `extra` as JSON) and deletes the
    oldest checkpoints beyond `total_limit`. The folder is written under a temporary name and
    renamed, so a run killed mid-save never leaves a half checkpoint that 'latest' would pick."""
    final = Path(output_dir) / f"checkpoint-{step}"
    partial = Path(output_dir) / f".partial-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        (partial / "trainer_state.json").write_text(json.dumps({"step": step, **extra}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_trainer_state(checkpoint: Path) -> dict:
    path = checkpoint / "trainer_state.json"
    return json.loads(path.read_text()) if path.exists() else {"step": checkpoint_step(checkpoint)}


class WallClock:
    """Training wall time that survives resumes: seconds from earlier runs plus this one's."""

    def __init__(self, earlier_seconds: float = 0.0):
        self.earlier = earlier_seconds
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.earlier + time.perf_counter() - self.start
