"""Validation during AToM training: turntable image grids and GLBs of a few prompts."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atom.__main__ import slugify
from atom.pipeline import AToMPipeline
from atom.render import NeuSRenderer, render_mesh, sample_light_directions, turntable_cameras

logger = logging.getLogger(__name__)


def image_grid(rows: list[torch.Tensor]) -> Image.Image:
    """Rows of (V, 3, H, W) images in [0, 1] -> one PIL image, a row per entry."""
    grid = torch.stack(rows)  # (P, V, 3, H, W)
    p, v, _, h, w = grid.shape
    array = grid.permute(0, 3, 1, 4, 2).reshape(p * h, v * w, 3).clamp(0, 1).mul(255).round().byte().cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array))


@torch.no_grad()
def save_validation(pipe: AToMPipeline, prompts: list[str], folder: Path, stage: int, neus: NeuSRenderer, cfg, accelerator) -> Path:
    """Renders `prompts` from `cfg.validation_views` turntable cameras as training sees them
    (NeuS in stage 1, the rasterized DMTet mesh in stage 2), saves `grid.png` and one GLB per
    prompt (marching tets at the training resolution) in `folder`, and logs the grid."""
    folder.mkdir(parents=True, exist_ok=True)
    device = accelerator.device
    cameras = turntable_cameras(cfg.validation_views, device=device)
    light = sample_light_directions(cameras, 0.0)
    embeds, mask = pipe.encode_prompt(prompts)
    triplanes = pipe.text_to_triplane(embeds.to(device), mask.to(device))
    meshes = pipe(prompt_embeds=embeds, prompt_attention_mask=mask, output_type="mesh",
                  marching_resolution=cfg.stage2_tet_resolution)
    rows = []
    for i, mesh in enumerate(meshes.meshes):
        if stage == 1:
            planes = triplanes[i : i + 1].expand(len(cameras), -1, -1, -1, -1)
            out = neus(lambda p: pipe.mesh_generator.sdf_and_color(planes, p), cameras, cfg.stage1_resolution * 2,
                       light_dir=light, shading=cfg.shading, background=cfg.background, stratified=False)
        else:
            out = render_mesh(mesh, cameras, cfg.stage2_resolution, light, cfg.shading, cfg.background)
        rows.append(out["rgb"].cpu())
        if not mesh.is_empty:
            mesh.to_trimesh().export(folder / f"{slugify(prompts[i])}.glb")
    grid = image_grid(rows)
    grid.save(folder / "grid.png")
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    if accelerator.log_with:
        tracker = accelerator.get_tracker("tensorboard", unwrap=True)
        tracker.add_image("validation", np.asarray(grid), global_step=int(folder.name.split("-")[-1]), dataformats="HWC")
    logger.info("validation renders in %s", folder)
    return folder
