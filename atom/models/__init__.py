"""The trainable networks (text -> triplane -> SDF / deformation / color), presets and text encoding."""
from .configs import PRESET_NAMES, atom_model_config, is_hyper_preset
from .hyper_field import HyperFieldMeshGenerator, TextToHyperNetwork
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
    "HyperFieldMeshGenerator",
    "PRESET_NAMES",
    "PromptEmbeddingCache",
    "TextToHyperNetwork",
    "TextToTriplane",
    "TriplaneMeshGenerator",
    "atom_model_config",
    "axis_pooled_context",
    "is_hyper_preset",
    "default_text_encoder_path",
    "encode_prompts",
    "load_text_encoder",
    "positional_encoding",
    "validate_prompts",
]
