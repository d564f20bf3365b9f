"""Guidance: the frozen 2D diffusion teacher interface and the shipped shapes-prior."""
from .shapes_prior import PRIOR_PRESETS, ShapesPriorPipeline, build_prior_scheduler, build_prior_unet
from .teacher import DiffusionTeacher, TeacherCondition

__all__ = [
    "PRIOR_PRESETS",
    "DiffusionTeacher",
    "ShapesPriorPipeline",
    "TeacherCondition",
    "build_prior_scheduler",
    "build_prior_unet",
]
