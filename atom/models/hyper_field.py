"""The ATT3D-style alternative to the triplane: a hypernetwork that writes the field's weights.

AToM's ablation (its Table 2, "triplane vs hypernetwork") compares its text-to-triplane network
with ATT3D's design, where a text-conditioned hypernetwork produces the weights of the neural
field itself. This module is that baseline at the same interface and about the same size, so
that `train/train_atom.py` trains it with the same recipe (`--model_preset shapes-hyper`):

- `TextToHyperNetwork` (the pipeline's `text_to_triplane` component): masked mean-pooled
  text tokens -> MLP -> a flat vector of P numbers, a per-prompt **modulation** of the field's
  weights (its last layer starts near zero, so every prompt starts from the same field).
- `HyperFieldMeshGenerator` (the `mesh_generator` component): a `TriplaneMeshGenerator` whose
  per-point features come from a small coordinate MLP on [x, PE(x)] with weights
  `base + modulation` instead of from sampling three planes. The SDF, deformation and color
  heads, marching tets and both training stages are those of the triplane model.

The modulation is the "latent" that the pipeline passes where the triplane model passes
triplanes: (B, P) instead of (B, 3, C, R, R).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .mesh_generator import TriplaneMeshGenerator, _small_init_, positional_encoding


def field_layer_shapes(num_frequencies: int, triplane_channels: int, field_hidden_dim: int,
                       field_num_layers: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each layer of the generated coordinate MLP: [x, PE(x)] -> 3C."""
    dims = [3 + 6 * num_frequencies] + [field_hidden_dim] * field_num_layers + [3 * triplane_channels]
    return list(zip(dims[:-1], dims[1:]))


class TextToHyperNetwork(ModelMixin, ConfigMixin):
    """Per-token text embeddings -> a (B, P) modulation of a field's weights (ATT3D-style).

    Args:
        text_embed_dim: D, the width of the text encoder's per-token embeddings.
        hidden_dim: width of the hypernetwork's MLP.
        num_layers: hidden layers of that MLP (>= 1).
        num_params: P, the size of the modulation; must equal the mesh generator's
            `num_field_params` (the presets pair them).
    """

    @register_to_config
    def __init__(self, text_embed_dim: int = 384, hidden_dim: int = 160, num_layers: int = 2, num_params: int = 4912):
        super().__init__()
        for name, value in (("text_embed_dim", text_embed_dim), ("hidden_dim", hidden_dim),
                            ("num_layers", num_layers), ("num_params", num_params)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.text_norm = nn.LayerNorm(text_embed_dim)
        layers: list[nn.Module] = []
        for n in range(num_layers):
            layers += [nn.Linear(text_embed_dim if n == 0 else hidden_dim, hidden_dim), nn.SiLU()]
        self.trunk = nn.Sequential(*layers)
        self.to_params = nn.Linear(hidden_dim, num_params)
        # Every prompt starts from the generator's base field (an untrained model gives the
        # same sphere for all prompts, like the triplane model).
        _small_init_(self.to_params)

    def forward(self, text_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text tokens -> modulation.

        Args:
            text_embeds: (B, L, D) per-token text embeddings.
            attention_mask: (B, L), nonzero for real tokens; None uses all L tokens.

        Returns:
            (B, P) float, added to the generator's base field weights.
        """
        if text_embeds.ndim != 3 or text_embeds.shape[-1] != self.config.text_embed_dim:
            raise ValueError(f"text_embeds must be (B, L, {self.config.text_embed_dim}), got {tuple(text_embeds.shape)}")
        b, length = text_embeds.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(b, length, dtype=torch.bool, device=text_embeds.device)
        if attention_mask.shape != (b, length):
            raise ValueError(f"attention_mask must be (B, L) = {(b, length)}, got {tuple(attention_mask.shape)}")
        weights = attention_mask.to(self.dtype).unsqueeze(-1)
        if not (weights.sum(dim=1) > 0).all():
            raise ValueError("every row of attention_mask needs at least one real (nonzero) token")
        tokens = self.text_norm(text_embeds.to(self.dtype))
        pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1)
        return self.to_params(self.trunk(pooled))


class HyperFieldMeshGenerator(TriplaneMeshGenerator):
    """`TriplaneMeshGenerator` whose point features come from a generated coordinate MLP.

    Every argument of `TriplaneMeshGenerator` keeps its meaning (`triplane_channels` C: the
    features are 3C wide, as three sampled planes would be, so the heads are the same), plus:

    Args:
        field_hidden_dim: width of the generated coordinate MLP.
        field_num_layers: its hidden layers (>= 1).

    The coordinate MLP reads [x, PE(x)] (3 + 6K values) and writes 3C features through
    `field_num_layers` SiLU layers; its weights are `base + modulation[b]` for batch item b,
    the modulation (B, P) coming from `TextToHyperNetwork` (P = `num_field_params`).
    """

    @register_to_config
    def __init__(
        self,
        triplane_channels: int = 16,
        num_frequencies: int = 4,
        mlp_hidden_dim: int = 64,
        mlp_num_layers: int = 2,
        sdf_init_radius: float = 0.5,
        deformation_scale: float = 0.25,
        tet_resolution: int = 64,
        field_hidden_dim: int = 64,
        field_num_layers: int = 1,
    ):
        super().__init__(triplane_channels, num_frequencies, mlp_hidden_dim, mlp_num_layers, sdf_init_radius,
                         deformation_scale, tet_resolution)
        for name, value in (("field_hidden_dim", field_hidden_dim), ("field_num_layers", field_num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self._field_shapes = field_layer_shapes(num_frequencies, triplane_channels, field_hidden_dim, field_num_layers)
        base = []
        for fan_in, fan_out in self._field_shapes:
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialization
            base += [torch.empty(fan_in * fan_out).uniform_(-bound, bound), torch.empty(fan_out).uniform_(-bound, bound)]
        self.field_base = nn.Parameter(torch.cat(base))

    @property
    def num_field_params(self) -> int:
        """P, the weights and biases of the generated coordinate MLP."""
        return self.field_base.numel()

    def sample_features(self, triplanes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Features of the generated field at points, in float32.

        Args:
            triplanes: (B, P) modulations from `TextToHyperNetwork` (named as in the parent
                class: the pipeline passes them where the triplane model passes planes).
            points: (B, N, 3) in [-1, 1]^3.

        Returns:
            (B, N, 3C) float32.
        """
        p = self.num_field_params
        if triplanes.ndim != 2 or triplanes.shape[1] != p:
            raise ValueError(f"the hypernetwork field takes (B, {p}) modulations, got {tuple(triplanes.shape)}")
        if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] != triplanes.shape[0]:
            raise ValueError(f"points must be (B, N, 3) with B = {triplanes.shape[0]}, got {tuple(points.shape)}")
        params = self.field_base.float() + triplanes.float()  # (B, P)
        points = points.float()
        h = torch.cat([points, positional_encoding(points, self.config.num_frequencies)], dim=-1)
        offset = 0
        for n, (fan_in, fan_out) in enumerate(self._field_shapes):
            weight = params[:, offset : offset + fan_in * fan_out].view(-1, fan_in, fan_out)
            bias = params[:, offset + fan_in * fan_out : offset + fan_in * fan_out + fan_out]
            offset += fan_in * fan_out + fan_out
            h = torch.baddbmm(bias.unsqueeze(1), h, weight)
            if n < len(self._field_shapes) - 1:
                h = F.silu(h)
        return h
