"""Shared tiny fixtures: teacher folders built once per session, offline (no downloads).

- `prior_teacher`: the shapes-prior at its "tiny" preset (MiniLM text, camera-conditioned).
- `if_teacher`: a DeepFloyd-IF-like pixel teacher: the UNet predicts noise and variance (6
  channels), projects T5 token embeddings (`encoder_hid_dim`), and the folder carries its own
  tiny T5 encoder and tokenizer.
- `sd_teacher`: a Stable-Diffusion-like latent teacher: a tiny `AutoencoderKL`, a 4-channel
  latent UNet, a tiny CLIP text encoder and tokenizer.
- `black_teacher`: a tiny shapes-prior *trained* (a few seconds) as the noise predictor of a
  world whose only image is plain black, so that its SDS loss measures how far renders are
  from black: training runs can be checked to lower it (tests/test_train_atom.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from atom.guidance.shapes_prior import ShapesPriorPipeline, build_prior_scheduler, build_prior_unet, camera_features

TINY_WORDS = [
    "a", "an", "red", "blue", "green", "pink", "orange", "cube", "sphere", "cone", "snowman", "ball", "on", "hill",
    "large", "front", "side", "back", "overhead", "view",
]


def word_tokenizer(template: str, special: list[str], max_length: int):
    """A small word-level fast tokenizer (no download), `template` as in tokenizers'
    TemplateProcessing (T5: "$A </s>", CLIP: "<|startoftext|> $A <|endoftext|>")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", *special, ",", *TINY_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(s, vocab[s]) for s in special])
    kwargs = {"eos_token": special[-1]}
    if len(special) > 1:
        kwargs["bos_token"] = special[0]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", model_max_length=max_length, **kwargs
    )


def write_model_index(folder: Path, class_name: str, components: dict[str, list]) -> None:
    index = {"_class_name": class_name, "_diffusers_version": "0.42.1", **components}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


@pytest.fixture(scope="session")
def prior_teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("teachers") / "shapes-prior-tiny"
    torch.manual_seed(0)
    ShapesPriorPipeline(build_prior_unet("tiny"), build_prior_scheduler()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def if_teacher(tmp_path_factory) -> Path:
    from transformers import T5Config, T5EncoderModel

    folder = tmp_path_factory.mktemp("teachers") / "if-tiny"
    torch.manual_seed(0)
    tokenizer = word_tokenizer("$A </s>", ["</s>"], max_length=12)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=48, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0, eos_token_id=2,
    ))
    # As diffusers' own IF test components; T5's width (48) is projected to the cross-attention's (32).
    unet = UNet2DConditionModel(
        sample_size=16, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        in_channels=3, out_channels=6, cross_attention_dim=32, encoder_hid_dim=48, encoder_hid_dim_type="text_proj",
        attention_head_dim=8, addition_embed_type="text", addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift", act_fn="gelu", norm_num_groups=8,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
        prediction_type="epsilon", thresholding=True,
    )
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    write_model_index(folder, "IFPipeline", {
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "watermarker": [None, None],
        "requires_safety_checker": False,
    })
    return folder


@pytest.fixture(scope="session")
def sd_teacher(tmp_path_factory) -> Path:
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = tmp_path_factory.mktemp("teachers") / "sd-tiny"
    torch.manual_seed(0)
    tokenizer = word_tokenizer("<|startoftext|> $A <|endoftext|>", ["<|startoftext|>", "<|endoftext|>"], max_length=12)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=16,
    )
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    for name, part in {"unet": unet, "vae": vae, "scheduler": scheduler, "text_encoder": text_encoder, "tokenizer": tokenizer}.items():
        part.save_pretrained(folder / name)
    write_model_index(folder, "StableDiffusionPipeline", {
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    })
    return folder


BLACK_TEACHER_T = (300, 700)  # the timesteps it is trained on (tests draw t inside)
BLACK_TEACHER_STEPS = 60
BLACK = -1.0  # model space ([-1, 1])


@pytest.fixture(scope="session")
def black_teacher(tmp_path_factory) -> Path:
    """A tiny shapes-prior trained (60 Adam steps, a few seconds) to be the noise predictor of a
    world whose only image is plain black. For x_t = sqrt(abar) x + sqrt(1 - abar) eps the exact
    prediction is eps + sqrt(abar / (1 - abar)) (x - black), its regression target. Inputs x are
    render-like (white mixed with smooth random colors), t in BLACK_TEACHER_T, random cameras,
    the MiniLM tokens of a few prompts or zeros (its CFG null), so that it ignores text and camera.

    Its SDS loss on a render is then about 0.5 w(t)^2 abar / (1 - abar) |x - black|^2 plus its
    own error: it falls as the renders darken and the object grows over the white background,
    which a training run can be checked to do without the mesh collapsing (a white world is
    reached by deleting the object)."""
    from atom.guidance.shapes_prior import TEXT_MAX_LENGTH
    from atom.models.text_encoding import encode_prompts, load_text_encoder
    from atom.render.cameras import sample_cameras

    folder = tmp_path_factory.mktemp("teachers") / "black-prior"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see `one_thread` in the test files
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    unet = build_prior_unet("tiny")
    scheduler = build_prior_scheduler("epsilon", zero_terminal_snr=False)  # the target below is epsilon
    abar_all = scheduler.alphas_cumprod.float()
    prompts = ["a red cube", "a blue sphere", "a green cone", "a red cube, side view", "a red cube, front view"]
    embeds, mask = encode_prompts(*load_text_encoder(), prompts, TEXT_MAX_LENGTH)
    embeds = torch.cat([embeds, torch.zeros_like(embeds[:1])])
    mask = torch.cat([mask, torch.ones_like(mask[:1])])
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    batch, size = 8, unet.config.sample_size
    unet.train()
    for _ in range(BLACK_TEACHER_STEPS):
        colors = torch.rand(batch, 3, 4, 4, generator=gen) * 2 - 1
        colors = torch.nn.functional.interpolate(colors, size=(size, size), mode="bilinear", align_corners=False)
        coverage = torch.rand(batch, 1, 1, 1, generator=gen)
        x = coverage * colors + (1 - coverage)  # white (+1) mixed with colors
        t = torch.randint(*BLACK_TEACHER_T, (batch,), generator=gen)
        noise = torch.randn(x.shape, generator=gen)
        abar = abar_all[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
        target = noise + (abar / (1 - abar)).sqrt() * (x - BLACK)
        pick = torch.randint(len(embeds), (batch,), generator=gen)
        cams = sample_cameras(batch, generator=gen)
        pred = unet(x_t, t, encoder_hidden_states=embeds[pick], encoder_attention_mask=mask[pick].float(),
                    class_labels=camera_features(unet, cams)).sample
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    ShapesPriorPipeline(unet.eval(), scheduler).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a 2-core machine shared with other jobs, two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
