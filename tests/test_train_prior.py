"""train/train_prior.py on train/configs/prior_tiny.yaml (a 16x16 prior, a few steps): the run,
its saved `ShapesPriorPipeline`, resuming from the latest checkpoint, config errors."""
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler

from atom.guidance.shapes_prior import ShapesPriorPipeline, build_prior_scheduler
from atom.render.cameras import sample_cameras
from train_scripts import load_train_script

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "train" / "configs" / "prior_tiny.yaml"


train_prior = load_train_script("train_prior")


pytestmark = pytest.mark.usefixtures("one_thread")


def logged_steps(records: list[logging.LogRecord]) -> list[int]:
    return [int(m.group(1)) for r in records if r.name == "train_prior" and (m := re.match(r"step (\d+) loss", r.getMessage()))]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny config (3 steps), then a resumed run to 5 steps; the log records of each."""
    out = tmp_path_factory.mktemp("prior") / "run"
    args = ["--config", str(CONFIG), "--output_dir", str(out)]
    handler = _Collect()
    script_logger = logging.getLogger("train_prior")
    level = script_logger.level
    script_logger.addHandler(handler)
    script_logger.setLevel(logging.INFO)
    try:
        train_prior.main(args)
        first = list(handler.records)
        renders = next(out.glob("renders-*.pt"))
        renders_mtime = renders.stat().st_mtime_ns
        pipeline_after_first = {k: v.clone() for k, v in ShapesPriorPipeline.from_pretrained(out / "pipeline").unet.state_dict().items()}
        handler.records.clear()
        train_prior.main(args + ["--resume_from_checkpoint", "latest", "--max_train_steps", "5"])
        second = list(handler.records)
    finally:
        script_logger.removeHandler(handler)
        script_logger.setLevel(level)
    return {"out": out, "first": first, "second": second, "renders": renders, "renders_mtime": renders_mtime,
            "unet_after_first": pipeline_after_first}


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_run_saves_a_loadable_pipeline_without_text_encoder(run):
    out = run["out"]
    assert logged_steps(run["first"]) == [1, 2, 3]
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == "ShapesPriorPipeline"
    assert index.get("text_encoder", [None])[0] is None and index.get("tokenizer", [None])[0] is None
    assert sorted(p.name for p in (out / "pipeline").iterdir() if p.is_dir()) == ["scheduler", "unet"]
    assert list((out / "pipeline" / "unet").glob("*.safetensors"))
    summary = json.loads((out / "pipeline" / "training_summary.json").read_text())
    assert summary["steps"] == 5 and summary["resolution"] == 16  # (the resumed run's)


def test_pipeline_samples_images_deterministically(run):
    pipe = ShapesPriorPipeline.from_pretrained(run["out"] / "pipeline")
    assert pipe.text_encoder is None  # loaded from the MiniLM package on first use
    prompts = ["a red cube", "a blue sphere, side view"]

    def sample(seed: int, **kwargs) -> torch.Tensor:
        kwargs = {"guidance_scale": 3.0, **kwargs}
        return pipe(prompts, num_inference_steps=3, generator=torch.Generator().manual_seed(seed), progress=False, **kwargs).images

    images = sample(0)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, sample(0))
    assert not torch.equal(images, sample(1))
    cams = sample_cameras(2, generator=torch.Generator().manual_seed(5))
    assert sample(0, cameras=cams).shape == (2, 3, 16, 16)
    # CFG rescale pulls the guided prediction toward the conditional one: nothing to do at scale 1.
    torch.testing.assert_close(sample(0, guidance_scale=1.0), sample(0, guidance_scale=1.0, guidance_rescale=0.7))
    assert not torch.equal(images, sample(0, guidance_rescale=0.7))
    # View guidance contrasts with the camera turned by the offset: a full turn is the same camera.
    torch.testing.assert_close(sample(0, view_guidance_scale=5.0, view_guidance_offset=360.0), images, atol=1e-4, rtol=0)
    assert (sample(0, view_guidance_scale=5.0) - images).abs().max() > 1e-3
    pil = sample(0, output_type="pil")
    assert len(pil) == 2 and pil[0].size == (16, 16)
    with pytest.raises(ValueError, match="cameras"):
        sample(0, cameras=cams[:1])


def test_sampling_starts_from_the_training_data_mean(run):
    """The saved data_mean is the renders' mean in [-1, 1], and the first UNet input is noise
    around sqrt(abar) * data_mean (the signal the first timestep still holds), not around 0."""
    out = run["out"]
    renders = torch.load(run["renders"])["images"].float() / 127.5 - 1
    pipe = ShapesPriorPipeline.from_pretrained(out / "pipeline")
    assert pipe.config.data_mean == pytest.approx(renders.mean().item(), abs=1e-3)
    assert pipe.config.data_mean > 0.3  # white backgrounds

    # The shipped schedule has zero terminal SNR: sampling starts at pure noise, where the mean
    # cannot matter. An epsilon-predicting cosine schedule (the first shipped prior's) keeps signal.
    default = DDIMScheduler.from_config(pipe.scheduler.config)
    default.set_timesteps(2)
    assert default.timesteps[0] == 999 and default.alphas_cumprod[999] < 1e-6
    pipe.scheduler = build_prior_scheduler("epsilon", zero_terminal_snr=False)
    pipe.register_to_config(data_mean=50.0)  # large, so that a start around it is unmistakable
    inputs = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    try:
        pipe(["a red cube"] * 4, num_inference_steps=2, generator=torch.Generator().manual_seed(0), progress=False)
    finally:
        hook.remove()
    sampler = DDIMScheduler.from_config(pipe.scheduler.config)
    sampler.set_timesteps(2)
    abar = sampler.alphas_cumprod[sampler.timesteps[0]]
    assert abar > 1e-3
    assert inputs[0].mean().item() == pytest.approx(abar.sqrt().item() * 50.0, abs=0.1)


def test_min_snr_weights_x0_errors_alike_for_both_targets():
    """Min-SNR-gamma: the same x0 error costs min(SNR, gamma) |dx0|^2 whether the UNet predicts
    epsilon (|d eps|^2 = SNR |dx0|^2) or v (|dv|^2 = (SNR + 1) |dx0|^2); no weighting: ones."""
    abar = build_prior_scheduler().alphas_cumprod[torch.tensor([1, 100, 400, 700, 950])].double()
    snr = abar / (1 - abar)
    x0_error = torch.full_like(abar, 0.3) ** 2
    for v_prediction, factor in ((False, snr), (True, snr + 1)):
        weighted = train_prior.loss_weight(abar, v_prediction, 5.0) * factor * x0_error
        torch.testing.assert_close(weighted, snr.clamp(max=5.0) * x0_error)
    assert torch.equal(train_prior.loss_weight(abar, True, None), torch.ones_like(abar))
    assert train_prior.loss_weight(torch.zeros(1), True, 5.0).item() == 0  # pure noise: nothing to learn of x0


def test_resume_continues_from_the_latest_checkpoint(run):
    out = run["out"]
    assert any("resumed from" in r.getMessage() and "checkpoint-3 at step 3" in r.getMessage() for r in run["second"])
    assert logged_steps(run["second"]) == [4, 5]  # not a fresh start at step 1
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-5"]  # checkpoints_total_limit: 1
    assert json.loads((out / "checkpoint-5" / "trainer_state.json").read_text())["step"] == 5
    assert not list(out.glob(".partial-*"))
    assert run["renders"].stat().st_mtime_ns == run["renders_mtime"]  # renders reused, not redone
    # The resumed run trained further: the saved weights moved.
    after = ShapesPriorPipeline.from_pretrained(out / "pipeline").unet.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in run["unet_after_first"].items())


def test_config_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_prior.main([])
    assert exit_info.value.code == 2 and "--config" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.read_text() + "learning_rat: 1.0e-3\n")
    with pytest.raises(ValueError, match=r"unknown settings \['learning_rat'\]"):
        train_prior.main(["--config", str(bad)])
    with pytest.raises(ValueError, match="batch_size must be int"):
        train_prior.main(["--config", str(CONFIG), "--batch_size", "four"])
    cfg, _ = train_prior.load_config(train_prior.PriorConfig, ["--config", str(CONFIG), "--learning_rate", "3e-4"])
    assert cfg.learning_rate == 3e-4  # "3e-4" is a string to YAML 1.1


def test_view_shape_weight_oversamples_cube_and_pyramid():
    """Cube and pyramid renders (the shapes whose image shows the azimuth) are drawn
    `view_shape_weight` times as often as each solid of revolution; other weights are refused."""
    from atom.data import SHAPES
    from atom.data.renders import ShapeRenders

    shape_index = torch.arange(len(SHAPES)).repeat(10)
    renders = ShapeRenders(torch.zeros(len(shape_index), 3, 2, 2, dtype=torch.uint8), shape_index,
                           torch.zeros_like(shape_index), sample_cameras(len(shape_index)))
    weights = train_prior.sampling_weights(renders, 3.0)
    draws = shape_index[torch.multinomial(weights, 60_000, replacement=True, generator=torch.Generator().manual_seed(0))]
    share = torch.bincount(draws, minlength=len(SHAPES)).double() / len(draws)
    viewed = torch.tensor([s in ("cube", "pyramid") for s in SHAPES])
    torch.testing.assert_close(share[viewed], torch.full((2,), 3 / 12, dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(share[~viewed], torch.full((6,), 1 / 12, dtype=torch.float64), atol=0.01, rtol=0)
    assert torch.equal(train_prior.sampling_weights(renders, 1.0), torch.ones(len(shape_index)))
    with pytest.raises(ValueError, match="view_shape_weight must be positive"):
        train_prior.sampling_weights(renders, 0.0)


def test_init_from_fine_tunes_a_saved_prior(run, tmp_path):
    """`--init_from` starts from a saved prior's UNet (and scheduler), not from a fresh one: with
    a zero learning rate its weights come out unchanged; a missing folder is a clear error."""
    start = run["out"] / "pipeline"
    out = tmp_path / "finetune"
    train_prior.main(["--config", str(CONFIG), "--output_dir", str(out), "--init_from", str(start),
                      "--max_train_steps", "1", "--learning_rate", "0"])
    before = ShapesPriorPipeline.from_pretrained(start)
    after = ShapesPriorPipeline.from_pretrained(out / "pipeline")
    for name, value in before.unet.state_dict().items():
        torch.testing.assert_close(after.unet.state_dict()[name], value, rtol=0, atol=0, msg=name)
    assert after.scheduler.config.prediction_type == before.scheduler.config.prediction_type
    with pytest.raises(ValueError, match="neither a valid local path nor a valid repo id"):
        train_prior.main(["--config", str(CONFIG), "--output_dir", str(tmp_path / "x"),
                          "--init_from", str(tmp_path / "no-such-prior")])


def test_captions_draw_the_configured_phrasings():
    """The 64 px prior's config lists atom.data.PHRASINGS; its captions use all of them (and
    synonyms, view words), and every caption names its render's pair. The default (one
    phrasing) is the shipped priors' caption distribution."""
    import random

    import yaml

    from atom.data import COLORS, PHRASINGS, SHAPES, parse_prompt
    from atom.data.renders import ShapeRenders

    values = yaml.safe_load((ROOT / "train" / "configs" / "prior_shapes64px.yaml").read_text())
    assert tuple(values["phrasings"]) == PHRASINGS and values["preset"] == "shapes64px"
    cfg = train_prior.PriorConfig(phrasings=values["phrasings"])
    n = 400
    shape_index, color_index = torch.arange(n) % len(SHAPES), (torch.arange(n) // len(SHAPES)) % len(COLORS)
    renders = ShapeRenders(torch.zeros(n, 3, 2, 2, dtype=torch.uint8), shape_index, color_index, sample_cameras(n))
    captions = train_prior.sample_captions(renders, torch.arange(n), random.Random(0), cfg)
    for i, text in enumerate(captions):
        assert parse_prompt(text) == (SHAPES[shape_index[i]], list(COLORS)[color_index[i]])
    assert any(", red" in t for t in captions) and any("that is" in t for t in captions)
    assert any("-colored" in t for t in captions) and any(" in " in t.split(",")[0] for t in captions)
    default = train_prior.sample_captions(renders, torch.arange(n), random.Random(0), train_prior.PriorConfig())
    assert all(t.split(",")[0].split()[0] in ("a", "an") and len(t.split(",")[0].split()) >= 3 for t in default)
