"""Two-stage amortized training of AToM with score distillation from a frozen 2D teacher.

    accelerate launch train/train_atom.py --config train/configs/shapes64.yaml
    accelerate launch train/train_atom.py --config train/configs/shapes64.yaml --resume_from_checkpoint latest
    accelerate launch train/train_atom.py --config train/configs/shapes64.yaml --stage 2 --init_from runs/stage1/pipeline
    accelerate launch train/train_atom.py --config train/configs/shapes64.yaml --stage2_view_guidance_scale 8 \
        --resume_from_checkpoint runs/atom-shapes64/checkpoint-1500 --output_dir runs/other-stage2
    accelerate launch train/train_atom.py --config train/configs/shapes64.yaml \
        --init_from pretrained/atom-shapes64 --prompts my_prompts.txt --output_dir runs/finetune
    accelerate launch --multi_gpu --num_processes 2 train/train_atom.py --config ...  # also on CPU (gloo)

Every step samples `prompts_per_step` prompts (each process from its own shard of the prompt
set) and `views_per_prompt` cameras for each. Stage 1 volume-renders the SDF (NeuS) at low
resolution and trains text-to-triplane, SDF and color; stage 2 extracts the DMTet mesh and
rasterizes it at a higher resolution, training everything including the deformation. The
stage switches at `stage1_steps` (or `--stage 1|2` runs one stage); the checkpoint saved there is
never rotated away, so stage 2 can be rerun from it with other settings. The learning rate and
SDS's timestep bound follow one schedule across the whole run or, with `stage2_learning_rate`,
`stage2_warmup_steps` or `stage2_max_step_percent[_end]` set, one for each stage
(stage_schedule.py). At the end the whole `AToMPipeline` is saved with a model card, and pushed
with `--push_to_hub true --hub_model_id`.
Every `log_steps` steps one JSON record goes to `output_dir/train_log.jsonl` (loss, SDS loss,
timesteps, learning rate, every process's prompts), besides the tracker.

(`accelerate launch --cpu --num_processes 2` starts a single process unless it is given an MPI
hostfile: use `--multi_gpu`, which on a machine without GPUs runs the processes on the CPU.)
"""
from __future__ import annotations

import json
import logging
import random
import shlex
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object, set_seed
from torch import nn
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    WallClock,
    append_log,
    load_config,
    resume_training,
    save_checkpoint,
    step_generator,
    use_cpu_backend,
)
from card import SUMMARY_FILE, card_data, stage_seconds_total, write_card  # noqa: E402
from prompt_sets import NAMED_SETS, load_prompts  # noqa: E402
from stage_schedule import (  # noqa: E402
    apply_step_schedule,
    check_schedules,
    elevation_range_of,
    has_stage2_schedule,
    schedule_progress,
    stage_of,
    timestep_bounds,
    view_guidance_of,
)
from validation import save_validation  # noqa: E402

from atom.data import VIEWS, caption, caption_variants, parse_prompt, view_word  # noqa: E402
from atom.geometry.mesh import Mesh, surface_area  # noqa: E402
from atom.geometry.regularizers import laplacian_smoothing, normal_consistency  # noqa: E402
from atom.guidance import DiffusionTeacher  # noqa: E402
from atom.guidance.sds import ScoreDistillation  # noqa: E402
from atom.guidance.teacher_prompts import TeacherPrompts  # noqa: E402
from atom.models.text_encoding import PromptEmbeddingCache  # noqa: E402
from atom.pipeline import AToMPipeline  # noqa: E402
from atom.render import NeuSRenderer, render_mesh, sample_cameras, sample_light_directions  # noqa: E402

logger = logging.getLogger("train_atom")


@dataclass
class AtomConfig:
    output_dir: str = "runs/atom"
    teacher: str = "pretrained/shapes-prior"  # diffusers folder or Hub id
    init_from: str | None = None  # an AToM pipeline (folder or Hub id); None builds `model_preset`
    model_preset: str = "shapes"
    # Constructor arguments of the preset's networks to change, e.g. {aware_conv: false} (the
    # 3D-aware convolution ablation); only for a model built from `model_preset`.
    model_overrides: dict[str, Any] = field(default_factory=dict)
    text_encoder: str | None = None  # None: all-MiniLM-L6-v2 from its PyPI package
    prompts: str | list[str] = "shapes64-seen"  # a named set, a .txt / .json file, or a list
    # Each step words each Shapes-world prompt it draws by one of these templates (atom.data.PHRASINGS),
    # the teacher seeing the same caption; None: prompts as written (other prompts always are).
    caption_phrasings: list[str] | None = None
    caption_synonym_prob: float = 0.0  # and names the shape by one of its synonyms this often
    validation_prompts: str | list[str] = "shapes64-validation"
    stage: int = 0  # 0: stage 1 then stage 2; 1 or 2: only that stage
    max_train_steps: int = 4000
    stage1_steps: int = 2000
    prompts_per_step: int = 8
    views_per_prompt: int = 1
    # stage 1: NeuS
    stage1_resolution: int = 32
    stage1_samples: int = 48
    stage1_importance: int = 0
    init_sharpness: float = 20.0
    # Ramped NeuS sharpness (needs sharpness_learning_rate 0): init_sharpness rises geometrically to
    # final_sharpness over the run's first sharpness_ramp_steps steps, then holds. None: no ramp.
    final_sharpness: float | None = None
    sharpness_ramp_steps: int = 0
    eikonal_weight: float = 0.1
    eikonal_points: int = 1024
    # share of the eikonal points drawn where the render's weights are (the visible surface band),
    # the rest uniformly; 0: all uniform (see NeuSRenderer.forward)
    eikonal_surface_fraction: float = 0.0
    # stage 2: DMTet + rasterization
    stage2_resolution: int = 64
    stage2_tet_resolution: int = 32
    normal_consistency_weight: float = 0.0
    laplacian_weight: float = 0.0
    # Weight of each mesh's surface area (world units^2): a minimal-surface prior. Where SDS hardly
    # tells one surface from another (a base seen edge-on), the mesh relaxes toward the smallest
    # surface that spans what the views hold in place.
    surface_area_weight: float = 0.0
    # optimization
    learning_rate: float = 1e-3
    sharpness_learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    # Stage 2's own schedule (train/stage_schedule.py): setting any of these restarts the warm-up,
    # cosine decay and timestep annealing at the switch, and stage 1's then span stage 1 alone.
    # None: the run's value (and, all None, one schedule across the whole run).
    stage2_learning_rate: float | None = None
    stage2_warmup_steps: int | None = None
    stage2_max_step_percent: float | None = None
    stage2_max_step_percent_end: float | None = None
    # guidance
    guidance_scale: float = 7.5
    view_guidance_scale: float = 0.0  # camera-conditioned teachers only (teacher.guide)
    stage2_view_guidance_scale: float | None = None  # stage 2's; None: view_guidance_scale
    min_step_percent: float = 0.02
    max_step_percent: float = 0.98
    max_step_percent_end: float | None = 0.5
    view_prompts: bool = True
    shading: str = "lambertian"
    light_jitter_deg: float = 30.0
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    elevation_range: list[float] = field(default_factory=lambda: [-10.0, 45.0])
    # Stage 2's camera elevations (degrees); None: elevation_range. Reaching below the horizon lets
    # the rasterized mesh's SDS see the bottoms that stage 2's free deformation can grow.
    stage2_elevation_range: list[float] | None = None
    distance_range: list[float] = field(default_factory=lambda: [2.8, 3.2])
    fovy_range: list[float] = field(default_factory=lambda: [38.0, 42.0])
    # bookkeeping
    checkpointing_steps: int = 200
    checkpoints_total_limit: int = 2
    validation_steps: int = 500
    validation_views: int = 4
    # Every this many steps the pipeline is also saved to output_dir/snapshots/step-<n> (weights,
    # no text encoder, the wall time so far): the quality-against-cost curve of a run. 0: never.
    snapshot_steps: int = 0
    log_steps: int = 20
    save_text_encoder: bool = True
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool | None = None
    seed: int = 0


class AToMModel(nn.Module):
    """The trained parts in one module (what accelerate wraps): text-to-triplane, the mesh
    generator and the NeuS sharpness. `forward` renders one step's views, so that under DDP
    every forward goes through the wrapper."""

    def __init__(self, pipe: AToMPipeline, cfg: AtomConfig):
        super().__init__()
        self.text_to_triplane = pipe.text_to_triplane
        self.mesh_generator = pipe.mesh_generator
        self.neus = NeuSRenderer(cfg.stage1_samples, cfg.stage1_importance, cfg.init_sharpness)
        self.cfg = cfg

    def forward(self, embeds, mask, cameras, light, stage: int) -> dict:
        """Renders `views_per_prompt` views of each prompt's shape.

        Args:
            embeds, mask: (P, L, D), (P, L) text tokens of P prompts.
            cameras, light: P x views_per_prompt cameras and (B, 3) light directions, grouped by prompt.
            stage: 1 (NeuS) or 2 (DMTet + rasterization).

        Returns:
            "rgb" (B, 3, H, W) in [0, 1]; "regularizer" (scalar, weighted); "empty" (stage 2:
            how many prompts gave no surface).
        """
        triplanes = self.text_to_triplane(embeds, mask)
        if stage == 1:
            return self._render_volume(triplanes.repeat_interleave(self.cfg.views_per_prompt, 0), cameras, light)
        return self._render_mesh(triplanes, cameras, light)

    def _render_volume(self, triplanes, cameras, light) -> dict:
        cfg = self.cfg
        out = self.neus(
            lambda points: self.mesh_generator.sdf_and_color(triplanes, points),
            cameras, cfg.stage1_resolution, light_dir=light, shading=cfg.shading, background=cfg.background,
            eikonal_points=cfg.eikonal_points if cfg.eikonal_weight > 0 else 0,
            eikonal_surface_fraction=cfg.eikonal_surface_fraction,
        )
        regularizer = cfg.eikonal_weight * out["eikonal"] if "eikonal" in out else torch.zeros((), device=triplanes.device)
        return {"rgb": out["rgb"], "regularizer": regularizer, "empty": 0}

    def _render_mesh(self, triplanes, cameras, light) -> dict:
        cfg = self.cfg
        k = cfg.views_per_prompt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # counted and logged as "empty" instead
            meshes = self.mesh_generator.extract_mesh(triplanes, resolution=cfg.stage2_tet_resolution)
        images, regularizer = [], torch.zeros((), device=triplanes.device)
        for i, mesh in enumerate(meshes):
            views = slice(i * k, (i + 1) * k)
            images.append(render_mesh(mesh, cameras[views], cfg.stage2_resolution, light[views], cfg.shading, cfg.background)["rgb"])
            regularizer = regularizer + mesh_regularizer(mesh, cfg)
        # A mesh that is empty, or covers no pixel, renders as plain background with no path
        # back to the model: a zero-valued term keeps one, so that backward still works (and
        # runs in step with the other processes under DDP) when no mesh of the step is seen.
        regularizer = regularizer + 0.0 * triplanes.sum()
        return {"rgb": torch.cat(images), "regularizer": regularizer / len(meshes), "empty": sum(m.is_empty for m in meshes)}


def mesh_regularizer(mesh: Mesh, cfg: AtomConfig) -> torch.Tensor:
    """Weighted normal consistency, Laplacian smoothing and surface area of one mesh (0 for an empty one)."""
    loss = torch.zeros((), device=mesh.verts.device)
    if mesh.is_empty:
        return loss
    if cfg.normal_consistency_weight > 0:
        loss = loss + cfg.normal_consistency_weight * normal_consistency(mesh.verts, mesh.faces)
    if cfg.laplacian_weight > 0:
        loss = loss + cfg.laplacian_weight * laplacian_smoothing(mesh.verts, mesh.faces)
    if cfg.surface_area_weight > 0:
        loss = loss + cfg.surface_area_weight * surface_area(mesh.verts, mesh.faces)
    return loss


def build_optimizer(model: AToMModel, cfg: AtomConfig) -> torch.optim.AdamW:
    """AdamW over the networks (group 0) and the NeuS sharpness (group 1); `apply_step_schedule` sets
    their rates at each step."""
    groups = [
        ([p for n, p in model.named_parameters() if not n.startswith("neus.")], cfg.learning_rate),
        (list(model.neus.parameters()), cfg.sharpness_learning_rate),
    ]
    return torch.optim.AdamW([{"params": params, "lr": lr} for params, lr in groups],
                             weight_decay=cfg.weight_decay)


def build_pipeline(cfg: AtomConfig) -> AToMPipeline:
    if cfg.init_from:
        if cfg.model_overrides:
            raise ValueError(f"model_overrides {cfg.model_overrides} change a model built from model_preset; "
                             f"init_from {cfg.init_from!r} loads a trained one: set one of the two")
        return AToMPipeline.from_pretrained(cfg.init_from)
    return AToMPipeline.from_components(cfg.model_preset, text_encoder_name_or_path=cfg.text_encoder, **cfg.model_overrides)


def caption_for(prompt: str, rng: random.Random, cfg: AtomConfig) -> str:
    """The caption one step uses for `prompt`: a Shapes-world prompt reworded by a random
    `caption_phrasings` template (and synonym), anything else as written."""
    pair = parse_prompt(prompt) if cfg.caption_phrasings else None
    if pair is None:
        return prompt
    return caption(*pair, rng, cfg.caption_synonym_prob, phrasings=cfg.caption_phrasings)


def all_captions(prompts: list[str], cfg: AtomConfig) -> list[str]:
    """Every caption `caption_for` can give these prompts."""
    captions = []
    for prompt in dict.fromkeys(prompts):
        pair = parse_prompt(prompt) if cfg.caption_phrasings else None
        captions += [prompt] if pair is None else caption_variants(*pair, cfg.caption_phrasings, cfg.caption_synonym_prob > 0)
    return list(dict.fromkeys(captions))


def encode_training_prompts(pipe: AToMPipeline, cfg: AtomConfig, prompts: list[str],
                            device: torch.device) -> tuple[PromptEmbeddingCache, TeacherPrompts]:
    """Every text embedding the loop needs, computed once before it on `device`: AToM's captions
    with AToM's encoder, and the teacher's (each caption with each view suffix) with the teacher's.
    The teacher's encoder is released afterwards and AToM's goes back to the CPU (validation and
    saving use it), so no text encoder runs in the loop or holds accelerator memory."""
    prompts = all_captions(prompts, cfg)
    atom_text = PromptEmbeddingCache(pipe.tokenizer, pipe.text_encoder.to(device), pipe.config.text_max_length)
    atom_text(prompts)
    atom_text.release_encoder()
    pipe.text_encoder.to("cpu")
    teacher_text = TeacherPrompts.for_teacher(cfg.teacher)
    teacher_text.encode_all([f"{p}, {v}" for p in prompts for v in VIEWS] if cfg.view_prompts else prompts, device)
    return atom_text, teacher_text


def check_double_backward(device: torch.device) -> None:
    """Stage 1's eikonal term differentiates SDF normals, which needs the double backward of
    `grid_sample` (torch 2.13 has it; 2.11 lacks it): fail before training, not at its first step."""
    planes = torch.zeros(1, 1, 2, 2, device=device, requires_grad=True)
    points = torch.zeros(1, 1, 1, 2, device=device, requires_grad=True)
    (normal,) = torch.autograd.grad(F.grid_sample(planes, points, align_corners=False).sum(), points, create_graph=True)
    try:
        torch.autograd.grad(normal.sum(), planes)
    except RuntimeError as error:
        raise RuntimeError(f"stage 1's eikonal term needs the double backward of grid_sample, which torch "
                           f"{torch.__version__} lacks: install torch >= 2.13, or set eikonal_weight 0") from error


def teacher_prompts_for(prompts: list[str], cameras, view_prompts: bool) -> list[str]:
    """View-dependent prompts ("..., side view") for the teacher, one per render."""
    if not view_prompts:
        return prompts
    return [f"{p}, {view_word(float(e), float(a))}" for p, e, a in zip(prompts, cameras.elevation, cameras.azimuth)]


def main(argv: list[str] | None = None, on_snapshot: Callable[[int, Path], bool] | None = None) -> None:
    """Trains as `argv` (or the command line) says. `on_snapshot(step, folder)` is called after each
    snapshot (`snapshot_steps`) is saved; when it returns True, training ends there and the model
    is saved as the final one (a run until it is good enough: the per-prompt cost comparison).
    Single process only."""
    cfg, args = load_config(AtomConfig, argv, description=__doc__)
    check_schedules(cfg)
    argv_of_run = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    accelerator = Accelerator(
        cpu=use_cpu_backend(),
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=cfg.mixed_precision,
        log_with="tensorboard" if _has_tensorboard() else None,
        project_dir=cfg.output_dir,
        # Stage 1 leaves the deformation net unused, stage 2 the NeuS sharpness.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if on_snapshot is not None and accelerator.num_processes > 1:
        raise ValueError("on_snapshot stops a single-process run; this one has several processes")
    set_seed(cfg.seed)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts(cfg.prompts)
    validation_prompts = load_prompts(cfg.validation_prompts)
    if accelerator.is_main_process:
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    # Prompts are sharded across processes: each process draws from its own slice.
    shard = prompts[accelerator.process_index :: accelerator.num_processes] or prompts

    pipe = build_pipeline(cfg)
    if cfg.eikonal_weight > 0 and stage_of(0, cfg) == 1:
        check_double_backward(accelerator.device)
    # The teacher in the mixed-precision dtype (SDS computes its gradient in float32 around it).
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    teacher = DiffusionTeacher.from_pretrained(cfg.teacher, dtype=weight_dtype).to(accelerator.device)
    atom_text, teacher_text = encode_training_prompts(pipe, cfg, shard, accelerator.device)
    sds = {stage: ScoreDistillation(teacher, cfg.guidance_scale, cfg.min_step_percent, *timestep_bounds(stage, cfg),
                                    cfg.view_guidance_scale) for stage in (1, 2)}
    if cfg.stage2_view_guidance_scale and not teacher.camera_conditioned:
        raise ValueError("stage2_view_guidance_scale needs a camera-conditioned teacher (this one takes no cameras)")

    model = AToMModel(pipe, cfg)
    optimizer = build_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers("atom", config={k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))})

    resume, state = resume_training(accelerator, out_dir, args.resume_from_checkpoint)
    step, clock = state["step"], WallClock(state.get("wall_seconds", 0.0))
    stage_seconds = state.get("stage_seconds", {"1": 0.0, "2": 0.0})
    if resume is not None:
        logger.info("resumed from %s at step %d", resume, step)
    if accelerator.is_main_process:
        append_log(out_dir, {"event": "start", "step": step, "resumed_from": None if resume is None else str(resume),
                             "num_processes": accelerator.num_processes})

    unwrapped: AToMModel = accelerator.unwrap_model(model)
    # The checkpoint at the stage switch is kept whatever the rotation: resumed from into another
    # output_dir, it runs stage 2 with other settings exactly as the whole command would.
    switch = cfg.stage1_steps if cfg.stage == 0 and cfg.stage1_steps < cfg.max_train_steps else None
    progress = tqdm(total=cfg.max_train_steps, initial=step, desc="AToM", disable=not accelerator.is_local_main_process)
    model.train()
    while step < cfg.max_train_steps:
        stage = stage_of(step, cfg)
        if step == switch and has_stage2_schedule(cfg):
            # A stage 2 with a schedule of its own starts like a `--stage 2` run: fresh AdamW
            # moments, so stage 1's NeuS gradient statistics do not scale its first updates.
            optimizer.optimizer.state.clear()
        started = clock.seconds
        gen = step_generator(cfg.seed, step, accelerator)
        rng = random.Random(gen.initial_seed())
        apply_step_schedule(step, cfg, optimizer, unwrapped.neus)
        with accelerator.accumulate(model):
            batch_prompts = [caption_for(rng.choice(shard), rng, cfg) for _ in range(cfg.prompts_per_step)]
            embeds, mask = atom_text(batch_prompts)
            view_prompts = [p for p in batch_prompts for _ in range(cfg.views_per_prompt)]
            cameras = sample_cameras(
                len(view_prompts), elevation_range=elevation_range_of(stage, cfg), distance_range=tuple(cfg.distance_range),
                fovy_range=tuple(cfg.fovy_range), generator=gen, device=accelerator.device,
            )
            light = sample_light_directions(cameras, cfg.light_jitter_deg, generator=gen)
            out = model(embeds.to(accelerator.device), mask.to(accelerator.device), cameras, light, stage)
            regularizer = out["regularizer"]
            condition = teacher_text.condition(teacher_prompts_for(view_prompts, cameras, cfg.view_prompts), cameras)
            guidance = sds[stage](out["rgb"], condition, progress=schedule_progress(step, cfg), generator=gen,
                                  view_guidance_scale=view_guidance_of(stage, cfg))
            loss = guidance["loss"] + regularizer
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        if not accelerator.sync_gradients:
            continue
        step += 1
        stage_seconds[str(stage)] += clock.seconds - started
        progress.update(1)
        progress.set_postfix(stage=stage, loss=f"{loss.item():.3f}")
        if step % cfg.log_steps == 0:
            logs = {"loss": loss.item(), "sds": guidance["loss"].item(), "grad_norm": guidance["grad_norm"].item(),
                    "stage": stage, "sharpness": unwrapped.neus.sharpness.item(), "empty_meshes": out["empty"],
                    "view_guidance": view_guidance_of(stage, cfg)}
            accelerator.log(logs, step=step)
            logger.info("step %d %s", step, " ".join(f"{k} {v:.4g}" for k, v in logs.items()))
            # Every process's prompts, in process order (a collective: all processes log together).
            all_prompts = gather_object(batch_prompts)
            if accelerator.is_main_process:
                append_log(out_dir, {"event": "step", "step": step, **logs, "t": guidance["t"].tolist(),
                                     "lr": optimizer.param_groups[0]["lr"], "prompts": all_prompts})
        if accelerator.is_main_process and cfg.stage == 0 and step == cfg.stage1_steps < cfg.max_train_steps:
            # Stage 1 alone, from the same run as the final model: the two-stage ablation's baseline.
            save_model(pipe, out_dir / "pipeline-stage1", cfg, argv_of_run, prompts, step, clock.seconds, stage_seconds,
                       accelerator)
        stop = False
        if accelerator.is_main_process and cfg.snapshot_steps > 0 and step % cfg.snapshot_steps == 0:
            snapshot = out_dir / "snapshots" / f"step-{step:06d}"
            save_model(pipe, snapshot, cfg, argv_of_run, prompts, step, clock.seconds, stage_seconds, accelerator, card=False)
            if on_snapshot is not None:
                with clock.paused():  # the hook's work (scoring the snapshot) is not training time
                    stop = on_snapshot(step, snapshot)
        if step % cfg.validation_steps == 0 and accelerator.is_main_process:
            save_validation(pipe, validation_prompts, out_dir / "validation" / f"step-{step:06d}", stage,
                            unwrapped.neus, cfg, accelerator)
        if step % cfg.checkpointing_steps == 0 or step in (cfg.max_train_steps, switch) or stop:
            save_checkpoint(accelerator, out_dir, step, cfg.checkpoints_total_limit,
                            {"wall_seconds": clock.seconds, "stage_seconds": stage_seconds}, keep=(switch,))
        if stop:
            logger.info("stopped at step %d: on_snapshot was satisfied", step)
            break
    progress.close()

    if accelerator.is_main_process:
        final = out_dir / "pipeline"
        summary = save_model(pipe, final, cfg, argv_of_run, prompts, step, clock.seconds, stage_seconds, accelerator)
        append_log(out_dir, {"event": "end", **summary})
        logger.info("saved %s: %s", final, summary)
        if cfg.push_to_hub:
            if not cfg.hub_model_id:
                raise ValueError("--push_to_hub needs --hub_model_id user/name")
            card = card_data(final, repo_id=cfg.hub_model_id)  # push_to_hub adds the architecture
            url = pipe.push_to_hub(cfg.hub_model_id, card_data=card, private=cfg.hub_private)
            logger.info("pushed to %s", url)
    accelerator.end_training()


def save_model(pipe: AToMPipeline, folder: Path, cfg: AtomConfig, argv: list[str], prompts: list[str], step: int,
               wall_seconds: float, stage_seconds: dict[str, float], accelerator: Accelerator, card: bool = True) -> dict:
    """Saves the pipeline as trained so far to `folder` with its training summary (and, with
    `card`, the model card); returns the summary."""
    facts = card_facts(cfg, argv, prompts, step, stage_seconds, accelerator)
    summary = {"steps": step, "wall_seconds": round(wall_seconds, 3),
               "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
               "num_processes": accelerator.num_processes, "prompts": len(facts["train_prompts"]),
               "teacher": cfg.teacher, **facts}
    if stage_seconds["2"] > 0:
        # The deformation was trained as offsets of the stage-2 grid's cells: meshes are
        # extracted on that grid by default (benchmarks/ceiling.py: stage 1 + 2 fitted to the
        # true shapes, Chamfer 0.0161 on its grid, 32, and 0.0169 on the preset's 48).
        pipe.mesh_generator.register_to_config(tet_resolution=cfg.stage2_tet_resolution)
    pipe.save_pretrained(folder, include_text_encoder=cfg.save_text_encoder and card)
    (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    if card:
        write_card(folder, pipe=pipe, repo_id=cfg.hub_model_id)
    return summary


def card_facts(cfg: AtomConfig, argv: list[str], prompts: list[str], steps: int, stage_seconds: dict[str, float],
               accelerator: Accelerator) -> dict:
    """What the model card says about the run (kept in training_summary.json). A run that
    starts from a folder train_atom.py saved (`--stage 2 --init_from runs/s1/pipeline`, or a
    stage-1 fine-tune of a stage-1 folder) also carries that run's commands and stage times."""
    named = cfg.prompts if isinstance(cfg.prompts, str) and cfg.prompts in NAMED_SETS else None
    trained = tuple(k for k in ("1", "2") if stage_seconds.get(k, 0) > 0)
    stages = {("1", "2"): "stage 1 then 2", ("1",): "stage 1 only", ("2",): "stage 2 only"}.get(trained, "no steps")
    command = f"accelerate launch train/{Path(__file__).name} {shlex.join(argv)}"
    earlier_file = Path(cfg.init_from or "") / SUMMARY_FILE
    earlier = json.loads(earlier_file.read_text()) if cfg.init_from and earlier_file.is_file() else {}
    return {
        "prompt_set": named,
        "train_prompts": list(dict.fromkeys(prompts)),  # a prompt listed k times (a weight) once
        # AToM never sees Shapes64's held-out prompts: the card lists them when it trained on the rest.
        "heldout_prompts": load_prompts("shapes64-held-out") if named == "shapes64-seen" else None,
        "training_command": "\n".join(filter(None, [earlier.get("training_command"), command])),
        "hardware": "; ".join(filter(None, [earlier.get("hardware"), (
            f"{accelerator.num_processes} process(es) on {accelerator.device.type}, "
            f"{torch.get_num_threads()} thread(s) each, {steps} steps ({stages}), "
            f"{cfg.prompts_per_step} prompts x {cfg.views_per_prompt} view(s) per step")])),
        "earlier_stage_seconds": stage_seconds_total(earlier),
    }


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


if __name__ == "__main__":
    main()
