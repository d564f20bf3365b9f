"""A self-check of this machine for AToM: nvdiffrast, rasterizer parity, silhouette gradients,
inference speed and a few training steps of the paper config.

    python benchmarks/gpu_check.py                                  # everything, as a table
    python benchmarks/gpu_check.py --json gpu_check.json            # also every number as JSON
    python benchmarks/gpu_check.py --checks gradients,inference     # a subset
    python benchmarks/gpu_check.py --scale cpu                      # tiny sizes, well under a minute

Runs on CUDA when it is available, else on the CPU. `--scale gpu` (the default with CUDA)
trains against a random teacher of real size: an IF-stage-I-layout UNet at Stable Diffusion
1.5's widths (1.1 B parameters) with a 2-layer T5 of T5-XXL's width as both text encoders,
built locally (nothing is downloaded). `--scale cpu` runs the same code with tiny sizes.

- nvdiffrast: does `nvdiffrast.torch` import (if not, why), its version, the backend atom picks.
- parity: `render_mesh` through nvdiffrast vs the torch rasterizer: mask IoU, mean |rgb| inside.
- gradients: d sum(rgb) / d scale by autograd over central finite differences, per backend
  (a 0.3-gray sphere on white; near 1 is right, the tests accept 25 %).
- inference: ms per prompt of `pretrained/atom-shapes64` (median after a warm-up).
- training: s/step of stages 1 and 2 (the run's summary, and the median of steps after the
  first by this script's clock) and peak memory (CUDA allocator, or the process's max RSS).
A check that cannot run reports {"skipped": why}; one that fails reports {"error": ...}.
"""
from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import json
import logging
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import timed  # noqa: E402

from atom.geometry import Mesh  # noqa: E402
from atom.pipeline import AToMPipeline  # noqa: E402
from atom.render import Cameras, get_rasterizer, nvdiffrast_available, nvdiffrast_import_error, render_mesh  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("nvdiffrast", "parity", "gradients", "inference", "training")
PROMPTS = ["a red cube", "a blue sphere", "a green cone", "a pink snowman",
           "an orange ball", "a red cone", "a blue cube", "a green sphere"]
FD_STEPS = (0.03, 0.05, 0.08)  # scale steps of the central differences, as tests/test_rasterizer.py
SIZES = {
    "gpu": {
        "resolutions": (64, 256), "repeats": 5, "tokens": 77,
        "t5": dict(d_model=4096, d_ff=10240, num_heads=64, d_kv=64, feed_forward_proj="gated-gelu"),
        "unet": dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=3, norm_num_groups=32,
                     cross_attention_dim=1280, attention_head_dim=64, addition_embed_type_num_heads=64),
        "train": [],
    },
    "cpu": {
        "resolutions": (64,), "repeats": 3, "tokens": 16,
        "t5": dict(d_model=48, d_ff=64, num_heads=4, d_kv=8, relative_attention_num_buckets=8),
        "unet": dict(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=32,
                     attention_head_dim=8, addition_embed_type_num_heads=2, norm_num_groups=8),
        "train": ["--model_preset", "tiny", "--stage1_resolution", "16", "--stage1_samples", "8",
                  "--stage1_importance", "4", "--stage2_resolution", "32", "--stage2_tet_resolution", "12",
                  "--eikonal_points", "64", "--views_per_prompt", "1", "--prompts_per_step", "2",
                  "--mixed_precision", "no"],
    },
}
TRAIN_STEPS, STAGE1_STEPS = 6, 3


def _views(device: torch.device) -> tuple[Cameras, torch.Tensor]:
    """Three cameras around the origin (as tests/test_rasterizer.py) and lights from them."""
    cameras = Cameras(torch.tensor([0.0, 30.0, 60.0]), torch.tensor([0.0, 90.0, 200.0]), torch.full((3,), 3.0),
                      torch.full((3,), 40.0)).to(device)
    return cameras, torch.nn.functional.normalize(cameras.position, dim=-1)


def _sphere(subdivisions: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Icosphere of radius 0.5: verts (V, 3) float32, faces (20 * 4**subdivisions, 3) int64."""
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.5)
    return torch.tensor(sphere.vertices, dtype=torch.float32, device=device), torch.tensor(sphere.faces, device=device)


def environment(device: torch.device, scale: str) -> dict:
    versions = {name: importlib.metadata.version(name) for name in ("diffusers", "accelerate", "transformers")}
    cpu = f"CPU, {torch.get_num_threads()} torch thread(s)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {"scale": scale, "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": name, **versions}


def check_nvdiffrast(device: torch.device, scale: str, workdir: Path) -> dict:
    if device.type != "cuda":
        return {"skipped": "no CUDA device (nvdiffrast runs only on CUDA)"}
    error = nvdiffrast_import_error()  # a real import of nvdiffrast.torch
    try:
        version = importlib.metadata.version("nvdiffrast")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"imports": error is None, "import_error": error, "version": version,
            "auto_backend": get_rasterizer(device).name}


def check_parity(device: torch.device, scale: str, workdir: Path) -> dict:
    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    if not nvdiffrast_available():
        return {"skipped": "nvdiffrast does not import (see the nvdiffrast check)"}
    cameras, light = _views(device)
    rows = []
    for subdivisions in (3, 5):
        verts, faces = _sphere(subdivisions, device)
        mesh = Mesh(verts, faces, verts + 0.5)
        for px in (128, 256):
            out = {backend: render_mesh(mesh, cameras, px, light, rasterizer=get_rasterizer(device, backend))
                   for backend in ("nvdiffrast", "torch")}
            nv, ours = (o["depth"] > 0 for o in out.values())
            inside = (nv & ours).expand(-1, 3, -1, -1)
            rgb_diff = (out["nvdiffrast"]["rgb"] - out["torch"]["rgb"]).abs()[inside].mean().item()
            rows.append({"faces": len(faces), "px": px, "mask_iou": ((nv & ours).sum() / (nv | ours).sum()).item(),
                         "rgb_diff_inside": rgb_diff})
    return {"rows": rows}


def gradient_ratio(verts: torch.Tensor, faces: torch.Tensor, px: int, rasterizer) -> float:
    """Autograd's d sum(rgb) / d scale of a 0.3-gray mesh on white over central differences'."""
    cameras, light = _views(verts.device)
    colors = torch.full_like(verts, 0.3)

    def image_sum(scale):
        mesh = Mesh(verts * scale, faces, colors)
        return render_mesh(mesh, cameras, px, light, "albedo", rasterizer=rasterizer)["rgb"].sum()

    scale = torch.tensor(1.0, device=verts.device, requires_grad=True)
    (analytic,) = torch.autograd.grad(image_sum(scale), scale)
    with torch.no_grad():
        numeric = [(image_sum(1 + h) - image_sum(1 - h)).item() / (2 * h) for h in FD_STEPS]
    return analytic.item() / statistics.mean(numeric)


def check_gradients(device: torch.device, scale: str, workdir: Path) -> dict:
    backends = ["torch"] + (["nvdiffrast"] if device.type == "cuda" and nvdiffrast_available() else [])
    rows = []
    for backend in backends:
        for subdivisions in (3, 5):
            verts, faces = _sphere(subdivisions, device)
            for px in SIZES[scale]["resolutions"]:
                ratio = gradient_ratio(verts, faces, px, get_rasterizer(device, backend))
                rows.append({"backend": backend, "faces": len(faces), "px": px, "ratio": ratio})
    return {"rows": rows}


def check_inference(device: torch.device, scale: str, workdir: Path) -> dict:
    folder = ROOT / "pretrained" / "atom-shapes64"
    if not (folder / "model_index.json").is_file():
        return {"skipped": f"{folder} not found"}
    pipe = AToMPipeline.from_pretrained(folder).to(device)
    rows = []
    for batch in (1, 8):
        for output_type in ("mesh", "trimesh"):
            run = functools.partial(pipe, PROMPTS[:batch], output_type=output_type, batch_size=batch)
            wall_ms, _ = timed(run, SIZES[scale]["repeats"], device)
            rows.append({"batch": batch, "output_type": output_type, "ms_per_prompt": wall_ms / batch})
    return {"rows": rows}


def word_tokenizer(max_length: int):
    """A T5-style ("... </s>") word-level fast tokenizer of the words of PROMPTS and the view suffixes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for p in PROMPTS for w in p.split()} | {"front", "side", "back", "overhead", "view"})
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "</s>", ",", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>",
                                   model_max_length=max_length)


def build_if_teacher(folder: Path, scale: str) -> Path:
    """A random DeepFloyd-IF-stage-I-like teacher folder: UNet (3 -> 6 channels, T5 tokens
    projected by `encoder_hid_dim`), scheduler, T5 encoder and tokenizer. The tokenizer is also
    saved beside the encoder, so that `folder/text_encoder` serves as AToM's `--text_encoder`."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    sizes = SIZES[scale]
    torch.manual_seed(0)
    tokenizer = word_tokenizer(sizes["tokens"])
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), num_layers=2, dropout_rate=0.0, pad_token_id=0,
                                           eos_token_id=tokenizer.eos_token_id, **sizes["t5"]))
    text_encoder.save_pretrained(folder / "text_encoder")
    del text_encoder
    for sub in ("tokenizer", "text_encoder"):
        tokenizer.save_pretrained(folder / sub)
    attention_blocks = len(sizes["unet"]["block_out_channels"]) - 1
    unet = UNet2DConditionModel(
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * attention_blocks,
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D",) * attention_blocks + ("ResnetUpsampleBlock2D",),
        in_channels=3, out_channels=6, encoder_hid_dim=sizes["t5"]["d_model"], encoder_hid_dim_type="text_proj",
        addition_embed_type="text", cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
        act_fn="gelu", **sizes["unet"],
    )
    unet.save_pretrained(folder / "unet")
    del unet
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                  prediction_type="epsilon", thresholding=True).save_pretrained(folder / "scheduler")
    index = {"_class_name": "IFPipeline", "_diffusers_version": importlib.metadata.version("diffusers"),
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDPMScheduler"],
             "text_encoder": ["transformers", "T5EncoderModel"],
             "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
             **dict.fromkeys(("safety_checker", "feature_extractor", "watermarker"), (None, None)),
             "requires_safety_checker": False}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


class StepClock(logging.Handler):
    """Notes when train_atom logs each step ("step %d ..." with --log_steps 1)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.times: dict[int, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("step ") and record.args:
            self.times[int(record.args[0])] = time.perf_counter()


def _load_train_atom():
    spec = importlib.util.spec_from_file_location("_gpu_check_train_atom", ROOT / "train" / "train_atom.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def check_training(device: torch.device, scale: str, workdir: Path) -> dict:
    train_atom = _load_train_atom()
    started = time.perf_counter()
    teacher = build_if_teacher(workdir / "teacher", scale)
    build_seconds = time.perf_counter() - started
    out = workdir / "run"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, also in a reused --workdir
    argv = ["--config", str(ROOT / "train" / "configs" / "paper.yaml"), "--teacher", str(teacher),
            "--text_encoder", str(teacher / "text_encoder"), "--prompts", json.dumps(PROMPTS[:4]),
            "--validation_prompts", json.dumps(PROMPTS[:2]), "--output_dir", str(out),
            "--max_train_steps", str(TRAIN_STEPS), "--stage1_steps", str(STAGE1_STEPS), "--checkpointing_steps", "1000",
            "--validation_steps", "1000", "--log_steps", "1", *SIZES[scale]["train"]]
    logger, clock = logging.getLogger("train_atom"), StepClock()
    level = logger.level
    logger.setLevel(logging.INFO)  # the step records reach the clock whatever the root logger's level
    logger.addHandler(clock)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        train_atom.main(argv)
    finally:
        logger.removeHandler(clock)
        logger.setLevel(level)
    if device.type == "cuda":
        peak = {"peak_gib_cuda_allocated": torch.cuda.max_memory_allocated(device) / 2**30}
    else:  # Linux reports kilobytes; the whole process's lifetime, not this run alone
        peak = {"peak_gib_process_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    summary = json.loads((out / "pipeline" / "training_summary.json").read_text())
    stage_steps = {"1": STAGE1_STEPS, "2": summary["steps"] - STAGE1_STEPS}
    durations = {k: clock.times[k] - clock.times[k - 1] for k in clock.times if k - 1 in clock.times}
    result = {"teacher_build_s": build_seconds, "steps": summary["steps"], "stage_steps": stage_steps}
    for stage, steps in stage_steps.items():
        result[f"stage{stage}_s_per_step"] = summary["stage_seconds"][stage] / max(steps, 1)
        mine = [d for k, d in durations.items() if (k <= STAGE1_STEPS) == (stage == "1")]
        result[f"stage{stage}_s_per_step_median"] = statistics.median(mine) if mine else None
    AToMPipeline.from_pretrained(out / "pipeline")
    return {**result, **peak, "pipeline_loads": True, "pipeline": str(out / "pipeline")}


CHECK_FUNCTIONS = {"nvdiffrast": check_nvdiffrast, "parity": check_parity, "gradients": check_gradients,
                   "inference": check_inference, "training": check_training}


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_report(report: dict) -> str:
    """The report as text: one section per check, rows as aligned columns."""
    lines = []
    for name, result in report.items():
        lines.append(f"== {name}")
        for key, value in result.items():
            if key != "rows":
                lines.append(f"  {key}: {_fmt(value)}")
                continue
            table = [list(value[0])] + [[_fmt(v) for v in row.values()] for row in value]
            widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
            lines += ["  " + "  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument("--scale", choices=("gpu", "cpu"), help="sizes (default: gpu with CUDA, else cpu)")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    parser.add_argument("--workdir", type=Path, help="keep the teacher and training run here (default: temp)")
    args = parser.parse_args(argv)
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown or not checks:
        parser.error(f"--checks: unknown {unknown or 'empty list'}; choose from {', '.join(CHECKS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale = args.scale or ("gpu" if device.type == "cuda" else "cpu")
    report = {"environment": environment(device, scale)}
    with tempfile.TemporaryDirectory(prefix="atom-gpu-check-") as tmp:
        workdir = args.workdir or Path(tmp)
        for name in checks:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                result = CHECK_FUNCTIONS[name](device, scale, workdir)
            except Exception as exc:  # a self-check reports what failed and goes on
                logging.getLogger("gpu_check").exception("%s failed", name)
                result = {"error": f"{type(exc).__name__}: {exc}"}
            report[name] = {**result, "seconds": time.perf_counter() - started}
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
