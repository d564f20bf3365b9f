"""train/train_atom.py on train/configs/tiny.yaml: stage-1 and stage-2 runs that lower the SDS
loss, kill-and-resume, the 2-process CPU launch, fine-tuning from a saved pipeline on prompt
files, the saved folder, config errors.

Teachers come from tests/conftest.py: the untrained tiny shapes-prior where only the mechanics
matter, and `black_teacher` (a tiny UNet trained to be the exact noise predictor of an all-black
world) where the loss must fall: its SDS loss on a render measures the distance to black, so it
can only fall if the SDS gradient reaches the model with the right sign and the optimizer uses it.
"""
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from atom.geometry import Mesh
from atom.pipeline import AToMPipeline
from train_scripts import load_train_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "train_atom.py"
CONFIG = ROOT / "train" / "configs" / "tiny.yaml"
TINY_PROMPTS = ["a red cube", "a blue sphere", "a green cone"]  # as in tiny.yaml


train_atom = load_train_script("train_atom")
common = load_train_script("common")


pytestmark = pytest.mark.usefixtures("one_thread")


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def steps_of(records: list[dict]) -> list[dict]:
    """Step records of the last run in the log (after its "start")."""
    last_start = max(i for i, r in enumerate(records) if r["event"] == "start")
    return [r for r in records[last_start:] if r["event"] == "step"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for part in ("text_to_triplane", "mesh_generator"):
        for name, value in load_file(next((folder / part).glob("*.safetensors"))).items():
            tensors[f"{part}.{name}"] = value
    return tensors


# ---- the loss falls ----------------------------------------------------------------------

# One prompt, fixed camera elevation, distance, field of view and light; t within 45-55 % of the
# schedule (where the teacher was trained); no CFG (the teacher ignores text). Only the azimuth
# and the noise vary between steps.
STEADY = [
    "--prompts", "[a red cube]", "--prompts_per_step", "1", "--views_per_prompt", "2",
    "--guidance_scale", "1", "--min_step_percent", "0.45", "--max_step_percent", "0.55", "--max_step_percent_end", "null",
    "--view_prompts", "false", "--light_jitter_deg", "0", "--elevation_range", "[20, 20]", "--distance_range", "[3, 3]",
    "--fovy_range", "[40, 40]", "--warmup_steps", "1", "--validation_steps", "1000", "--checkpointing_steps", "1000",
]


@pytest.mark.parametrize(("stage", "learning_rate"), [(1, "3e-3"), (2, "1e-2")])
def test_stage_lowers_the_sds_loss(black_teacher, tmp_path, stage, learning_rate):
    """20 steps of one stage against the black world's teacher: the mean SDS loss of the last 5
    steps is well below that of the first 5 (about 4x in practice), and the meshes never vanish."""
    out = tmp_path / f"stage{stage}"
    train_atom.main(["--config", str(CONFIG), "--teacher", str(black_teacher), "--output_dir", str(out),
                     "--stage", str(stage), "--max_train_steps", "20", "--learning_rate", learning_rate, *STEADY])
    steps = steps_of(read_log(out))
    assert [r["step"] for r in steps] == list(range(1, 21))
    assert {r["stage"] for r in steps} == {stage}
    assert all(min(r["t"]) >= 450 and max(r["t"]) <= 550 for r in steps)
    sds = torch.tensor([r["sds"] for r in steps])
    assert torch.isfinite(sds).all()
    first, last = sds[:5].mean().item(), sds[-5:].mean().item()
    assert last < 0.6 * first, f"SDS loss did not fall: {sds.tolist()}"
    assert all(r["empty_meshes"] == 0 for r in steps)
    mesh = AToMPipeline.from_pretrained(out / "pipeline")("a red cube", output_type="mesh").meshes[0]
    assert not mesh.is_empty
    assert mesh.colors.mean() < 0.4  # darker than the untrained model's ~0.5 gray


# ---- kill and resume -----------------------------------------------------------------------

RESUME = ["--max_train_steps", "10", "--stage1_steps", "5", "--checkpointing_steps", "2", "--checkpoints_total_limit", "10",
          "--validation_steps", "1000"]


def test_kill_and_resume(prior_teacher, tmp_path):
    """The script killed with SIGKILL after its first checkpoint, rerun with
    `--resume_from_checkpoint latest`: it continues from that checkpoint's step (across the stage
    switch) and ends with the weights of an uninterrupted run."""
    out = tmp_path / "killed"
    args = ["--config", str(CONFIG), "--teacher", str(prior_teacher), "--output_dir", str(out), *RESUME]
    log = tmp_path / "killed.log"
    with open(log, "w") as stream:
        process = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=subprocess_env(),
                                   stdout=stream, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        try:
            while not list(out.glob("checkpoint-*")):
                assert process.poll() is None, f"the run ended before its first checkpoint:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no checkpoint after 300 s:\n{log.read_text()[-3000:]}"
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "pipeline").exists(), "the run finished before it could be killed"
    killed_at = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert 2 <= killed_at < 10

    train_atom.main([*args, "--resume_from_checkpoint", "latest"])
    records = read_log(out)
    starts = [r for r in records if r["event"] == "start"]
    assert [s["step"] for s in starts] == [0, killed_at]
    assert starts[1]["resumed_from"] == str(out / f"checkpoint-{killed_at}")
    resumed = steps_of(records)
    assert [r["step"] for r in resumed] == list(range(killed_at + 1, 11))
    assert [r["stage"] for r in resumed] == [1 if s <= 5 else 2 for s in range(killed_at + 1, 11)]
    assert json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())["step"] == 10
    summary = json.loads((out / "pipeline" / "training_summary.json").read_text())
    assert summary["steps"] == 10 and records[-1] == {"event": "end", **summary}

    straight = tmp_path / "straight"
    train_atom.main(["--config", str(CONFIG), "--teacher", str(prior_teacher), "--output_dir", str(straight), *RESUME])
    resumed_weights, straight_weights = weights(out / "pipeline"), weights(straight / "pipeline")
    assert resumed_weights.keys() == straight_weights.keys()
    for name, value in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_stage2_rerun_from_the_switch_checkpoint(prior_teacher, tmp_path):
    """The checkpoint at the stage switch outlives the rotation; resumed into another output_dir it
    reruns stage 2 exactly as the whole command (same final weights), or with other stage-2
    settings: `stage2_view_guidance_scale` guides stage 2 only and changes its weights."""
    base = ["--config", str(CONFIG), "--teacher", str(prior_teacher), "--max_train_steps", "6", "--stage1_steps", "3",
            "--checkpointing_steps", "2", "--checkpoints_total_limit", "1", "--validation_steps", "1000"]
    whole = tmp_path / "whole"
    train_atom.main([*base, "--output_dir", str(whole), "--stage2_view_guidance_scale", "0"])
    assert sorted(p.name for p in whole.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    switch = whole / "checkpoint-3"
    again = tmp_path / "again"
    train_atom.main([*base, "--output_dir", str(again), "--resume_from_checkpoint", str(switch)])
    assert [r["step"] for r in steps_of(read_log(again))] == [4, 5, 6]
    reference = weights(whole / "pipeline")
    for name, value in weights(again / "pipeline").items():
        torch.testing.assert_close(value, reference[name], msg=name)

    guided = tmp_path / "guided"
    train_atom.main([*base, "--output_dir", str(guided), "--resume_from_checkpoint", str(switch),
                     "--stage2_view_guidance_scale", "4"])
    assert {(r["stage"], r["view_guidance"]) for r in steps_of(read_log(guided))} == {(2, 4.0)}
    assert {(r["stage"], r["view_guidance"]) for r in steps_of(read_log(whole))} == {(1, 0.0), (2, 0.0)}
    moved = weights(guided / "pipeline")
    assert any(not torch.equal(moved[name], value) for name, value in reference.items())


def test_stage2_schedule_of_its_own_in_one_launch(prior_teacher, tmp_path):
    """With stage-2 schedule fields, stage 2's steps take its learning rate (warm-up restarted at
    the switch) and draw SDS timesteps under its own bound, and stage 1 is the stage 1 of the
    same command with a longer stage 2 (same rates, same weights at the switch)."""
    base = ["--config", str(CONFIG), "--teacher", str(prior_teacher), "--stage1_steps", "3", "--validation_steps", "1000",
            "--checkpointing_steps", "1000", "--stage2_learning_rate", "4e-3", "--stage2_warmup_steps", "2",
            "--stage2_max_step_percent", "0.1", "--stage2_max_step_percent_end", "0.05"]
    short, longer = tmp_path / "short", tmp_path / "longer"
    train_atom.main([*base, "--max_train_steps", "5", "--output_dir", str(short)])
    train_atom.main([*base, "--max_train_steps", "8", "--output_dir", str(longer)])
    records = steps_of(read_log(short))
    assert [r["stage"] for r in records] == [1, 1, 1, 2, 2]
    assert [r["lr"] for r in records[3:]] == pytest.approx([2e-3, 4e-3])
    timesteps = json.loads((prior_teacher / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"]
    assert max(t for r in records[3:] for t in r["t"]) <= 0.1 * timesteps
    assert [r["lr"] for r in steps_of(read_log(longer))[:3]] == [r["lr"] for r in records[:3]]
    reference = weights(longer / "pipeline-stage1")
    for name, value in weights(short / "pipeline-stage1").items():
        torch.testing.assert_close(value, reference[name], msg=name)


def test_ramped_sharpness_is_what_stage_1_renders_with(prior_teacher, tmp_path):
    """A ramped NeuS sharpness is set at each stage-1 step (the log's sharpness follows the ramp),
    and a run resumed mid-ramp goes on along it."""
    base = ["--config", str(CONFIG), "--teacher", str(prior_teacher), "--stage", "1", "--validation_steps", "1000",
            "--checkpointing_steps", "2", "--log_steps", "1", "--init_sharpness", "4", "--final_sharpness", "16",
            "--sharpness_ramp_steps", "4", "--sharpness_learning_rate", "0", "--output_dir", str(tmp_path / "run")]
    train_atom.main([*base, "--max_train_steps", "2", "--stage1_steps", "2"])
    train_atom.main([*base, "--max_train_steps", "5", "--stage1_steps", "5", "--resume_from_checkpoint", "latest"])
    # A step's record holds the sharpness it rendered with: step n (1-based) used the ramp at n - 1.
    logged = [r["sharpness"] for r in read_log(tmp_path / "run") if r["event"] == "step"]
    assert logged == pytest.approx([4.0, 4 * 2**0.5, 8.0, 8 * 2**0.5, 16.0], rel=1e-5)


def adam_steps(checkpoint: Path) -> set[int]:
    """The AdamW step counts of a checkpoint's network parameters (group 0)."""
    state = torch.load(checkpoint / "optimizer.bin", weights_only=False)
    group = state["param_groups"][0]["params"]
    return {int(state["state"][i]["step"]) for i in group if i in state["state"]}


def test_stage2_of_its_own_starts_with_fresh_adam_moments(prior_teacher, tmp_path):
    """A stage 2 with a schedule of its own starts AdamW afresh at the switch (as a `--stage 2`
    run from the stage-1 folder does); with one schedule across the run the moments carry on."""
    base = ["--config", str(CONFIG), "--teacher", str(prior_teacher), "--stage1_steps", "3", "--max_train_steps", "4",
            "--validation_steps", "1000", "--checkpointing_steps", "1"]
    own, shared = tmp_path / "own", tmp_path / "shared"
    train_atom.main([*base, "--stage2_learning_rate", "1e-3", "--output_dir", str(own)])
    train_atom.main([*base, "--output_dir", str(shared)])
    assert adam_steps(own / "checkpoint-3") == {3}
    assert adam_steps(own / "checkpoint-4") == {1}
    assert adam_steps(shared / "checkpoint-4") == {1, 4}  # 1: the deformation net, trained from the switch on


# ---- two processes on the CPU ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_process_run(prior_teacher, tmp_path_factory) -> Path:
    """`accelerate launch --multi_gpu --num_processes 2` of the tiny config (4 steps, both
    stages, validation at the end). (`--cpu --num_processes 2` would start one process: without
    an MPI hostfile accelerate's CPU launcher does not fan out.)"""
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(SCRIPT), "--config", str(CONFIG), "--teacher", str(prior_teacher), "--output_dir", str(out),
    ]
    result = subprocess.run(command, cwd=tmp, env=subprocess_env(), capture_output=True, text=True, timeout=500, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def test_two_process_cpu_launch(two_process_run):
    out = two_process_run
    records = read_log(out)
    assert records[0] == {"event": "start", "step": 0, "resumed_from": None, "num_processes": 2}
    steps = steps_of(records)
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [r["stage"] for r in steps] == [1, 1, 2, 2]
    # Each process draws prompts_per_step = 2 prompts from its own shard of the prompt set.
    for r in steps:
        assert len(r["prompts"]) == 4
        assert set(r["prompts"][:2]) <= set(TINY_PROMPTS[0::2]), r["prompts"]
        assert set(r["prompts"][2:]) <= set(TINY_PROMPTS[1::2]), r["prompts"]
    assert sorted(p.name for p in (out / "checkpoint-4").glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]
    assert json.loads((out / "pipeline" / "training_summary.json").read_text())["num_processes"] == 2
    assert (out / "validation" / "step-000004" / "grid.png").is_file()


def test_saved_folder_loads_and_generates(two_process_run):
    folder = two_process_run / "pipeline"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "AToMPipeline"
    assert not (folder / "text_encoder").exists()  # save_text_encoder: false
    pipe = AToMPipeline.from_pretrained(folder)
    prompts = ["a red cube", "a pink snowman"]
    meshes = pipe(prompts).meshes
    assert len(meshes) == 2
    for mesh in meshes:
        assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
        assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
        assert abs(mesh.vertices).max() <= 1.0 + 1e-6
    again = pipe(prompts).meshes
    assert all((a.vertices == b.vertices).all() and (a.faces == b.faces).all() for a, b in zip(meshes, again))


def test_evaluate_loads_a_checkpoint_as_the_saved_pipeline(two_process_run, tmp_path):
    """evaluate.py takes a checkpoint folder: the pipeline its run would have saved at that step
    (checkpoint-4 is the last step, so its weights are the saved pipeline's)."""
    evaluate = load_train_script("evaluate")
    checkpoint = two_process_run / "checkpoint-4"
    assert evaluate.is_checkpoint(checkpoint) and not evaluate.is_checkpoint(two_process_run / "pipeline")
    from_checkpoint = evaluate.load_model(str(checkpoint))
    saved = AToMPipeline.from_pretrained(two_process_run / "pipeline")
    for name in ("text_to_triplane", "mesh_generator"):
        a, b = getattr(from_checkpoint, name).state_dict(), getattr(saved, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    lone = tmp_path / "checkpoint-1"  # copied out of its run folder: no config.json beside it
    shutil.copytree(checkpoint, lone)
    with pytest.raises(ValueError, match="no config.json"):
        evaluate.load_model(str(lone))


# ---- fine-tuning from a saved pipeline on prompt files ------------------------------------------


def test_finetune_from_saved_pipeline_on_prompt_files(two_process_run, prior_teacher, tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("# my prompts\na purple torus\n\n  an orange capsule  \na purple torus\n")
    js = tmp_path / "prompts.json"
    js.write_text(json.dumps(["a cyan cone", "a yellow pyramid"]))
    init = two_process_run / "pipeline"
    base = ["--config", str(CONFIG), "--teacher", str(prior_teacher), "--init_from", str(init), "--max_train_steps", "1",
            "--validation_steps", "1000"]

    # A learning rate of ~0: the result is the init_from pipeline's weights, not a fresh model's.
    out_txt = tmp_path / "from_txt"
    train_atom.main([*base, "--prompts", str(txt), "--output_dir", str(out_txt), "--learning_rate", "1e-12"])
    assert set(steps_of(read_log(out_txt))[0]["prompts"]) <= {"a purple torus", "an orange capsule"}
    assert json.loads((out_txt / "config.json").read_text())["prompts"] == str(txt)
    # A repeated line is a sampling weight: kept for training, listed once on the card.
    assert load_train_script("prompt_sets").load_prompts(str(txt)) == ["a purple torus", "an orange capsule", "a purple torus"]
    summary = json.loads((out_txt / "pipeline" / "training_summary.json").read_text())
    assert summary["train_prompts"] == ["a purple torus", "an orange capsule"] and summary["prompts"] == 2
    tuned, initial = weights(out_txt / "pipeline"), weights(init)
    for name, value in initial.items():
        torch.testing.assert_close(tuned[name], value, rtol=0, atol=1e-8, msg=name)
    torch.manual_seed(0)
    fresh = AToMPipeline.from_components("tiny").text_to_triplane.state_dict()
    assert any((fresh[k] - initial[f"text_to_triplane.{k}"]).abs().max() > 1e-6 for k in fresh)

    out_json = tmp_path / "from_json"
    train_atom.main([*base, "--prompts", str(js), "--output_dir", str(out_json), "--stage", "2"])
    step = steps_of(read_log(out_json))[0]
    assert step["stage"] == 2 and set(step["prompts"]) <= {"a cyan cone", "a yellow pyramid"}
    assert len(AToMPipeline.from_pretrained(out_json / "pipeline")("a cyan cone").meshes) == 1

    with pytest.raises(ValueError, match="neither a named set"):
        train_atom.main([*base, "--prompts", str(tmp_path / "missing.txt"), "--output_dir", str(tmp_path / "x")])


def test_model_card_of_a_run_in_two_stages_then_with_metrics(prior_teacher, tmp_path):
    """Stage 1, then stage 2 from its folder: the saved README.md card names the teacher, the
    Shapes64 seen / held-out prompts, both stages' times and both commands; evaluate.py
    --write_card adds the ground-truth metrics."""
    base = ["--config", str(CONFIG), "--teacher", str(prior_teacher), "--prompts", "shapes64-seen",
            "--max_train_steps", "1", "--validation_steps", "1000"]
    stage1, stage2 = tmp_path / "s1", tmp_path / "s2"
    train_atom.main([*base, "--stage", "1", "--output_dir", str(stage1)])
    train_atom.main([*base, "--stage", "2", "--init_from", str(stage1 / "pipeline"), "--output_dir", str(stage2)])
    folder = stage2 / "pipeline"
    summary = json.loads((folder / "training_summary.json").read_text())
    assert summary["stage_seconds"]["1"] == 0 and summary["earlier_stage_seconds"]["1"] > 0
    # Meshes come by default from the grid the deformation was trained on (stage 2's; the preset's before).
    preset_grid = AToMPipeline.from_components("tiny").mesh_generator.config.tet_resolution
    assert AToMPipeline.from_pretrained(stage1 / "pipeline").mesh_generator.config.tet_resolution == preset_grid
    stage2_grid = AToMPipeline.from_pretrained(folder).mesh_generator.config.tet_resolution
    assert stage2_grid == train_atom.AtomConfig(**yaml.safe_load(CONFIG.read_text())).stage2_tet_resolution != preset_grid

    # A stage-1 fine-tune of the stage-1 folder adds its time to that stage's, and carries both commands.
    tuned = tmp_path / "s1-tuned"
    train_atom.main([*base, "--stage", "1", "--init_from", str(stage1 / "pipeline"), "--output_dir", str(tuned)])
    first = json.loads((stage1 / "pipeline" / "training_summary.json").read_text())
    second = json.loads((tuned / "pipeline" / "training_summary.json").read_text())
    assert second["earlier_stage_seconds"] == {"1": first["stage_seconds"]["1"]}
    assert load_train_script("card").training_time(second) == {
        "stage 1": first["stage_seconds"]["1"] + second["stage_seconds"]["1"]}
    assert second["training_command"].count("train_atom.py") == 2

    card = (folder / "README.md").read_text()
    assert "library_name: diffusers" in card and "pipeline_tag: text-to-3d" in card
    assert f"`{prior_teacher}`" in card
    assert "| stage 1 |" in card and "| stage 2 |" in card
    assert card.count("train_atom.py") == 2 and "--stage 1" in card and "--stage 2" in card
    assert "Seen in training** (56 prompts)" in card and "Held out, never seen in training** (8 prompts)" in card
    assert "## Evaluation" not in card and "samples.png" not in card

    evaluate = load_train_script("evaluate")
    prompts = tmp_path / "eval.txt"
    prompts.write_text("a red cube\na red sphere\n")
    evaluate.main(["--model", str(folder), "--prompts", str(prompts), "--write_card", "--no_progress", "--num_samples", "500",
                   "--overview", str(folder / "samples.png"), "--grid_resolution", "16"])
    card = (folder / "README.md").read_text()
    assert "## Evaluation" in card and "| held_out |" in card and "| seen |" in card
    assert card.count("](samples.png)") == 1 and (folder / "samples.png").is_file()  # the overview, shown
    assert "| stage 1 |" in card  # the training facts stay
    with pytest.raises(ValueError, match="write_card needs a local folder"):
        evaluate.main(["--model", str(tmp_path), "--prompts", str(prompts), "--write_card"])


def test_one_launch_trains_both_stages_and_keeps_stage_1_of_the_same_run(prior_teacher, tmp_path, monkeypatch):
    """The two-stage switch in one run: steps before `stage1_steps` are stage 1, the rest stage 2,
    whose cameras come from `stage2_elevation_range`; the model as it stood at the switch is saved
    to pipeline-stage1 (the ablation's baseline, on the preset's grid), the final one to pipeline
    (on stage 2's grid); `snapshot_steps` saves light folders with the wall time so far;
    `model_overrides` reach the networks."""
    elevations = []
    real_sample_cameras = train_atom.sample_cameras

    def recording_sample_cameras(*args, **kwargs):
        cameras = real_sample_cameras(*args, **kwargs)
        elevations.append(cameras.elevation.clone())
        return cameras

    monkeypatch.setattr(train_atom, "sample_cameras", recording_sample_cameras)
    out = tmp_path / "run"
    train_atom.main(["--config", str(CONFIG), "--teacher", str(prior_teacher), "--output_dir", str(out),
                     "--max_train_steps", "4", "--stage1_steps", "2", "--snapshot_steps", "1", "--validation_steps", "1000",
                     "--model_overrides", "{aware_conv: false}", "--stage2_elevation_range", "[-30, -25]"])
    assert [r["stage"] for r in steps_of(read_log(out))] == [1, 1, 2, 2]
    assert len(elevations) == 4
    low, high = train_atom.AtomConfig(**yaml.safe_load(CONFIG.read_text())).elevation_range
    assert all(((e >= low) & (e <= high)).all() for e in elevations[:2])
    assert all(((e >= -30) & (e <= -25)).all() for e in elevations[2:])
    stage1, final = out / "pipeline-stage1", out / "pipeline"
    first = json.loads((stage1 / "training_summary.json").read_text())
    assert first["steps"] == 2 and first["stage_seconds"]["2"] == 0 and "stage 1 only" in first["hardware"]
    assert "stage 1 then 2" in json.loads((final / "training_summary.json").read_text())["hardware"]
    assert (stage1 / "README.md").is_file()
    changed = [k for k, v in weights(stage1).items() if not torch.equal(v, weights(final)[k])]
    assert any(k.startswith("mesh_generator.deformation_net") for k in changed)  # stage 2 trained it
    cfg = train_atom.AtomConfig(**yaml.safe_load(CONFIG.read_text()))
    loaded = {f.name: AToMPipeline.from_pretrained(f) for f in (stage1, final)}
    assert loaded["pipeline-stage1"].mesh_generator.config.tet_resolution != cfg.stage2_tet_resolution
    assert loaded["pipeline"].mesh_generator.config.tet_resolution == cfg.stage2_tet_resolution
    assert loaded["pipeline"].text_to_triplane.config.aware_conv is False

    snapshots = sorted((out / "snapshots").iterdir())
    assert [s.name for s in snapshots] == [f"step-{k:06d}" for k in (1, 2, 3, 4)]
    walls = [json.loads((s / "training_summary.json").read_text())["wall_seconds"] for s in snapshots]
    assert walls == sorted(walls) and walls[-1] <= json.loads((final / "training_summary.json").read_text())["wall_seconds"]
    for k, v in weights(snapshots[1]).items():
        assert torch.equal(v, weights(stage1)[k])  # the snapshot at the switch is the stage-1 model
    assert not (snapshots[0] / "text_encoder").exists()

    with pytest.raises(ValueError, match="model_overrides"):
        train_atom.main(["--config", str(CONFIG), "--teacher", str(prior_teacher), "--output_dir", str(tmp_path / "x"),
                         "--init_from", str(final), "--model_overrides", "{aware_conv: false}"])


def test_hypernetwork_baseline_trains_both_stages_with_the_same_script(prior_teacher, tmp_path):
    """The ATT3D-style baseline (`--model_preset tiny-hyper`) goes through both stages of the
    same recipe, updates its hypernetwork, and saves a pipeline that loads as that model."""
    out = tmp_path / "hyper"
    train_atom.main(["--config", str(CONFIG), "--teacher", str(prior_teacher), "--output_dir", str(out),
                     "--model_preset", "tiny-hyper", "--max_train_steps", "2", "--stage1_steps", "1",
                     "--validation_steps", "1000"])
    assert [r["stage"] for r in steps_of(read_log(out))] == [1, 2]
    pipe = AToMPipeline.from_pretrained(out / "pipeline")
    assert type(pipe.text_to_triplane).__name__ == "TextToHyperNetwork"
    changed = [k for k, v in weights(out / "pipeline-stage1").items() if not torch.equal(v, weights(out / "pipeline")[k])]
    assert any(k.startswith("text_to_triplane.to_params") for k in changed)


def test_stage2_step_without_any_visible_mesh(prior_teacher, tmp_path):
    """A step whose meshes are all empty (the SDF never crosses zero) logs them and goes on
    (it used to fail in backward: the loss had no path back to the model)."""
    torch.manual_seed(0)
    pipe = AToMPipeline.from_components("tiny")
    with torch.no_grad():
        pipe.mesh_generator.sdf_net[-1].bias.add_(10.0)
    folder = tmp_path / "no-surface"
    pipe.save_pretrained(folder, include_text_encoder=False)
    out = tmp_path / "run"
    train_atom.main(["--config", str(CONFIG), "--teacher", str(prior_teacher), "--init_from", str(folder),
                     "--output_dir", str(out), "--stage", "2", "--max_train_steps", "2", "--validation_steps", "1000"])
    steps = steps_of(read_log(out))
    assert [r["empty_meshes"] for r in steps] == [2, 2]
    assert all(r["sds"] == r["sds"] for r in steps)  # finite, not NaN
    assert (out / "pipeline" / "model_index.json").is_file()


# ---- configuration errors ------------------------------------------------------------------------


def test_config_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_atom.main(["--max_train_steps", "3"])
    assert exit_info.value.code == 2 and "--config" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.read_text() + "max_steps: 10\nguidance: 7\n")
    with pytest.raises(ValueError, match=r"unknown settings \['guidance', 'max_steps'\]"):
        train_atom.main(["--config", str(bad)])
    listed = tmp_path / "list.yaml"
    listed.write_text("- max_train_steps\n")
    with pytest.raises(ValueError, match="mapping"):
        train_atom.main(["--config", str(listed)])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        train_atom.main(["--config", str(tmp_path / "nope.yaml")])
    for option, value, match in (
        ("--max_train_steps", "ten", "max_train_steps must be int"),
        ("--learning_rate", "fast", "learning_rate must be float"),
        ("--view_prompts", "maybe", "view_prompts must be bool"),
        ("--elevation_range", "[low, 45]", r"elevation_range\[0\] must be float"),
        ("--stage2_max_step_percent", "1.2", "stage 2's SDS timesteps"),  # before the (missing) teacher loads
    ):
        with pytest.raises(ValueError, match=match):
            train_atom.main(["--config", str(CONFIG), option, value])
    cfg, _ = train_atom.load_config(train_atom.AtomConfig, [
        "--config", str(CONFIG), "--learning_rate", "1e-2", "--max_step_percent_end", "null", "--output_dir", "2024",
        "--elevation_range", "[0, 30]",
    ])
    assert cfg.learning_rate == 0.01 and cfg.max_step_percent_end is None and cfg.output_dir == "2024"
    assert cfg.elevation_range == [0.0, 30.0]
    with pytest.raises(ValueError, match="checkpoint"):
        common.resolve_resume(tmp_path, str(tmp_path / "not-a-checkpoint"))


def test_bf16_mixed_precision_trains_both_stages_with_a_bf16_teacher(prior_teacher, tmp_path, monkeypatch):
    """`mixed_precision: bf16` (accelerate's CPU autocast here): the teacher loads in bf16, both
    stages take finite steps, and the saved weights are float32 and trained."""
    loaded_dtypes = []
    real_from_pretrained = train_atom.DiffusionTeacher.from_pretrained

    def recording_from_pretrained(name_or_path, dtype=None, **kwargs):
        loaded_dtypes.append(dtype)
        return real_from_pretrained(name_or_path, dtype=dtype, **kwargs)

    monkeypatch.setattr(train_atom.DiffusionTeacher, "from_pretrained", recording_from_pretrained)
    out = tmp_path / "bf16"
    # accelerate keeps one AcceleratorState per process: the runs of other tests set mixed_precision "no".
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        train_atom.main(["--config", str(CONFIG), "--teacher", str(prior_teacher), "--output_dir", str(out),
                         "--mixed_precision", "bf16", "--max_train_steps", "4", "--stage1_steps", "2"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert loaded_dtypes == [torch.bfloat16]
    steps = steps_of(read_log(out))
    assert [r["stage"] for r in steps] == [1, 1, 2, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    trained = weights(out / "pipeline")
    assert all(v.dtype == torch.float32 for v in trained.values())
    start = AToMPipeline.from_components("tiny")
    assert not torch.equal(trained["mesh_generator.sdf_net.0.weight"], start.mesh_generator.sdf_net[0].weight)


def test_text_is_encoded_before_the_loop_and_the_encoders_released(prior_teacher):
    """Every prompt the loop can ask for (AToM's; the teacher's with each view suffix) is cached
    on the training device before the loop, the teacher's encoder is dropped and AToM's is back
    on the CPU for validation and saving: no text encoder runs inside the loop."""
    cfg = train_atom.AtomConfig(teacher=str(prior_teacher), model_preset="tiny")
    pipe = AToMPipeline.from_components("tiny")
    atom_text, teacher_text = train_atom.encode_training_prompts(pipe, cfg, TINY_PROMPTS, torch.device("cpu"))
    assert atom_text.text_encoder is None and teacher_text.cache.text_encoder is None
    assert pipe.text_encoder is not None and pipe.text_encoder.device.type == "cpu"
    assert set(atom_text) == set(TINY_PROMPTS)
    assert {f"{p}, {v}" for p in TINY_PROMPTS for v in train_atom.VIEWS} <= set(teacher_text.cache)
    cameras = train_atom.sample_cameras(64, elevation_range=(-10.0, 89.0), generator=torch.Generator().manual_seed(0))
    prompts = [TINY_PROMPTS[i % 3] for i in range(64)]
    condition = teacher_text.condition(train_atom.teacher_prompts_for(prompts, cameras, True), cameras)
    assert condition.embeds.shape[0] == 64  # every view the loop draws is in the cache
    with pytest.raises(KeyError, match="a pink torus"):
        atom_text(["a pink torus"])


def test_each_step_words_its_prompts_from_the_caption_distribution(prior_teacher, tmp_path):
    """With caption_phrasings, each drawn Shapes prompt is reworded per step (AToM and the
    teacher see the same caption): the logged captions use several phrasings and synonyms, all
    name a training pair, and every one was encoded before the loop. Without, prompts as written."""
    from atom.data import PHRASINGS, parse_prompt

    out = tmp_path / "captions"
    train_atom.main(["--config", str(CONFIG), "--teacher", str(prior_teacher), "--output_dir", str(out),
                     "--stage", "1", "--max_train_steps", "12", "--prompts_per_step", "4", "--validation_steps", "1000",
                     "--caption_phrasings", json.dumps(list(PHRASINGS)), "--caption_synonym_prob", "0.5"])
    captions = [p for r in steps_of(read_log(out)) for p in r["prompts"]]
    pairs = {parse_prompt(p) for p in TINY_PROMPTS}
    assert all(parse_prompt(c) in pairs for c in captions)
    assert len(set(captions)) > 8 and set(captions) - set(TINY_PROMPTS)
    assert any(" that is " in c for c in captions) and any(c.split(",")[0].split()[-1] in ("ball", "orb", "box", "block")
                                                           for c in captions)
    cfg = train_atom.AtomConfig(caption_phrasings=list(PHRASINGS), caption_synonym_prob=0.5)
    assert set(captions) <= set(train_atom.all_captions(TINY_PROMPTS, cfg))
    plain = train_atom.AtomConfig()
    assert train_atom.all_captions(TINY_PROMPTS + ["a teapot"], plain) == TINY_PROMPTS + ["a teapot"]
    assert train_atom.caption_for("a teapot", random.Random(0), cfg) == "a teapot"


def test_wall_clock_keeps_earlier_seconds_and_skips_paused_time():
    clock = common.WallClock(earlier_seconds=100.0)
    with clock.paused():
        time.sleep(0.3)
    assert 100.0 <= clock.seconds < 100.2  # the 0.3 s inside `paused` do not count


def _dome(rings: int = 6, sectors: int = 16, height: float = 0.3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fan-triangulated dome y = height (1 - r^2) over the unit disc: verts (V, 3), faces (F, 3),
    and a (V,) mask of its rim (r = 1)."""
    verts, rim = [[0.0, height, 0.0]], [False]
    for i in range(1, rings + 1):
        r = i / rings
        for j in range(sectors):
            a = 2 * math.pi * j / sectors
            verts.append([r * math.cos(a), height * (1 - r * r), r * math.sin(a)])
            rim.append(i == rings)
    ring = lambda i, j: 1 + (i - 1) * sectors + j % sectors  # noqa: E731
    faces = [[0, ring(1, j + 1), ring(1, j)] for j in range(sectors)]
    for i in range(1, rings):
        for j in range(sectors):
            faces += [[ring(i, j), ring(i, j + 1), ring(i + 1, j)], [ring(i, j + 1), ring(i + 1, j + 1), ring(i + 1, j)]]
    return torch.tensor(verts), torch.tensor(faces), torch.tensor(rim)


def test_surface_area_term_relaxes_a_dome_to_the_flat_disc_its_rim_holds():
    """The minimal-surface prior: with the rim held (as views hold a base's edge), descending the
    stage-2 regularizer flattens the dome under it; at weight 0 it exerts no pull."""
    verts, faces, rim = _dome()
    moved = {}
    for weight in (0.0, 1.0):
        cfg = train_atom.AtomConfig(surface_area_weight=weight)
        interior = verts[~rim].clone().requires_grad_(True)
        optimizer = torch.optim.SGD([interior], lr=0.2)
        for _ in range(200):
            full = verts.clone()
            full[~rim] = interior
            loss = train_atom.mesh_regularizer(Mesh(full, faces), cfg)
            optimizer.zero_grad()
            if loss.requires_grad:
                loss.backward()
                optimizer.step()
        moved[weight] = interior.detach()[:, 1].abs().max().item()
    assert moved[0.0] == pytest.approx(0.3)  # no term, no pull: the apex stays
    assert moved[1.0] < 0.03  # the dome is gone: every interior vertex within 0.03 of the rim's plane
