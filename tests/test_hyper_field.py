"""The ATT3D-style hypernetwork baseline (issue 22's "triplane vs hypernetwork" ablation):
same interface and heads as the triplane model, about the same size, trainable by the same
script."""
import json

import pytest
import torch

from atom import AToMPipeline
from atom.models import (
    HyperFieldMeshGenerator,
    TextToHyperNetwork,
    TextToTriplane,
    TriplaneMeshGenerator,
    atom_model_config,
    is_hyper_preset,
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(preset: str, seed: int = 0):
    hyper_kwargs, generator_kwargs = atom_model_config(preset)
    torch.manual_seed(seed)
    return TextToHyperNetwork(**hyper_kwargs), HyperFieldMeshGenerator(**generator_kwargs)


@pytest.fixture
def tiny_hyper():
    return _build("tiny-hyper")


@pytest.fixture
def text_inputs():
    """Two different prompts of 5 and 3 real tokens, padded to 6 (MiniLM width)."""
    torch.manual_seed(2)
    embeds = torch.randn(2, 6, atom_model_config("tiny-hyper")[0]["text_embed_dim"])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    return embeds, mask


@pytest.mark.parametrize("preset, triplane_preset", [("tiny-hyper", "tiny"), ("shapes-hyper", "shapes")])
def test_presets_pair_the_networks_at_about_the_triplane_size(preset, triplane_preset):
    assert is_hyper_preset(preset) and not is_hyper_preset(triplane_preset)
    hyper, generator = _build(preset)
    assert hyper.config.num_params == generator.num_field_params
    triplane_kwargs, generator_kwargs = atom_model_config(triplane_preset)
    reference = _count(TextToTriplane(**triplane_kwargs)) + _count(TriplaneMeshGenerator(**generator_kwargs))
    total = _count(hyper) + _count(generator)
    assert abs(total - reference) / reference < 0.10, (total, reference)
    # Same heads: only the source of the per-point features differs.
    for head in ("sdf_net", "deformation_net", "color_net"):
        ours = [p.shape for p in getattr(generator, head).parameters()]
        theirs = [p.shape for p in getattr(TriplaneMeshGenerator(**generator_kwargs), head).parameters()]
        assert ours == theirs


def test_modulation_and_features_shapes(tiny_hyper, text_inputs):
    hyper, generator = tiny_hyper
    embeds, mask = text_inputs
    latent = hyper(embeds, mask)
    assert latent.shape == (2, generator.num_field_params)
    points = torch.rand(2, 50, 3) * 2 - 1
    features = generator.sample_features(latent, points)
    assert features.shape == (2, 50, 3 * generator.config.triplane_channels) and features.dtype == torch.float32
    # padding is ignored, real tokens are not
    changed = embeds.clone()
    changed[~mask] = 100.0
    assert torch.allclose(hyper(changed, mask), latent, atol=1e-6)
    changed[0, 0] += torch.randn(embeds.shape[-1])  # (a constant shift would vanish in the LayerNorm)
    assert not torch.allclose(hyper(changed, mask)[0], latent[0])


def test_untrained_model_starts_every_prompt_at_the_sphere_then_learns_per_prompt(tiny_hyper, text_inputs):
    hyper, generator = tiny_hyper
    embeds, mask = text_inputs
    points = torch.rand(2, 200, 3) * 2 - 1
    sdf = generator.sdf(hyper(embeds, mask), points)
    sphere = points.norm(dim=-1) - generator.config.sdf_init_radius
    assert (sdf - sphere).abs().max() < 1e-3

    # Pull prompt 0's SDF up at these points and prompt 1's down: both the hypernetwork and the
    # shared base field get gradients, and the prompts' fields separate.
    optimizer = torch.optim.Adam(list(hyper.parameters()) + list(generator.parameters()), lr=1e-2)
    target = sphere + torch.tensor([[0.2], [-0.2]])
    for step in range(30):
        optimizer.zero_grad()
        loss = (generator.sdf(hyper(embeds, mask), points) - target).pow(2).mean()
        loss.backward()
        if step == 0:
            for name, param in [("hyper.to_params.weight", hyper.to_params.weight),
                                ("hyper.trunk.0.weight", hyper.trunk[0].weight), ("field_base", generator.field_base)]:
                assert param.grad is not None and param.grad.abs().sum() > 0, name
        optimizer.step()
    with torch.no_grad():
        offset = (generator.sdf(hyper(embeds, mask), points) - sphere).mean(dim=1)
    assert offset[0] > 0.1 and offset[1] < -0.1, offset


def test_mesh_from_a_modulation(tiny_hyper, text_inputs):
    hyper, generator = tiny_hyper
    with torch.no_grad():
        meshes = generator.extract_mesh(hyper(*text_inputs), resolution=16)
    assert len(meshes) == 2
    for mesh in meshes:
        radius = mesh.verts.norm(dim=-1)
        assert mesh.faces.shape[0] > 0 and (radius - 0.5).abs().max() < 0.1


def test_bad_inputs_raise(tiny_hyper, text_inputs):
    hyper, generator = tiny_hyper
    embeds, mask = text_inputs
    with pytest.raises(ValueError, match="text_embeds"):
        hyper(embeds[..., :10], mask)
    with pytest.raises(ValueError, match="attention_mask"):
        hyper(embeds, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="modulations"):
        generator.sample_features(torch.zeros(2, 3, 8, 16, 16), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="field_hidden_dim"):
        HyperFieldMeshGenerator(field_hidden_dim=0)
    with pytest.raises(ValueError, match="num_params"):
        TextToHyperNetwork(num_params=-1)


def test_pipeline_of_a_hyper_preset_saves_loads_and_generates(tmp_path):
    torch.manual_seed(0)
    pipe = AToMPipeline.from_components("tiny-hyper", field_hidden_dim=24)
    assert isinstance(pipe.text_to_triplane, TextToHyperNetwork)
    assert pipe.mesh_generator.config.field_hidden_dim == 24
    assert pipe.text_to_triplane.config.num_params == pipe.mesh_generator.num_field_params
    with torch.no_grad():
        pipe.text_to_triplane.to_params.weight.normal_(std=0.05)  # prompts now differ
    pipe.save_pretrained(tmp_path / "hyper")
    index = json.loads((tmp_path / "hyper" / "model_index.json").read_text())
    assert index["text_to_triplane"] == ["atom.models.hyper_field", "TextToHyperNetwork"]
    assert index["mesh_generator"] == ["atom.models.hyper_field", "HyperFieldMeshGenerator"]
    loaded = AToMPipeline.from_pretrained(tmp_path / "hyper")
    for saved, restored in [(pipe.mesh_generator, loaded.mesh_generator), (pipe.text_to_triplane, loaded.text_to_triplane)]:
        assert type(saved) is type(restored)
        assert {k: v for k, v in restored.config.items() if k != "_name_or_path"} == \
            {k: v for k, v in saved.config.items() if k != "_name_or_path"}
    prompts = ["a red cube", "a blue torus"]
    kwargs = dict(marching_resolution=16, output_type="mesh")
    first = pipe(prompts, **kwargs).meshes
    second = loaded(prompts, **kwargs).meshes
    for a, b in zip(first, second):
        assert torch.allclose(a.verts, b.verts) and torch.allclose(a.colors, b.colors)
    assert not torch.allclose(first[0].colors.mean(0), first[1].colors.mean(0))


def test_unknown_model_overrides_are_an_error():
    with pytest.raises(ValueError, match="aware_conv"):
        AToMPipeline.from_components("tiny-hyper", aware_conv=False)  # a triplane-only option
    with pytest.raises(ValueError, match="not arguments"):
        AToMPipeline.from_components("tiny", triplane_channel=4)
    assert AToMPipeline.from_components("tiny", aware_conv=False).text_to_triplane.config.aware_conv is False
