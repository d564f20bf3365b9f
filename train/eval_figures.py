"""The pictures of train/evaluate.py's results: turntable grids (one row per prompt, labelled
with its verdict) and the overview table of the Shapes world (one view per (shape, color) pair).
Meshes are drawn with lambertian light from the camera on a white background."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from atom.data import COLORS, SHAPES
from atom.geometry.mesh import Mesh
from atom.render import Cameras, render_mesh, sample_light_directions, turntable_cameras


def to_render_mesh(mesh: trimesh.Trimesh) -> Mesh:
    """A `trimesh.Trimesh` (vertex colors RGBA uint8) as an `atom.geometry.Mesh` (colors in [0, 1])."""
    if len(mesh.faces) == 0:
        return Mesh.empty()
    colors = None
    if mesh.visual.kind == "vertex":
        colors = torch.tensor(mesh.visual.vertex_colors[:, :3] / 255.0, dtype=torch.float32)
    return Mesh(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.int64), colors)


@torch.no_grad()
def render_views(meshes: Sequence[trimesh.Trimesh], cameras: Cameras, resolution: int = 96,
                 progress: bool = True) -> list[torch.Tensor]:
    """(V, 3, H, W) images in [0, 1] per mesh, one per camera: lambertian shading with the
    light at the camera, white background."""
    light = sample_light_directions(cameras, 0.0)
    return [render_mesh(to_render_mesh(m), cameras, resolution, light, "lambertian", (1.0, 1.0, 1.0))["rgb"].clamp(0, 1)
            for m in tqdm(meshes, desc="rendering grid", unit="mesh", disable=not progress)]


def render_turntables(meshes: Sequence[trimesh.Trimesh], views: int = 4, resolution: int = 96,
                      elevation: float = 20.0, progress: bool = True) -> list[torch.Tensor]:
    """(views, 3, H, W) images in [0, 1] per mesh: turntable cameras from the front (azimuth 0)."""
    return render_views(meshes, turntable_cameras(views, elevation=elevation), resolution, progress)


def to_pil(image: torch.Tensor) -> Image.Image:
    """An (H, W, 3) image in [0, 1] (clamped) as an 8-bit PIL image."""
    array = (image.clamp(0, 1) * 255).round().byte().numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def labeled_grid(rows: Sequence[torch.Tensor], labels: Sequence[str], label_width: int = 200) -> Image.Image:
    """Rows of (V, 3, H, W) images in [0, 1] -> one image, a text label at the left of each row."""
    images = [row.permute(2, 0, 3, 1).reshape(row.shape[2], -1, 3) for row in rows]  # (H, V*W, 3)
    height, width = images[0].shape[0], images[0].shape[1]
    canvas = Image.new("RGB", (label_width + width, height * len(images)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, (image, label) in enumerate(zip(images, labels)):
        canvas.paste(to_pil(image), (label_width, i * height))
        draw.multiline_text((4, i * height + 4), label, fill=(0, 0, 0), font=font, spacing=2)
        if i:
            draw.line([(0, i * height), (canvas.width, i * height)], fill=(220, 220, 220))
    return canvas


def row_label(record: dict) -> str:
    """Two or three short lines: the prompt, its split and verdict, and what was recognized."""
    lines = [record["prompt"][:32], record["split"]]
    if record["parsed"]:
        lines[1] += "  correct" if record["correct"] else "  WRONG"
        if record["empty"]:
            lines.append("(empty mesh)")
        else:
            lines.append(f"{record['nearest_color']} {record['nearest_shape']}  IoU {record['volume_iou']:.2f}")
    return "\n".join(lines)


def save_grid(result: dict, path: str | Path, views: int = 4, resolution: int = 96, progress: bool = True) -> Path:
    """Renders the turntable grid of an `evaluate(..., return_meshes=True)` result to `path`."""
    if "meshes" not in result:
        raise ValueError("save_grid needs the meshes: call evaluate(..., return_meshes=True)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = render_turntables(result["meshes"], views, resolution, progress=progress)
    labeled_grid(rows, [row_label(r) for r in result["records"]]).save(path)
    return path


# Framing of an overview cell: held-out pairs in black, wrong meshes in red (over black).
_HELD_OUT_FRAME = (0, 0, 0)
_WRONG_FRAME = (220, 0, 0)


def save_overview(result: dict, path: str | Path, resolution: int = 96, azimuth: float = 30.0,
                  elevation: float = 20.0, progress: bool = True) -> Path:
    """One view per prompt laid out as the Shapes world's table (rows: `SHAPES`, columns:
    `COLORS`, in the world's order) and saved to `path`: the model card's overview. A black
    frame marks a held-out pair, a red one a mesh scored wrong; a pair without a prompt stays
    white. Needs `evaluate(..., return_meshes=True)` on prompts of the Shapes world, at most
    one per pair."""
    if "meshes" not in result:
        raise ValueError("save_overview needs the meshes: call evaluate(..., return_meshes=True)")
    cells = {}
    for record, mesh in zip(result["records"], result["meshes"]):
        if not record["parsed"]:
            raise ValueError(f"the overview is a table of Shapes-world pairs; {record['prompt']!r} is not one")
        pair = (record["shape"], record["color"])
        if pair in cells:
            raise ValueError(f"the overview has one cell per (shape, color) pair; two prompts name {pair}")
        cells[pair] = (record, mesh)
    colors = list(COLORS)
    cameras = turntable_cameras(1, elevation=elevation, start_azimuth=azimuth)
    images = render_views([mesh for _, mesh in cells.values()], cameras, resolution, progress)
    canvas = Image.new("RGB", (resolution * len(colors), resolution * len(SHAPES)), "white")
    draw = ImageDraw.Draw(canvas)
    for ((shape, color), (record, _)), image in zip(cells.items(), images):
        x, y = colors.index(color) * resolution, SHAPES.index(shape) * resolution
        canvas.paste(to_pil(image[0].permute(1, 2, 0)), (x, y))
        box = [x, y, x + resolution - 1, y + resolution - 1]
        if record["pair_split"] == "held_out":
            draw.rectangle(box, outline=_HELD_OUT_FRAME, width=2)
        if record["correct"] is False:
            draw.rectangle([x + 2, y + 2, x + resolution - 3, y + resolution - 3], outline=_WRONG_FRAME, width=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
