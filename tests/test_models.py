"""Tiny seeded checks of the text-to-triplane network, the mesh generator and the presets."""
import pytest
import torch

from atom.models import (
    PRESET_NAMES,
    TextToTriplane,
    TriplaneMeshGenerator,
    atom_model_config,
    axis_pooled_context,
)


@pytest.fixture
def tiny_kwargs():
    return atom_model_config("tiny")


@pytest.fixture
def text_to_triplane(tiny_kwargs):
    torch.manual_seed(0)
    return TextToTriplane(**tiny_kwargs[0])


@pytest.fixture
def generator(tiny_kwargs):
    torch.manual_seed(1)
    return TriplaneMeshGenerator(**tiny_kwargs[1])


@pytest.fixture
def text_inputs(tiny_kwargs):
    """Two prompts of 5 and 3 real tokens, padded to 6."""
    torch.manual_seed(2)
    embeds = torch.randn(2, 6, tiny_kwargs[0]["text_embed_dim"])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    return embeds, mask


def _scale_last_layer(mlp: torch.nn.Sequential, std: float) -> None:
    with torch.no_grad():
        mlp[-1].weight.normal_(std=std)


def test_triplane_shape_and_layout_contract(text_to_triplane, text_inputs):
    embeds, mask = text_inputs
    planes = text_to_triplane(embeds, mask)
    assert planes.shape == (2, 3, 8, 16, 16)
    assert text_to_triplane.triplane_resolution == 16
    assert torch.allclose(text_to_triplane(embeds, mask.long()), planes)
    assert text_to_triplane(embeds).shape == planes.shape


def test_attention_mask_ignores_padding_only(text_to_triplane, text_inputs):
    embeds, mask = text_inputs
    with torch.no_grad():
        reference = text_to_triplane(embeds, mask)
        padded_changed = embeds.clone()
        padded_changed[~mask] = 100 * torch.randn(int((~mask).sum()), embeds.shape[-1])
        assert torch.allclose(text_to_triplane(padded_changed, mask), reference, atol=1e-6)
        real_changed = embeds.clone()
        real_changed[1, 0] = torch.randn(embeds.shape[-1])
        changed = text_to_triplane(real_changed, mask)
    assert torch.allclose(changed[0], reference[0], atol=1e-6)  # the other prompt is untouched
    assert (changed[1] - reference[1]).abs().max() > 1e-4


def test_bad_triplane_inputs_raise(text_to_triplane, text_inputs, tiny_kwargs):
    embeds, mask = text_inputs
    with pytest.raises(ValueError, match="text_embeds"):
        text_to_triplane(embeds[..., :-1], mask)
    with pytest.raises(ValueError, match="attention_mask"):
        text_to_triplane(embeds, mask[:, :-1])
    with pytest.raises(ValueError, match="at least one real"):
        text_to_triplane(embeds, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="num_heads=3"):
        TextToTriplane(**{**tiny_kwargs[0], "num_heads": 3})


def test_axis_pooled_context_matches_3d_marginals():
    """Planes that are projections of a volume see the volume's 1D marginals along their own axes."""
    torch.manual_seed(0)
    c, r = 2, 5
    volume = torch.randn(c, r, r, r)  # indexed [x, y, z]
    # Plane layout: first named coordinate along the width (last axis), second along the height.
    xy = volume.mean(3).transpose(1, 2)  # (C, H=y, W=x)
    xz = volume.mean(2).transpose(1, 2)  # (C, H=z, W=x)
    yz = volume.mean(1).transpose(1, 2)  # (C, H=z, W=y)
    context = axis_pooled_context(torch.stack([xy, xz, yz])[None])[0]  # (3, 2C, R, R)
    marginal = {axis: volume.mean(tuple(a for a in (1, 2, 3) if a != axis + 1)) for axis in range(3)}  # (C, R)
    for plane, (width_axis, height_axis) in enumerate(((0, 1), (0, 2), (1, 2))):
        expected_width = marginal[width_axis][:, None, :].expand(c, r, r)
        expected_height = marginal[height_axis][:, :, None].expand(c, r, r)
        assert torch.allclose(context[plane, :c], expected_width, atol=1e-6)
        assert torch.allclose(context[plane, c:], expected_height, atol=1e-6)


@pytest.mark.parametrize("aware", [True, False])
def test_aware_conv_flag_decides_whether_planes_see_each_other(tiny_kwargs, tmp_path, aware):
    """3D-aware convolution: a change in one plane reaches the other two; without it, it cannot."""
    torch.manual_seed(0)
    model = TextToTriplane(**{**tiny_kwargs[0], "aware_conv": aware}).eval()
    c0, t = model.config.block_out_channels[0], model.config.token_resolution
    planes = torch.randn(1, 3, c0, t, t)
    changed = planes.clone()
    changed[:, 0] += torch.randn(c0, t, t)
    with torch.no_grad():
        before, after = model.stages(planes), model.stages(changed)
    assert (after[:, 0] - before[:, 0]).abs().max() > 1e-3
    others = (after[:, 1:] - before[:, 1:]).abs().max()
    assert others > 1e-3 if aware else others == 0
    model.save_pretrained(tmp_path)
    assert TextToTriplane.from_pretrained(tmp_path).config.aware_conv is aware


def test_sample_features_follow_the_plane_layout(tiny_kwargs):
    """Planes holding their own pixel-center coordinates return (x, y, x, z, y, z) at a point."""
    r = 8
    centers = -1 + (2 * torch.arange(r) + 1) / r
    plane = torch.stack([centers.expand(r, r), centers[:, None].expand(r, r)])  # (2, H, W): (width, height)
    triplanes = plane.expand(1, 3, 2, r, r)
    generator = TriplaneMeshGenerator(**{**tiny_kwargs[1], "triplane_channels": 2})
    points = torch.tensor([[[0.1, -0.4, 0.7], [-0.8, 0.3, 0.0]]])
    x, y, z = points.unbind(-1)
    expected = torch.stack([x, y, x, z, y, z], -1)
    assert torch.allclose(generator.sample_features(triplanes, points), expected, atol=1e-6)


def test_save_load_roundtrip_safetensors(tmp_path, text_to_triplane, generator, text_inputs):
    embeds, mask = text_inputs
    text_to_triplane.save_pretrained(tmp_path / "text_to_triplane")
    generator.save_pretrained(tmp_path / "generator")
    for folder in ("text_to_triplane", "generator"):
        assert (tmp_path / folder / "config.json").is_file()
        assert list((tmp_path / folder).glob("*.safetensors"))
        assert not list((tmp_path / folder).glob("*.bin"))
    loaded_t = TextToTriplane.from_pretrained(tmp_path / "text_to_triplane")
    loaded_g = TriplaneMeshGenerator.from_pretrained(tmp_path / "generator")
    assert loaded_t.config.block_out_channels == list(text_to_triplane.config.block_out_channels)
    assert loaded_g.config.tet_resolution == generator.config.tet_resolution
    with torch.no_grad():
        planes = text_to_triplane(embeds, mask)
        assert torch.equal(loaded_t(embeds, mask), planes)
        points = torch.rand(2, 50, 3) * 2 - 1
        assert torch.equal(loaded_g.sdf(planes, points), generator.sdf(planes, points))
        assert torch.equal(loaded_g.color(planes, points), generator.color(planes, points))
        assert torch.equal(loaded_g.deformation(planes, points, 0.1), generator.deformation(planes, points, 0.1))


def test_initial_surface_is_the_configured_sphere(text_to_triplane, generator, text_inputs):
    with torch.no_grad():
        meshes = generator.extract_mesh(text_to_triplane(*text_inputs))
    cell = 2.0 / generator.config.tet_resolution
    for mesh in meshes:
        assert not mesh.is_empty
        radius = mesh.verts.norm(dim=-1)
        assert (radius - generator.config.sdf_init_radius).abs().max() < cell
        assert mesh.faces.dtype == torch.int64 and mesh.colors.shape == mesh.verts.shape


def test_deformation_bounded_and_colors_in_unit_range(generator):
    _scale_last_layer(generator.deformation_net, 100.0)
    _scale_last_layer(generator.color_net, 100.0)
    torch.manual_seed(3)
    planes, points = torch.randn(2, 3, 8, 16, 16), torch.rand(2, 200, 3) * 2 - 1
    cell = 0.125
    with torch.no_grad():
        offsets = generator.deformation(planes, points, cell)
        colors = generator.color(planes, points)
        meshes = generator.extract_mesh(planes)
    bound = generator.config.deformation_scale * cell
    assert offsets.shape == (2, 200, 3)
    assert offsets.abs().max() <= bound and offsets.abs().max() > 0.9 * bound  # saturated, still bounded
    assert colors.shape == (2, 200, 3) and colors.min() >= 0 and colors.max() <= 1
    for mesh in meshes:
        assert mesh.colors.min() >= 0 and mesh.colors.max() <= 1
        assert mesh.verts.abs().max() <= 1


def test_gradients_reach_both_networks_through_the_mesh(text_to_triplane, generator, text_inputs):
    meshes = generator.extract_mesh(text_to_triplane(*text_inputs), resolution=8)
    loss = sum(mesh.verts.square().sum() + mesh.colors.mean() for mesh in meshes)
    loss.backward()
    for name, param in [
        ("query_tokens", text_to_triplane.query_tokens),
        ("cross-attention", text_to_triplane.blocks[0].to_kv_cross.weight),
        ("out_conv", text_to_triplane.out_conv.weight),
        ("sdf_net", generator.sdf_net[0].weight),
        ("deformation_net first", generator.deformation_net[0].weight),
        ("deformation_net last", generator.deformation_net[-1].weight),
        ("color_net", generator.color_net[0].weight),
    ]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("coarse_factor", "band"), [(2, 1.0), (4, 0.05)])  # narrow band: the sign-change pass
def test_coarse_to_fine_equals_dense(text_to_triplane, generator, text_inputs, monkeypatch, coarse_factor, band):
    _scale_last_layer(generator.sdf_net, 0.05)  # a smooth, visibly non-spherical surface
    _scale_last_layer(generator.deformation_net, 1.0)
    resolution = 24
    with torch.no_grad():
        planes = text_to_triplane(*text_inputs)
        dense = generator.extract_mesh(planes, resolution=resolution)
        evaluated = []
        sample_features = generator.sample_features
        monkeypatch.setattr(
            generator, "sample_features", lambda t, p: evaluated.append(p.shape[1]) or sample_features(t, p)
        )
        fast = generator.extract_mesh(
            planes, resolution=resolution, coarse_to_fine=True, coarse_factor=coarse_factor, band=band
        )
    for a, b in zip(dense, fast, strict=True):
        assert torch.equal(a.faces, b.faces)
        assert torch.allclose(a.verts, b.verts, atol=1e-5)
        assert torch.allclose(a.colors, b.colors, atol=1e-5)
    # Calls: the coarse pass, one fine pass per round, the colors.
    assert len(evaluated) > 3 if band < 0.1 else len(evaluated) == 3
    grid_points = 2 * (resolution + 1) ** 3  # what the dense pass evaluates for the batch
    colored = 2 * max(mesh.verts.shape[0] for mesh in fast)
    assert sum(evaluated) - colored < 0.6 * grid_points


def test_coarse_to_fine_needs_no_grad(generator):
    with pytest.raises(ValueError, match="no_grad"):
        generator.extract_mesh(torch.zeros(1, 3, 8, 16, 16), coarse_to_fine=True)


@pytest.mark.parametrize("coarse_to_fine", [False, True])
def test_no_surface_gives_empty_mesh_and_warning(generator, coarse_to_fine):
    with torch.no_grad():
        generator.sdf_net[-1].bias.fill_(2.0)  # positive everywhere in [-1, 1]^3
        with pytest.warns(UserWarning, match="no zero crossing"):
            meshes = generator.extract_mesh(torch.zeros(2, 3, 8, 16, 16), coarse_to_fine=coarse_to_fine)
    assert len(meshes) == 2 and all(mesh.is_empty for mesh in meshes)


def test_generator_rejects_bad_inputs(generator, tiny_kwargs):
    with pytest.raises(ValueError, match="triplanes"):
        generator.sdf(torch.zeros(1, 3, 4, 16, 16), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="points"):
        generator.sdf(torch.zeros(1, 3, 8, 16, 16), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="deformation_scale"):
        TriplaneMeshGenerator(**{**tiny_kwargs[1], "deformation_scale": 2.0})


def test_presets():
    assert set(PRESET_NAMES) == {"tiny", "shapes", "paper", "tiny-hyper", "shapes-hyper"}
    for name in ("tiny", "shapes", "paper"):  # the hyper presets: tests/test_hyper_field.py
        triplane_kwargs, generator_kwargs = atom_model_config(name)
        assert triplane_kwargs["triplane_channels"] == generator_kwargs["triplane_channels"]
    assert atom_model_config("paper")[0]["text_embed_dim"] == 4096
    assert atom_model_config("shapes", text_embed_dim=32)[0]["text_embed_dim"] == 32
    assert atom_model_config("shapes")[0]["text_embed_dim"] == 384  # overrides never leak
    with pytest.raises(ValueError, match="tiny, shapes, paper"):
        atom_model_config("huge")
