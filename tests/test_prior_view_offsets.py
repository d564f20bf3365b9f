"""benchmarks/prior_view_offsets.py: the signed offset it reads off an image is the turn of the
shape in that image, in the nearest-render judge's 5.625 deg steps, wrapped to [-45, 45)."""
import pytest
import torch
from train_scripts import load_benchmark, load_train_script

from atom.data import COLORS, SHAPES
from atom.render import sample_cameras

offsets = load_benchmark("prior_view_offsets")
render_gt = load_train_script("prior_judges").render_gt

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
