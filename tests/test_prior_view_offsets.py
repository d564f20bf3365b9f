"""benchmarks/prior_view_offsets.py: the signed offset it reads off an image is the turn of the
shape in that image, in the nearest-render judge's 5.625 deg steps, wrapped to [-45, 45)."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from atom.data import COLORS, SHAPES
from atom.render import sample_cameras

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("_atom_prior_view_offsets", ROOT / "benchmarks" / "prior_view_offsets.py")
offsets = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = offsets
spec.loader.exec_module(offsets)
from prior_judges import render_gt  # noqa: E402  (benchmarks/prior_view_offsets.py put train/ on the path)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_offsets_are_the_turn_of_the_rendered_shape():
    steps = torch.tensor([0, 1, -2, 3, 7, -8])  # in 5.625 deg; 7 and -8 are 39.4 and -45 deg, mod 90
    n = len(steps)
    cameras = sample_cameras(n, generator=torch.Generator().manual_seed(3))
    shape_index = torch.tensor([SHAPES.index(s) for s in ("cube", "pyramid") * (n // 2)])
    color_index = torch.tensor([list(COLORS).index(c) for c in ("red", "blue", "green") * (n // 3)])
    # The image shows the pair from the camera turned by k steps, as if the prior drew it turned,
    # lit from the camera as the judge's renders are.
    images = render_gt(shape_index, color_index, cameras.turned(steps.float() * 5.625), 32,
                       light_jitter_deg=0.0).float() / 255
    signed, k = offsets.view_offsets(images, cameras, shape_index, color_index, 32)
    assert k.tolist() == steps.tolist()
    torch.testing.assert_close(signed, steps.float() * 5.625, atol=1e-3, rtol=0)
