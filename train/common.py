"""Small pieces both training scripts share: YAML configs with command-line overrides,
checkpoints that rotate and resume (accelerate's save_state / load_state), a JSON-lines log."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import time
import types
import typing
from collections.abc import Collection
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
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
    if not isinstance(values, dict):
        raise ValueError(f"{args.config}: expected a mapping of settings, got {type(values).__name__}")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{args.config}: unknown settings {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        values[name] = _coerce(value, hints[name], f"{args.config}: {name}")
    for name in fields:
        override = getattr(args, name)
        if override is None:
            continue
        try:  # "true" -> bool, "[a, b]" -> list, "null" -> None, "3e-4" -> float
            values[name] = _coerce(yaml.safe_load(override), hints[name], f"--{name}")
        except (ValueError, yaml.YAMLError) as error:
            if str in _allowed(hints[name]):
                values[name] = override  # a string field keeps the text as given ("--output_dir 2024")
            elif isinstance(error, yaml.YAMLError):
                raise ValueError(f"--{name}: cannot parse {override!r} as YAML: {error}") from error
            else:
                raise
    return cls(**values), args


def _allowed(hint: Any) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the field type `hint` (scalars, lists, dicts, unions with None).
    Numbers written as "3e-4" (a string to YAML 1.1) become floats; ints become floats
    where a float is expected."""
    allowed = _allowed(hint)
    if value is None and type(None) in allowed:
        return None
    if float in allowed:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind in (int, float, str) and isinstance(value, kind) and not isinstance(value, bool):
            return value
        if typing.get_origin(kind) is list and isinstance(value, list):
            (item,) = typing.get_args(kind)
            return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        if typing.get_origin(kind) is dict and isinstance(value, dict):
            key_kind, value_kind = typing.get_args(kind)
            return {_coerce(k, key_kind, where): v if value_kind is Any else _coerce(v, value_kind, f"{where}[{k!r}]")
                    for k, v in value.items()}
    names = " or ".join("None" if k is type(None) else getattr(k, "__name__", str(k)) for k in allowed)
    raise ValueError(f"{where} must be {names}, got {value!r}")


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


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, total_limit: int | None, extra: dict,
                    keep: Collection[int] = ()) -> Path:
    """Saves the accelerate state as `checkpoint-<step>` (plus `extra` as JSON) and deletes the
    oldest checkpoints beyond `total_limit`, except those of the steps in `keep` (which do not count
    toward the limit). The folder is written under a temporary name and renamed, so a run killed
    mid-save never leaves a half checkpoint that 'latest' would pick."""
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
            rotating = [p for p in list_checkpoints(output_dir) if checkpoint_step(p) not in keep]
            for old in rotating[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def use_cpu_backend() -> bool:
    """Whether to create the `Accelerator` with `cpu=True`: for a multi-process launch
    (`accelerate launch --multi_gpu --num_processes N`, `torchrun`) on a machine without an
    accelerator. accelerate picks its multi-CPU mode (gloo) only when told to use the CPU;
    otherwise each process trains alone, believing itself the only one, and all of them write
    the same checkpoints."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()


def append_log(output_dir: str | os.PathLike, record: dict) -> None:
    """Appends one JSON record to `output_dir/train_log.jsonl` (call it on the main process).

    A resumed run appends to the same file, after its own {"event": "start"} record, so steps
    between the last checkpoint and a kill appear twice: the later record is the one that counts.
    """
    with open(Path(output_dir) / "train_log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


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

    @contextmanager
    def paused(self):
        """Time spent inside does not count: work beside training, such as scoring a snapshot."""
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - tic


def resume_training(accelerator, output_dir: str | os.PathLike, resume: str | None) -> tuple[Path | None, dict]:
    """Loads the accelerate state of the checkpoint `resume` names (see `resolve_resume`).

    Returns:
        (the checkpoint folder or None, its trainer state: {"step": 0} for a fresh run).
    """
    checkpoint = resolve_resume(output_dir, resume)
    if checkpoint is None:
        return None, {"step": 0}
    accelerator.load_state(str(checkpoint))
    return checkpoint, load_trainer_state(checkpoint)


def step_generator(seed: int, step: int, accelerator) -> torch.Generator:
    """The random generator of one training step on this process, seeded by step and process,
    so that a resumed run draws what the killed run would have."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * accelerator.num_processes + accelerator.process_index)
