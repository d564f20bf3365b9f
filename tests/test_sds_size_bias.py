"""benchmarks/sds_size_bias.py's `round` deformation: b = 0 leaves a shape as it is, b = 1 turns
the pyramid into the cone (and the cube into the cylinder) of the same cross-section areas, on a
subdivided mesh of the same surface."""
import math
from pathlib import Path

import pytest
import torch
from train_scripts import load_benchmark

from atom.data.renders import mesh_for
from atom.geometry.mesh import surface_area

bias = load_benchmark("sds_size_bias")
SHIPPED = Path(__file__).resolve().parents[1] / "pretrained" / "atom-shapes64"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", ["pyramid", "cube"])
def test_round_blends_square_sections_into_circles_of_the_same_area(shape):
    mesh = mesh_for(shape, "red")
    fine = bias.subdivided(mesh, 3)
    assert len(fine.faces) == 64 * len(mesh.faces)
    assert surface_area(fine.verts, fine.faces).item() == pytest.approx(surface_area(mesh.verts, mesh.faces).item(), rel=1e-5)
    move = bias.DEFORMATIONS["round"].move
    torch.testing.assert_close(move(fine.verts, torch.tensor(0.0)), fine.verts)
    rounded = move(fine.verts, torch.tensor(1.0))
    bottom = fine.verts[:, 1] == fine.verts[:, 1].min()
    half_width = fine.verts[bottom, 0].abs().max()
    rim = torch.maximum(fine.verts[:, 0].abs(), fine.verts[:, 2].abs()) > half_width - 1e-6
    radius = torch.hypot(rounded[bottom & rim, 0], rounded[bottom & rim, 2])
    torch.testing.assert_close(radius, torch.full_like(radius, 2 * half_width.item() / math.sqrt(math.pi)))
    torch.testing.assert_close(rounded[:, 1], fine.verts[:, 1])  # heights kept
    # halfway, a corner has moved in and the middle of a side out
    half = move(torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), torch.tensor(0.5))
    assert torch.hypot(half[0, 0], half[0, 2]) < math.sqrt(2) and half[1, 0] > 1


def test_gradients_at_a_models_own_meshes(prior_teacher):
    """`--model X --renderer raster`: the gradient is taken at the meshes the pipeline marches for
    the shape (one per color), not at the true mesh, and is finite per draw."""
    from atom.guidance import DiffusionTeacher
    from atom.guidance.teacher_prompts import TeacherPrompts
    from atom.pipeline import AToMPipeline

    teacher = DiffusionTeacher.from_pretrained(prior_teacher)
    prompts = TeacherPrompts.for_teacher(str(prior_teacher))
    pipeline = AToMPipeline.from_pretrained(SHIPPED)
    common = dict(draws=3, resolution=16, batch=3, guidance_scale=7.5, max_step_percent=0.6, seed=0,
                  deformation="shift_y", elevation_range=(-30.0, 45.0))
    model = bias.deformation_gradients(teacher, prompts, "cone", 0.0, pipeline=pipeline, **common)
    truth = bias.deformation_gradients(teacher, prompts, "cone", 0.0, **common)
    assert model.shape == truth.shape == (3,) and torch.isfinite(model).all()
    assert not torch.allclose(model, truth)
