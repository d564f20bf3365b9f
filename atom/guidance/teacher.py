"""A frozen 2D diffusion teacher behind one interface, for score distillation.

`DiffusionTeacher` wraps a diffusers `UNet2DConditionModel` and its noise schedule, plus a VAE
for latent models. The same interface serves the three teacher kinds:

- the shipped `shapes-prior` (pixel space, MiniLM tokens, camera conditioning through the
  UNet's class embedding),
- DeepFloyd IF stage I (pixel space 64x64, T5 tokens; its UNet also predicts a variance,
  whose channels are dropped),
- Stable Diffusion (latent space: renders are VAE-encoded first).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from huggingface_hub import hf_hub_download
from torch import nn

from ..render.cameras import Cameras, azimuth_frequencies_for


def camera_frequencies(unet: UNet2DConditionModel) -> int | None:
    """The `azimuth_frequencies` of the camera features (`Cameras.conditioning`) that `unet`'s
    class embedding takes, or None for a UNet without camera conditioning."""
    cfg = unet.config
    if cfg.class_embed_type != "projection":
        return None
    return azimuth_frequencies_for(cfg.projection_class_embeddings_input_dim)


# Azimuth offset of the reference view that view guidance steers away from: the Shapes world's
# cube and pyramid repeat every 90 degrees, so 45 degrees is the view least like the requested one
# (for an object without symmetry it would be 180).
VIEW_GUIDANCE_OFFSET = 45.0


def guide(cond: torch.Tensor, uncond: torch.Tensor | None, guidance_scale: float,
          turned: torch.Tensor | None = None, view_guidance_scale: float = 0.0) -> torch.Tensor:
    """Classifier-free guidance, plus view guidance when `turned` is given:

        uncond + s (cond - uncond) + s_view (cond - turned)

    `cond` / `uncond` are the model outputs with and without the text at the requested camera,
    `turned` the output with the text at a camera turned away from it. A camera-conditioned
    model that uses its camera only weakly (the shapes-prior draws views near chance without
    it) still points from the turned view toward the requested one; this term amplifies that
    difference, as CFG amplifies the text's. Linear in the outputs, so it applies to epsilon and
    v alike. `uncond` None: no CFG term."""
    out = cond if uncond is None else uncond + guidance_scale * (cond - uncond)
    if turned is not None and view_guidance_scale != 0:
        out = out + view_guidance_scale * (cond - turned)
    return out


@dataclass
class TeacherCondition:
    """What the teacher is conditioned on, for a batch of B renders.

    Attributes:
        embeds: (B, L, D) the teacher's text-encoder token embeddings.
        mask: (B, L) bool, True at real tokens (None: all real).
        uncond_embeds: (B, L, D) the unconditional embeddings classifier-free guidance
            contrasts with (the empty prompt's, or zeros for the shapes prior); None disables CFG.
        uncond_mask: (B, L) bool or None.
        cameras: the render cameras (used only by camera-conditioned teachers).
    """

    embeds: torch.Tensor
    mask: torch.Tensor | None = None
    uncond_embeds: torch.Tensor | None = None
    uncond_mask: torch.Tensor | None = None
    cameras: Cameras | None = None

    def to(self, device: torch.device | str) -> "TeacherCondition":
        """The same condition with every tensor on `device` (text encoders often run elsewhere
        than the teacher: on the CPU, or not at all once their embeddings are cached)."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return TeacherCondition(move(self.embeds), move(self.mask), move(self.uncond_embeds), move(self.uncond_mask),
                                None if self.cameras is None else self.cameras.to(device))


def _load_model_index(name_or_path: str) -> dict:
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, "model_index.json")
    else:
        path = hf_hub_download(name_or_path, "model_index.json")
    with open(path) as f:
        return json.load(f)


class DiffusionTeacher(nn.Module):
    """A frozen text-to-image diffusion model that predicts classifier-free-guided noise.

    Args:
        unet: a `UNet2DConditionModel` predicting epsilon or v (`scheduler.config.prediction_type`;
            v is turned into epsilon here, so SDS sees one kind).
        scheduler: its training noise schedule (`alphas_cumprod` and `prediction_type` are used).
        vae: for latent models; None for pixel-space models.
    """

    def __init__(self, unet: UNet2DConditionModel, scheduler: DDPMScheduler, vae: AutoencoderKL | None = None):
        super().__init__()
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"teachers must predict 'epsilon' or 'v_prediction', not {self.prediction_type!r}")
        self.unet = unet.eval().requires_grad_(False)
        self.vae = None if vae is None else vae.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.clone().float(), persistent=False)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, dtype: torch.dtype | None = None, **kwargs) -> "DiffusionTeacher":
        """Loads the UNet, the scheduler and, when the folder has one, the VAE of a diffusers
        pipeline folder or Hub repo (shapes-prior, DeepFloyd/IF-I-*, stable-diffusion-*)."""
        name_or_path = os.fspath(name_or_path)
        index = _load_model_index(name_or_path)
        for required in ("unet", "scheduler"):
            if required not in index:
                raise ValueError(f"{name_or_path!r} has no {required!r} component; model_index.json lists {sorted(index)}")
        unet = UNet2DConditionModel.from_pretrained(name_or_path, subfolder="unet", torch_dtype=dtype, **kwargs)
        scheduler = DDPMScheduler.from_pretrained(name_or_path, subfolder="scheduler")
        vae = None
        if index.get("vae", [None])[0] is not None:
            vae = AutoencoderKL.from_pretrained(name_or_path, subfolder="vae", torch_dtype=dtype, **kwargs)
        return cls(unet, scheduler, vae)

    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def camera_frequencies(self) -> int | None:
        """See `camera_frequencies`: None for a teacher without camera conditioning."""
        return camera_frequencies(self.unet)

    @property
    def camera_conditioned(self) -> bool:
        return self.camera_frequencies is not None

    @property
    def image_size(self) -> int:
        """Side of the images the teacher sees, in pixels (for latent models, before encoding)."""
        size = self.unet.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        if self.vae is not None:
            size *= 2 ** (len(self.vae.config.block_out_channels) - 1)
        return size

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Renders (B, 3, H, W) in [0, 1] -> the model's x0: pixels in [-1, 1] at `image_size`,
        or scaled VAE latents; float32 whatever the teacher's dtype (SDS computes its gradient
        in float32, only the networks run in theirs). Differentiable."""
        images = images.float()
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, (self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        x = images * 2 - 1
        if self.vae is None:
            return x
        return self.vae.encode(x.to(self.vae.dtype)).latent_dist.sample().float() * self.vae.config.scaling_factor

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, for integer timesteps t (B,)."""
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(x0.dtype)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_noise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        condition: TeacherCondition,
        guidance_scale: float = 7.5,
        view_guidance_scale: float = 0.0,
        view_guidance_offset: float = VIEW_GUIDANCE_OFFSET,
    ) -> torch.Tensor:
        """Classifier-free-guided noise prediction eps_u + s (eps_c - eps_u), plus view guidance
        for camera-conditioned teachers (see `guide`). For a v-predicting UNet,
        eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t (linear in v, so guiding v is the same).

        Args:
            x_t: (B, C, h, w) noisy model-space input.
            t: (B,) int64 timesteps.
            condition: text (and camera) condition; without `uncond_embeds` CFG is skipped.
            guidance_scale: s; 1 gives the plain conditional prediction.
            view_guidance_scale: s_view; 0 skips view guidance (and its extra UNet pass).
            view_guidance_offset: degrees of azimuth of the turned camera view guidance contrasts with.

        Returns:
            (B, C, h, w) in the dtype of `x_t`.
        """
        batch = x_t.shape[0]
        condition = condition.to(x_t.device)
        use_cfg = condition.uncond_embeds is not None and guidance_scale != 1.0
        use_view = view_guidance_scale != 0
        if use_view and not self.camera_conditioned:
            raise ValueError("view guidance needs a camera-conditioned teacher (this one takes no cameras)")
        if self.camera_conditioned and condition.cameras is None:
            raise ValueError("this teacher is camera-conditioned: pass TeacherCondition(cameras=...)")
        # One batched UNet pass over the branches: text at the camera, no text, text at the turned camera.
        branches = [(condition.embeds, condition.mask, condition.cameras)]
        if use_cfg:
            branches.append((condition.uncond_embeds, condition.uncond_mask, condition.cameras))
        if use_view:
            branches.append((condition.embeds, condition.mask, condition.cameras.turned(view_guidance_offset)))
        embeds = torch.cat([e for e, _, _ in branches])
        mask = None
        if any(m is not None for _, m, _ in branches):
            mask = torch.cat([torch.ones(e.shape[:2], dtype=torch.bool, device=e.device) if m is None else m for e, m, _ in branches])
        class_labels = None
        if self.camera_conditioned:
            class_labels = torch.cat([c.conditioning(self.camera_frequencies) for _, _, c in branches]).to(x_t.device, self.unet.dtype)
        n = len(branches)
        out = self.unet(
            torch.cat([x_t] * n).to(self.unet.dtype),
            torch.cat([t] * n),
            encoder_hidden_states=embeds.to(self.unet.dtype),
            encoder_attention_mask=None if mask is None else mask.to(self.unet.dtype),
            class_labels=class_labels,
        ).sample
        # IF-style UNets also predict a variance: keep the noise channels only.
        outs = list(out[:, : x_t.shape[1]].to(x_t.dtype).split(batch))
        cond = outs.pop(0)
        uncond = outs.pop(0) if use_cfg else None
        out = guide(cond, uncond, guidance_scale, outs.pop(0) if use_view else None, view_guidance_scale)
        if self.prediction_type == "v_prediction":
            abar = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(x_t.dtype)
            out = abar.sqrt() * out + (1 - abar).sqrt() * x_t
        return out
