"""The teacher interface and SDS on the three teacher kinds (tests/conftest.py builds them):
the shapes-prior (pixels, MiniLM, cameras), an IF-like pixel teacher (T5, noise + variance
channels) and an SD-like latent teacher (VAE, CLIP). Tiny random weights, no mocks."""
import json

import pytest
import torch
from transformers import CLIPTextModel, T5EncoderModel

from atom.guidance import DiffusionTeacher, TeacherCondition
from atom.guidance.sds import ScoreDistillation
from atom.guidance.shapes_prior import TEXT_MAX_LENGTH
from atom.guidance.teacher_prompts import TeacherPrompts
from atom.models.text_encoding import encode_prompts, load_text_encoder
from atom.render.cameras import sample_cameras

KINDS = ("prior", "if", "sd")
PROMPTS = ["a red cube", "a blue sphere, side view"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teachers(prior_teacher, if_teacher, sd_teacher):
    """kind -> (folder, DiffusionTeacher, TeacherPrompts), each loaded once."""
    folders = {"prior": prior_teacher, "if": if_teacher, "sd": sd_teacher}
    return {k: (f, DiffusionTeacher.from_pretrained(f), TeacherPrompts.for_teacher(f)) for k, f in folders.items()}


def cameras(batch: int, seed: int = 0):
    return sample_cameras(batch, generator=torch.Generator().manual_seed(seed))


def model_input(teacher: DiffusionTeacher, batch: int, seed: int = 0) -> torch.Tensor:
    """A random (B, C, h, w) noisy input in the teacher's own space."""
    channels = teacher.unet.config.in_channels
    size = teacher.unet.config.sample_size
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def as_noise(teacher: DiffusionTeacher, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The UNet's raw output as epsilon, written out from x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
    and v = sqrt(abar) eps - sqrt(1 - abar) x0."""
    if teacher.prediction_type == "epsilon":
        return out
    abar = teacher.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * out
    return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()


def test_v_prediction_at_pure_noise(teachers):
    """The shapes-prior predicts v on a zero-terminal-SNR schedule: at the last timestep x_t is
    pure noise, so the noise the teacher returns is x_t itself, whatever the UNet says."""
    _, teacher, prompts = teachers["prior"]
    assert teacher.prediction_type == "v_prediction"
    assert teacher.alphas_cumprod[-1] < 1e-6
    x_t = model_input(teacher, 2)
    t = torch.tensor([999, 999])
    eps = teacher.predict_noise(x_t, t, prompts.condition(PROMPTS, cameras(2)), guidance_scale=7.5)
    torch.testing.assert_close(eps, x_t, atol=1e-3, rtol=0)


def test_each_kind_loads_with_its_properties(teachers):
    expected = {"prior": (False, True), "if": (False, False), "sd": (True, False)}
    for kind, (_, teacher, _) in teachers.items():
        assert (teacher.is_latent, teacher.camera_conditioned) == expected[kind], kind
        assert teacher.image_size == 16, kind  # SD: 8x8 latents, VAE downsampling 2
        assert teacher.num_train_timesteps == 1000
        assert not any(p.requires_grad for p in teacher.parameters()), kind
        assert not teacher.unet.training
    assert teachers["if"][1].unet.config.out_channels == 6


def test_folder_without_unet_is_refused(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "X", "scheduler": ["diffusers", "DDPMScheduler"]}))
    with pytest.raises(ValueError, match="'unet'"):
        DiffusionTeacher.from_pretrained(tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_encode_images(teachers, kind):
    _, teacher, _ = teachers[kind]
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # resized to image_size
    x = teacher.encode_images(images)
    if kind == "sd":
        assert x.shape == (2, 4, 8, 8)
    else:
        assert x.shape == (2, 3, 16, 16)
        assert x.min() >= -1 and x.max() <= 1
        flat = torch.full((1, 3, 16, 16), 0.25)
        assert torch.allclose(teacher.encode_images(flat), torch.full_like(flat, -0.5))


@pytest.mark.parametrize("kind", KINDS)
def test_predict_noise_shape_and_guidance(teachers, kind):
    """Output shape = input shape (the IF-like UNet's variance channels dropped); scale 1 is the
    conditional prediction; scale s is uncond + s (cond - uncond) of separate conditional and
    unconditional calls (so the batched CFG pairs each half with its own text and mask)."""
    _, teacher, prompts = teachers[kind]
    cams = cameras(2)
    condition = prompts.condition(PROMPTS, cams)
    x_t = model_input(teacher, 2)
    t = torch.tensor([100, 700])
    cond = teacher.predict_noise(x_t, t, TeacherCondition(condition.embeds, condition.mask, cameras=cams))
    uncond = teacher.predict_noise(x_t, t, TeacherCondition(condition.uncond_embeds, condition.uncond_mask, cameras=cams))
    assert cond.shape == x_t.shape and cond.dtype == x_t.dtype
    assert torch.isfinite(cond).all()
    labels = cams.conditioning(teacher.camera_frequencies) if teacher.camera_conditioned else None
    raw = teacher.unet(x_t, t, encoder_hidden_states=condition.embeds, encoder_attention_mask=condition.mask.float(),
                       class_labels=labels).sample
    torch.testing.assert_close(cond, as_noise(teacher, raw[:, : x_t.shape[1]], x_t, t))  # text, mask, cameras as they are
    assert (cond - uncond).abs().max() > 1e-4  # the text reaches the UNet
    assert torch.equal(teacher.predict_noise(x_t, t, condition, guidance_scale=1.0), cond)
    guided = teacher.predict_noise(x_t, t, condition, guidance_scale=7.5)
    torch.testing.assert_close(guided, uncond + 7.5 * (cond - uncond), rtol=1e-4, atol=1e-4)


def test_if_like_teacher_keeps_the_noise_channels(teachers):
    _, teacher, prompts = teachers["if"]
    condition = prompts.condition(PROMPTS)
    x_t = model_input(teacher, 2)
    t = torch.tensor([10, 900])
    raw = teacher.unet(x_t, t, encoder_hidden_states=condition.embeds,
                       encoder_attention_mask=condition.mask.float()).sample
    assert raw.shape == (2, 6, 16, 16)
    torch.testing.assert_close(teacher.predict_noise(x_t, t, condition, guidance_scale=1.0), raw[:, :3])


def test_camera_conditioned_teacher(teachers):
    _, teacher, prompts = teachers["prior"]
    x_t = model_input(teacher, 2)
    t = torch.tensor([500, 500])
    with pytest.raises(ValueError, match="camera-conditioned.*cameras"):
        teacher.predict_noise(x_t, t, prompts.condition(PROMPTS))
    front = teacher.predict_noise(x_t, t, prompts.condition(PROMPTS, cameras(2, seed=0)), guidance_scale=1.0)
    other = teacher.predict_noise(x_t, t, prompts.condition(PROMPTS, cameras(2, seed=1)), guidance_scale=1.0)
    assert (front - other).abs().max() > 1e-5  # the cameras reach the class embedding


def test_view_guidance(teachers):
    """View guidance adds s_view (cond - cond at the camera turned by the offset) to CFG, from
    separate calls; it is refused by teachers without cameras (and by SDS built on them)."""
    _, teacher, prompts = teachers["prior"]
    cams = cameras(2)
    condition = prompts.condition(PROMPTS, cams)
    x_t, t = model_input(teacher, 2), torch.tensor([300, 800])
    cfg = teacher.predict_noise(x_t, t, condition, guidance_scale=3.0)
    cond = teacher.predict_noise(x_t, t, TeacherCondition(condition.embeds, condition.mask, cameras=cams))
    turned = teacher.predict_noise(x_t, t, TeacherCondition(condition.embeds, condition.mask, cameras=cams.turned(30.0)))
    assert (cond - turned).abs().max() > 1e-5
    guided = teacher.predict_noise(x_t, t, condition, guidance_scale=3.0, view_guidance_scale=4.0, view_guidance_offset=30.0)
    torch.testing.assert_close(guided, cfg + 4.0 * (cond - turned), rtol=1e-4, atol=1e-4)
    # Without CFG (scale 1) the view term stands alone.
    alone = teacher.predict_noise(x_t, t, condition, guidance_scale=1.0, view_guidance_scale=2.0, view_guidance_offset=30.0)
    torch.testing.assert_close(alone, cond + 2.0 * (cond - turned), rtol=1e-4, atol=1e-4)
    _, plain, plain_prompts = teachers["sd"]
    with pytest.raises(ValueError, match="view guidance needs a camera-conditioned teacher"):
        plain.predict_noise(model_input(plain, 2), t, plain_prompts.condition(PROMPTS), view_guidance_scale=1.0)
    with pytest.raises(ValueError, match="view_guidance_scale needs a camera-conditioned teacher"):
        ScoreDistillation(plain, view_guidance_scale=1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_sds_step(teachers, kind):
    """One SDS step on renders that require grad: a finite loss whose gradient w.r.t. the renders
    is w(t) (eps_hat - eps) / B in model space, mapped back through encode_images (for the pixel
    teachers at their own size: x = 2 * renders - 1, so exactly 2 w(t) (eps_hat - eps) / B)."""
    _, teacher, prompts = teachers[kind]
    batch, scale = 2, 5.0
    condition = prompts.condition(PROMPTS, cameras(batch))
    sds = ScoreDistillation(teacher, guidance_scale=scale)
    renders = torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(3)).requires_grad_()
    torch.manual_seed(1)  # the VAE's latent sample
    out = sds(renders, condition, progress=0.0, generator=torch.Generator().manual_seed(7))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert renders.grad is not None and renders.grad.abs().sum() > 0

    # The same draws again: t first, then the noise, from the same generator.
    gen = torch.Generator().manual_seed(7)
    low, high = sds.timestep_range(0.0)
    t = torch.randint(low, high + 1, (batch,), generator=gen)
    assert torch.equal(out["t"], t)
    renders_again = renders.detach().clone().requires_grad_()
    torch.manual_seed(1)
    x = teacher.encode_images(renders_again)
    noise = torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        eps_hat = teacher.predict_noise(teacher.add_noise(x.detach(), noise, t), t, condition, scale)
    grad = (1 - teacher.alphas_cumprod[t]).view(-1, 1, 1, 1) * (eps_hat - noise)
    torch.testing.assert_close(out["loss"], 0.5 * grad.square().sum() / batch, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["grad_norm"], grad.flatten(1).norm(dim=1).mean(), rtol=1e-5, atol=1e-5)
    (expected,) = torch.autograd.grad(x, renders_again, grad_outputs=grad / batch)
    torch.testing.assert_close(renders.grad, expected, rtol=1e-4, atol=1e-6)
    if kind != "sd":
        torch.testing.assert_close(renders.grad, 2 * grad / batch, rtol=1e-4, atol=1e-6)


def test_timestep_range_anneals(teachers):
    _, teacher, prompts = teachers["prior"]
    sds = ScoreDistillation(teacher, 1.0, min_step_percent=0.02, max_step_percent=0.98, max_step_percent_end=0.5)
    assert sds.timestep_range(0.0) == (20, 980)
    assert sds.timestep_range(0.5) == (20, 740)
    assert sds.timestep_range(1.0) == (20, 500)
    assert sds.timestep_range(3.0) == (20, 500) and sds.timestep_range(-1.0) == (20, 980)
    fixed = ScoreDistillation(teacher, 1.0, 0.02, 0.98)
    assert fixed.timestep_range(0.0) == fixed.timestep_range(1.0) == (20, 980)
    narrow = ScoreDistillation(teacher, 1.0, 0.5, 0.5005)
    assert narrow.timestep_range(0.0) == (500, 501)  # never empty
    batch = 64
    out = sds(torch.rand(batch, 3, 16, 16), prompts.condition(["a red cube"] * batch, cameras(batch)), progress=1.0,
              generator=torch.Generator().manual_seed(0))
    assert out["t"].min() >= 20 and out["t"].max() <= 500
    for low, high, end in ((0.5, 0.5, None), (0.6, 0.4, None), (0.02, 1.2, None), (0.3, 0.98, 0.2)):
        with pytest.raises(ValueError, match="step_percent"):
            ScoreDistillation(teacher, 1.0, low, high, end)


def test_teacher_prompts_null_conditioning(teachers):
    """The shapes-prior's CFG null is zero tokens (as it was trained); an IF/SD-like folder's is
    the empty prompt through the folder's own tokenizer and text encoder."""
    _, _, prior = teachers["prior"]
    assert prior.null == "zeros"
    condition = prior.condition(PROMPTS)
    embeds, mask = encode_prompts(*load_text_encoder(), PROMPTS, TEXT_MAX_LENGTH)
    torch.testing.assert_close(condition.embeds, embeds)
    assert torch.equal(condition.mask, mask)
    assert condition.uncond_embeds.shape == (2, TEXT_MAX_LENGTH, 384)
    assert not condition.uncond_embeds.any() and condition.uncond_mask.all()

    for kind, encoder_class, width, real_null_tokens in (("if", T5EncoderModel, 48, 1), ("sd", CLIPTextModel, 32, 2)):
        _, _, prompts = teachers[kind]
        assert prompts.null == "empty"
        assert isinstance(prompts.cache.text_encoder, encoder_class)  # the folder's own, not MiniLM
        assert prompts.cache.max_length == 12  # the tokenizer's model_max_length (at most 77)
        condition = prompts.condition(PROMPTS)
        assert condition.embeds.shape == condition.uncond_embeds.shape == (2, 12, width)
        tokens = prompts.cache.tokenizer([""], padding="max_length", max_length=12, return_tensors="pt")
        with torch.no_grad():
            null = prompts.cache.text_encoder(**tokens).last_hidden_state[0]
        torch.testing.assert_close(condition.uncond_embeds[0], null)
        torch.testing.assert_close(condition.uncond_embeds[1], null)
        assert condition.uncond_embeds.abs().sum() > 0
        assert condition.uncond_mask.sum(1).tolist() == [real_null_tokens] * 2  # EOS (T5); BOS + EOS (CLIP)
        assert condition.mask.sum(1).tolist() == [len(ids) for ids in prompts.cache.tokenizer(PROMPTS)["input_ids"]]
        # Each distinct prompt is encoded once.
        prompts.condition(PROMPTS + PROMPTS[:1])
        assert len(prompts.cache) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_condition_follows_the_teacher_to_its_device(teachers, kind):
    """Text encoders run on the CPU (or not at all, their embeddings cached) while the teacher
    sits on an accelerator: the SDS step moves the condition to the teacher's device. The
    teacher goes to the `meta` device here, a second device that exists on every machine (CUDA
    training crashed at its first step with "Expected all tensors to be on the same device")."""
    folder, _, prompts = teachers[kind]
    teacher = DiffusionTeacher.from_pretrained(folder).to("meta")
    condition = prompts.condition(PROMPTS, cameras(2))
    assert condition.embeds.device.type == "cpu" and condition.cameras.elevation.device.type == "cpu"
    renders = torch.rand(2, 3, 16, 16, device="meta", requires_grad=True)
    out = ScoreDistillation(teacher, guidance_scale=5.0)(renders, condition, generator=torch.Generator().manual_seed(0))
    assert out["loss"].device.type == "meta" and out["t"].device.type == "meta"
    moved = condition.to("meta")
    assert {t.device.type for t in (moved.embeds, moved.mask, moved.uncond_embeds, moved.uncond_mask)} == {"meta"}
    assert moved.cameras.azimuth.device.type == "meta"


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_teacher_keeps_sds_in_float32(teachers, kind):
    """A teacher loaded in bf16 (mixed-precision training): its networks run in bf16, while the
    model-space x, the noise and the SDS gradient stay float32, and the gradient is the fp32
    teacher's up to bf16 rounding."""
    folder, fp32, prompts = teachers[kind]
    bf16 = DiffusionTeacher.from_pretrained(folder, dtype=torch.bfloat16)
    assert bf16.unet.dtype == torch.bfloat16 and (bf16.vae is None or bf16.vae.dtype == torch.bfloat16)
    condition = prompts.condition(PROMPTS, cameras(2))
    grads = []
    for teacher in (fp32, bf16):
        renders = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)).requires_grad_()
        torch.manual_seed(1)  # the VAE's latent sample
        out = ScoreDistillation(teacher, guidance_scale=5.0)(renders, condition, generator=torch.Generator().manual_seed(7))
        assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
        assert teacher.encode_images(renders).dtype == torch.float32
        out["loss"].backward()
        grads.append(renders.grad)
    assert grads[1].dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0)
    assert cosine > 0.95
