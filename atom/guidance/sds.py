"""Score distillation sampling (SDS, DreamFusion), written as threestudio writes it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .teacher import DiffusionTeacher, TeacherCondition


def check_timestep_bounds(min_step_percent: float, max_step_percent: float, max_step_percent_end: float | None) -> None:
    """ValueError unless 0 <= min_step_percent < max_step_percent <= 1 and, if given,
    min_step_percent < max_step_percent_end <= 1."""
    if not 0 <= min_step_percent < max_step_percent <= 1:
        raise ValueError(f"need 0 <= min_step_percent < max_step_percent <= 1, got {min_step_percent}, {max_step_percent}")
    if max_step_percent_end is not None and not min_step_percent < max_step_percent_end <= 1:
        raise ValueError(f"max_step_percent_end must be in (min_step_percent, 1], got {max_step_percent_end}")


class ScoreDistillation(nn.Module):
    """SDS loss on renders against a frozen `DiffusionTeacher`.

    Args:
        teacher: the frozen 2D diffusion model.
        guidance_scale: classifier-free guidance scale (7.5 beat 20 with the shapes-prior;
            IF-based work uses ~20).
        min_step_percent, max_step_percent: t is drawn uniformly in this fraction of the
            schedule at the start of training.
        max_step_percent_end: the upper bound anneals linearly to this value over training
            (None: no annealing).
        view_guidance_scale: view guidance of a camera-conditioned teacher (`teacher.guide`):
            pushes each render toward the teacher's idea of its own camera's view (0: off).
    """

    def __init__(
        self,
        teacher: DiffusionTeacher,
        guidance_scale: float = 7.5,
        min_step_percent: float = 0.02,
        max_step_percent: float = 0.98,
        max_step_percent_end: float | None = None,
        view_guidance_scale: float = 0.0,
    ):
        super().__init__()
        check_timestep_bounds(min_step_percent, max_step_percent, max_step_percent_end)
        if view_guidance_scale != 0 and not teacher.camera_conditioned:
            raise ValueError("view_guidance_scale needs a camera-conditioned teacher (this one takes no cameras)")
        self.teacher = teacher
        self.guidance_scale = guidance_scale
        self.min_step_percent = min_step_percent
        self.max_step_percent = max_step_percent
        self.max_step_percent_end = max_step_percent_end
        self.view_guidance_scale = view_guidance_scale

    def timestep_range(self, progress: float) -> tuple[int, int]:
        """Inclusive integer range of t at `progress` in [0, 1] of training."""
        high = self.max_step_percent
        if self.max_step_percent_end is not None:
            high += (self.max_step_percent_end - high) * min(max(progress, 0.0), 1.0)
        n = self.teacher.num_train_timesteps
        return int(self.min_step_percent * n), max(int(high * n), int(self.min_step_percent * n) + 1)

    def forward(
        self,
        images: torch.Tensor,
        condition: TeacherCondition,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
        view_guidance_scale: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """SDS loss of renders `images (B, 3, H, W)` in [0, 1]; differentiable w.r.t. the images.
        `view_guidance_scale` overrides the module's for this call (None: the module's).

        Returns:
            "loss" (scalar; its gradient w.r.t. the model-space x is w(t) (eps_hat - eps) per
            item), "grad_norm" (mean per-item norm of that gradient), "t" (B,).
        """
        x = self.teacher.encode_images(images)
        batch = x.shape[0]
        low, high = self.timestep_range(progress)
        t = torch.randint(low, high + 1, (batch,), generator=generator).to(x.device)
        noise = torch.randn(x.shape, generator=generator).to(x)
        view = self.view_guidance_scale if view_guidance_scale is None else view_guidance_scale
        if view != 0 and not self.teacher.camera_conditioned:
            raise ValueError("view_guidance_scale needs a camera-conditioned teacher (this one takes no cameras)")
        with torch.no_grad():
            eps_hat = self.teacher.predict_noise(self.teacher.add_noise(x.detach(), noise, t), t, condition, self.guidance_scale,
                                                 view)
        w = (1 - self.teacher.alphas_cumprod[t]).view(-1, 1, 1, 1).to(x)
        grad = torch.nan_to_num(w * (eps_hat - noise))
        target = (x - grad).detach()  # d(loss)/dx = grad
        loss = 0.5 * F.mse_loss(x, target, reduction="sum") / batch
        return {"loss": loss, "grad_norm": grad.flatten(1).norm(dim=1).mean(), "t": t}
