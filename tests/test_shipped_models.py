"""The models shipped in pretrained/: the README's three lines run as written with the default
AToM model, the folders load offline, and the AToM model still does what its card reports."""
import json
import re
from pathlib import Path

import pytest
import torch
import trimesh

from atom.data import HELD_OUT
from atom.guidance.shapes_prior import ShapesPriorPipeline
from atom.pipeline import AToMPipeline
from train_scripts import load_train_script

ROOT = Path(__file__).resolve().parents[1]
ATOM = ROOT / "pretrained" / "atom-shapes64"
PRIOR = ROOT / "pretrained" / "shapes-prior"
PRIOR_64 = ROOT / "pretrained" / "shapes-prior-64px"  # the teacher of the shipped AToM model


def readme_three_lines() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Three lines of Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_three_lines_run_as_written(tmp_path, monkeypatch):
    code = readme_three_lines()
    assert code.count("\n") == 3 and '"pretrained/atom-shapes64"' in code
    (tmp_path / "pretrained").symlink_to(ROOT / "pretrained")  # the README's path is relative to the checkout
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    mesh = trimesh.load(tmp_path / "red_cube.glb", force="mesh")
    assert len(mesh.faces) > 500 and abs(mesh.vertices).max() <= 1.0 + 1e-6


def test_atom_folder_is_complete_and_small():
    index = json.loads((ATOM / "model_index.json").read_text())
    assert index["_class_name"] == "AToMPipeline"
    assert not (ATOM / "text_encoder").exists()  # MiniLM comes from its PyPI package, not a second copy
    size = sum(f.stat().st_size for f in ATOM.rglob("*") if f.is_file())
    assert size < 20 * 2**20
    card = (ATOM / "README.md").read_text()
    assert "library_name: diffusers" in card and "pipeline_tag: text-to-3d" in card and "## Evaluation" in card
    summary = json.loads((ATOM / "training_summary.json").read_text())
    assert summary["teacher"] == "pretrained/shapes-prior-64px" and len(summary["train_prompts"]) == 56
    assert (ROOT / summary["teacher"]).is_dir()  # the teacher it names ships beside it
    assert not set(summary["train_prompts"]) & {r.prompt for r in HELD_OUT}


def test_atom_model_names_held_out_colors():
    """The 8 prompts AToM never saw: every mesh's nearest color is the prompt's and at least half
    the shapes are right (the card reports 100 % and 87.5 %). Fails if the weights or the
    pipeline's use of them break."""
    evaluate = load_train_script("evaluate")
    pipe = AToMPipeline.from_pretrained(ATOM)
    result = evaluate.evaluate(pipe, [r.prompt for r in HELD_OUT], num_samples=2000, progress=False)
    assert result["summary"]["color_accuracy"] == 1.0
    assert result["summary"]["shape_accuracy"] >= 0.5


def test_prior_folder_loads_and_samples_from_its_data_mean():
    pipe = ShapesPriorPipeline.from_pretrained(PRIOR)
    assert 0.5 < pipe.config.data_mean < 1.0
    images = pipe(["a red cube"], num_inference_steps=2, progress=False).images
    assert images.shape == (1, 3, 32, 32)


def test_prior_64px_folder_loads_in_float32_and_samples_at_64px():
    """Stored in float16 to stay small; it must load as float32 and sample 64x64 images."""
    pipe = ShapesPriorPipeline.from_pretrained(PRIOR_64)
    assert next(pipe.unet.parameters()).dtype == torch.float32
    images = pipe(["a red cube"], num_inference_steps=2, progress=False).images
    assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the network
