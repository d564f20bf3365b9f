"""Triangle rasterization behind one nvdiffrast-shaped interface.

Every backend offers nvdiffrast's three operations with its tensor conventions:

- `rasterize(pos (B,V,4) clip space, tri (T,3) int, resolution (H,W)) -> rast (B,H,W,4)`:
  per pixel (u, v, z/w, triangle_id + 1), 0 in the last channel where no triangle covers the
  pixel center. Barycentrics: the triangle's first vertex has weight u, the second v, the third
  1 - u - v (perspective-correct). Row 0 is the bottom row (OpenGL).
- `interpolate(attr (B,V,A) or (V,A), rast, tri) -> (B,H,W,A)`, zero on empty pixels.
- `antialias(color (B,H,W,C), rast, pos, tri) -> (B,H,W,C)`: blends across silhouette edges so
  that the image is differentiable with respect to the vertex positions there.

`NvdiffrastRasterizer` wraps `nvdiffrast.torch` (CUDA). `TorchRasterizer` runs anywhere: a
hard z-buffer (one nearest triangle per pixel, as nvdiffrast) built from per-triangle
bounding boxes, plus a soft-silhouette antialias. `get_rasterizer` picks one.
"""
from __future__ import annotations

import functools
from typing import Protocol

import torch

from .antialias import soft_antialias
from .screen_geometry import barycentric_2d, pixels_in_boxes, screen_coords

_Z_BITS = 30  # depth quantization for the packed (depth, triangle id) z-buffer key
_ID_BITS = 32


class Rasterizer(Protocol):
    name: str

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor: ...

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor: ...

    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor: ...


def _check_inputs(pos: torch.Tensor, tri: torch.Tensor) -> None:
    if pos.ndim != 3 or pos.shape[-1] != 4:
        raise ValueError(f"pos must be (B, V, 4) clip-space positions, got {tuple(pos.shape)}")
    if tri.ndim != 2 or tri.shape[-1] != 3 or tri.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"tri must be a (T, 3) int32/int64 tensor, got {tuple(tri.shape)} {tri.dtype}")


class TorchRasterizer:
    """Pure-PyTorch rasterizer with nvdiffrast's interface (see the module docstring).

    The z-buffer pass runs without autograd: every (triangle, pixel) pair inside a triangle's
    bounding box is tested, and the nearest triangle per pixel wins through one `scatter_reduce`
    on a packed (depth, id) key. The winners' perspective-correct barycentrics and depth are
    then recomputed with autograd, so `rast` is differentiable w.r.t. `pos` as in nvdiffrast.

    Args:
        max_pairs: bound on (triangle, pixel) pairs tested at once; bounds memory.
        edge_width: width, in pixels, of the coverage ramp that `antialias` puts outside
            silhouettes (at most `edge_radius`).
        edge_radius: how far, in pixels, `antialias` looks for a covered neighbour.
    """

    name = "torch"

    def __init__(self, max_pairs: int = 1 << 22, edge_width: float = 1.0, edge_radius: int = 1):
        if not 0 < edge_width <= edge_radius:
            raise ValueError(f"edge_width must be in (0, edge_radius={edge_radius}], got {edge_width}")
        self.max_pairs = max_pairs
        self.edge_width = edge_width
        self.edge_radius = edge_radius

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        _check_inputs(pos, tri)
        height, width = resolution
        batch = pos.shape[0]
        tri = tri.long()
        rast = torch.zeros(batch, height, width, 4, device=pos.device, dtype=pos.dtype)
        if tri.shape[0] == 0:
            return rast
        pixel, face = self._visible_triangles(pos.detach(), tri, height, width)
        if pixel.numel() == 0:
            return rast
        b = pixel // (height * width)
        py = (pixel // width) % height
        px = pixel % width
        corners = pos[b.unsqueeze(1), tri[face]]  # (N, 3, 4), differentiable
        x, y, z = screen_coords(corners, height, width)
        s0, s1, s2, _ = barycentric_2d(px.to(pos.dtype), py.to(pos.dtype), x, y)
        # Perspective correction: screen-space weights divided by w, renormalized.
        inv_w = 1.0 / corners[..., 3]
        p0, p1, p2 = s0 * inv_w[:, 0], s1 * inv_w[:, 1], s2 * inv_w[:, 2]
        total = p0 + p1 + p2
        z_ndc = s0 * z[:, 0] + s1 * z[:, 1] + s2 * z[:, 2]  # z/w is affine in screen space
        values = torch.stack([p0 / total, p1 / total, z_ndc, (face + 1).to(pos.dtype)], -1)
        return rast.view(-1, 4).index_put((pixel,), values).view(batch, height, width, 4)

    @torch.no_grad()
    def _visible_triangles(self, pos, tri, height, width) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat pixel index (N,) into (B*H*W) and the visible triangle id (N,) of each covered pixel."""
        batch, num_tri = pos.shape[0], tri.shape[0]
        corners = pos[:, tri].reshape(-1, 3, 4)  # (B*T, 3, 4)
        x, y, z = screen_coords(corners, height, width)
        in_front = (corners[..., 3] > 1e-8).all(-1)
        zbuf = torch.full((batch * height * width,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=pos.device)
        for flat, px, py in pixels_in_boxes(x, y, height, width, self.max_pairs, keep=in_front):
            b0, b1, b2, area = barycentric_2d(px.to(x.dtype), py.to(x.dtype), x[flat], y[flat])
            depth = b0 * z[flat, 0] + b1 * z[flat, 1] + b2 * z[flat, 2]
            hit = (b0 >= 0) & (b1 >= 0) & (b2 >= 0) & (area != 0) & (depth >= -1) & (depth <= 1)
            zq = ((depth[hit] + 1) * (0.5 * ((1 << _Z_BITS) - 1))).long()
            key = (zq << _ID_BITS) | (flat[hit] % num_tri)
            pixel = ((flat[hit] // num_tri) * height + py[hit]) * width + px[hit]
            zbuf.scatter_reduce_(0, pixel, key, reduce="amin")
        covered = zbuf != torch.iinfo(torch.int64).max
        pixel = covered.nonzero().squeeze(1)
        face = zbuf[pixel] & ((1 << _ID_BITS) - 1)
        return pixel, face

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = rast.shape
        if attr.ndim == 2:
            attr = attr.unsqueeze(0)
        attr = attr.expand(batch, -1, -1)
        face_id = rast[..., 3].detach().long() - 1  # (B, H, W)
        covered = face_id >= 0
        out = torch.zeros(batch, height, width, attr.shape[-1], device=attr.device, dtype=attr.dtype)
        if not covered.any():
            return out
        b = torch.arange(batch, device=rast.device).view(-1, 1, 1).expand_as(face_id)[covered]
        corners = tri.long()[face_id[covered]]  # (N, 3)
        u, v = rast[..., 0][covered].unsqueeze(-1), rast[..., 1][covered].unsqueeze(-1)
        a = attr[b.unsqueeze(1), corners]  # (N, 3, A)
        values = u * a[:, 0] + v * a[:, 1] + (1 - u - v) * a[:, 2]
        return out.index_put((covered,), values)

    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        return soft_antialias(color, rast, pos, tri, self.edge_width, self.edge_radius)


class NvdiffrastRasterizer:
    """`nvdiffrast.torch` on CUDA (install it from its source repository; see README).

    Rasterization and interpolation are nvdiffrast's; the antialias is `soft_antialias` by
    default, because nvdiffrast's own gives almost no silhouette gradient on dense meshes
    (DMTet meshes have 10k-100k faces). One CUDA context per instance: `get_rasterizer` keeps
    one instance per device, since a new context costs ~0.2 s.

    Args:
        device: the CUDA device.
        antialias: "soft" (`soft_antialias`) or "nvdiffrast" (`nvdiffrast.torch.antialias`).
    """

    name = "nvdiffrast"

    def __init__(self, device: torch.device | str = "cuda", antialias: str = "soft"):
        import nvdiffrast.torch as dr

        if antialias not in ("soft", "nvdiffrast"):
            raise ValueError(f"antialias must be 'soft' or 'nvdiffrast', got {antialias!r}")
        self._dr = dr
        self._ctx = dr.RasterizeCudaContext(device=torch.device(device))
        self.antialias_mode = antialias

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        _check_inputs(pos, tri)
        rast, _ = self._dr.rasterize(self._ctx, pos.float().contiguous(), tri.int().contiguous(), tuple(resolution))
        return rast

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        if attr.ndim == 2:
            attr = attr.unsqueeze(0)
        out, _ = self._dr.interpolate(attr.float().contiguous(), rast, tri.int().contiguous())
        return out

    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        if self.antialias_mode == "soft":
            return soft_antialias(color, rast, pos, tri)
        return self._dr.antialias(color.float().contiguous(), rast, pos.float().contiguous(), tri.int().contiguous())


@functools.cache
def nvdiffrast_import_error() -> str | None:
    """Why `nvdiffrast.torch` cannot be used here (the import's error), or None when it imports.

    A real import, not a search for the package: a source folder named `nvdiffrast` on
    `sys.path` is found as an empty namespace package, and a build against another CUDA fails
    only when its extension loads."""
    try:
        import nvdiffrast.torch as dr
    except Exception as error:  # ImportError, OSError of a CUDA library, a failed extension build
        return f"{type(error).__name__}: {error}"
    if not hasattr(dr, "RasterizeCudaContext"):
        return f"nvdiffrast.torch at {getattr(dr, '__file__', None) or 'a namespace package'} has no RasterizeCudaContext"
    return None


def nvdiffrast_available() -> bool:
    """Whether `nvdiffrast.torch` imports and offers `RasterizeCudaContext`."""
    return nvdiffrast_import_error() is None


_RASTERIZERS: dict[tuple[str, str], Rasterizer] = {}


def get_rasterizer(device: torch.device | str = "cpu", backend: str = "auto") -> Rasterizer:
    """The rasterizer for `device`, made once per device and backend (an nvdiffrast context is
    expensive to create, and `render_mesh` asks for one on every call).

    Args:
        backend: "auto" (nvdiffrast when it imports and `device` is CUDA, else torch),
            "torch" or "nvdiffrast".
    """
    device = torch.device(device)
    if backend not in ("auto", "torch", "nvdiffrast"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'nvdiffrast', got {backend!r}")
    if backend == "auto":
        backend = "nvdiffrast" if device.type == "cuda" and nvdiffrast_available() else "torch"
    if backend == "nvdiffrast":
        if device.type != "cuda":
            raise ValueError(f"the nvdiffrast backend needs a CUDA device, got {device}")
        if not nvdiffrast_available():
            raise ImportError(f"backend='nvdiffrast' but nvdiffrast does not import ({nvdiffrast_import_error()}); "
                              "see the README's CUDA section")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    key = (str(device) if backend == "nvdiffrast" else "any", backend)
    if key not in _RASTERIZERS:
        _RASTERIZERS[key] = NvdiffrastRasterizer(device) if backend == "nvdiffrast" else TorchRasterizer()
    return _RASTERIZERS[key]
