"""`AToMPipeline` end to end on tiny random components with the real MiniLM text encoder (offline).

The tiny preset starts every prompt near the same sphere; the fixture widens the SDF head's
last layer so that geometry depends on the prompt, which the equality tests need in order
to be able to fail.
"""
import pickle
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from atom.geometry import Mesh
from atom.pipeline import AToMPipeline
from atom.weights import WeightFileError

PROMPT_A = "a red cube"
PROMPT_B = "a large blue snowman on a hill"  # more tokens than PROMPT_A
PROMPT_C = "a green cone"


def tiny_pipeline(**overrides) -> AToMPipeline:
    torch.manual_seed(0)
    pipe = AToMPipeline.from_components("tiny", **overrides)
    torch.nn.init.normal_(pipe.mesh_generator.sdf_net[-1].weight, std=0.5)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def reference(pipe):
    """Meshes of PROMPT_A, PROMPT_B, PROMPT_C, one call each."""
    return {prompt: pipe(prompt).meshes[0] for prompt in (PROMPT_A, PROMPT_B, PROMPT_C)}


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    """The pipeline saved without its text encoder (small: only the two AToM components)."""
    folder = tmp_path_factory.mktemp("saved") / "atom-tiny"
    pipe.save_pretrained(folder, include_text_encoder=False)
    return folder


def same_mesh(a: trimesh.Trimesh, b: trimesh.Trimesh) -> bool:
    return (
        np.array_equal(a.vertices, b.vertices)
        and np.array_equal(a.faces, b.faces)
        and np.array_equal(a.visual.vertex_colors, b.visual.vertex_colors)
    )


def same_mesh_up_to_rounding(a: trimesh.Trimesh, b: trimesh.Trimesh) -> bool:
    """The same mesh computed in batches of other sizes: the same faces, vertices within float
    rounding and colors within one 8-bit step. Batched matmuls round differently with the batch's
    size on some CPUs: on an AVX-512 / AMX Xeon MiniLM's embeddings of a prompt alone and in a
    batch of two differ by 2e-6, the vertices by 1e-5 (3e-8 with one thread on other machines);
    the mesh generator's point batches are padded to the longest item too. Weights loaded from
    safetensors sit at other memory alignments than those they were saved from, and on some CPUs
    (an AMD EPYC here) the kernels then round differently: vertices 6e-8 apart, the same weights.
    A grid cell is 0.03-0.1."""
    return (
        np.array_equal(a.faces, b.faces)
        and np.allclose(a.vertices, b.vertices, rtol=0, atol=1e-4)
        and np.abs(a.visual.vertex_colors.astype(int) - b.visual.vertex_colors.astype(int)).max() <= 1
    )


def check_colored_mesh_in_box(mesh) -> None:
    assert isinstance(mesh, trimesh.Trimesh)
    assert len(mesh.faces) > 100 and len(mesh.vertices) > 50
    assert mesh.visual.kind == "vertex"
    colors = mesh.visual.vertex_colors
    assert colors.shape == (len(mesh.vertices), 4) and colors.dtype == np.uint8
    assert len(np.unique(colors[:, :3], axis=0)) > 1  # colored per vertex, not one flat default
    assert np.all(mesh.vertices >= -1) and np.all(mesh.vertices <= 1)


def test_prompts_give_different_meshes(reference):
    """The precondition of the equality tests below: they would notice a swapped prompt."""
    a, b, c = reference.values()
    assert not same_mesh(a, b) and not same_mesh(a, c) and not same_mesh(b, c)


@pytest.mark.parametrize("include_text_encoder", [False, True])
def test_design_three_lines_from_saved_folder(pipe, reference, tmp_path, include_text_encoder):
    folder = tmp_path / "atom-tiny"
    pipe.save_pretrained(folder, include_text_encoder=include_text_encoder)
    assert (folder / "text_encoder" / "model.safetensors").is_file() == include_text_encoder

    loaded = AToMPipeline.from_pretrained(folder)
    mesh = loaded(PROMPT_A).meshes[0]
    mesh.export(tmp_path / "red_cube.glb")

    assert same_mesh_up_to_rounding(mesh, reference[PROMPT_A])  # save/load round trip
    check_colored_mesh_in_box(mesh)
    glb = trimesh.load(tmp_path / "red_cube.glb", force="mesh")
    assert len(glb.faces) == len(mesh.faces)


def test_meshes_one_colored_trimesh_per_prompt(pipe, reference):
    out = pipe([PROMPT_C, PROMPT_A])
    assert len(out.meshes) == 2 and out.triplanes is None
    for mesh in out.meshes:
        check_colored_mesh_in_box(mesh)
    assert same_mesh_up_to_rounding(out.meshes[0], reference[PROMPT_C])
    assert same_mesh_up_to_rounding(out.meshes[1], reference[PROMPT_A])


def test_deterministic(pipe, reference):
    first, second = pipe([PROMPT_B, PROMPT_B]).meshes
    assert same_mesh(first, second)
    assert same_mesh_up_to_rounding(first, reference[PROMPT_B])  # alone vs in a batch of two
    assert same_mesh(pipe(PROMPT_B).meshes[0], reference[PROMPT_B])
    assert same_mesh(tiny_pipeline()(PROMPT_B).meshes[0], reference[PROMPT_B])  # rebuilt from the seed


def test_output_type_latent(pipe):
    out = pipe([PROMPT_A, PROMPT_B, PROMPT_C], output_type="latent", batch_size=2)
    channels = pipe.text_to_triplane.config.triplane_channels
    assert out.meshes is None
    assert out.triplanes.ndim == 5 and out.triplanes.shape[:3] == (3, 3, channels)
    assert out.triplanes.shape[3] == out.triplanes.shape[4] > 1
    single = pipe(PROMPT_B, output_type="latent").triplanes
    # Alone vs in a batch of two: equal up to the embeddings' rounding (see same_mesh_up_to_rounding).
    torch.testing.assert_close(out.triplanes[1:2], single, rtol=0, atol=1e-5)
    assert not torch.allclose(out.triplanes[0], out.triplanes[1], atol=1e-3)


def test_output_type_mesh(pipe, reference):
    mesh = pipe(PROMPT_A, output_type="mesh").meshes[0]
    assert isinstance(mesh, Mesh)
    assert mesh.verts.ndim == 2 and mesh.verts.shape[1] == 3 and mesh.verts.dtype == torch.float32
    assert mesh.faces.dtype == torch.int64 and mesh.colors.shape == mesh.verts.shape
    assert 0 <= mesh.colors.min() and mesh.colors.max() <= 1
    assert same_mesh(mesh.to_trimesh(), reference[PROMPT_A])


def test_return_dict_false_gives_a_tuple(pipe, reference):
    """diffusers' convention: `return_dict=False` returns the output's fields as a tuple."""
    (meshes,) = pipe(PROMPT_A, return_dict=False)
    assert same_mesh(meshes[0], reference[PROMPT_A])
    (triplanes,) = pipe(PROMPT_A, output_type="latent", return_dict=False)
    assert torch.equal(triplanes, pipe(PROMPT_A, output_type="latent").triplanes)


def test_diffusers_loads_a_saved_folder_once_atom_is_imported(saved, reference):
    from diffusers import DiffusionPipeline

    loaded = DiffusionPipeline.from_pretrained(saved)
    assert type(loaded) is AToMPipeline
    assert same_mesh_up_to_rounding(loaded(PROMPT_A).meshes[0], reference[PROMPT_A])


def mean_distance(a: Mesh, b: Mesh) -> float:
    """Mean distance (world units) from a's vertices to b's nearest vertex."""
    return torch.cdist(a.verts, b.verts).min(1).values.mean().item()


@pytest.mark.parametrize("how", ["autocast", "bf16 weights"])
def test_bf16_inference_keeps_geometry_in_float32(reference, how):
    """Under `torch.autocast(bfloat16)` (it failed with a dtype mismatch in coarse-to-fine
    extraction) and with bf16 weights, the MLPs run in bf16 but triplane sampling, SDF,
    vertex positions and colors stay float32: the surface is the fp32 one up to bf16 noise."""
    pipe = tiny_pipeline()
    ref = pipe([PROMPT_A, PROMPT_C], output_type="mesh").meshes
    if how == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = pipe([PROMPT_A, PROMPT_C], output_type="mesh").meshes
    else:
        pipe.to(torch.bfloat16)
        assert pipe.mesh_generator.dtype == pipe.text_to_triplane.dtype == torch.bfloat16
        low = pipe([PROMPT_A, PROMPT_C], output_type="mesh").meshes
    cell = 2 / pipe.mesh_generator.config.tet_resolution
    for a, b in zip(ref, low):
        assert b.verts.dtype == b.colors.dtype == torch.float32
        assert abs(len(b.faces) - len(a.faces)) <= 0.02 * len(a.faces)
        assert max(mean_distance(a, b), mean_distance(b, a)) < 0.1 * cell
        assert (a.colors.mean(0) - b.colors.mean(0)).abs().max() < 0.02
    # The bf16 run is not the fp32 run: the comparison above could fail.
    assert not all(torch.equal(a.verts, b.verts) for a, b in zip(ref, low))


def test_output_type_validated(pipe):
    with pytest.raises(ValueError, match="'glb'"):
        pipe(PROMPT_A, output_type="glb")


def test_prompt_embeds_equal_prompts(pipe, reference):
    embeds, mask = pipe.encode_prompt([PROMPT_A, PROMPT_B])
    meshes = pipe(prompt_embeds=embeds, prompt_attention_mask=mask).meshes
    assert same_mesh_up_to_rounding(meshes[0], reference[PROMPT_A])
    assert same_mesh_up_to_rounding(meshes[1], reference[PROMPT_B])
    with pytest.raises(ValueError, match="exactly one"):
        pipe(PROMPT_A, prompt_embeds=embeds)
    with pytest.raises(ValueError, match=r"\(B, L, 384\)"):
        pipe(prompt_embeds=embeds[..., :10])


def test_interpolate_end_points_are_the_prompts(pipe, reference):
    """PROMPT_B has more tokens than PROMPT_A: the end points must still attend to their own tokens only."""
    out = pipe.interpolate(PROMPT_A, PROMPT_B, num=4)
    assert len(out.meshes) == 4
    assert same_mesh_up_to_rounding(out.meshes[0], reference[PROMPT_A])
    assert same_mesh_up_to_rounding(out.meshes[-1], reference[PROMPT_B])
    middle = out.meshes[1]
    assert not same_mesh_up_to_rounding(middle, reference[PROMPT_A]) and not same_mesh_up_to_rounding(middle, reference[PROMPT_B])
    assert len(pipe.interpolate(PROMPT_A, PROMPT_B, weights=[0.0, 0.3], output_type="latent").triplanes) == 2
    with pytest.raises(ValueError, match="num must be an int >= 2, got 1"):
        pipe.interpolate(PROMPT_A, PROMPT_B, num=1)


def test_batches_larger_than_batch_size(pipe):
    prompts = [PROMPT_A, PROMPT_B, PROMPT_C, "a pink torus", "an orange capsule"]
    chunked = pipe(prompts, batch_size=2, progress=False).meshes
    whole = pipe(prompts, batch_size=8).meshes
    assert len(chunked) == len(whole) == 5
    assert all(same_mesh_up_to_rounding(a, b) for a, b in zip(chunked, whole))


def test_marching_resolution(pipe):
    coarse = pipe(PROMPT_A, marching_resolution=8).meshes[0]
    fine = pipe(PROMPT_A, marching_resolution=24).meshes[0]
    assert 0 < len(coarse.faces) < len(fine.faces)


@pytest.mark.parametrize("resolution", [3, 0, -8, 513, 8.0, True, "16"])
def test_marching_resolution_validated(pipe, resolution):
    with pytest.raises(ValueError, match=f"marching_resolution.*{re.escape(repr(resolution))}"):
        pipe(PROMPT_A, marching_resolution=resolution)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, None])
def test_batch_size_validated(pipe, batch_size):
    with pytest.raises(ValueError, match=f"batch_size.*{re.escape(repr(batch_size))}"):
        pipe(PROMPT_A, batch_size=batch_size)


@pytest.mark.parametrize(
    ("prompt", "error", "match"),
    [
        ("", ValueError, r"empty or only whitespace: ''"),
        ("  \n\t", ValueError, r"empty or only whitespace: '  \\n\\t'"),
        (123, TypeError, "got int: 123"),
        (None, ValueError, "exactly one of `prompt` and `prompt_embeds`"),
        (["a red cube", 7], TypeError, r"prompts\[1\] must be a str, got int: 7"),
        (["a red cube", ""], ValueError, r"prompts\[1\] is empty"),
        ([], ValueError, "empty list"),
        (("a red cube",), None, None),  # a tuple of strings is fine
    ],
)
def test_bad_prompts(pipe, prompt, error, match):
    if error is None:
        assert len(pipe(prompt, output_type="latent").triplanes) == 1
        return
    with pytest.raises(error, match=match):
        pipe(prompt)


def test_long_prompt_truncated_with_warning(pipe):
    prompt = " ".join(["a very large purple snowman wearing a tiny orange hat"] * 4)
    assert len(pipe.tokenizer(prompt)["input_ids"]) > pipe.config.text_max_length
    with pytest.warns(UserWarning, match="truncated") as record:
        mesh = pipe(prompt).meshes[0]
    assert any(prompt in str(w.message) for w in record)
    assert len(mesh.faces) > 0


def test_no_surface_gives_empty_mesh_and_names_the_prompt():
    pipe = tiny_pipeline()
    head = pipe.mesh_generator.sdf_net[-1]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, 1.0)  # SDF = 1 + |x| - 0.5 > 0 everywhere
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        meshes = pipe([PROMPT_A, PROMPT_C]).meshes
    assert all(isinstance(m, trimesh.Trimesh) and len(m.vertices) == 0 and len(m.faces) == 0 for m in meshes)
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 2 and PROMPT_A in messages[0] and PROMPT_C in messages[1]
    assert all("no surface" in m for m in messages)


# ---- broken folders: each error names the file ------------------------------------------


def copy_folder(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


def test_missing_weight_file(saved, tmp_path):
    folder = copy_folder(saved, tmp_path)
    (folder / "mesh_generator" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightFileError, match="missing") as info:
        AToMPipeline.from_pretrained(folder)
    assert str(folder / "mesh_generator") in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_weight_file(saved, tmp_path, damage):
    folder = copy_folder(saved, tmp_path)
    path = folder / "text_to_triplane" / "diffusion_pytorch_model.safetensors"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    with pytest.raises(WeightFileError, match="truncated or corrupt") as info:
        AToMPipeline.from_pretrained(folder)
    assert str(path) in str(info.value)


class _Trap:
    """Unpickling this creates a file: the test checks that loading never unpickles."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return Path.touch, (self.sentinel,)


def test_pickle_only_weights_refused_without_unpickling(saved, tmp_path):
    folder = copy_folder(saved, tmp_path)
    (folder / "mesh_generator" / "diffusion_pytorch_model.safetensors").unlink()
    sentinel = tmp_path / "unpickled"
    (folder / "mesh_generator" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Trap(sentinel)))
    with pytest.raises(WeightFileError, match=r"diffusion_pytorch_model\.bin") as info:
        AToMPipeline.from_pretrained(folder)
    assert "pickle" in str(info.value) and str(folder / "mesh_generator") in str(info.value)
    assert not sentinel.exists()
