"""Trains the shapes-prior: the small text-to-image diffusion teacher of the Shapes world.

    accelerate launch train/train_prior.py --config train/configs/prior_shapes.yaml
    accelerate launch train/train_prior.py --config train/configs/prior_shapes.yaml --resume_from_checkpoint latest
    accelerate launch train/train_prior.py --config train/configs/prior_shapes.yaml \
        --init_from pretrained/shapes-prior --output_dir runs/prior-finetune --max_train_steps 1000

Data: renders of all 64 (shape, color) pairs from random cameras, shaded like AToM's training
renders. Conditioning: MiniLM token embeddings of a caption (synonyms, view words), and the
camera. Classifier-free guidance: the caption is replaced by zero tokens `text_dropout` of the
time. At the end the EMA weights are saved as a diffusers folder (`ShapesPriorPipeline`).
"""
from __future__ import annotations

import json
import logging
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    WallClock,
    load_config,
    resume_training,
    save_checkpoint,
    step_generator,
    use_cpu_backend,
)

from atom.data import AZIMUTH_SYMMETRY, COLORS, SHAPES, caption, view_word  # noqa: E402
from atom.data.renders import ShapeRenders, render_shapes  # noqa: E402
from atom.guidance.shapes_prior import (  # noqa: E402
    TEXT_MAX_LENGTH,
    ShapesPriorPipeline,
    build_prior_scheduler,
    build_prior_unet,
    camera_features,
)
from atom.models.text_encoding import PromptEmbeddingCache, load_text_encoder  # noqa: E402

logger = logging.getLogger("train_prior")


@dataclass
class PriorConfig:
    output_dir: str = "runs/shapes-prior"
    preset: str = "shapes"  # UNet size, see atom.guidance.shapes_prior.PRIOR_PRESETS
    # A ShapesPriorPipeline folder (or Hub id) whose UNet the run fine-tunes (its EMA starts
    # there too) instead of building `preset` from scratch.
    init_from: str | None = None
    views_per_pair: int = 256
    supersample: int = 2
    batch_size: int = 32
    max_train_steps: int = 6000
    learning_rate: float = 3e-4
    lr_warmup_steps: int = 200
    weight_decay: float = 0.01
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    snr_gamma: float | None = 5.0  # Min-SNR loss weighting (Hang et al. 2023); None: plain MSE
    # Sampling weight of the renders of shapes whose image shows the azimuth (cube, pyramid:
    # AZIMUTH_SYMMETRY) relative to the solids of revolution, whose images carry no azimuth cue.
    view_shape_weight: float = 1.0
    text_dropout: float = 0.1
    synonym_prob: float = 0.3
    # Caption templates drawn uniformly (atom.data.PHRASINGS); one, as the shipped priors were trained.
    phrasings: list[str] = field(default_factory=lambda: ["{a} {color} {shape}"])
    view_word_prob: float = 0.5
    ema_decay: float = 0.999
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2
    log_steps: int = 50
    mixed_precision: str = "no"
    seed: int = 0


def sample_captions(renders: ShapeRenders, idx: torch.Tensor, rng: random.Random, cfg: PriorConfig) -> list[str]:
    colors = list(COLORS)
    out = []
    for i in idx.tolist():
        cams = renders.cameras
        view = view_word(float(cams.elevation[i]), float(cams.azimuth[i])) if rng.random() < cfg.view_word_prob else None
        out.append(caption(SHAPES[renders.shape_index[i]], colors[renders.color_index[i]], rng, cfg.synonym_prob, view,
                           cfg.phrasings))
    return out


def loss_weight(abar: torch.Tensor, v_prediction: bool, snr_gamma: float | None) -> torch.Tensor:
    """(B,) per-sample weights of the MSE: Min-SNR-gamma, min(SNR, gamma) / SNR for epsilon
    targets and min(SNR, gamma) / (SNR + 1) for v targets (both weight x0 errors alike), so the
    nearly clean timesteps stop dominating the gradient; ones when `snr_gamma` is None."""
    if snr_gamma is None:
        return torch.ones_like(abar)
    snr = abar / (1 - abar).clamp_min(1e-8)
    return snr.clamp(max=snr_gamma) / (snr + 1 if v_prediction else snr.clamp_min(1e-8))


def sampling_weights(renders: ShapeRenders, view_shape_weight: float) -> torch.Tensor:
    """(N,) relative draw probability of each render: `view_shape_weight` for cube and pyramid
    renders, 1 for the rest."""
    if view_shape_weight <= 0:
        raise ValueError(f"view_shape_weight must be positive, got {view_shape_weight}")
    shows_view = torch.tensor([AZIMUTH_SYMMETRY[name] is not None for name in SHAPES])[renders.shape_index]
    return torch.where(shows_view, view_shape_weight, 1.0)


def load_or_render(cfg: PriorConfig, resolution: int, accelerator: Accelerator) -> ShapeRenders:
    """Renders once per output folder; a resumed run reuses the file."""
    path = Path(cfg.output_dir) / f"renders-{cfg.views_per_pair}x{resolution}.pt"
    if accelerator.is_main_process and not path.exists():
        renders = render_shapes(cfg.views_per_pair, resolution, cfg.supersample, seed=cfg.seed)
        torch.save(renders.state_dict(), path)
    accelerator.wait_for_everyone()
    return ShapeRenders.from_state_dict(torch.load(path))


def main(argv: list[str] | None = None) -> None:
    cfg, args = load_config(PriorConfig, argv, description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    accelerator = Accelerator(
        cpu=use_cpu_backend(),
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=cfg.mixed_precision,
    )
    set_seed(cfg.seed)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    if cfg.init_from:
        initial = ShapesPriorPipeline.from_pretrained(cfg.init_from)
        unet, scheduler = initial.unet, initial.scheduler
        logger.info("fine-tuning the UNet of %s", cfg.init_from)
    else:
        unet, scheduler = build_prior_unet(cfg.preset), build_prior_scheduler()
    resolution = unet.config.sample_size
    # Captions vary per sample (synonyms, view words); each distinct one is encoded once.
    text_cache = PromptEmbeddingCache(*load_text_encoder(), max_length=TEXT_MAX_LENGTH)
    renders = load_or_render(cfg, resolution, accelerator)
    weights = sampling_weights(renders, cfg.view_shape_weight)
    logger.info("%d renders at %dx%d, UNet %.2f M params", len(renders), resolution, resolution,
                sum(p.numel() for p in unet.parameters()) / 1e6)

    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.lr_warmup_steps, cfg.max_train_steps)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)
    alphas_cumprod = scheduler.alphas_cumprod.to(accelerator.device)
    v_prediction = scheduler.config.prediction_type == "v_prediction"

    resume, state = resume_training(accelerator, out_dir, args.resume_from_checkpoint)
    step, clock = state["step"], WallClock(state.get("wall_seconds", 0.0))
    if resume is not None:
        logger.info("resumed from %s at step %d", resume, step)

    progress = tqdm(total=cfg.max_train_steps, initial=step, desc="prior", disable=not accelerator.is_local_main_process)
    running = None
    unet.train()
    while step < cfg.max_train_steps:
        gen = step_generator(cfg.seed, step, accelerator)
        rng = random.Random(gen.initial_seed())
        with accelerator.accumulate(unet):
            idx = torch.multinomial(weights, cfg.batch_size, replacement=True, generator=gen)
            x0 = (renders.images[idx].float() / 127.5 - 1).to(accelerator.device)
            embeds, mask = text_cache(sample_captions(renders, idx, rng, cfg))
            drop = torch.rand(cfg.batch_size, generator=gen) < cfg.text_dropout
            embeds = torch.where(drop.view(-1, 1, 1), torch.zeros_like(embeds), embeds)
            mask = mask | drop.view(-1, 1)
            cams = renders.cameras[idx]
            noise = torch.randn(x0.shape, generator=gen).to(x0)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(accelerator.device)
            abar = alphas_cumprod[t].view(-1, 1, 1, 1)
            noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
            pred = unet(
                noisy, t,
                encoder_hidden_states=embeds.to(accelerator.device),
                encoder_attention_mask=mask.to(accelerator.device, x0.dtype),
                class_labels=camera_features(accelerator.unwrap_model(unet), cams).to(accelerator.device),
            ).sample
            target = abar.sqrt() * noise - (1 - abar).sqrt() * x0 if v_prediction else noise
            loss = loss_weight(abar.flatten(), v_prediction, cfg.snr_gamma).view(-1, 1, 1, 1) * (pred.float() - target.float()) ** 2
            loss = loss.mean()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), cfg.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        if not accelerator.sync_gradients:
            continue
        ema.step(unet.parameters())
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        progress.update(1)
        progress.set_postfix(loss=f"{running:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        if step % cfg.log_steps == 0:
            logger.info("step %d loss %.4f (smoothed %.4f) wall %.0f s", step, loss.item(), running, clock.seconds)
        if step % cfg.checkpointing_steps == 0 or step == cfg.max_train_steps:
            save_checkpoint(accelerator, out_dir, step, cfg.checkpoints_total_limit,
                            {"wall_seconds": clock.seconds, "smoothed_loss": running})
    progress.close()

    if accelerator.is_main_process:
        final = accelerator.unwrap_model(unet)
        ema.copy_to(final.parameters())
        data_mean = round(renders.images.float().mean().item() / 127.5 - 1, 4)  # in [-1, 1]
        pipeline = ShapesPriorPipeline(unet=final, scheduler=scheduler, data_mean=data_mean)
        pipeline.save_pretrained(out_dir / "pipeline")
        summary = {"steps": step, "wall_seconds": round(clock.seconds, 1), "smoothed_loss": running,
                   "num_processes": accelerator.num_processes, "threads": torch.get_num_threads(),
                   "renders": len(renders), "resolution": resolution}
        (out_dir / "pipeline" / "training_summary.json").write_text(json.dumps(summary, indent=2))
        logger.info("saved %s: %s", out_dir / "pipeline", summary)
    accelerator.end_training()


if __name__ == "__main__":
    main()
