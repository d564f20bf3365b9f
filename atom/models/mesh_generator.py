"""The triplane-to-mesh generator: triplane features -> SDF, deformation and color -> DMTet mesh.

For a point x in [-1, 1]^3 the three planes (layout in `atom.models.text_to_triplane`) are
sampled bilinearly and their features **concatenated** (3C values; concatenation keeps which
plane a feature came from, which summation, as in EG3D, would mix), then x itself and a
sin/cos positional encoding of x are appended. Three separate MLPs read that vector:

- SDF: `mlp(h) + (|x| - sdf_init_radius)`, negative inside. The last layer starts near zero,
  so an untrained generator's surface is the sphere of radius `sdf_init_radius`.
- deformation: `tanh(mlp(h)) * deformation_scale * cell_size`, a vertex offset bounded to a
  fraction of a cell of the tet grid in use (world units).
- color: `sigmoid(mlp(h))`, RGB albedo in [0, 1].

`extract_mesh` evaluates SDF and deformation at the vertices of a tetrahedral grid over
[-1, 1]^3 and runs marching tetrahedra, differentiably (training stage 2), then colors the
surface vertices.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ..geometry import Mesh, TetGrid, build_tet_grid, marching_tets
from ..tensor_utils import pack_selected


def positional_encoding(points: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """NeRF-style encoding `[sin(2^k pi x), cos(2^k pi x)]` for k < num_frequencies.

    Args:
        points: (..., 3) coordinates in [-1, 1].

    Returns:
        (..., 6 * num_frequencies), all sines first, then all cosines.
    """
    freqs = math.pi * 2.0 ** torch.arange(num_frequencies, device=points.device, dtype=points.dtype)
    angles = (points.unsqueeze(-1) * freqs).flatten(-2)  # (..., 3 K)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _mlp(in_dim: int, hidden_dim: int, num_hidden_layers: int, out_dim: int) -> nn.Sequential:
    """`num_hidden_layers` Linear + SiLU layers of width `hidden_dim`, then a linear output layer."""
    layers: list[nn.Module] = []
    for n in range(num_hidden_layers):
        layers += [nn.Linear(in_dim if n == 0 else hidden_dim, hidden_dim), nn.SiLU()]
    layers.append(nn.Linear(hidden_dim if num_hidden_layers else in_dim, out_dim))
    return nn.Sequential(*layers)


def _small_init_(layer: nn.Linear, std: float = 1e-4) -> None:
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)


class TriplaneMeshGenerator(ModelMixin, ConfigMixin):
    """SDF, deformation and color fields on a triplane, and DMTet mesh extraction.

    Args:
        triplane_channels: C, channels of each plane (as `TextToTriplane` outputs).
        num_frequencies: K, frequencies of the positional encoding of x (0 disables it).
        mlp_hidden_dim: width of the three MLPs.
        mlp_num_layers: hidden layers of each MLP.
        sdf_init_radius: radius (world units) of the initial sphere surface; 0 starts with no
            surface at all.
        deformation_scale: bound of the vertex offsets, as a fraction of a grid cell
            (0.25: each vertex moves at most a quarter of a cell along each axis).
        tet_resolution: default marching resolution (cubes per axis of the tet grid over
            [-1, 1]^3).
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
    ):
        super().__init__()
        for name, value, low in (
            ("triplane_channels", triplane_channels, 1),
            ("num_frequencies", num_frequencies, 0),
            ("mlp_hidden_dim", mlp_hidden_dim, 1),
            ("mlp_num_layers", mlp_num_layers, 0),
            ("tet_resolution", tet_resolution, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not 0 <= sdf_init_radius < 1:
            raise ValueError(f"sdf_init_radius must be in [0, 1) (inside the [-1, 1]^3 box), got {sdf_init_radius!r}")
        if not 0 < deformation_scale <= 0.5:
            raise ValueError(f"deformation_scale must be in (0, 0.5] (a fraction of a cell), got {deformation_scale!r}")

        in_dim = 3 * triplane_channels + 3 + 6 * num_frequencies
        self.sdf_net = _mlp(in_dim, mlp_hidden_dim, mlp_num_layers, 1)
        self.deformation_net = _mlp(in_dim, mlp_hidden_dim, mlp_num_layers, 3)
        self.color_net = _mlp(in_dim, mlp_hidden_dim, mlp_num_layers, 3)
        _small_init_(self.sdf_net[-1])
        _small_init_(self.deformation_net[-1])
        self._tet_grids: dict[tuple[int, str], TetGrid] = {}

    # ---- fields -------------------------------------------------------------------------

    def sample_features(self, triplanes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Bilinear triplane features at points (`grid_sample`, align_corners=False, border padding).

        Args:
            triplanes: (B, 3, C, R, R), planes XY, XZ, YZ.
            points: (B, N, 3) in [-1, 1]^3 (x, y, z), world units.

        Returns:
            (B, N, 3C) float32: the XY, XZ and YZ features, concatenated in that order. Sampled
            in float32 whatever the triplanes' dtype: sample positions in bf16 would be off by
            up to 1/256 of the box.
        """
        if triplanes.ndim != 5 or triplanes.shape[1:3] != (3, self.config.triplane_channels):
            raise ValueError(
                f"triplanes must be (B, 3, {self.config.triplane_channels}, R, R), got {tuple(triplanes.shape)}"
            )
        if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] != triplanes.shape[0]:
            raise ValueError(f"points must be (B, N, 3) with B = {triplanes.shape[0]}, got {tuple(points.shape)}")
        b, n = points.shape[:2]
        x, y, z = points.float().unbind(-1)
        # (width, height) coordinates of each plane, as grid_sample's (x, y).
        grid = torch.stack([torch.stack(uv, -1) for uv in ((x, y), (x, z), (y, z))], dim=1)  # (B, 3, N, 2)
        features = F.grid_sample(
            triplanes.flatten(0, 1).float(),
            grid.reshape(b * 3, n, 1, 2),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )  # (B * 3, C, N, 1)
        return features.view(b, 3, -1, n).permute(0, 3, 1, 2).reshape(b, n, -1)

    def _mlp_input(self, triplanes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3C + 3 + 6K) in the MLPs' dtype: triplane features, x, positional encoding of x."""
        features = self.sample_features(triplanes, points)
        points = points.float()
        h = torch.cat([features, points, positional_encoding(points, self.config.num_frequencies)], dim=-1)
        return h.to(self.dtype)

    # The heads return float32 whatever the MLPs' dtype (bf16 weights, autocast): marching tets,
    # vertex positions and NeuS's densities are geometry, and bf16 keeps 8 bits of mantissa.
    def _sdf_head(self, h: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.sdf_net(h).float().squeeze(-1) + (points.float().norm(dim=-1) - self.config.sdf_init_radius)

    def _deformation_head(self, h: torch.Tensor, cell_size: float) -> torch.Tensor:
        return torch.tanh(self.deformation_net(h).float()) * (self.config.deformation_scale * cell_size)

    def _color_head(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.color_net(h).float())

    def sdf(self, triplanes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Signed distance, negative inside.

        Args:
            triplanes: (B, 3, C, R, R).
            points: (B, N, 3) in [-1, 1]^3.

        Returns:
            (B, N) float32 SDF values, world units.
        """
        return self._sdf_head(self._mlp_input(triplanes, points), points)

    def deformation(self, triplanes: torch.Tensor, points: torch.Tensor, cell_size: float) -> torch.Tensor:
        """Grid vertex offsets, each component in (-deformation_scale, deformation_scale) x cell_size.

        Args:
            triplanes: (B, 3, C, R, R).
            points: (B, N, 3) grid vertex positions in [-1, 1]^3.
            cell_size: edge of one cube of the tet grid in use, world units.

        Returns:
            (B, N, 3) float32 offsets, world units.
        """
        return self._deformation_head(self._mlp_input(triplanes, points), cell_size)

    def color(self, triplanes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """RGB albedo.

        Args:
            triplanes: (B, 3, C, R, R).
            points: (B, N, 3) in [-1, 1]^3.

        Returns:
            (B, N, 3) float32 colors in [0, 1].
        """
        return self._color_head(self._mlp_input(triplanes, points))

    def sdf_and_color(self, triplanes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SDF (B, N) and RGB (B, N, 3) in [0, 1], float32, at points (B, N, 3), sharing one feature
        lookup (the field a volume renderer queries in training stage 1)."""
        h = self._mlp_input(triplanes, points)
        return self._sdf_head(h, points), self._color_head(h)

    # ---- mesh extraction ----------------------------------------------------------------

    def tet_grid(self, resolution: int, device: torch.device | str) -> TetGrid:
        """The tet grid over [-1, 1]^3 with `resolution` cubes per axis, cached per device."""
        key = (resolution, str(device))
        if key not in self._tet_grids:
            self._tet_grids[key] = build_tet_grid(resolution, device=device)
        return self._tet_grids[key]

    def _fields(
        self, triplanes: torch.Tensor, points: torch.Tensor, cell_size: float, deform: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """SDF (B, N) and, if `deform`, grid offsets (B, N, 3) at `points (B, N, 3)`, sharing one feature lookup."""
        h = self._mlp_input(triplanes, points)
        return self._sdf_head(h, points), self._deformation_head(h, cell_size) if deform else None

    def _coarse_to_fine_fields(
        self, triplanes: torch.Tensor, grid: TetGrid, coarse_factor: int, band: float, deform: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """SDF (B, V) and offsets (B, V, 3) or None on `grid`, evaluated exactly only near the surface.

        1. The SDF on the grid `coarse_factor` times coarser, trilinearly upsampled to every
           vertex of `grid`: far from the surface only the sign matters to marching tets.
        2. Exact evaluation at the vertices of the coarse cells that have a corner with
           |SDF| < `band` coarse cells.
        3. Repeat until it adds nothing: exact evaluation at every not yet evaluated corner of
           a grid cube whose corners change sign. Afterwards every vertex of every tet that
           marching tets cuts carries its exact SDF (and offset), so the mesh equals the dense
           one unless a part of the surface lies entirely between coarse vertices that all
           have the wrong sign. Offsets are left at 0 at vertices never evaluated (no tet
           that marching tets cuts uses them).
        """
        b, n = triplanes.shape[0], grid.resolution + 1
        coarse = self.tet_grid(max(grid.resolution // coarse_factor, 1), triplanes.device)
        coarse_cell = coarse.cell_size
        coarse_sdf = self.sdf(triplanes, coarse.verts.expand(b, -1, -1)).view(b, 1, *(3 * [coarse.resolution + 1]))
        sdf = F.interpolate(coarse_sdf, size=(n, n, n), mode="trilinear", align_corners=True).view(b, -1)
        near = (coarse_sdf.abs() < band * coarse_cell).to(coarse_sdf.dtype)
        todo = F.interpolate(near, size=(n, n, n), mode="trilinear", align_corners=True).view(b, -1) > 0
        offsets = torch.zeros(b, n**3, 3, device=sdf.device, dtype=sdf.dtype) if deform else None
        evaluated = torch.zeros_like(todo)
        while todo.any():
            # The todo vertices of every item, packed to the left of a (B, max count) index
            # array; the padding repeats vertex 0 and is evaluated and dropped.
            rows, cols, slots, packed = pack_selected(todo)
            sdf_new, offsets_new = self._fields(triplanes, grid.verts[packed], grid.cell_size, deform)
            sdf[rows, cols] = sdf_new[rows, slots]
            if deform:
                offsets[rows, cols] = offsets_new[rows, slots]
            evaluated |= todo
            todo = _sign_change_cube_corners(sdf.view(b, 1, n, n, n)).view(b, -1) & ~evaluated
        return sdf, offsets

    def extract_mesh(
        self,
        triplanes: torch.Tensor,
        resolution: int | None = None,
        deform: bool = True,
        coarse_to_fine: bool = False,
        coarse_factor: int = 2,
        band: float = 1.0,
    ) -> list[Mesh]:
        """Meshes of the SDF's zero level set by deformable marching tetrahedra.

        SDF and deformation are evaluated at the undeformed grid vertices (as in DMTet).
        Differentiable with respect to the triplanes and all three MLPs (stage 2 training
        backpropagates through vertex positions and colors).

        Args:
            triplanes: (B, 3, C, R, R).
            resolution: cubes per axis of the tet grid over [-1, 1]^3; None uses the
                config's `tet_resolution`.
            deform: apply the deformation network to the grid vertices (False: the
                undeformed grid, as in training stage 1).
            coarse_to_fine: for inference, under `torch.no_grad`: evaluate the SDF on a grid
                `coarse_factor` times coarser first, then at full resolution only near the
                surface (see `_coarse_to_fine_fields`); the same mesh as the dense
                evaluation for any field whose surface the coarse grid sees.
            coarse_factor: how much coarser the first pass is, an int >= 2. Parts of the
                surface thinner than a coarse cell may be missed.
            band: with `coarse_to_fine`, the width in coarse cells of the |SDF| band that is
                evaluated at full resolution first (the sign-change pass extends it as needed).

        Returns:
            B meshes: verts (M, 3) world units inside [-1, 1]^3, faces (F, 3) int64, colors
            (M, 3) in [0, 1]. A field with no zero crossing gives `Mesh.empty()` and a warning.
        """
        resolution = self.config.tet_resolution if resolution is None else resolution
        grid = self.tet_grid(resolution, triplanes.device)
        if coarse_to_fine:
            if torch.is_grad_enabled():
                raise ValueError("coarse_to_fine=True is for inference: call extract_mesh under torch.no_grad()")
            if not isinstance(coarse_factor, int) or coarse_factor < 2:
                raise ValueError(f"coarse_factor must be an int >= 2, got {coarse_factor!r}")
            if not band > 0:
                raise ValueError(f"band must be positive (in coarse cells), got {band!r}")
            sdf, offsets = self._coarse_to_fine_fields(triplanes, grid, coarse_factor, band, deform)
        else:
            points = grid.verts.expand(triplanes.shape[0], -1, -1)
            sdf, offsets = self._fields(triplanes, points, grid.cell_size, deform)

        surfaces = []
        for i in range(triplanes.shape[0]):
            verts = grid.verts  # float32, as sdf and offsets
            if deform:
                # Deformed boundary vertices stay inside the [-1, 1]^3 box.
                verts = (verts + offsets[i]).clamp(-1.0, 1.0)
            surfaces.append(marching_tets(verts, sdf[i], grid.tets))
        # One color query for the batch, surface vertices zero-padded to the longest list.
        padded = pad_sequence([mesh_verts for mesh_verts, _ in surfaces], batch_first=True)
        colors = self.color(triplanes, padded) if padded.shape[1] else None

        meshes = []
        for i, (mesh_verts, faces) in enumerate(surfaces):
            if faces.shape[0] == 0:
                warnings.warn(
                    f"extract_mesh: the SDF of batch item {i} has no zero crossing on the "
                    f"{resolution}^3 tet grid; returning an empty mesh",
                    stacklevel=2,
                )
                meshes.append(Mesh.empty(device=triplanes.device, dtype=sdf.dtype))
            else:
                meshes.append(Mesh(verts=mesh_verts, faces=faces, colors=colors[i, : mesh_verts.shape[0]]))
        return meshes

def _sign_change_cube_corners(sdf: torch.Tensor) -> torch.Tensor:
    """Vertices that are corners of a grid cube whose corners change sign.

    Args:
        sdf: (B, 1, n, n, n) values at the vertices of a cube grid.

    Returns:
        (B, 1, n, n, n) bool.
    """
    inside = (sdf < 0).to(sdf.dtype)
    any_inside = F.max_pool3d(inside, kernel_size=2, stride=1)  # (B, 1, n-1, n-1, n-1), one per cube
    all_inside = -F.max_pool3d(-inside, kernel_size=2, stride=1)
    crossing = any_inside - all_inside
    return F.max_pool3d(crossing, kernel_size=2, stride=1, padding=1) > 0
