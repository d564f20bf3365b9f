"""The trainable networks (text -> triplane -> SDF / deformation / color), presets and text encoding."""
from .configs import PRESET_NAMES, atom_model_config
from .mesh_generator import TriplaneMeshGenerator, positional_encoding
from .text_encoding import (
    PromptEmbeddingCache,
    default_text_encoder_path,
    encode_prompts,
    load_text_encoder,
    validate_prompts,
)
from .text_to_triplane import TextToTriplane, axis_pooled_context

__all__ = [
    "PRESET_NAMES",
    "PromptEmbeddingCache",
    "TextToTriplane",
    "TriplaneMeshGenerator",
    "atom_model_config",
    "axis_pooled_context",
    "default_text_encoder_path",
    "encode_prompts",
    "load_text_encoder",
    "positional_encoding",
    "validate_prompts",
]
