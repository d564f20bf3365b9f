"""Prompt sets for training and evaluation: named Shapes64 sets, text or JSON files, or lists."""
from __future__ import annotations

import json
from pathlib import Path

from atom.data import HELD_OUT, PARAPHRASES, SEEN, SHAPES64
from atom.models.text_encoding import validate_prompts

NAMED_SETS: dict[str, list[str]] = {
    "shapes64": [r.prompt for r in SHAPES64],
    "shapes64-seen": [r.prompt for r in SEEN],
    "shapes64-held-out": [r.prompt for r in HELD_OUT],
    # Validation renders: four seen prompts (one per row of the grid) and four held-out ones.
    "shapes64-validation": [r.prompt for r in SEEN[::14]] + [r.prompt for r in HELD_OUT[::2]],
    # 40 wordings of Shapes64 pairs that no training caption uses (evaluation only).
    "shapes64-paraphrases": [r.prompt for r in PARAPHRASES],
}


def load_prompts(spec: str | list[str]) -> list[str]:
    """Prompts from a named set (see NAMED_SETS), a file (.txt: one prompt a line, blank lines
    and lines starting with '#' skipped; .json: a list of strings), or a list of strings.

    Repeats are kept: training draws each step's prompts uniformly from this list, so a prompt
    listed k times is drawn k times as often (a sampling weight)."""
    if isinstance(spec, (list, tuple)):
        return validate_prompts(list(spec))
    if not isinstance(spec, str):
        raise TypeError(f"prompts must be a set name, a file path or a list of strings, got {spec!r}")
    if spec in NAMED_SETS:
        return list(NAMED_SETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"prompts {spec!r} is neither a named set ({', '.join(NAMED_SETS)}) nor an existing file")
    if path.suffix == ".json":
        try:
            prompts = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(prompts, list):
            raise ValueError(f"{path} must hold a JSON list of strings, got {type(prompts).__name__}")
    else:
        lines = (line.strip() for line in path.read_text().splitlines())
        prompts = [line for line in lines if line and not line.startswith("#")]
    try:
        return validate_prompts(prompts)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
