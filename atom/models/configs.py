"""Named model sizes: keyword arguments for `TextToTriplane` and `TriplaneMeshGenerator`.

- `tiny`: for tests; builds and runs in milliseconds.
- `shapes`: the shipped CPU default for the Shapes world (all-MiniLM-L6-v2 text embeddings,
  D = 384); one prompt to a mesh at its default marching resolution (48, coarse-to-fine) is
  well under 150 ms on 2 CPU threads.
- `paper`: full scale, for T5-XXL embeddings (D = 4096). The paper does not publish its
  layer sizes; these are guesses of the same order as its peers' triplane generators.
- `tiny-hyper`, `shapes-hyper`: the ATT3D-style baseline of the paper's "triplane vs
  hypernetwork" ablation (`atom.models.hyper_field`) with the heads of `tiny` / `shapes` and
  about the same parameter count (within 10 %): a text-conditioned hypernetwork modulates
  the weights of a coordinate MLP that replaces the triplane.
"""
from __future__ import annotations

import copy
from typing import Any

from .hyper_field import field_layer_shapes

_PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "tiny": (
        dict(
            text_embed_dim=32,
            token_resolution=4,
            hidden_dim=32,
            num_layers=1,
            num_heads=2,
            mlp_ratio=2.0,
            block_out_channels=(16, 16, 8),
            triplane_channels=8,
            norm_num_groups=4,
        ),
        dict(
            triplane_channels=8,
            num_frequencies=2,
            mlp_hidden_dim=32,
            mlp_num_layers=1,
            sdf_init_radius=0.5,
            deformation_scale=0.25,
            tet_resolution=16,
        ),
    ),
    "shapes": (
        dict(
            text_embed_dim=384,
            token_resolution=8,
            hidden_dim=128,
            num_layers=2,
            num_heads=4,
            mlp_ratio=4.0,
            block_out_channels=(64, 32, 32),
            triplane_channels=16,
            norm_num_groups=8,
        ),
        dict(
            triplane_channels=16,
            num_frequencies=4,
            mlp_hidden_dim=64,
            mlp_num_layers=2,
            sdf_init_radius=0.5,
            deformation_scale=0.25,
            tet_resolution=48,
        ),
    ),
    "paper": (
        dict(
            text_embed_dim=4096,
            token_resolution=16,
            hidden_dim=512,
            num_layers=6,
            num_heads=8,
            mlp_ratio=4.0,
            block_out_channels=(256, 128, 64, 64),
            triplane_channels=32,
            norm_num_groups=32,
        ),
        dict(
            triplane_channels=32,
            num_frequencies=6,
            mlp_hidden_dim=128,
            mlp_num_layers=3,
            sdf_init_radius=0.5,
            deformation_scale=0.25,
            tet_resolution=128,
        ),
    ),
}

# name -> (the triplane preset whose heads it shares, hypernetwork kwargs, coordinate-MLP kwargs)
_HYPER_PRESETS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "tiny-hyper": ("tiny", dict(hidden_dim=32, num_layers=1), dict(field_hidden_dim=32, field_num_layers=1)),
    "shapes-hyper": ("shapes", dict(hidden_dim=160, num_layers=2), dict(field_hidden_dim=64, field_num_layers=1)),
}

PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS) + tuple(_HYPER_PRESETS)


def is_hyper_preset(name: str) -> bool:
    """Whether preset `name` builds the hypernetwork baseline (`TextToHyperNetwork`,
    `HyperFieldMeshGenerator`) rather than the triplane model."""
    return name in _HYPER_PRESETS


def atom_model_config(name: str, text_embed_dim: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments of a named preset.

    Args:
        name: one of `PRESET_NAMES` ("tiny", "shapes", "paper", "tiny-hyper", "shapes-hyper").
        text_embed_dim: overrides the preset's text embedding width D (to match another
            text encoder).

    Returns:
        (triplane_kwargs, generator_kwargs): fresh dicts for `TextToTriplane(**triplane_kwargs)`
        and `TriplaneMeshGenerator(**generator_kwargs)` (for a hyper preset, for
        `TextToHyperNetwork` and `HyperFieldMeshGenerator`).
    """
    if name in _HYPER_PRESETS:
        base, hyper_kwargs, field_kwargs = copy.deepcopy(_HYPER_PRESETS[name])
        triplane_kwargs, generator_kwargs = atom_model_config(base, text_embed_dim)
        generator_kwargs.update(field_kwargs)
        shapes = field_layer_shapes(generator_kwargs["num_frequencies"], generator_kwargs["triplane_channels"],
                                    field_kwargs["field_hidden_dim"], field_kwargs["field_num_layers"])
        num_params = sum(a * b + b for a, b in shapes)
        return dict(text_embed_dim=triplane_kwargs["text_embed_dim"], num_params=num_params, **hyper_kwargs), generator_kwargs
    if name not in _PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    triplane_kwargs, generator_kwargs = copy.deepcopy(_PRESETS[name])
    if text_embed_dim is not None:
        triplane_kwargs["text_embed_dim"] = text_embed_dim
    return triplane_kwargs, generator_kwargs
