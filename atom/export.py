"""Mesh files: GLB (glTF 2.0), OBJ and PLY, with vertex colors or a baked UV texture.

    from atom.export import export_mesh
    export_mesh(pipe("a red cube").meshes[0], "red_cube.glb")                 # COLOR_0
    export_mesh(pipe("a red cube").meshes[0], "red_cube.glb", uv_texture=True)  # baseColorTexture

Frame: positions are written as they are. The model frame is Y up, which is glTF's own
convention, so nothing is rotated or rescaled.

Colors: the pipeline's vertex colors are 8-bit albedo as an image stores it (sRGB-encoded).
glTF defines COLOR_0 as *linear*, so GLB files carry `srgb_to_linear(color)` there (float32),
while a baked texture stays sRGB-encoded as glTF requires of baseColorTexture: both GLB modes
look the same in a viewer. The GLB material is dielectric (metallicFactor 0, roughness 1):
glTF's default material is fully metallic, which renders vertex colors nearly black.
OBJ (`v x y z r g b`, floats in [0, 1]) and PLY (uchar red, green, blue, alpha) have no
color-space convention and carry the colors unchanged.

UV textures (`uv_texture=True`, GLB and OBJ): xatlas unwraps the mesh (vertices are split
along chart seams), the vertex colors are rasterized into the atlas with the project's
`TorchRasterizer`, and the texture is dilated a few pixels past the charts so that bilinear
lookups at seams do not pick up the background. The texture replaces the vertex colors (glTF
multiplies COLOR_0 into the base color, so carrying both would square the color). An OBJ
gets a `.mtl` and a `.png` of the same stem beside it.

Empty meshes (a prompt whose field has no surface: no faces) are written as valid empty files
with a warning, as the pipeline returns them with one: a glTF scene without a mesh, an OBJ or
PLY without vertices. A caller that would rather fail checks `mesh.is_empty` first.
"""
from __future__ import annotations

import io
import json
import logging
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from PIL import Image

from . import __version__
from .render.rasterizer import TorchRasterizer

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("glb", "obj", "ply")
UV_TEXTURE_FORMATS = ("glb", "obj")
TEXTURE_SIZE_RANGE = (16, 8192)
_GENERATOR = f"atom-text-to-mesh {__version__}"
_ATLAS_PADDING = 4  # pixels between xatlas charts (at the atlas' own resolution)
_DILATION = 4  # pixels the baked colors are grown past the charts

# glTF enums
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_COMPONENT_TYPES = {np.dtype(np.float32): 5126, np.dtype(np.uint32): 5125}
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_GLB_MAGIC, _GLB_JSON, _GLB_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942


@dataclass
class _Surface:
    """A mesh as the writers need it.

    Attributes:
        verts: (V, 3) float32 positions.
        faces: (F, 3) int64 vertex indices.
        colors: (V, 4) uint8 RGBA, sRGB-encoded.
        normals: (V, 3) float32 unit vertex normals.
        uv: (V, 2) float32 texture coordinates, origin at the image's bottom-left (OBJ's
            convention; GLB stores (u, 1 - v)); None without a texture.
        texture: (S, S, 3) uint8 image, row 0 at the top; None without a texture.
    """

    verts: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    normals: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None

    @property
    def is_empty(self) -> bool:
        return len(self.faces) == 0


# ---- public API -----------------------------------------------------------------------------


def export_mesh(
    mesh: trimesh.Trimesh,
    path: str | os.PathLike,
    file_format: str | None = None,
    uv_texture: bool = False,
    texture_size: int = 512,
) -> Path:
    """Writes `mesh` to `path` as GLB, OBJ or PLY (see the module docstring for colors and frames).

    Args:
        mesh: a `trimesh.Trimesh`, usually a pipeline output (vertex colors RGBA uint8, Y up).
        path: the file to write; its parent folder must exist. With `uv_texture` an OBJ also
            gets `<stem>.mtl` and `<stem>.png` beside it.
        file_format: one of `EXPORT_FORMATS`; None takes it from the suffix of `path`.
        uv_texture: bake the vertex colors into a UV texture (GLB and OBJ only).
        texture_size: texture width = height in pixels, in `TEXTURE_SIZE_RANGE`.

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: unknown format, `uv_texture` with PLY, a bad `texture_size`, non-finite
            vertex positions.
    """
    path = Path(path)
    file_format = _resolve_format(path, file_format)
    _check_texture_options(file_format, uv_texture, texture_size)
    surface = _surface(mesh, uv_texture, texture_size)
    if surface.is_empty:
        logger.warning("mesh has no faces: writing an empty %s file to %s", file_format.upper(), path)
    if file_format == "glb":
        path.write_bytes(_glb_bytes(surface))
    elif file_format == "obj":
        _write_obj(surface, path)
    else:
        path.write_bytes(_ply_bytes(surface))
    return path


def mesh_to_glb_bytes(mesh: trimesh.Trimesh, uv_texture: bool = False, texture_size: int = 512) -> bytes:
    """The GLB file `export_mesh(mesh, "x.glb", ...)` writes, as bytes (for a web app or an upload)."""
    _check_texture_options("glb", uv_texture, texture_size)
    return _glb_bytes(_surface(mesh, uv_texture, texture_size))


# ---- checks and conversion ------------------------------------------------------------------


def _resolve_format(path: Path, file_format: str | None) -> str:
    name = path.suffix.lstrip(".") if file_format is None else file_format
    if name.lower() not in EXPORT_FORMATS:
        source = f"the suffix of {str(path)!r}" if file_format is None else "file_format"
        raise ValueError(f"unknown export format {name!r} (from {source}); choose one of {', '.join(EXPORT_FORMATS)}")
    return name.lower()


def _check_texture_options(file_format: str, uv_texture: bool, texture_size: int) -> None:
    if uv_texture and file_format not in UV_TEXTURE_FORMATS:
        raise ValueError(
            f"uv_texture is supported for {', '.join(UV_TEXTURE_FORMATS)}, not {file_format!r}; "
            "PLY carries vertex colors only"
        )
    low, high = TEXTURE_SIZE_RANGE
    if not isinstance(texture_size, int) or isinstance(texture_size, bool) or not low <= texture_size <= high:
        raise ValueError(f"texture_size must be an int in [{low}, {high}], got {texture_size!r}")


def _surface(mesh: trimesh.Trimesh, uv_texture: bool, texture_size: int) -> _Surface:
    """Arrays of `mesh`, unwrapped and baked when `uv_texture` (and the mesh is not empty)."""
    if not isinstance(mesh, trimesh.Trimesh):
        raise TypeError(f"mesh must be a trimesh.Trimesh, got {type(mesh).__name__}")
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        return _Surface(np.zeros((0, 3), np.float32), faces, np.zeros((0, 4), np.uint8), np.zeros((0, 3), np.float32))
    verts = np.asarray(mesh.vertices, dtype=np.float32).reshape(-1, 3)
    if not np.isfinite(verts).all():
        raise ValueError(f"mesh has {int((~np.isfinite(verts)).any(1).sum())} vertices with non-finite positions")
    visual = mesh.visual.to_color() if mesh.visual.kind == "texture" else mesh.visual
    colors = np.asarray(visual.vertex_colors, dtype=np.uint8).reshape(-1, 4)
    surface = _Surface(verts, faces, colors, _vertex_normals(verts, faces))
    return _unwrap_and_bake(surface, texture_size) if uv_texture else surface


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float32 unit normals, area-weighted; +Y where undefined (unused or degenerate vertices)."""
    v0, v1, v2 = (verts[faces[:, i]].astype(np.float64) for i in range(3))
    face_normals = np.cross(v1 - v0, v2 - v0)  # length = 2 x area
    normals = np.zeros((len(verts), 3))
    for i in range(3):
        np.add.at(normals, faces[:, i], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-20, normals / np.maximum(length, 1e-20), [0.0, 1.0, 0.0])
    return normals.astype(np.float32)


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear values in [0, 1] (IEC 61966-2-1)."""
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


# ---- UV texture -----------------------------------------------------------------------------


def _unwrap_and_bake(surface: _Surface, texture_size: int) -> _Surface:
    """Splits `surface` along xatlas' chart seams and bakes its vertex colors into a texture."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(surface.verts, surface.faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = texture_size  # xatlas picks a texel density that roughly fills it
    pack.padding = _ATLAS_PADDING
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, faces, uv = atlas[0]  # new vertex -> old vertex (V',), (F, 3), (V', 2) in [0, 1]
    faces = faces.astype(np.int64)
    texture = _bake_texture(faces, uv, surface.colors[vmapping, :3], texture_size)
    return replace(
        surface,
        verts=surface.verts[vmapping],
        faces=faces,
        colors=surface.colors[vmapping],
        normals=surface.normals[vmapping],
        uv=uv.astype(np.float32),
        texture=texture,
    )


def _bake_texture(faces: np.ndarray, uv: np.ndarray, colors: np.ndarray, size: int) -> np.ndarray:
    """Rasterizes per-vertex colors in UV space.

    Args:
        faces: (F, 3) int64 indices into `uv`.
        uv: (V, 2) float coordinates in [0, 1], origin at the bottom-left.
        colors: (V, C) uint8.
        size: texture width = height, pixels.

    Returns:
        (size, size, C) uint8 image, row 0 at the top.
    """
    rasterizer = TorchRasterizer()
    uv_t = torch.from_numpy(np.ascontiguousarray(uv, dtype=np.float32))
    pos = torch.cat([uv_t * 2 - 1, torch.zeros(len(uv_t), 1), torch.ones(len(uv_t), 1)], 1)[None]  # (1, V, 4)
    tri = torch.from_numpy(faces.astype(np.int32))
    rast = rasterizer.rasterize(pos, tri, (size, size))
    baked = rasterizer.interpolate(torch.from_numpy(colors).float()[None], rast, tri)[0]  # (H, W, C)
    baked = _dilate(baked, rast[0, ..., 3] > 0, _DILATION)
    # Rasterizer row 0 is the bottom (v = 0); image row 0 is the top.
    return baked.flip(0).round().clamp(0, 255).to(torch.uint8).numpy()


def _dilate(image: torch.Tensor, covered: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grows `image (H, W, C)` from its `covered (H, W)` pixels by `pixels` rings (each new pixel
    takes the mean of its covered 8-neighbours), then fills what is left with the mean color (so
    that the coarse mip levels do not darken toward an empty background)."""
    color = (image * covered[..., None]).permute(2, 0, 1)[None]  # (1, C, H, W)
    mask = covered.float()[None, None]  # (1, 1, H, W)
    for _ in range(pixels):
        total = F.avg_pool2d(color, 3, stride=1, padding=1, divisor_override=1)
        count = F.avg_pool2d(mask, 3, stride=1, padding=1, divisor_override=1)
        grow = (mask == 0) & (count > 0)
        color = torch.where(grow, total / count.clamp_min(1), color)
        mask = mask + grow.float()
    if mask.sum() > 0:
        mean = color.sum((2, 3), keepdim=True) / mask.sum()
        color = torch.where(mask > 0, color, mean)
    return color[0].permute(1, 2, 0)


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- GLB ------------------------------------------------------------------------------------


class _BinaryChunk:
    """The GLB binary chunk under construction, with its bufferViews and accessors."""

    def __init__(self):
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add_view(self, blob: bytes, target: int | None = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))  # 4-byte alignment of every view
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(blob)}
        if target is not None:
            view["target"] = target
        self.data.extend(blob)
        self.views.append(view)
        return len(self.views) - 1

    def add_accessor(self, array: np.ndarray, kind: str, target: int, bounds: bool = False) -> int:
        """`array` (N, K) float32 or (N,) uint32; `kind` "VEC3", "SCALAR", ..."""
        accessor = {
            "bufferView": self.add_view(np.ascontiguousarray(array).tobytes(), target),
            "componentType": _COMPONENT_TYPES[array.dtype],
            "count": len(array),
            "type": kind,
        }
        if bounds:
            accessor["min"] = array.min(0).tolist()
            accessor["max"] = array.max(0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _glb_bytes(surface: _Surface) -> bytes:
    """A binary glTF 2.0 file: one node, one mesh, one dielectric PBR material (or none if empty)."""
    document: dict = {"asset": {"version": "2.0", "generator": _GENERATOR}, "scene": 0, "scenes": [{"name": "atom"}]}
    if surface.is_empty:
        return _glb_container(document, b"")
    chunk = _BinaryChunk()
    attributes = {
        "POSITION": chunk.add_accessor(surface.verts, "VEC3", _ARRAY_BUFFER, bounds=True),
        "NORMAL": chunk.add_accessor(surface.normals, "VEC3", _ARRAY_BUFFER),
    }
    pbr = {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 1.0}
    if surface.texture is None:
        linear = _srgb_to_linear(surface.colors[:, :3] / 255.0).astype(np.float32)
        attributes["COLOR_0"] = chunk.add_accessor(linear, "VEC3", _ARRAY_BUFFER)
    else:
        gltf_uv = np.stack([surface.uv[:, 0], 1.0 - surface.uv[:, 1]], 1).astype(np.float32)  # glTF: origin top-left
        attributes["TEXCOORD_0"] = chunk.add_accessor(gltf_uv, "VEC2", _ARRAY_BUFFER)
        image_view = chunk.add_view(_png_bytes(surface.texture))
        document["images"] = [{"bufferView": image_view, "mimeType": "image/png"}]
        document["samplers"] = [
            {"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR, "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}
        ]
        document["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0}
    indices = chunk.add_accessor(surface.faces.astype(np.uint32).reshape(-1), "SCALAR", _ELEMENT_ARRAY_BUFFER)
    document["scenes"][0]["nodes"] = [0]
    document["nodes"] = [{"mesh": 0, "name": "atom_mesh"}]
    document["meshes"] = [{"primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}]
    document["materials"] = [{"name": "albedo", "pbrMetallicRoughness": pbr}]
    document["accessors"] = chunk.accessors
    document["bufferViews"] = chunk.views
    return _glb_container(document, bytes(chunk.data))


def _glb_container(document: dict, binary: bytes) -> bytes:
    """GLB framing: 12-byte header, JSON chunk (space-padded), BIN chunk (zero-padded) if any."""
    if binary:
        binary += b"\0" * (-len(binary) % 4)
        document["buffers"] = [{"byteLength": len(binary)}]
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), _GLB_JSON) + text
    if binary:
        chunks += struct.pack("<II", len(binary), _GLB_BIN) + binary
    return struct.pack("<III", _GLB_MAGIC, 2, 12 + len(chunks)) + chunks


# ---- OBJ and PLY ----------------------------------------------------------------------------


def _write_obj(surface: _Surface, path: Path) -> None:
    """Wavefront OBJ: `v x y z r g b` (colors in [0, 1]); with a texture also `vt`, a `.mtl` and a `.png`."""
    header = f"# {_GENERATOR}\n"
    faces = surface.faces + 1  # OBJ indices start at 1
    if surface.texture is None:
        vertices = np.hstack([surface.verts, surface.colors[:, :3] / 255.0])
        body = _rows("v", vertices, "%.6f") + _rows("f", faces, "%d")
    else:
        mtl_path, png_path = path.with_suffix(".mtl"), path.with_suffix(".png")
        Image.fromarray(surface.texture).save(png_path)
        material = ["newmtl albedo", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", "illum 1", f"map_Kd {png_path.name}"]
        mtl_path.write_text(f"# {_GENERATOR}\n" + "\n".join(material) + "\n")
        header += f"mtllib {mtl_path.name}\nusemtl albedo\n"
        corners = np.repeat(faces, 2, axis=1)  # v/vt share indices: "f a/a b/b c/c"
        body = _rows("v", surface.verts, "%.6f") + _rows("vt", surface.uv, "%.6f") + _rows("f", corners, "%d/%d")
    path.write_text(header + body)


def _rows(keyword: str, values: np.ndarray, fmt: str) -> str:
    """OBJ lines `keyword a b c ...`, one per row of `values (N, K)`; `fmt` formats one element
    (or, like "%d/%d", a group of them)."""
    if len(values) == 0:
        return ""
    per_row = values.shape[1] // fmt.count("%")
    line = keyword + (" " + fmt) * per_row
    buffer = io.StringIO()
    np.savetxt(buffer, values, fmt=line)
    return buffer.getvalue()


def _ply_bytes(surface: _Surface) -> bytes:
    """Binary little-endian PLY: float x, y, z and uchar red, green, blue, alpha per vertex; int faces."""
    header = "\n".join(
        [
            "ply",
            "format binary_little_endian 1.0",
            f"comment {_GENERATOR}",
            f"element vertex {len(surface.verts)}",
            *(f"property float {axis}" for axis in "xyz"),
            *(f"property uchar {channel}" for channel in ("red", "green", "blue", "alpha")),
            f"element face {len(surface.faces)}",
            "property list uchar int vertex_indices",
            "end_header",
            "",
        ]
    )
    vertex = np.empty(len(surface.verts), dtype=[("xyz", "<f4", (3,)), ("rgba", "u1", (4,))])
    vertex["xyz"], vertex["rgba"] = surface.verts, surface.colors
    face = np.empty(len(surface.faces), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    face["count"], face["indices"] = 3, surface.faces
    return header.encode("ascii") + vertex.tobytes() + face.tobytes()
