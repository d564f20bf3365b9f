"""Prompts of the Shapes world: Shapes64, its seen / held-out split, and the teacher's captions.

`SHAPES64` is shape-major: index = 8 x shape index + color index, in the orders of `SHAPES`
and `COLORS` (a red sphere, an orange sphere, ..., a pink sphere, a red cube, ...).
"""
from __future__ import annotations

import math
import random
from typing import NamedTuple

from .world import COLORS, SHAPES, check_color, check_shape

# Other names for the shapes, used in the teacher's captions to measure language generalization.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "sphere": ("ball", "orb"),
    "cube": ("box", "block"),
    "cylinder": ("can", "drum"),
    "cone": (),
    "torus": ("donut", "ring"),
    "pyramid": (),
    "capsule": ("pill",),
    "snowman": ("snow man",),
}

# View-dependent suffixes, as in DreamFusion / threestudio (see `view_word`).
VIEWS: tuple[str, ...] = ("front view", "side view", "back view", "overhead view")

_NAME_TO_SHAPE = {name: shape for shape in SHAPES for name in (shape, *SYNONYMS[shape])}


class PromptRecord(NamedTuple):
    """One prompt of Shapes64 with its ground truth."""

    prompt: str
    shape: str
    color: str


def _with_article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def prompt_for(shape: str, color: str) -> str:
    """The canonical prompt, e.g. ("sphere", "red") -> "a red sphere", ("cube", "orange") -> "an orange cube"."""
    return _with_article(f"{check_color(color)} {check_shape(shape)}")


SHAPES64: tuple[PromptRecord, ...] = tuple(PromptRecord(prompt_for(s, c), s, c) for s in SHAPES for c in COLORS)
# Held out from AToM training: the i-th shape with the i-th color.
HELD_OUT: tuple[PromptRecord, ...] = tuple(PromptRecord(prompt_for(s, c), s, c) for s, c in zip(SHAPES, COLORS))
SEEN: tuple[PromptRecord, ...] = tuple(r for r in SHAPES64 if r not in HELD_OUT)


def parse_prompt(prompt: str) -> tuple[str, str] | None:
    """(shape, color) named by a prompt or caption, or None if it is not one of the Shapes world.

    Accepts "[a|an|the] {color} {shape or synonym}[, {view}]", any case and spacing, with an
    optional final period: "a red sphere", "An orange box, side view".
    """
    text = " ".join(prompt.lower().strip().rstrip(".").split())
    head, comma, view = text.partition(",")
    if comma and view.strip() not in VIEWS:
        return None
    words = head.split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    if len(words) < 2 or words[0] not in COLORS:
        return None
    shape = _NAME_TO_SHAPE.get(" ".join(words[1:]))
    return None if shape is None else (shape, words[0])


def view_word(elevation_deg: float, azimuth_deg: float) -> str:
    """The view suffix for a camera (conventions of `atom.render.cameras`).

    Args:
        elevation_deg: degrees above the XZ plane.
        azimuth_deg: degrees around +Y, 0 = camera on the +Z axis (the front), 90 on +X.

    Returns:
        "overhead view" if elevation > 60, else by azimuth in (-180, 180]: "front view" if
        |azimuth| <= 45, "back view" if |azimuth| >= 135, "side view" otherwise.
    """
    if elevation_deg > 60:
        return "overhead view"
    azimuth = abs(math.remainder(azimuth_deg, 360.0))
    if azimuth <= 45:
        return "front view"
    return "back view" if azimuth >= 135 else "side view"


def caption(
    shape: str, color: str, rng: random.Random, use_synonym_prob: float = 0.3, view: str | None = None
) -> str:
    """A training caption for the teacher, e.g. "a red ball, side view".

    Args:
        shape, color: names from `SHAPES` and `COLORS`.
        rng: the source of randomness; exactly one `rng.random()` per call, plus one
            `rng.choice` when a synonym is used.
        use_synonym_prob: probability of naming the shape by one of its `SYNONYMS`
            (shapes without synonyms keep their name).
        view: None for no suffix, or one of `VIEWS` (see `view_word`).
    """
    check_shape(shape)
    check_color(color)
    name = shape
    if rng.random() < use_synonym_prob and SYNONYMS[shape]:
        name = rng.choice(SYNONYMS[shape])
    text = _with_article(f"{color} {name}")
    if view is None:
        return text
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)} or None")
    return f"{text}, {view}"
