"""The text-to-triplane network: per-token text embeddings -> three axis-aligned feature planes.

AToM replaces ATT3D's hypernetwork with this network (the paper found the hypernetwork
unstable). Learned query tokens, one per triplane cell at a coarse resolution `t`, attend to
the text tokens; the tokens are then laid out as three `t x t` planes, and "3D-aware"
convolutions (each plane also sees the other two, pooled along the axis it does not share,
as in Rodin) with residual 2x upsampling blocks bring them to the output resolution.

Triplane layout (a contract shared with `TriplaneMeshGenerator`): a tensor (B, 3, C, R, R),
the planes in the order XY, XZ, YZ. Within a plane the first coordinate of its name runs along
the width (W, the last axis, `grid_sample`'s x) and the second along the height (H, the
second-to-last axis, `grid_sample`'s y), both from -1 at index 0 to +1 at index R - 1:

    plane 0 (XY): width <- x, height <- y
    plane 1 (XZ): width <- x, height <- z
    plane 2 (YZ): width <- y, height <- z

Sizes the paper does not give (token grid, widths, depth) are configuration; the presets in
`atom.models.configs` choose them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# For each plane (XY, XZ, YZ), how to read the other two planes: (other plane, the axis of
# `other` that is averaged away, whether the pooled vector runs along this plane's width).
# The pooled vector runs along the coordinate the two planes share, which is this plane's
# width if it is this plane's first coordinate, else its height.
_AXIS_POOLING = (
    ((1, -2, True), (2, -2, False)),  # XY: XZ over z -> x (width); YZ over z -> y (height)
    ((0, -2, True), (2, -1, False)),  # XZ: XY over y -> x (width); YZ over y -> z (height)
    ((0, -1, True), (1, -1, False)),  # YZ: XY over x -> y (width); XZ over x -> z (height)
)


def axis_pooled_context(planes: torch.Tensor) -> torch.Tensor:
    """For each plane, the other two planes averaged along the axis it does not share with them.

    Args:
        planes: (B, 3, C, R, R) triplane features in the module's layout (XY, XZ, YZ).

    Returns:
        (B, 3, 2C, R, R): for plane p, the two other planes, each mean-pooled along its axis
        that is not one of p's, broadcast along p's other axis (Rodin's 3D-aware roll-out).
    """
    resolution = planes.shape[-1]
    context = []
    for pooling in _AXIS_POOLING:
        pooled = []
        for other, axis, along_width in pooling:
            vector = planes[:, other].mean(dim=axis)  # (B, C, R) along the shared coordinate
            shaped = vector.unsqueeze(-2) if along_width else vector.unsqueeze(-1)
            pooled.append(shaped.expand(*shaped.shape[:2], resolution, resolution))
        context.append(torch.cat(pooled, dim=1))
    return torch.stack(context, dim=1)


class CrossSelfAttentionBlock(nn.Module):
    """Pre-norm transformer block: cross-attention to the text, self-attention, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm_cross = nn.LayerNorm(dim)
        self.to_q_cross = nn.Linear(dim, dim)
        self.to_kv_cross = nn.Linear(dim, 2 * dim)
        self.out_cross = nn.Linear(dim, dim)
        self.norm_self = nn.LayerNorm(dim)
        self.to_qkv_self = nn.Linear(dim, 3 * dim)
        self.out_self = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, heads, N, D / heads)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, N, D) query tokens.
            text: (B, L, D) projected text tokens.
            text_mask: (B, 1, 1, L) bool, True where a text token is real (attended to).

        Returns:
            (B, N, D) updated tokens.
        """
        k, v = self.to_kv_cross(text).chunk(2, dim=-1)
        q = self.to_q_cross(self.norm_cross(x))
        attended = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v), attn_mask=text_mask)
        x = x + self.out_cross(attended.transpose(1, 2).flatten(2))

        q, k, v = (self._heads(t) for t in self.to_qkv_self(self.norm_self(x)).chunk(3, dim=-1))
        x = x + self.out_self(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm_mlp(x))


class PlaneConvBlock(nn.Module):
    """Residual block of two 3x3 convolutions per plane; with `aware` (3D-aware, the default) the
    first sees each plane together with the axis-pooled other planes, without it each plane alone
    (the ablation of the paper's 3D-aware convolution).

    One convolution is shared by the three planes, as Rodin convolves its rolled-out triplane;
    plane identity comes from the learned position embedding of the query tokens.
    """

    def __init__(self, channels: int, num_groups: int, aware: bool = True):
        super().__init__()
        self.aware = aware
        self.norm1 = nn.GroupNorm(num_groups, channels)
        self.conv1 = nn.Conv2d((3 if aware else 1) * channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        """(B, 3, C, R, R) -> (B, 3, C, R, R)."""
        b = planes.shape[0]
        h = F.silu(self.norm1(planes.flatten(0, 1))).unflatten(0, (b, 3))
        if self.aware:
            h = torch.cat([h, axis_pooled_context(h)], dim=2)
        h = self.conv1(h.flatten(0, 1))
        h = self.conv2(F.silu(self.norm2(h)))
        return planes + h.unflatten(0, (b, 3))


class UpsampleBlock(nn.Module):
    """Residual 2x upsampling of each plane: nearest upsample, then skip + two 3x3 convolutions."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        """(B, 3, C_in, R, R) -> (B, 3, C_out, 2R, 2R)."""
        b = planes.shape[0]
        x = F.interpolate(planes.flatten(0, 1), scale_factor=2.0, mode="nearest")
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) + h).unflatten(0, (b, 3))


class TextToTriplane(ModelMixin, ConfigMixin):
    """Maps per-token text embeddings to a feature triplane (B, 3, C, R, R); see the module docstring.

    Args:
        text_embed_dim: D, the width of the text encoder's per-token embeddings
            (384 for all-MiniLM-L6-v2, 4096 for T5-XXL).
        token_resolution: t, the query tokens form three t x t grids (3 t^2 tokens).
        hidden_dim: width of the transformer blocks.
        num_layers: number of cross-attention + self-attention + MLP blocks.
        num_heads: attention heads; must divide `hidden_dim`.
        mlp_ratio: hidden width of the transformer MLPs, as a multiple of `hidden_dim`.
        block_out_channels: channels of the convolutional stages: the first at t x t, each
            next one after a 2x upsampling, so the output resolution is R = t * 2^(n - 1).
        triplane_channels: C, the channels of the output planes.
        norm_num_groups: GroupNorm groups; must divide every entry of `block_out_channels`.
        aware_conv: 3D-aware convolutions (each plane sees the axis-pooled other two); False
            convolves every plane on its own (an ablation; the first convolution of each block
            then has a third of the input channels).
    """

    @register_to_config
    def __init__(
        self,
        text_embed_dim: int = 384,
        token_resolution: int = 8,
        hidden_dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        block_out_channels: tuple[int, ...] = (64, 32, 32),
        triplane_channels: int = 16,
        norm_num_groups: int = 8,
        aware_conv: bool = True,
    ):
        super().__init__()
        for name, value in (
            ("text_embed_dim", text_embed_dim),
            ("token_resolution", token_resolution),
            ("hidden_dim", hidden_dim),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("triplane_channels", triplane_channels),
            ("norm_num_groups", norm_num_groups),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if hidden_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide hidden_dim={hidden_dim}")
        if not block_out_channels:
            raise ValueError("block_out_channels must have at least one entry, got an empty sequence")
        bad = [c for c in block_out_channels if c % norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={norm_num_groups} must divide every block_out_channels entry, not {bad}")

        num_tokens = 3 * token_resolution**2
        self.query_tokens = nn.Parameter(torch.randn(num_tokens, hidden_dim) * 0.02)
        self.position_embedding = nn.Parameter(torch.randn(num_tokens, hidden_dim) * 0.02)
        self.text_norm = nn.LayerNorm(text_embed_dim)
        self.text_proj = nn.Linear(text_embed_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            CrossSelfAttentionBlock(hidden_dim, num_heads, mlp_ratio) for _ in range(num_layers)
        )
        self.token_norm = nn.LayerNorm(hidden_dim)
        self.to_planes = nn.Linear(hidden_dim, block_out_channels[0])

        stages = [PlaneConvBlock(block_out_channels[0], norm_num_groups, aware_conv)]
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            stages += [UpsampleBlock(c_in, c_out, norm_num_groups), PlaneConvBlock(c_out, norm_num_groups, aware_conv)]
        self.stages = nn.Sequential(*stages)
        self.out_norm = nn.GroupNorm(norm_num_groups, block_out_channels[-1])
        self.out_conv = nn.Conv2d(block_out_channels[-1], triplane_channels, 3, padding=1)

    @property
    def triplane_resolution(self) -> int:
        """R, the side of each output plane in pixels."""
        return self.config.token_resolution * 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, text_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text tokens -> triplanes.

        Args:
            text_embeds: (B, L, D) per-token text embeddings, D = `text_embed_dim`.
            attention_mask: (B, L) bool or int, nonzero for real tokens and 0 for padding
                (which is then ignored); None attends to all L tokens. Every row needs at
                least one real token.

        Returns:
            (B, 3, C, R, R) triplanes, planes XY, XZ, YZ (layout in the module docstring).
        """
        if text_embeds.ndim != 3 or text_embeds.shape[-1] != self.config.text_embed_dim:
            raise ValueError(
                f"text_embeds must be (B, L, {self.config.text_embed_dim}), got {tuple(text_embeds.shape)}"
            )
        b, length = text_embeds.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(b, length, dtype=torch.bool, device=text_embeds.device)
        if attention_mask.shape != (b, length):
            raise ValueError(f"attention_mask must be (B, L) = {(b, length)}, got {tuple(attention_mask.shape)}")
        attention_mask = attention_mask.bool()
        if not attention_mask.any(dim=1).all():
            raise ValueError("every row of attention_mask needs at least one real (nonzero) token")

        text = self.text_proj(self.text_norm(text_embeds.to(self.dtype)))
        text_mask = attention_mask[:, None, None, :]
        x = (self.query_tokens + self.position_embedding).expand(b, -1, -1)
        for block in self.blocks:
            x = block(x, text, text_mask)

        t = self.config.token_resolution
        planes = self.to_planes(self.token_norm(x))  # (B, 3 t^2, C0)
        planes = planes.view(b, 3, t, t, -1).permute(0, 1, 4, 2, 3)  # (B, 3, C0, t, t): token row = height
        planes = self.stages(planes)
        out = self.out_conv(F.silu(self.out_norm(planes.flatten(0, 1))))
        return out.unflatten(0, (b, 3))
