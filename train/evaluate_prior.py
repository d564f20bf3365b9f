"""Acceptance check of the shapes-prior teacher: does it draw the prompt's shape and color, from
the requested view?

    python train/evaluate_prior.py --model runs/shapes-prior/pipeline --output_dir runs/prior-eval
    python train/evaluate_prior.py --model pretrained/shapes-prior --renders runs/shapes-prior/renders-256x32.pt
    (add --threads 1 on a 2-core machine shared with a training job: two threads wait on each other)

1. A small CNN classifier is trained on ground-truth renders of the Shapes world (`render_shapes`,
   `--classifier_views` random cameras per (shape, color) pair at the prior's resolution,
   shaded as the prior's training data, or an existing renders file with `--renders`) for at
   most `--classifier_seconds`; its accuracy on a held-out set of fresh renders (another seed)
   is printed, so the judge's own reliability is known. Weights are cached (safetensors) in
   `<output_dir>/classifier/`; a rerun with the same settings skips training.
2. The prior draws `--samples_per_prompt` (8) images for each of the 64 Shapes64 prompts at
   random training-range cameras with classifier-free guidance (`--guidance_scale` 1.25, the
   shipped prior's best measured scale: at 1.5 a prompt-independent cube-like block takes many samples, at 3 most; `--steps` 50 DDIM steps), in batches of `--batch_size`, seeded;
   `--view_guidance_scale` adds view guidance (`atom.guidance.teacher.guide`).
3. Every sample is classified; the same classifier also scores fresh ground-truth renders at the
   very same cameras (the reference: what a perfect prior would score).
   `--judge nearest` replaces the classifier by the closest of the 64 (shape, color) ground-truth
   renders at each sample's own camera, cube and pyramid at four turns (no training; see
   `nearest_render_judge`), and
   `--samples runs/prior-eval/samples.pt` rescores an earlier run's samples without sampling.

Acceptance: color accuracy >= 95 %, shape accuracy >= 85 %, view accuracy >= 70 %.

View accuracy and symmetry. With a uniform albedo and the light placed at the camera (jittered
randomly around it, never fixed in the world), an image carries no cue of the azimuth beyond the
shape's own geometry. Six primitives are solids of revolution about Y (sphere, cylinder, cone,
torus, capsule, snowman): every azimuth gives the same image, so no view can be checked on them.
Cube and pyramid (square base, edges along X and Z) have 4-fold symmetry about Y: the image
fixes the azimuth modulo 90 degrees only. So the view is scored on cube and pyramid samples
only, comparing azimuths modulo 90. The tolerance is the requested 45 degrees of a full circle
scaled to that period: 45 x 90 / 360 = 11.25 degrees modulo 90. This keeps the chance rate of
the full-circle criterion (a +-45 window is 1/4 of 360 degrees; +-11.25 is 1/4 of 90): an
unscaled 45-degree window modulo 90 would accept every image, since no two azimuths are more
than 45 degrees apart modulo 90. The classifier predicts (cos 4a, sin 4a), the azimuth on the
quotient circle, and is trained with horizontal flips (a mirror image of either shape is the
view from azimuth -a). Elevation is reported as a diagnostic (median absolute error on every
shape but the sphere, which looks the same from any direction); it is no acceptance criterion.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from atom.data import AZIMUTH_SYMMETRY, COLORS, HELD_OUT, SHAPES, SHAPES64
from atom.data.renders import BACKGROUND, ShapeRenders, mesh_for, render_shapes
from atom.render import Cameras, render_mesh, sample_cameras, sample_light_directions

logger = logging.getLogger("evaluate_prior")

COLOR_NAMES = tuple(COLORS)
VIEW_ORDER = 4  # the classifier's azimuth head predicts the angle x 4 (cube and pyramid)
VIEW_SHAPES = tuple(s for s in SHAPES if AZIMUTH_SYMMETRY[s] is not None)
ACCEPTANCE = {"color_accuracy": 0.95, "shape_accuracy": 0.85, "view_accuracy": 0.70}
CLASSIFIER_VERSION = 1
assert all(AZIMUTH_SYMMETRY[s] == VIEW_ORDER for s in VIEW_SHAPES)


# ---- view matching ------------------------------------------------------------------------


def azimuth_error(predicted_deg: torch.Tensor, target_deg: torch.Tensor, period: float = 360.0) -> torch.Tensor:
    """Circular distance in degrees between azimuths, modulo `period`: in [0, period / 2]."""
    diff = torch.remainder(torch.as_tensor(predicted_deg, dtype=torch.float64) - torch.as_tensor(target_deg, dtype=torch.float64), period)
    return torch.minimum(diff, period - diff)


def view_tolerance(shape: str, tolerance_deg: float = 45.0) -> tuple[float, float] | None:
    """(period, tolerance) in degrees at which a view of `shape` is checked, or None when the
    shape has no recoverable azimuth. The full-circle `tolerance_deg` is scaled to the period
    (45 -> 11.25 modulo 90 for an order-4 shape) so the chance rate stays tolerance / 180."""
    order = AZIMUTH_SYMMETRY[shape]
    if order is None:
        return None
    period = 360.0 / order
    return period, tolerance_deg / order


def view_matches(shape: str, predicted_deg: float, requested_deg: float, tolerance_deg: float = 45.0) -> bool | None:
    """Whether a predicted azimuth matches the requested one for a view of `shape`, modulo its
    symmetry (see `view_tolerance`); None for the solids of revolution (not checkable)."""
    spec = view_tolerance(shape, tolerance_deg)
    if spec is None:
        return None
    period, tolerance = spec
    return bool(azimuth_error(torch.tensor(predicted_deg), torch.tensor(requested_deg), period) <= tolerance)


# ---- ground-truth renders -----------------------------------------------------------------


@torch.no_grad()
def render_gt(shape_index: torch.Tensor, color_index: torch.Tensor, cameras: Cameras, resolution: int,
              supersample: int = 2, light_jitter_deg: float = 30.0, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """(N, 3, H, W) uint8 ground-truth renders of given (shape, color, camera) triples, shaded
    like `atom.data.renders.render_shapes` (the prior's training data), lights seeded."""
    generator = torch.Generator().manual_seed(seed)
    light = sample_light_directions(cameras, light_jitter_deg, generator=generator)
    out = torch.zeros(len(cameras), 3, resolution, resolution, dtype=torch.uint8)
    pairs = sorted(set(zip(shape_index.tolist(), color_index.tolist())))
    for s, c in tqdm(pairs, desc="ground-truth renders", disable=not progress):
        idx = torch.nonzero((shape_index == s) & (color_index == c)).flatten()
        rgb = render_mesh(mesh_for(SHAPES[s], COLOR_NAMES[c]), cameras[idx], resolution * supersample, light[idx],
                          background=BACKGROUND)["rgb"]
        rgb = F.avg_pool2d(rgb, supersample) if supersample > 1 else rgb
        out[idx] = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
    return out


# ---- the nearest-render judge -------------------------------------------------------------


@torch.no_grad()
def nearest_render_judge(cameras: Cameras, shape_index: torch.Tensor, color_index: torch.Tensor, resolution: int,
                         supersample: int = 2, pool: int = 2, view_steps: int = 16, shape_view_steps: int = 4,
                         progress: bool = False) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A judge of images taken at `cameras` that were asked for (`shape_index`, `color_index`):
    it returns predictions in `classify`'s format by nearest neighbour among ground-truth renders
    at each image's own camera, lit from the camera (the mean of the data's jittered lights):
    shape and color of the closest of the 64 (shape, color) renders, where cube and pyramid are
    also rendered turned by `shape_view_steps` steps of 90 deg (the shape is judged whatever the
    view: a pyramid turned the wrong way is still a pyramid, not the cone its misaligned
    render may resemble more; "shape_at_view" keeps the verdict at the requested view only);
    for cube and pyramid images, the azimuth of the closest of `view_steps` renders of the
    requested pair turned by 0 .. 90 deg.
    Distances are mean squared errors after `pool` x `pool` average pooling, so per-pixel grain
    counts little. Elevation is not judged (nan). The renders are made once, here, so that the
    judge can score several image sets at the same cameras (samples and references)."""

    def pooled(images: torch.Tensor) -> torch.Tensor:
        images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return F.avg_pool2d(images, pool)

    n = len(cameras)
    period = 360.0 / VIEW_ORDER
    # (shape, color, azimuth offset): every pair at the requested view, cube / pyramid turned too
    entries = [(s, c, k * period / shape_view_steps) for s in range(len(SHAPES)) for c in range(len(COLOR_NAMES))
               for k in range(shape_view_steps if AZIMUTH_SYMMETRY[SHAPES[s]] is not None else 1)]
    candidates = torch.stack([
        pooled(render_gt(torch.full((n,), s), torch.full((n,), c), cameras.turned(offset), resolution, supersample, 0.0))
        for s, c, offset in tqdm(entries, desc="nearest-render judge", disable=not progress)
    ], 1)  # (n, entries, 3, h, w)
    entry_shape, entry_color = torch.tensor([e[0] for e in entries]), torch.tensor([e[1] for e in entries])
    at_view = torch.tensor([e[2] == 0 for e in entries])
    viewed = torch.tensor([AZIMUTH_SYMMETRY[SHAPES[s]] is not None for s in shape_index.tolist()])
    idx = viewed.nonzero().flatten()
    offsets = torch.arange(view_steps) * (period / view_steps)
    turned = torch.stack([
        pooled(render_gt(shape_index[idx], color_index[idx], cameras[idx].turned(offset), resolution, supersample, 0.0))
        for offset in offsets.tolist()
    ], 1) if len(idx) else None  # (m, view_steps, 3, h, w)

    def judge(images: torch.Tensor) -> dict[str, torch.Tensor]:
        target = pooled(images).unsqueeze(1)
        distance = (candidates - target).pow(2).mean((2, 3, 4))  # (n, entries)
        best = distance.argmin(1)
        best_at_view = at_view.nonzero().flatten()[distance[:, at_view].argmin(1)]
        pred = {"shape": entry_shape[best], "color": entry_color[best], "shape_at_view": entry_shape[best_at_view],
                "azimuth": torch.full((n,), float("nan")), "elevation": torch.full((n,), float("nan"))}
        if turned is not None:
            nearest = (turned - target[idx]).pow(2).mean((2, 3, 4)).argmin(1)
            pred["azimuth"][idx] = torch.remainder(cameras.azimuth[idx] + offsets[nearest], period).float()
        return pred

    return judge


# ---- the classifier -----------------------------------------------------------------------


class RenderClassifier(nn.Module):
    """A small CNN on (B, 3, H, W) images in [0, 1] (white background).

    Heads: "shape" (B, 8) and "color" (B, 8) logits; "view" (B, 2) ~ (cos 4a, sin 4a) of the
    azimuth a (meaningful for cube and pyramid); "elevation" (B,) in units of 45 degrees.
    """

    def __init__(self, width: int = 16):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(
            *block(3, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(4 * w * 16, 8 * w), nn.ReLU(inplace=True),
        )
        self.shape_head = nn.Linear(8 * w, len(SHAPES))
        self.color_head = nn.Linear(8 * w, len(COLORS))
        self.view_head = nn.Linear(8 * w, 2)
        self.elevation_head = nn.Linear(8 * w, 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features((images * 2 - 1).contiguous(memory_format=torch.channels_last))
        return {"shape": self.shape_head(h), "color": self.color_head(h), "view": self.view_head(h),
                "elevation": self.elevation_head(h).squeeze(-1)}


@dataclass
class ClassifierConfig:
    resolution: int
    width: int = 16
    views_per_pair: int = 64
    val_views_per_pair: int = 16
    supersample: int = 2
    max_seconds: float = 120.0
    max_epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 2e-3
    seed: int = 0
    renders: str | None = None  # a ShapeRenders file used instead of rendering
    noise: float = 0.15  # max std of the per-pixel Gaussian noise added in training
    blotches: float = 0.1  # max amplitude of smooth (4x4, upsampled) color noise added in training
    version: int = CLASSIFIER_VERSION

    def cache_key(self) -> str:
        """What the cached weights depend on (the time budget aside)."""
        d = asdict(self)
        d.pop("max_seconds")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _augment(images: torch.Tensor, view: torch.Tensor, generator: torch.Generator, noise: float = 0.15,
             blotches: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal flips (a mirrored cube / pyramid is the view from -a: negate sin 4a), shifts of
    up to 2 pixels over white, per-pixel Gaussian noise (std up to `noise`) and smooth color
    blotches (up to `blotches`): the nuisances of a diffusion sample's background, which the
    judge must see through to name shape and color."""
    b, _, h, w = images.shape
    flip = torch.rand(b, generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    view = torch.where(flip.view(-1, 1), view * torch.tensor([1.0, -1.0]), view)
    pad = 2
    padded = F.pad(images, (pad,) * 4, value=1.0)
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b), generator=generator)
    images = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    sigma = noise * torch.rand(b, 1, 1, 1, generator=generator)
    smooth = F.interpolate(torch.randn(b, 3, 4, 4, generator=generator), size=(h, w), mode="bilinear", align_corners=False)
    amplitude = blotches * torch.rand(b, 1, 1, 1, generator=generator)
    images = images + sigma * torch.randn(images.shape, generator=generator) + amplitude * smooth
    return images.clamp(0, 1), view


def _targets(renders: ShapeRenders) -> dict[str, torch.Tensor]:
    az = torch.deg2rad(renders.cameras.azimuth.float() * VIEW_ORDER)
    has_view = torch.tensor([AZIMUTH_SYMMETRY[SHAPES[s]] is not None for s in renders.shape_index.tolist()])
    return {"shape": renders.shape_index, "color": renders.color_index, "view": torch.stack([az.cos(), az.sin()], 1),
            "has_view": has_view, "elevation": renders.cameras.elevation.float() / 45.0,
            "has_elevation": renders.shape_index != SHAPES.index("sphere")}


def train_classifier(train: ShapeRenders, val: ShapeRenders, cfg: ClassifierConfig, progress: bool = True) -> tuple[RenderClassifier, dict]:
    """Trains a `RenderClassifier` for at most `cfg.max_seconds` / `cfg.max_epochs` (cosine
    learning rate over whichever budget runs out first), seeded. Returns it (eval mode) and
    its metrics on `val`."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = RenderClassifier(cfg.width).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    targets = _targets(train)
    n = len(train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    max_steps = cfg.max_epochs * steps_per_epoch
    start, step, fraction = time.perf_counter(), 0, 0.0
    bar = tqdm(total=100, desc="training the classifier", unit="%", disable=not progress)
    model.train()
    while fraction < 1.0:
        order = torch.randperm(n, generator=generator)
        for first in range(0, n, cfg.batch_size):
            fraction = max(step / max_steps, (time.perf_counter() - start) / cfg.max_seconds)
            if fraction >= 1.0:
                break
            for group in optimizer.param_groups:
                group["lr"] = cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * fraction))
            idx = order[first : first + cfg.batch_size]
            images, view = _augment(train.images[idx].float() / 255, targets["view"][idx], generator, cfg.noise, cfg.blotches)
            out = model(images)
            has_view, has_el = targets["has_view"][idx], targets["has_elevation"][idx]
            loss = F.cross_entropy(out["shape"], targets["shape"][idx]) + F.cross_entropy(out["color"], targets["color"][idx])
            if has_view.any():
                loss = loss + 2 * F.mse_loss(out["view"][has_view], view[has_view])
            if has_el.any():
                loss = loss + F.smooth_l1_loss(out["elevation"][has_el], targets["elevation"][idx][has_el], beta=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            bar.n = min(100, int(100 * fraction))
            bar.set_postfix(step=step, epoch=f"{step / steps_per_epoch:.1f}", loss=f"{loss.item():.3f}", refresh=False)
            bar.refresh()
    bar.close()
    model.eval()
    seconds = time.perf_counter() - start
    metrics = score_renders(model, val)
    metrics.update(train_seconds=round(seconds, 1), train_steps=step, train_epochs=round(step / steps_per_epoch, 2),
                   train_images=n, val_images=len(val))
    return model, metrics


@torch.no_grad()
def classify(model: RenderClassifier, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Predictions for (N, 3, H, W) images (uint8, or float in [0, 1]): "shape", "color" (N,)
    indices, "azimuth" (N,) degrees in [0, 90) (meaningful modulo 90 for cube and pyramid),
    "elevation" (N,) degrees."""
    outs = {"shape": [], "color": [], "azimuth": [], "elevation": []}
    model.eval()
    for first in range(0, len(images), batch_size):
        x = images[first : first + batch_size]
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        out = model(x)
        outs["shape"].append(out["shape"].argmax(-1))
        outs["color"].append(out["color"].argmax(-1))
        angle = torch.rad2deg(torch.atan2(out["view"][:, 1], out["view"][:, 0])) / VIEW_ORDER
        outs["azimuth"].append(torch.remainder(angle, 360.0 / VIEW_ORDER))
        outs["elevation"].append(out["elevation"] * 45.0)
    return {k: torch.cat(v) for k, v in outs.items()}


def score_predictions(pred: dict[str, torch.Tensor], shape_index: torch.Tensor, color_index: torch.Tensor,
                      cameras: Cameras, tolerance_deg: float = 45.0) -> dict[str, torch.Tensor]:
    """Per-image verdicts: "shape_correct", "color_correct", "correct" (both) bools (N,);
    "view_checked" (N,) bool (cube / pyramid targets); "view_error" (N,) degrees modulo the
    symmetry period (nan where unchecked); "view_correct" (N,) bool (False where unchecked);
    "elevation_error" (N,) absolute degrees (nan for the sphere); "shape_correct_at_view" when the
    judge also gave the shape at the requested view only ("shape_at_view")."""
    shape_ok = pred["shape"] == shape_index
    color_ok = pred["color"] == color_index
    n = len(shape_index)
    checked = torch.zeros(n, dtype=torch.bool)
    view_error = torch.full((n,), float("nan"), dtype=torch.float64)
    view_ok = torch.zeros(n, dtype=torch.bool)
    for s, name in enumerate(SHAPES):
        spec = view_tolerance(name, tolerance_deg)
        mask = shape_index == s
        if spec is None or not mask.any():
            continue
        period, tolerance = spec
        err = azimuth_error(pred["azimuth"][mask], cameras.azimuth[mask], period)
        checked[mask], view_error[mask], view_ok[mask] = True, err, err <= tolerance
    el_err = (pred["elevation"].double() - cameras.elevation.double()).abs()
    el_err[shape_index == SHAPES.index("sphere")] = float("nan")
    verdicts = {"shape_correct": shape_ok, "color_correct": color_ok, "correct": shape_ok & color_ok,
                "view_checked": checked, "view_error": view_error, "view_correct": view_ok, "elevation_error": el_err}
    if "shape_at_view" in pred:
        verdicts["shape_correct_at_view"] = pred["shape_at_view"] == shape_index
    return verdicts


def aggregate(verdicts: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> dict:
    """Accuracies over the images in `mask` (all when None): shape / color / both, view over the
    checked images (None if none), view error median and 90th percentile, view accuracy among
    checked images of the right shape, elevation median absolute error."""
    mask = torch.ones_like(verdicts["correct"]) if mask is None else mask
    checked = mask & verdicts["view_checked"]

    def mean(key: str, m: torch.Tensor) -> float | None:
        return float(verdicts[key][m].double().mean()) if m.any() else None

    def quantile(key: str, m: torch.Tensor, q: float) -> float | None:
        values = verdicts[key][m]
        values = values[~values.isnan()]
        return float(values.quantile(q)) if len(values) else None

    out = {
        "count": int(mask.sum()),
        "shape_accuracy": mean("shape_correct", mask),
        "color_accuracy": mean("color_correct", mask),
        "accuracy": mean("correct", mask),
        "view_count": int(checked.sum()),
        "view_accuracy": mean("view_correct", checked),
        "view_accuracy_right_shape": mean("view_correct", checked & verdicts["shape_correct"]),
        "view_error_median": quantile("view_error", checked, 0.5),
        "view_error_p90": quantile("view_error", checked, 0.9),
        "elevation_error_median": quantile("elevation_error", mask, 0.5),
    }
    if "shape_correct_at_view" in verdicts:
        out["shape_accuracy_at_requested_view"] = mean("shape_correct_at_view", mask)
    return out


def score_renders(model: RenderClassifier, renders: ShapeRenders, tolerance_deg: float = 45.0) -> dict:
    """`aggregate` of the classifier on labeled renders."""
    pred = classify(model, renders.images)
    return aggregate(score_predictions(pred, renders.shape_index, renders.color_index, renders.cameras, tolerance_deg))


def load_or_train_classifier(cfg: ClassifierConfig, folder: Path, retrain: bool = False,
                             progress: bool = True) -> tuple[RenderClassifier, dict]:
    """The cached classifier in `folder` when its settings match `cfg`, else a freshly trained
    one (then cached: `model.safetensors` + `classifier.json` with its validation metrics)."""
    weights, info_path = folder / "model.safetensors", folder / "classifier.json"
    if not retrain and weights.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("cache_key") == cfg.cache_key():
            model = RenderClassifier(cfg.width)
            model.load_state_dict(load_file(str(weights)))
            logger.info("classifier loaded from %s (trained %.0f s)", weights, info["validation"]["train_seconds"])
            return model.eval(), info
        logger.info("cached classifier in %s was trained with other settings: retraining", folder)
    tic = time.perf_counter()
    if cfg.renders:
        train = ShapeRenders.from_state_dict(torch.load(cfg.renders))
        if train.images.shape[-1] != cfg.resolution:
            raise ValueError(f"--renders {cfg.renders} holds {train.images.shape[-1]}px images; the prior samples {cfg.resolution}px")
    else:
        train = render_shapes(cfg.views_per_pair, cfg.resolution, cfg.supersample, seed=10_000 + cfg.seed, progress=progress)
    val = render_shapes(cfg.val_views_per_pair, cfg.resolution, cfg.supersample, seed=20_000 + cfg.seed, progress=progress)
    render_seconds = time.perf_counter() - tic
    model, metrics = train_classifier(train, val, cfg, progress=progress)
    metrics["render_seconds"] = round(render_seconds, 1)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    info = {"cache_key": cfg.cache_key(), "config": asdict(cfg), "validation": metrics}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return model, info


# ---- sampling the prior -------------------------------------------------------------------


@dataclass
class SampleSet:
    """N = 64 x S samples, prompt-major: images (N, 3, H, W) float in [0, 1], prompt_index
    into SHAPES64, the cameras they were drawn at, and the prompts as given to the prior."""

    images: torch.Tensor
    prompt_index: torch.Tensor
    cameras: Cameras
    prompts: list[str]

    @property
    def shape_index(self) -> torch.Tensor:
        return torch.tensor([SHAPES.index(SHAPES64[i].shape) for i in self.prompt_index.tolist()])

    @property
    def color_index(self) -> torch.Tensor:
        return torch.tensor([COLOR_NAMES.index(SHAPES64[i].color) for i in self.prompt_index.tolist()])


def sample_prior(pipe, samples_per_prompt: int = 8, guidance_scale: float = 1.5, steps: int = 50, batch_size: int = 128,
                 seed: int = 0, view_words: bool = False, progress: bool = True, view_guidance_scale: float = 0.0) -> SampleSet:
    """Draws `samples_per_prompt` images for every Shapes64 prompt at random cameras
    (`sample_cameras`' training ranges, seeded by `seed`), in batches of `batch_size`; batch k
    draws its noise from a generator seeded with seed x 1000 + k."""
    from atom.data import view_word

    prompt_index = torch.arange(len(SHAPES64)).repeat_interleave(samples_per_prompt)
    cameras = sample_cameras(len(prompt_index), generator=torch.Generator().manual_seed(seed))
    prompts = [SHAPES64[i].prompt for i in prompt_index.tolist()]
    if view_words:
        prompts = [f"{p}, {view_word(float(e), float(a))}" for p, e, a in zip(prompts, cameras.elevation, cameras.azimuth)]
    images = []
    starts = range(0, len(prompts), batch_size)
    bar = tqdm(total=len(prompts), desc=f"sampling the prior ({steps} steps, CFG {guidance_scale:g}, view {view_guidance_scale:g})",
               unit="img", disable=not progress)
    for k, first in enumerate(starts):
        idx = slice(first, first + batch_size)
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        out = pipe(prompts[idx], cameras=cameras[torch.arange(len(prompts))[idx]], guidance_scale=guidance_scale,
                   view_guidance_scale=view_guidance_scale, num_inference_steps=steps, generator=generator,
                   output_type="pt", progress=False)
        images.append(out.images.float().cpu())
        bar.update(len(prompts[idx]))
    bar.close()
    return SampleSet(torch.cat(images), prompt_index, cameras, prompts)


def save_samples(samples: SampleSet, path: Path) -> None:
    cameras = samples.cameras
    torch.save({"images": (samples.images * 255).round().to(torch.uint8), "prompt_index": samples.prompt_index,
                "cameras": torch.stack([cameras.elevation, cameras.azimuth, cameras.distance, cameras.fovy], 1),
                "prompts": samples.prompts}, path)


def load_samples(path: str | Path) -> SampleSet:
    """The SampleSet `save_samples` wrote (images back to float in [0, 1], to 1/255)."""
    data = torch.load(path)
    cams = data["cameras"].float()
    return SampleSet(data["images"].float() / 255, data["prompt_index"], Cameras(*cams.unbind(1)), data["prompts"])


# ---- report -------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "    -" if value is None else f"{100 * value:5.1f}%"


def _deg(value: float | None) -> str:
    return "   -" if value is None else f"{value:5.1f}"


def per_prompt(verdicts: dict[str, torch.Tensor], pred: dict[str, torch.Tensor], samples: SampleSet) -> list[dict]:
    """One record per Shapes64 prompt: its accuracies and the classifier's most common answers."""
    rows = []
    for i, record in enumerate(SHAPES64):
        mask = samples.prompt_index == i
        if not mask.any():
            continue
        row = {"prompt": record.prompt, "shape": record.shape, "color": record.color, **aggregate(verdicts, mask)}
        row["predicted"] = [f"{COLOR_NAMES[c]} {SHAPES[s]}" for s, c in zip(pred["shape"][mask].tolist(), pred["color"][mask].tolist())]
        rows.append(row)
    return rows


def format_report(result: dict, worst: int = 12) -> str:
    lines = []
    if result["classifier"] is None:
        lines.append("judge: nearest ground-truth render at each sample's camera (64 (shape, color) pairs, cube / pyramid "
                     "also turned by 22.5 / 45 / 67.5 deg so that the shape is judged whatever the view; cube / pyramid "
                     "azimuth from 16 turned renders), distances after 2x2 average pooling")
    else:
        val = result["classifier"]["validation"]
        lines.append(f"judge: classifier; on held-out GT renders ({val['val_images']} images, {val['train_steps']} steps / "
                     f"{val['train_epochs']} epochs in {val['train_seconds']} s on {val['train_images']} renders):")
        lines.append(f"  shape {_pct(val['shape_accuracy'])}  color {_pct(val['color_accuracy'])}  "
                     f"view {_pct(val['view_accuracy'])} (cube+pyramid, {val['view_count']} images; azimuth error "
                     f"median {_deg(val['view_error_median'])} deg, p90 {_deg(val['view_error_p90'])} deg mod 90)  "
                     f"elevation error median {_deg(val['elevation_error_median'])} deg")
    tol = result["settings"]["view_tolerance"]
    lines.append("")
    lines.append(f"view accuracy: cube and pyramid only (the other six shapes are solids of revolution: no azimuth to "
                 f"recover); azimuth compared modulo 90 (4-fold symmetry) within {tol:g} x 90/360 = {tol / 4:g} deg, "
                 f"the {tol:g}-degree full-circle window scaled to the period (same {tol / 180:.0%} chance rate).")
    lines.append("")
    head = f"{'':<34} {'shape':>6} {'color':>6} {'both':>6} {'view':>6} {'az err med':>10} {'elev err med':>12}"
    lines += [head, "-" * len(head)]
    for name, key in (("prior samples", "samples"), ("GT renders at the same cameras", "reference")):
        s = result[key]
        lines.append(f"{name:<34} {_pct(s['shape_accuracy'])} {_pct(s['color_accuracy'])} {_pct(s['accuracy'])} "
                     f"{_pct(s['view_accuracy'])} {_deg(s['view_error_median']):>10} {_deg(s['elevation_error_median']):>12}")
    s = result["samples"]
    if s.get("shape_accuracy_at_requested_view") is not None:
        lines.append(f"  (prior shape accuracy judged at the requested view only: {_pct(s['shape_accuracy_at_requested_view'])})")
    if s["view_accuracy_right_shape"] is not None:
        lines.append(f"  (prior view accuracy among cube / pyramid samples classified as the right shape: "
                     f"{_pct(s['view_accuracy_right_shape'])})")
    for name, split in result.get("splits", {}).items():
        lines.append(f"  {'AToM ' + name + ' prompts':<32} {_pct(split['shape_accuracy'])} {_pct(split['color_accuracy'])} "
                     f"{_pct(split['accuracy'])} {_pct(split['view_accuracy'])}")
    lines.append("")
    rows = sorted(result["per_prompt"], key=lambda r: (r["accuracy"], r["shape_accuracy"], r["view_accuracy"] or 1.0))
    lines.append(f"worst {min(worst, len(rows))} prompts (of {len(rows)}):")
    head = f"{'prompt':<22} {'shape':>6} {'color':>6} {'both':>6} {'view':>6}  classified as"
    lines += [head, "-" * len(head)]
    for r in rows[:worst]:
        counts: dict[str, int] = {}
        for p in r["predicted"]:
            counts[p] = counts.get(p, 0) + 1
        common = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"{r['prompt']:<22} {_pct(r['shape_accuracy'])} {_pct(r['color_accuracy'])} {_pct(r['accuracy'])} "
                     f"{_pct(r['view_accuracy'])}  {common}")
    lines.append("")
    for key, threshold in ACCEPTANCE.items():
        value = s[key]
        verdict = "PASS" if value is not None and value >= threshold else "FAIL"
        lines.append(f"{key:<15} {_pct(value)}  (>= {100 * threshold:.0f}%)  {verdict}")
    lines.append(f"acceptance: {'PASS' if result['passed'] else 'FAIL'} (prior samples; the GT row above is the judge's ceiling)")
    return "\n".join(lines)


def _to_pil(images: torch.Tensor, rows: int, cols: int, scale: int, pad: int = 2,
            frames: torch.Tensor | None = None) -> Image.Image:
    """(rows x cols, 3, H, W) images in [0, 1] -> a grid, upscaled by `scale` (nearest), with a
    red frame around images where `frames` is True."""
    n, _, h, w = images.shape
    cell_h, cell_w = h * scale + 2 * pad, w * scale + 2 * pad
    canvas = Image.new("RGB", (cols * cell_w, rows * cell_h), (160, 160, 160))
    for i in range(n):
        array = (images[i].clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()
        tile = Image.fromarray(np.ascontiguousarray(array)).resize((w * scale, h * scale), Image.NEAREST)
        r, c = divmod(i, cols)
        if frames is not None and bool(frames[i]):
            ImageDraw.Draw(canvas).rectangle([c * cell_w, r * cell_h, (c + 1) * cell_w - 1, (r + 1) * cell_h - 1], fill=(220, 0, 0))
        canvas.paste(tile, (c * cell_w + pad, r * cell_h + pad))
    return canvas


def _with_labels(grid: Image.Image, labels: list[str], row_height: int, width: int = 150) -> Image.Image:
    out = Image.new("RGB", (grid.width + width, grid.height), "white")
    out.paste(grid, (width, 0))
    draw, font = ImageDraw.Draw(out), ImageFont.load_default()
    for i, label in enumerate(labels):
        draw.multiline_text((4, i * row_height + 4), label, fill=(0, 0, 0), font=font)
    return out


def save_grids(path: Path, samples: SampleSet, reference: torch.Tensor, verdicts: dict[str, torch.Tensor],
               detail_prompts: list[int]) -> list[Path]:
    """`path`: the first sample of every prompt, 8 x 8 (rows: shapes, columns: colors, the
    Shapes64 order); `<stem>-detail.png`: for a few prompts, a row of all their samples above a
    row of GT renders at the same cameras. Red frames: samples classified wrong (shape or color)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    per = int((samples.prompt_index == 0).sum())
    first = torch.tensor([int(torch.nonzero(samples.prompt_index == i)[0]) for i in range(len(SHAPES64))])
    grid = _to_pil(samples.images[first], len(SHAPES), len(COLORS), 3, frames=~verdicts["correct"][first])
    grid = _with_labels(grid, list(SHAPES), grid.height // len(SHAPES), width=70)
    header = Image.new("RGB", (grid.width, 16), "white")
    draw = ImageDraw.Draw(header)
    for c, name in enumerate(COLOR_NAMES):
        draw.text((70 + c * (grid.width - 70) // len(COLORS) + 4, 2), name, fill=(0, 0, 0), font=ImageFont.load_default())
    full = Image.new("RGB", (grid.width, grid.height + 16), "white")
    full.paste(header, (0, 0))
    full.paste(grid, (0, 16))
    full.save(path)

    tiles, frames, labels = [], [], []
    for i in detail_prompts:
        idx = torch.nonzero(samples.prompt_index == i).flatten()
        tiles += [samples.images[idx], reference[idx].float() / 255]
        frames += [~verdicts["correct"][idx], torch.zeros(len(idx), dtype=torch.bool)]
        labels += [f"{SHAPES64[i].prompt}\nprior samples", "ground truth,\nsame cameras"]
    detail = _to_pil(torch.cat(tiles), len(labels), per, 3, frames=torch.cat(frames))
    detail = _with_labels(detail, labels, detail.height // len(labels))
    detail_path = path.with_name(f"{path.stem}-detail{path.suffix}")
    detail.save(detail_path)
    return [path, detail_path]


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="ShapesPriorPipeline folder or Hub repo id")
    parser.add_argument("--output_dir", default="runs/prior-eval", help="classifier cache, samples, default JSON / grid")
    parser.add_argument("--guidance_scale", type=float, default=1.25, help="CFG scale (see the shapes-prior card)")
    parser.add_argument("--view_guidance_scale", type=float, default=0.0,
                        help="view guidance (ShapesPriorPipeline; see the shapes-prior card); 0 = off")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--samples_per_prompt", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=128, help="images per sampling batch")
    parser.add_argument("--seed", type=int, default=0, help="seeds cameras, noise, the classifier and its renders")
    parser.add_argument("--view_words", action="store_true",
                        help="append the camera's view word to each prompt ('a red cube, side view'), as AToM's SDS does")
    parser.add_argument("--view_tolerance", type=float, default=45.0,
                        help="full-circle azimuth tolerance in degrees (scaled by the shape's symmetry order)")
    parser.add_argument("--judge", choices=("classifier", "nearest"), default="classifier",
                        help="classifier: a CNN trained on GT renders; nearest: the closest GT render at the sample's camera")
    parser.add_argument("--classifier_views", type=int, default=64, help="GT renders per (shape, color) pair for training")
    parser.add_argument("--classifier_val_views", type=int, default=16, help="held-out GT renders per pair")
    parser.add_argument("--classifier_seconds", type=float, default=120.0, help="training time budget")
    parser.add_argument("--classifier_epochs", type=int, default=30, help="training epoch budget")
    parser.add_argument("--classifier_noise", type=float, default=0.15,
                        help="max std of the pixel noise the classifier is trained with (0.04 before 2026-11-28)")
    parser.add_argument("--classifier_blotches", type=float, default=0.1,
                        help="max amplitude of the smooth color noise the classifier is trained with (0 before)")
    parser.add_argument("--renders", default=None, help="train the classifier on this ShapeRenders file instead of rendering")
    parser.add_argument("--samples", default=None,
                        help="score the samples saved in this samples.pt (from an earlier run) instead of sampling")
    parser.add_argument("--retrain", action="store_true", help="ignore the cached classifier")
    parser.add_argument("--json", default=None, help="default <output_dir>/prior_eval.json")
    parser.add_argument("--grid", default=None, help="default <output_dir>/samples.png (+ samples-detail.png)")
    parser.add_argument("--worst", type=int, default=12, help="prompts listed in the worst-prompts table")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is faster when another job shares a 2-core machine)")
    parser.add_argument("--no_progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from atom.guidance.shapes_prior import ShapesPriorPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    tic = time.perf_counter()
    pipe = ShapesPriorPipeline.from_pretrained(args.model).to(args.device)
    resolution = int(pipe.unet.config.sample_size)
    timings["load"] = time.perf_counter() - tic

    cfg = ClassifierConfig(resolution=resolution, views_per_pair=args.classifier_views,
                           val_views_per_pair=args.classifier_val_views, max_seconds=args.classifier_seconds,
                           max_epochs=args.classifier_epochs, seed=args.seed, renders=args.renders,
                           noise=args.classifier_noise, blotches=args.classifier_blotches)
    classifier, info = None, None
    if args.judge == "classifier":
        tic = time.perf_counter()
        classifier, info = load_or_train_classifier(cfg, out_dir / "classifier", args.retrain, progress)
        timings["classifier"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if args.samples:
        samples = load_samples(args.samples)
    else:
        samples = sample_prior(pipe, args.samples_per_prompt, args.guidance_scale, args.steps, args.batch_size,
                               args.seed, args.view_words, progress, args.view_guidance_scale)
        save_samples(samples, out_dir / "samples.pt")
    timings["sample"] = time.perf_counter() - tic

    tic = time.perf_counter()
    shape_index, color_index = samples.shape_index, samples.color_index
    reference = render_gt(shape_index, color_index, samples.cameras, resolution, cfg.supersample, seed=30_000 + args.seed,
                          progress=progress)
    timings["reference_renders"] = time.perf_counter() - tic
    tic = time.perf_counter()
    if classifier is not None:
        judge = lambda images: classify(classifier, images)  # noqa: E731
    else:
        judge = nearest_render_judge(samples.cameras, shape_index, color_index, resolution, cfg.supersample,
                                     progress=progress)
    pred = judge(samples.images)
    verdicts = score_predictions(pred, shape_index, color_index, samples.cameras, args.view_tolerance)
    ref_verdicts = score_predictions(judge(reference), shape_index, color_index, samples.cameras, args.view_tolerance)
    timings["judge"] = time.perf_counter() - tic
    summary = aggregate(verdicts)
    result = {
        "model": args.model,
        "settings": {k: getattr(args, k) for k in ("guidance_scale", "view_guidance_scale", "steps", "samples_per_prompt", "batch_size", "seed",
                                                   "view_words", "view_tolerance", "samples", "judge")} | {"resolution": resolution},
        "acceptance": ACCEPTANCE,
        "passed": all(summary[k] is not None and summary[k] >= v for k, v in ACCEPTANCE.items()),
        "samples": summary,
        "reference": aggregate(ref_verdicts),
        "splits": {},
        "per_prompt": per_prompt(verdicts, pred, samples),
        "classifier": info,
        "view_rule": (f"cube and pyramid only; azimuth modulo 90 within {args.view_tolerance:g}/4 deg "
                      f"(solids of revolution have no recoverable azimuth)"),
    }
    held_out = torch.tensor([SHAPES64[i] in HELD_OUT for i in samples.prompt_index.tolist()])
    result["splits"] = {"seen": aggregate(verdicts, ~held_out), "held_out": aggregate(verdicts, held_out)}
    print(format_report(result, args.worst))

    grid_path = Path(args.grid) if args.grid else out_dir / "samples.png"
    # Detail rows: the view-checked shapes in two colors, then the four worst prompts.
    detail = [i for i, r in enumerate(SHAPES64) if r.shape in VIEW_SHAPES and r.color in ("red", "cyan")]
    detail += [i for i in sorted(range(len(SHAPES64)), key=lambda i: result["per_prompt"][i]["accuracy"])[:4] if i not in detail]
    paths = save_grids(grid_path, samples, reference, verdicts, detail)
    timings["total"] = sum(timings.values())
    result["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    json_path = Path(args.json) if args.json else out_dir / "prior_eval.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n")
    print(f"grids: {', '.join(map(str, paths))}\njson: {json_path}\ntimes (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    return result


if __name__ == "__main__":
    main()
