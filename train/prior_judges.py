"""The judges of train/evaluate_prior.py: does an image show the prompt's shape and color, from the
requested view? A small CNN classifier trained on ground-truth renders of the Shapes world
(`load_or_train_classifier`, `classify`) or the nearest of the ground-truth renders at the image's
own camera (`nearest_render_judge`); both give predictions that `score_predictions` turns into
per-image verdicts and `aggregate` into accuracies. Views are checked modulo each shape's
symmetry (`view_tolerance`; the reasoning is in evaluate_prior.py's docstring)."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from atom.data import AZIMUTH_SYMMETRY, COLORS, SHAPES
from atom.data.renders import BACKGROUND, ShapeRenders, mesh_for, render_shapes
from atom.render import Cameras, render_mesh, sample_light_directions

logger = logging.getLogger("evaluate_prior")

COLOR_NAMES = tuple(COLORS)
VIEW_ORDER = 4  # the classifier's azimuth head predicts the angle x 4 (cube and pyramid)
VIEW_SHAPES = tuple(s for s in SHAPES if AZIMUTH_SYMMETRY[s] is not None)
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
