"""What each step of a train_atom.py run uses: its stage, its cameras' elevations, its view
guidance, its learning rates, its SDS timestep bound and its NeuS sharpness.

By default the learning-rate schedule (linear warm-up, then cosine decay to 10 %) and the
annealing of SDS's upper timestep bound span the whole run, across the stage switch. Setting any
of `STAGE2_SCHEDULE_FIELDS` gives each stage a schedule of its own: stage 1's spans its
`stage1_steps`, and stage 2's starts again at the switch (warm-up included) and spans the rest,
with the fields left None taken from the run's, and train_atom.py starts AdamW's moments afresh
at the switch. Then a longer or shorter stage 2 leaves stage 1 as it was, and a stage-2 run
(`--stage 2`) follows the same schedule, from the same optimizer state, as stage 2 of a whole one.

`cfg` is a `train_atom.AtomConfig` (any object with its fields).
"""
from __future__ import annotations

import math

from atom.guidance.sds import check_timestep_bounds

STAGE2_SCHEDULE_FIELDS = ("stage2_learning_rate", "stage2_warmup_steps", "stage2_max_step_percent",
                          "stage2_max_step_percent_end")


def stage_of(step: int, cfg) -> int:
    """The stage (1: NeuS, 2: DMTet) that 0-based `step` trains."""
    return cfg.stage if cfg.stage in (1, 2) else (1 if step < cfg.stage1_steps else 2)


def has_stage2_schedule(cfg) -> bool:
    """Whether stage 2 has a schedule of its own (any `STAGE2_SCHEDULE_FIELDS` set)."""
    return any(getattr(cfg, name) is not None for name in STAGE2_SCHEDULE_FIELDS)


def _stage2_value(stage: int, cfg, name: str, default):
    value = getattr(cfg, "stage2_" + name) if stage == 2 else None
    return default if value is None else value


def schedule_span(step: int, cfg) -> tuple[int, int]:
    """(first step, number of steps) of the schedule that `step` follows: the whole run, or with
    a stage-2 schedule in a two-stage run, the stage that `step` is in."""
    if cfg.stage in (1, 2) or not has_stage2_schedule(cfg):
        return 0, cfg.max_train_steps
    if step < cfg.stage1_steps:
        return 0, cfg.stage1_steps
    return cfg.stage1_steps, cfg.max_train_steps - cfg.stage1_steps


def schedule_progress(step: int, cfg) -> float:
    """Fraction in [0, 1) of its schedule's span done before `step` (SDS anneals over it)."""
    start, length = schedule_span(step, cfg)
    return (step - start) / max(1, length)


def learning_rates(step: int, cfg) -> tuple[float, float]:
    """(networks, NeuS sharpness) learning rates at `step`: linear warm-up over the span's first
    `warmup_steps` (stage 2's own: `stage2_warmup_steps`), then cosine decay to 10 % at its end."""
    stage = stage_of(step, cfg)
    start, length = schedule_span(step, cfg)
    warmup = _stage2_value(stage, cfg, "warmup_steps", cfg.warmup_steps)
    local = step - start
    if local < warmup:
        scale = (local + 1) / warmup
    else:
        progress = (local - warmup) / max(1, length - warmup)
        scale = 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return _stage2_value(stage, cfg, "learning_rate", cfg.learning_rate) * scale, cfg.sharpness_learning_rate * scale


def sharpness_at(step: int, cfg) -> float | None:
    """Stage 1's NeuS sharpness at `step` when it is ramped (`final_sharpness` set): from
    `init_sharpness` geometrically (linearly in the renderer's log parameter) to `final_sharpness`
    over the run's first `sharpness_ramp_steps` steps, then held. None: not ramped (the renderer's
    own sharpness, held or learned)."""
    if cfg.final_sharpness is None:
        return None
    progress = min(step / max(1, cfg.sharpness_ramp_steps), 1.0)
    return cfg.init_sharpness * (cfg.final_sharpness / cfg.init_sharpness) ** progress


def apply_step_schedule(step: int, cfg, optimizer, neus) -> None:
    """Sets what `step` trains with: the optimizer's learning rates (group 0 the networks, group 1
    the NeuS sharpness) and, in stage 1 with a ramp, the sharpness of `neus` (a NeuSRenderer)."""
    for group, lr in zip(optimizer.param_groups, learning_rates(step, cfg)):
        group["lr"] = lr
    if stage_of(step, cfg) == 1 and (sharpness := sharpness_at(step, cfg)) is not None:
        neus.set_sharpness(sharpness)


def timestep_bounds(stage: int, cfg) -> tuple[float, float | None]:
    """(max_step_percent, max_step_percent_end) of SDS in `stage`: the upper timestep bound at
    the start of the stage's schedule and where it anneals to (None: it stays)."""
    start = _stage2_value(stage, cfg, "max_step_percent", cfg.max_step_percent)
    return start, _stage2_value(stage, cfg, "max_step_percent_end", cfg.max_step_percent_end)


def elevation_range_of(stage: int, cfg) -> tuple[float, float]:
    """The (low, high) camera elevations in degrees that `stage` samples."""
    return tuple(_stage2_value(stage, cfg, "elevation_range", cfg.elevation_range))


def view_guidance_of(stage: int, cfg) -> float:
    """The view guidance scale SDS uses in `stage`."""
    return _stage2_value(stage, cfg, "view_guidance_scale", cfg.view_guidance_scale)


def check_schedules(cfg) -> None:
    """Clear errors, before anything loads, for schedule settings that cannot run."""
    if cfg.stage2_learning_rate is not None and cfg.stage2_learning_rate < 0:
        raise ValueError(f"stage2_learning_rate must be >= 0, got {cfg.stage2_learning_rate}")
    if cfg.stage2_warmup_steps is not None and cfg.stage2_warmup_steps < 0:
        raise ValueError(f"stage2_warmup_steps must be >= 0, got {cfg.stage2_warmup_steps}")
    if cfg.final_sharpness is not None:
        if min(cfg.init_sharpness, cfg.final_sharpness) < 1:
            raise ValueError(f"NeuS sharpness must be >= 1, got init_sharpness {cfg.init_sharpness} and "
                             f"final_sharpness {cfg.final_sharpness}")
        if cfg.sharpness_learning_rate != 0:
            raise ValueError("a ramped sharpness (final_sharpness) is set every step, not learned: "
                             "set sharpness_learning_rate 0")
        if cfg.sharpness_ramp_steps < 1:
            raise ValueError(f"sharpness_ramp_steps must be >= 1 with final_sharpness, got {cfg.sharpness_ramp_steps}")
    for stage in (1, 2):
        try:
            check_timestep_bounds(cfg.min_step_percent, *timestep_bounds(stage, cfg))
        except ValueError as error:
            fields = " (stage2_max_step_percent[_end])" if stage == 2 else ""
            raise ValueError(f"stage {stage}'s SDS timesteps: {error}{fields}") from None
