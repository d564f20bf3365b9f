"""Model card rendering and Hub uploads, up to the network boundary.

The upload itself is not exercised: there is no network here. `HfApi.create_repo` and
`HfApi.upload_folder` are replaced by recorders that capture what would be sent (the repo id
and a listing of the folder, read while it still exists).
"""
import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl

from atom.hub import DEFAULT_TAGS, prepare_hub_folder, render_model_card
from atom.pipeline import AToMPipeline

PROMPTS = ["a red cube", "a large blue snowman on a hill"]
CARD_DATA = {
    "base_model": "atom-project/shapes-prior",
    "prompt_set": "Shapes64",
    "train_prompts": ["an orange sphere", "a green cube", "a pink torus"],
    "heldout_prompts": ["a red sphere", "an orange cube"],
    "metrics": {"seen": {"accuracy": 0.875, "chamfer_distance": 0.012345}, "unseen": {"accuracy": 0.5}},
    "training_time": {"stage 1 (NeuS)": 5400, "stage 2 (mesh)": 1800.0},
    "hardware": "2 CPU cores",
    "training_command": "accelerate launch train/train_atom.py --config train/configs/atom_shapes.yaml",
}
PICKLE_SUFFIXES = {".bin", ".pkl", ".pt", ".pth", ".ckpt", ".pickle"}


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    pipe = AToMPipeline.from_components("tiny")
    torch.nn.init.normal_(pipe.mesh_generator.sdf_net[-1].weight, std=0.5)  # geometry that depends on the prompt
    return pipe


def card_sections(text: str) -> list[str]:
    return [line[3:] for line in text.splitlines() if line.startswith("## ")]


# ---- the card -----------------------------------------------------------------------------


def test_card_front_matter_and_body():
    text = render_model_card({**CARD_DATA, "repo_id": "someone/atom-shapes64", "tags": ["shapes", "atom"]})
    card = ModelCard(text)
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "text-to-3d"
    assert card.data.license == "apache-2.0"
    assert card.data.base_model == "atom-project/shapes-prior"
    assert card.data.tags[: len(DEFAULT_TAGS)] == list(DEFAULT_TAGS) and card.data.tags[-1] == "shapes"
    assert len(card.data.tags) == len(set(card.data.tags))

    body = card.text
    assert "arxiv.org/abs/2402.00867" in body and "unofficial reimplementation" in body
    assert card_sections(text) == ["Usage", "Training prompts", "Evaluation", "Training", "Limitations", "Citation"]
    assert 'AToMPipeline.from_pretrained("someone/atom-shapes64")' in body
    assert 'pipe("an orange sphere").meshes[0].export("an_orange_sphere.glb")' in body
    for prompt in CARD_DATA["train_prompts"] + CARD_DATA["heldout_prompts"]:
        assert f"\n- {prompt}\n" in body
    assert "**Seen in training** (3 prompts)" in body and "**Held out, never seen in training** (2 prompts)" in body
    assert "| metric | seen | unseen |" in body
    assert "| accuracy | 0.875 | 0.5 |" in body and "| chamfer_distance | 0.01235 | – |" in body
    assert "| stage 1 (NeuS) | 1.5 h |" in body and "| stage 2 (mesh) | 30 min |" in body
    assert "| **total** | **2.0 h** |" in body
    assert f"```bash\n{CARD_DATA['training_command']}\n```" in body
    assert "Hardware: 2 CPU cores." in body
    assert "None" not in text


def test_card_with_nothing_given_leaves_sections_out():
    text = render_model_card({"metrics": None, "hardware": None})  # None counts as missing
    card = ModelCard(text)
    assert card.data.license == "apache-2.0" and card.data.library_name == "diffusers"
    assert "base_model" not in card.data.to_dict()
    assert card_sections(text) == ["Usage", "Limitations", "Citation"]
    assert "None" not in text and "{{" not in text and "{%" not in text


def test_card_flat_metrics_license_and_limitations():
    text = render_model_card(
        {"metrics": {"accuracy": 1, "iou": 0.912345, "note": "a|b"}, "license": "mit", "limitations": ["Only shapes."]}
    )
    assert ModelCard(text).data.license == "mit"
    assert "| metric | value |" in text and "| accuracy | 1 |" in text and "| iou | 0.9123 |" in text
    assert "| note | a\\|b |" in text  # a pipe inside a cell is escaped
    assert "\n- Only shapes.\n" in text


def test_card_shows_a_samples_image_only_when_given():
    text = render_model_card({"samples_image": "samples.png", "samples_caption": "One view per prompt"})
    assert "\n![One view per prompt](samples.png)\n" in text
    assert "](samples.png)" not in render_model_card({"metrics": {"accuracy": 1}})
    with pytest.raises(TypeError, match="samples_image"):
        render_model_card({"samples_image": 3})


def test_card_results_follow_the_metrics_table():
    results = "| run | Chamfer |\n| --- | --- |\n| stage 1 alone | 0.02 |"
    text = render_model_card({"metrics": {"accuracy": 1}, "results": results})
    assert text.index("| accuracy | 1 |") < text.index(results)
    assert "stage 1 alone" not in render_model_card({"metrics": {"accuracy": 1}})


def test_card_base_model_that_is_no_repo_id_stays_in_the_text(caplog):
    with caplog.at_level(logging.WARNING, logger="atom.hub"):
        text = render_model_card({"base_model": "/abs/path/to/shapes-prior"})
    assert "base_model" not in ModelCard(text).data.to_dict()
    assert "`/abs/path/to/shapes-prior`" in text
    assert "/abs/path/to/shapes-prior" in caplog.text


def test_card_example_prompt_is_a_valid_python_literal():
    text = render_model_card({"example_prompt": 'a "quoted" cube'})
    assert 'pipe("a \\"quoted\\" cube")' in text


@pytest.mark.parametrize(
    ("card_data", "error", "match"),
    [
        ({"metric": {"accuracy": 1.0}}, ValueError, r"unknown card_data keys \['metric'\]"),
        ({"train_prompts": "a red cube"}, TypeError, r"card_data\['train_prompts'\].*'a red cube'"),
        ({"train_prompts": ["a red cube", 3]}, TypeError, r"strings only, got \[3\]"),
        ({"base_model": ""}, TypeError, r"card_data\['base_model'\].*''"),
        ({"metrics": [0.5]}, TypeError, r"card_data\['metrics'\] must be a dict"),
        ({"metrics": {"seen": {"accuracy": 1}, "accuracy": 1}}, TypeError, r"\['accuracy'\] are not dicts"),
        ({"training_time": {"stage 1": -5}}, ValueError, r"'stage 1'.*-5"),
        ({"training_time": {"stage 1": [1]}}, TypeError, r"'stage 1'.*\[1\]"),
        (["not", "a", "dict"], TypeError, "card_data must be a dict"),
    ],
)
def test_card_data_validated(card_data, error, match):
    with pytest.raises(error, match=match):
        render_model_card(card_data)


def test_packaged_template_is_preferred(tmp_path, monkeypatch):
    """An installed wheel carries the template as `atom.model_card`; the lookup reads it there first."""
    import atom

    checkout = Path(atom.__file__).resolve().parent.parent / "model_card" / "atom_model_card.md"
    package = tmp_path / "model_card"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "atom_model_card.md").write_text(checkout.read_text().replace("## Usage", "## Usage (packaged)"))
    spec = importlib.util.spec_from_file_location("atom.model_card", package / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "atom.model_card", module)
    assert "## Usage (packaged)" in render_model_card({})
    monkeypatch.delitem(sys.modules, "atom.model_card")
    assert "## Usage (packaged)" not in render_model_card({})  # the checkout's folder


# ---- the folder ---------------------------------------------------------------------------


def relative_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_prepared_folder_loads_back_with_identical_meshes(pipe, tmp_path):
    folder = prepare_hub_folder(pipe, tmp_path / "hub", CARD_DATA)
    assert folder == tmp_path / "hub"
    files = relative_files(folder)
    assert {"README.md", "model_index.json", "text_encoder/model.safetensors", "text_encoder/config.json"} <= files
    assert not {f for f in files if Path(f).suffix in PICKLE_SUFFIXES}
    index = json.loads((folder / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", type(pipe.text_encoder).__name__]

    loaded = AToMPipeline.from_pretrained(folder)
    for before, after in zip(pipe(PROMPTS).meshes, loaded(PROMPTS).meshes):
        assert len(before.faces) > 0
        assert np.array_equal(before.vertices, after.vertices) and np.array_equal(before.faces, after.faces)
        assert np.array_equal(before.visual.vertex_colors, after.visual.vertex_colors)

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "text-to-3d"
    assert card.data.base_model == CARD_DATA["base_model"] and "text-to-mesh" in card.data.tags
    for prompt in CARD_DATA["train_prompts"] + CARD_DATA["heldout_prompts"]:
        assert f"- {prompt}\n" in card.text
    assert "| chamfer_distance | 0.01235 | – |" in card.text
    assert "| text encoder (frozen) | all-MiniLM-L6-v2 (BertModel, 22.7 M parameters" in card.text


def test_prepare_hub_folder_refuses_a_used_folder(pipe, tmp_path):
    (tmp_path / "stale.bin").write_bytes(b"old")
    with pytest.raises(ValueError, match=repr(str(tmp_path))):
        prepare_hub_folder(pipe, tmp_path, {})


def test_prepare_hub_folder_checks_card_data_before_saving(pipe, tmp_path):
    with pytest.raises(ValueError, match="unknown card_data keys"):
        prepare_hub_folder(pipe, tmp_path / "hub", {"metric": 1})
    assert not (tmp_path / "hub").exists()


# ---- push_to_hub, with the network calls recorded -----------------------------------------


@pytest.fixture
def hub_calls(monkeypatch):
    """Replaces HfApi.create_repo / upload_folder with recorders; returns the list of calls."""
    calls = []

    def create_repo(self, repo_id, *, exist_ok=False, private=None, **kwargs):
        record = {"repo_id": repo_id, "exist_ok": exist_ok, "private": private, "token": self.token}
        calls.append(("create_repo", record))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        folder = Path(folder_path)
        calls.append(
            (
                "upload_folder",
                {
                    "repo_id": repo_id,
                    "folder": folder,
                    "files": relative_files(folder),
                    "readme": (folder / "README.md").read_text(),
                    "commit_message": commit_message,
                },
            )
        )
        if repo_id.endswith("-fails"):
            raise ConnectionError("upload interrupted")
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}",
            commit_message=commit_message,
            commit_description="",
            oid="0" * 40,
        )

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_uploads_a_safetensors_folder_and_cleans_up(pipe, hub_calls):
    url = pipe.push_to_hub("someone/atom-tiny", card_data=CARD_DATA, private=True, token="hf_test", commit_message="v1")

    assert [name for name, _ in hub_calls] == ["create_repo", "upload_folder"]
    create, upload = hub_calls[0][1], hub_calls[1][1]
    assert create == {"repo_id": "someone/atom-tiny", "exist_ok": True, "private": True, "token": "hf_test"}
    assert upload["repo_id"] == "someone/atom-tiny" and upload["commit_message"] == "v1"
    files = upload["files"]
    assert {"model_index.json", "README.md", "text_encoder/model.safetensors", "text_encoder/config.json"} <= files
    assert any(f.startswith("tokenizer/") for f in files)
    weights = {f for f in files if f.endswith(".safetensors")}
    assert {Path(f).parent.as_posix() for f in weights} == {"text_encoder", "text_to_triplane", "mesh_generator"}
    assert not {f for f in files if Path(f).suffix in PICKLE_SUFFIXES}
    assert 'AToMPipeline.from_pretrained("someone/atom-tiny")' in upload["readme"]
    assert ModelCard(upload["readme"]).data.base_model == CARD_DATA["base_model"]

    assert url == f"https://huggingface.co/someone/atom-tiny/commit/{'0' * 40}"
    assert not upload["folder"].exists() and not upload["folder"].parent.exists()  # the temp folder is gone


def test_push_to_hub_cleans_up_when_the_upload_fails(pipe, hub_calls):
    with pytest.raises(ConnectionError):
        pipe.push_to_hub("someone/atom-fails")
    assert not hub_calls[-1][1]["folder"].parent.exists()


@pytest.mark.parametrize("repo_id", ["atom-tiny", "a/b/c", "", "someone/bad name", None])
def test_push_to_hub_bad_repo_id_contacts_nothing(pipe, hub_calls, repo_id):
    with pytest.raises(ValueError, match="namespace/name"):
        pipe.push_to_hub(repo_id)
    assert hub_calls == []


def test_push_to_hub_bad_card_data_contacts_nothing(pipe, hub_calls):
    with pytest.raises(ValueError, match="metric"):
        pipe.push_to_hub("someone/atom-tiny", card_data={"metric": 1})
    assert hub_calls == []
