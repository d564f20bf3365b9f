"""train/stage_schedule.py: one schedule across the whole run by default, or each stage its own
when a stage-2 schedule field is set (stage 2's length then leaves stage 1 as it was)."""
import math
from dataclasses import replace

import pytest

from train_scripts import load_train_script

train_atom = load_train_script("train_atom")
schedule = load_train_script("stage_schedule")


def config(**changes):
    cfg = train_atom.AtomConfig(max_train_steps=30, stage1_steps=20, warmup_steps=4, learning_rate=1e-3,
                                sharpness_learning_rate=1e-2, max_step_percent=0.9, max_step_percent_end=0.5)
    return replace(cfg, **changes)


def rates(cfg) -> list[float]:
    return [schedule.learning_rates(step, cfg)[0] for step in range(cfg.max_train_steps)]


def test_one_schedule_across_the_switch_by_default():
    cfg = config()
    lr = rates(cfg)
    assert lr[:4] == pytest.approx([1e-3 * k / 4 for k in (1, 2, 3, 4)])  # warm-up
    assert all(a >= b for a, b in zip(lr[4:], lr[5:]))  # one cosine decay, no restart at the switch
    assert lr[-1] == pytest.approx(1e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi * 25 / 26))))
    assert [schedule.schedule_progress(s, cfg) for s in (0, 20, 29)] == pytest.approx([0, 20 / 30, 29 / 30])
    assert schedule.timestep_bounds(1, cfg) == schedule.timestep_bounds(2, cfg) == (0.9, 0.5)
    # so a longer stage 2 changes stage 1
    assert rates(replace(cfg, max_train_steps=60))[:20] != lr[:20]


def test_a_stage2_field_gives_each_stage_its_own_schedule():
    cfg = config(stage2_learning_rate=2e-4, stage2_warmup_steps=2, stage2_max_step_percent=0.4,
                 stage2_max_step_percent_end=0.2)
    assert schedule.has_stage2_schedule(cfg) and not schedule.has_stage2_schedule(config())
    lr = rates(cfg)
    # stage 1: warm-up, then a decay that reaches 10 % at its own last step
    assert lr[:4] == pytest.approx([1e-3 * k / 4 for k in (1, 2, 3, 4)])
    assert lr[19] == pytest.approx(1e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi * 15 / 16))))
    # stage 2 starts again: its warm-up from its own rate, then its decay
    assert lr[20:22] == pytest.approx([1e-4, 2e-4])
    assert lr[29] == pytest.approx(2e-4 * (0.1 + 0.45 * (1 + math.cos(math.pi * 7 / 8))))
    assert all(a >= b for a, b in zip(lr[21:], lr[22:]))
    assert schedule.learning_rates(25, cfg)[1] == pytest.approx(1e-2 * lr[25] / 2e-4)  # the sharpness follows
    assert [schedule.schedule_progress(s, cfg) for s in (0, 19, 20, 29)] == pytest.approx([0, 19 / 20, 0, 9 / 10])
    assert schedule.timestep_bounds(1, cfg) == (0.9, 0.5) and schedule.timestep_bounds(2, cfg) == (0.4, 0.2)
    # stage 2's length leaves stage 1 as it was
    longer = replace(cfg, max_train_steps=60)
    assert rates(longer)[:20] == lr[:20]
    assert [schedule.schedule_progress(s, longer) for s in range(20)] == [schedule.schedule_progress(s, cfg) for s in range(20)]


def test_fields_left_none_take_the_runs_values():
    cfg = config(stage2_max_step_percent=0.6)
    lr = rates(cfg)
    assert lr[20:24] == pytest.approx([1e-3 * k / 4 for k in (1, 2, 3, 4)])  # the run's rate and warm-up, restarted
    assert schedule.timestep_bounds(2, cfg) == (0.6, 0.5)


def test_a_stage2_run_follows_stage_2s_schedule_over_all_its_steps():
    """`--stage 2` (e.g. from a stage-1 folder) runs stage 2's settings over the whole run, so 10
    steps of it follow what the last 10 of a 20 + 10 run follow."""
    whole = config(stage2_learning_rate=2e-4, stage2_warmup_steps=2, stage2_max_step_percent=0.4)
    alone = replace(whole, stage=2, max_train_steps=10)
    assert rates(alone) == pytest.approx(rates(whole)[20:])
    assert [schedule.schedule_progress(s, alone) for s in range(10)] == [schedule.schedule_progress(s, whole) for s in range(20, 30)]
    assert schedule.stage_of(0, alone) == 2 and schedule.timestep_bounds(2, alone) == (0.4, 0.5)


def test_schedule_errors():
    schedule.check_schedules(config(stage2_learning_rate=0.0, stage2_warmup_steps=0, stage2_max_step_percent=0.3))
    with pytest.raises(ValueError, match="stage2_learning_rate"):
        schedule.check_schedules(config(stage2_learning_rate=-1.0))
    with pytest.raises(ValueError, match="stage2_warmup_steps"):
        schedule.check_schedules(config(stage2_warmup_steps=-3))
    with pytest.raises(ValueError, match="stage 2's SDS timesteps.*stage2_max_step_percent"):
        schedule.check_schedules(config(stage2_max_step_percent=1.5))
    with pytest.raises(ValueError, match="stage 2's SDS timesteps.*max_step_percent_end"):
        schedule.check_schedules(config(stage2_max_step_percent_end=0.01))  # below min_step_percent
    with pytest.raises(ValueError, match="stage 1's SDS timesteps"):
        schedule.check_schedules(config(max_step_percent=0.01))


def test_sharpness_ramp():
    assert schedule.sharpness_at(5, config()) is None  # no final_sharpness: the renderer's own
    cfg = config(init_sharpness=4.0, final_sharpness=16.0, sharpness_ramp_steps=10, sharpness_learning_rate=0.0)
    values = [schedule.sharpness_at(step, cfg) for step in range(cfg.max_train_steps)]
    assert values[0] == pytest.approx(4.0)
    assert values[5] == pytest.approx(8.0)  # geometric: halfway in log s
    assert values[10:] == pytest.approx([16.0] * (cfg.max_train_steps - 10))
    assert all(a < b for a, b in zip(values[:10], values[1:11]))
    schedule.check_schedules(cfg)
    with pytest.raises(ValueError, match="sharpness_learning_rate 0"):
        schedule.check_schedules(replace(cfg, sharpness_learning_rate=1e-3))
    with pytest.raises(ValueError, match="sharpness_ramp_steps"):
        schedule.check_schedules(replace(cfg, sharpness_ramp_steps=0))
    with pytest.raises(ValueError, match=">= 1"):
        schedule.check_schedules(replace(cfg, init_sharpness=0.5))
