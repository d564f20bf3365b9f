"""Checks a pipeline folder before loading: weights must be present, complete safetensors."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class WeightFileError(ValueError):
    """A pipeline folder's weight file is missing, truncated, corrupt or a pickle."""


def check_safetensors(path: Path) -> None:
    """Opens `path` and reads every tensor header; raises `WeightFileError` naming the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                f.get_slice(key)
    except Exception as error:  # safetensors raises several error types for bad files
        raise WeightFileError(f"weight file {path} is truncated or corrupt: {error}") from error


def check_pipeline_folder(folder: Path) -> None:
    """Validates `model_index.json` and the weights of every model component in `folder`.

    Raises:
        WeightFileError: naming the file that is missing, corrupt, or pickle-only.
    """
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise WeightFileError(f"{index_path} is missing: {folder} is not a pipeline folder")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as error:
        raise WeightFileError(f"{index_path} is not valid JSON: {error}") from error
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / name
        if not sub.is_dir():
            raise WeightFileError(f"component {name!r} is listed in {index_path} but {sub} is missing")
        if not (sub / "config.json").is_file() or "tokenizer" in name:
            continue  # schedulers and tokenizers carry no weights
        weights = sorted(sub.glob("*.safetensors"))
        if not weights:
            pickles = sorted(p.name for p in sub.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise WeightFileError(
                    f"{sub} has only pickle weights ({', '.join(pickles)}); AToM loads safetensors only, "
                    "never unpickles. Convert them with safetensors.torch.save_file."
                )
            raise WeightFileError(f"weight file missing: no *.safetensors in {sub}")
        for path in weights:
            check_safetensors(path)
