"""Prompts of the Shapes world: Shapes64, its seen / held-out split, and the teacher's captions.

`SHAPES64` is shape-major: index = 8 x shape index + color index, in the orders of `SHAPES`
and `COLORS` (a red sphere, an orange sphere, ..., a pink sphere, a red cube, ...).
"""
from __future__ import annotations

import math
import random
import re
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

# Phrasings of a (color, shape) pair for training captions (`caption`), the teacher's and AToM's
# alike; "{a} " stands for "a" or "an", whichever the next word takes.
PHRASINGS: tuple[str, ...] = (
    "{a} {color} {shape}",
    "{shape}, {color}",
    "{a} {shape} that is {color}",
    "{a} {color}-colored {shape}",
    "{a} {shape} in {color}",
)

# Wordings no training caption uses, for the paraphrase evaluation set `PARAPHRASES`: other
# phrasings and other names of the shapes. `parse_prompt` reads them (it is the ground truth's
# labeler); training never draws them.
PARAPHRASE_PHRASINGS: tuple[str, ...] = (
    "the {shape} painted {color}",
    "one {color} {shape}",
    "{a} {shape} of the color {color}",
    "{color} {shape}",
    "{a} {shape}, colored {color}",
)
PARAPHRASE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sphere": ("globe",),
    "cube": ("cubic box",),
    "cylinder": ("tube",),
    "cone": ("conical shape",),
    "torus": ("doughnut",),
    "pyramid": ("square pyramid",),
    "capsule": ("tablet",),
    "snowman": ("snow figure",),
}

# View-dependent suffixes, as in DreamFusion / threestudio (see `view_word`).
VIEWS: tuple[str, ...] = ("front view", "side view", "back view", "overhead view")

_NAME_TO_SHAPE = {name: shape for shape in SHAPES for name in (shape, *SYNONYMS[shape], *PARAPHRASE_SYNONYMS[shape])}


class PromptRecord(NamedTuple):
    """One prompt of Shapes64 with its ground truth."""

    prompt: str
    shape: str
    color: str


def _with_article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def phrase(template: str, shape_name: str, color: str) -> str:
    """`template` (see `PHRASINGS`) filled in: phrase("{a} {shape} in {color}", "orb", "red") -> "an orb in red"."""
    body = template.removeprefix("{a} ").format(color=color, shape=shape_name)
    return _with_article(body) if template.startswith("{a} ") else body


def prompt_for(shape: str, color: str) -> str:
    """The canonical prompt, e.g. ("sphere", "red") -> "a red sphere", ("cube", "orange") -> "an orange cube"."""
    return _with_article(f"{check_color(color)} {check_shape(shape)}")


SHAPES64: tuple[PromptRecord, ...] = tuple(PromptRecord(prompt_for(s, c), s, c) for s in SHAPES for c in COLORS)
# Held out from AToM training: the i-th shape with the i-th color.
HELD_OUT: tuple[PromptRecord, ...] = tuple(PromptRecord(prompt_for(s, c), s, c) for s, c in zip(SHAPES, COLORS))
SEEN: tuple[PromptRecord, ...] = tuple(r for r in SHAPES64 if r not in HELD_OUT)


def parse_prompt(prompt: str) -> tuple[str, str] | None:
    """(shape, color) named by a prompt or caption, or None if it is not one of the Shapes world.

    Reads every wording of `PHRASINGS` and `PARAPHRASE_PHRASINGS` with any shape name of
    `SYNONYMS` and `PARAPHRASE_SYNONYMS`, an optional ", {view}" suffix, any case and spacing,
    an optional final period and an optional leading "the" in place of "a" / "an":
    "a red sphere", "An orange box, side view", "ring, blue", "the globe painted pink".
    """
    text = " ".join(prompt.lower().strip().rstrip(".").split())
    for view in VIEWS:
        text = text.removesuffix(f", {view}")
    for pattern in _PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return _NAME_TO_SHAPE[match["shape"]], match["color"]
    return None


def _pattern(template: str) -> re.Pattern:
    names = "|".join(sorted(map(re.escape, _NAME_TO_SHAPE), key=len, reverse=True))
    body = re.escape(template.removeprefix("{a} ")).replace(r"\{color\}", f"(?P<color>{'|'.join(COLORS)})")
    body = body.replace(r"\{shape\}", f"(?P<shape>{names})").replace(r"\ ", " ")
    return re.compile(f"(?:(?:a|an|the) )?{body}" if template.startswith("{a} ") else body)


_PATTERNS = [_pattern(t) for t in (*PHRASINGS, *PARAPHRASE_PHRASINGS)]


def caption_variants(shape: str, color: str, phrasings: tuple[str, ...] | list[str] = PHRASINGS[:1],
                     synonyms: bool = True) -> list[str]:
    """Every caption `caption` can give a (shape, color) pair with these phrasings: each
    phrasing with the shape's name and, if `synonyms`, each of its `SYNONYMS`."""
    names = (check_shape(shape), *(SYNONYMS[shape] if synonyms else ()))
    return [phrase(t, name, check_color(color)) for t in phrasings for name in names]


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
    shape: str, color: str, rng: random.Random, use_synonym_prob: float = 0.3, view: str | None = None,
    phrasings: tuple[str, ...] | list[str] = PHRASINGS[:1],
) -> str:
    """A training caption, e.g. "a red ball, side view" or "a ball that is red".

    Args:
        shape, color: names from `SHAPES` and `COLORS`.
        rng: the source of randomness; exactly one `rng.random()` per call, plus one
            `rng.choice` when a synonym is used and one when there is more than one phrasing
            (so one phrasing draws as the captions of the earlier teachers did).
        use_synonym_prob: probability of naming the shape by one of its `SYNONYMS`
            (shapes without synonyms keep their name).
        view: None for no suffix, or one of `VIEWS` (see `view_word`).
        phrasings: templates to draw from uniformly (see `PHRASINGS`).
    """
    check_shape(shape)
    check_color(color)
    if not phrasings:
        raise ValueError("phrasings must name at least one template")
    name = shape
    if rng.random() < use_synonym_prob and SYNONYMS[shape]:
        name = rng.choice(SYNONYMS[shape])
    text = phrase(rng.choice(phrasings) if len(phrasings) > 1 else phrasings[0], name, color)
    if view is None:
        return text
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)} or None")
    return f"{text}, {view}"


def _paraphrases() -> tuple[PromptRecord, ...]:
    """40 prompts, 5 per shape, each pair at most once: the i-th shape's k-th prompt takes color
    (i + 3k) mod 8 and `PARAPHRASE_PHRASINGS[k]`, with the shape's `PARAPHRASE_SYNONYMS` name in
    the odd ones and its own name in the even ones (the held-out diagonal is among them, k = 0)."""
    records = []
    for i, shape in enumerate(SHAPES):
        for k, template in enumerate(PARAPHRASE_PHRASINGS):
            color = list(COLORS)[(i + 3 * k) % len(COLORS)]
            name = PARAPHRASE_SYNONYMS[shape][0] if k % 2 else shape
            records.append(PromptRecord(phrase(template, name, color), shape, color))
    return tuple(records)


# The paraphrase evaluation set: wordings that no training caption uses (see PARAPHRASE_PHRASINGS).
PARAPHRASES: tuple[PromptRecord, ...] = _paraphrases()
