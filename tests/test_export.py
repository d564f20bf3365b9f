"""GLB / OBJ / PLY export: round trips through trimesh's own readers, the baked UV texture
sampled as a viewer would, and the Khronos glTF validator on every GLB mode."""
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trimesh

from atom.export import EXPORT_FORMATS, export_mesh, mesh_to_glb_bytes

GLTF_DIR = Path(__file__).parent / "gltf"
RADIUS = 0.6


def _colors_of(points: np.ndarray) -> np.ndarray:
    """(N, 3) smooth RGB in [0, 255] (float) as a function of position, so that any copy of a
    vertex (xatlas splits them at seams) knows the color it should have."""
    return np.round(255 * np.clip(0.5 + 0.5 * points / RADIUS, 0, 1))


@pytest.fixture
def sphere() -> trimesh.Trimesh:
    """A colored sphere spanning y in [0, 1.2] (x, z in [-0.6, 0.6]), RGBA uint8 vertex colors."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS)
    rgb = _colors_of(mesh.vertices).astype(np.uint8)
    mesh.visual.vertex_colors = np.hstack([rgb, np.full((len(rgb), 1), 255, np.uint8)])
    mesh.vertices += [0.0, RADIUS, 0.0]
    return mesh


def _load_single(path: Path) -> trimesh.Trimesh:
    """The one mesh in a file (scene geometry kept whole: trimesh's force='mesh' drops attributes)."""
    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Trimesh):
        return loaded
    assert len(loaded.geometry) == 1, loaded.geometry
    return next(iter(loaded.geometry.values()))


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """What a viewer reads: texel centers at (i + 0.5) / size, clamp to edge, uv origin bottom-left
    (trimesh flips glTF's top-left v on load)."""
    height, width = image.shape[:2]
    x = np.clip(uv[:, 0] * width - 0.5, 0, width - 1)
    y = np.clip((1 - uv[:, 1]) * height - 0.5, 0, height - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def test_ply_round_trip_keeps_vertices_and_colors(sphere, tmp_path):
    loaded = _load_single(export_mesh(sphere, tmp_path / "sphere.ply"))
    np.testing.assert_allclose(loaded.vertices, sphere.vertices, atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, sphere.faces)
    np.testing.assert_array_equal(loaded.visual.vertex_colors, sphere.visual.vertex_colors)


def test_obj_round_trip_keeps_vertices_and_colors(sphere, tmp_path):
    loaded = _load_single(export_mesh(sphere, tmp_path / "sphere.obj"))
    np.testing.assert_allclose(loaded.vertices, sphere.vertices, atol=1e-5)
    assert np.abs(loaded.visual.vertex_colors.astype(int) - sphere.visual.vertex_colors).max() <= 1


def test_glb_keeps_y_up_bounds_and_linear_vertex_colors(sphere, tmp_path):
    loaded = _load_single(export_mesh(sphere, tmp_path / "sphere.glb"))
    np.testing.assert_allclose(loaded.bounds, [[-RADIUS, 0.0, -RADIUS], [RADIUS, 2 * RADIUS, RADIUS]], atol=1e-5)
    np.testing.assert_allclose(loaded.vertices, sphere.vertices, atol=1e-6)
    # glTF's COLOR_0 is linear: the sRGB-encoded 8-bit colors are decoded on the way out.
    expected = _srgb_to_linear(sphere.visual.vertex_colors[:, :3] / 255.0)
    np.testing.assert_allclose(loaded.visual.vertex_attributes["color"][:, :3], expected, atol=1e-6)
    assert mesh_to_glb_bytes(sphere) == (tmp_path / "sphere.glb").read_bytes()


@pytest.mark.parametrize("file_format", ["glb", "obj"])
def test_uv_texture_reproduces_vertex_colors(sphere, tmp_path, file_format):
    path = export_mesh(sphere, tmp_path / f"sphere.{file_format}", uv_texture=True, texture_size=256)
    loaded = _load_single(path)
    material = loaded.visual.material
    texture = material.baseColorTexture if file_format == "glb" else material.image
    assert texture is not None and texture.size == (256, 256)
    # Seams split vertices, so the file has more of them than the sphere.
    assert len(loaded.vertices) > len(sphere.vertices) and len(loaded.faces) == len(sphere.faces)
    sampled = _sample_bilinear(np.asarray(texture.convert("RGB"), dtype=float), loaded.visual.uv)
    error = np.abs(sampled - _colors_of(loaded.vertices - [0.0, RADIUS, 0.0])).max(1)
    assert error.max() <= 8 and error.mean() <= 2, (error.max(), error.mean())
    if file_format == "glb":  # the texture replaces COLOR_0 (glTF would multiply the two)
        assert "color" not in loaded.visual.vertex_attributes
    else:
        assert {p.name for p in tmp_path.iterdir()} == {"sphere.obj", "sphere.mtl", "sphere.png"}


def _validate(path: Path) -> dict:
    if not (GLTF_DIR / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("glTF validator not installed: run `npm ci --prefix tests/gltf`")
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the glTF validator needs node >= 18")
    result = subprocess.run(
        [node, str(GLTF_DIR / "validate.mjs"), str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("mode", ["vertex_colors", "uv_texture", "empty"])
def test_glb_passes_khronos_validator(sphere, tmp_path, mode):
    mesh = trimesh.Trimesh() if mode == "empty" else sphere
    path = export_mesh(mesh, tmp_path / f"{mode}.glb", uv_texture=mode == "uv_texture", texture_size=64)
    report = _validate(path)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    expected = {"vertex_colors": (1, False), "uv_texture": (1, True), "empty": (0, False)}[mode]
    assert (report["info"].get("drawCallCount", 0), report["info"]["hasTextures"]) == expected


def test_validator_catches_a_broken_glb(sphere, tmp_path):
    """The validator check can fail: a GLB whose POSITION bounds lie is an error."""
    data = bytearray(mesh_to_glb_bytes(sphere))
    json_length = struct.unpack_from("<I", data, 12)[0]
    document = json.loads(data[20 : 20 + json_length])
    document["accessors"][0]["max"] = [9.0, 9.0, 9.0]
    text = json.dumps(document, separators=(",", ":")).encode().ljust(json_length)
    assert len(text) == json_length
    data[20 : 20 + json_length] = text
    (tmp_path / "broken.glb").write_bytes(data)
    assert _validate(tmp_path / "broken.glb")["issues"]["numErrors"] > 0


@pytest.mark.parametrize("file_format", EXPORT_FORMATS)
def test_empty_mesh_writes_a_valid_empty_file(tmp_path, file_format, caplog):
    path = export_mesh(trimesh.Trimesh(), tmp_path / f"empty.{file_format}")
    assert "no faces" in caplog.text
    loaded = trimesh.load(path)
    assert isinstance(loaded, trimesh.Scene) and len(loaded.geometry) == 0


def test_format_errors_name_the_choices(sphere, tmp_path):
    with pytest.raises(ValueError, match=r"'stl'.*glb, obj, ply"):
        export_mesh(sphere, tmp_path / "sphere.stl")
    with pytest.raises(ValueError, match=r"'fbx'.*glb, obj, ply"):
        export_mesh(sphere, tmp_path / "sphere.glb", file_format="fbx")
    with pytest.raises(ValueError, match="uv_texture"):
        export_mesh(sphere, tmp_path / "sphere.ply", uv_texture=True)
    with pytest.raises(ValueError, match="texture_size"):
        export_mesh(sphere, tmp_path / "sphere.glb", uv_texture=True, texture_size=10)
    assert not list(tmp_path.iterdir())
    # An explicit format overrides the suffix (and is case-insensitive).
    assert export_mesh(sphere, tmp_path / "sphere.bin", file_format="PLY").read_bytes().startswith(b"ply\n")
