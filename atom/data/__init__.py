"""The Shapes world: 8 primitives x 8 colors, their prompts, captions and ground-truth metrics."""
from .meshes import sample_surface, shape_mesh
from .metrics import evaluate_mesh, summarize
from .prompts import (
    HELD_OUT,
    SEEN,
    SHAPES64,
    SYNONYMS,
    VIEWS,
    PARAPHRASE_PHRASINGS,
    PARAPHRASE_SYNONYMS,
    PARAPHRASES,
    PHRASINGS,
    PromptRecord,
    caption,
    caption_variants,
    parse_prompt,
    phrase,
    prompt_for,
    view_word,
)
from .sdf import shape_sdf
from .voxelize import voxelize
from .world import AZIMUTH_SYMMETRY, COLORS, SHAPES, check_color, check_shape, shape_area, shape_volume

__all__ = [
    "AZIMUTH_SYMMETRY",
    "COLORS",
    "HELD_OUT",
    "SEEN",
    "SHAPES",
    "SHAPES64",
    "SYNONYMS",
    "VIEWS",
    "PARAPHRASES",
    "PARAPHRASE_PHRASINGS",
    "PARAPHRASE_SYNONYMS",
    "PHRASINGS",
    "PromptRecord",
    "caption",
    "caption_variants",
    "check_color",
    "check_shape",
    "evaluate_mesh",
    "parse_prompt",
    "phrase",
    "prompt_for",
    "sample_surface",
    "shape_area",
    "shape_mesh",
    "shape_sdf",
    "shape_volume",
    "summarize",
    "view_word",
    "voxelize",
]
