"""`python -m atom`, run in-process on a tiny random pipeline saved to a folder."""
import pytest
import trimesh

from atom.__main__ import MODEL_ENV, main, slugify
from atom.pipeline import AToMPipeline

RES = ["--resolution", "8"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_model")
    AToMPipeline.from_components("tiny").save_pretrained(folder, include_text_encoder=False)
    return folder


def _load(path):
    loaded = trimesh.load(path, process=False)
    return loaded if isinstance(loaded, trimesh.Trimesh) else trimesh.util.concatenate(list(loaded.geometry.values()))


def test_one_prompt_to_a_named_file(model_dir, tmp_path, capsys):
    target = tmp_path / "red_cube.glb"
    assert main(["a red cube", "-o", str(target), "--model", str(model_dir), *RES]) == 0
    mesh = _load(target)
    assert len(mesh.faces) > 0 and mesh.bounds.min() >= -1 and mesh.bounds.max() <= 1
    out = capsys.readouterr().out
    assert str(target) in out and "'a red cube'" in out and " s" in out


def test_two_prompts_to_a_folder_with_the_environment_model(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(MODEL_ENV, str(model_dir))
    out_dir = tmp_path / "out"
    assert main(["a red cube", "A red cube!", "-o", str(out_dir), "--format", "ply", *RES]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["a_red_cube.ply", "a_red_cube_2.ply"]
    for path in out_dir.iterdir():
        assert len(_load(path).faces) > 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_uv_texture_obj(model_dir, tmp_path):
    assert main(["a red cube", "-o", str(tmp_path / "cube.obj"), "--model", str(model_dir), "--uv-texture",
                 "--texture-size", "64", *RES]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"cube.obj", "cube.mtl", "cube.png"}
    assert _load(tmp_path / "cube.obj").visual.material.image.size == (64, 64)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["  ", "-o", "x.glb"], "prompt 1 of 1 is empty"),
        (["a red cube", "-o", "x.stl"], "unknown format '.stl'"),
        (["a red cube", "--format", "stl"], "invalid choice: 'stl'"),
        (["a red cube", "a blue torus", "-o", "x.glb"], "names one file but 2 prompts"),
        (["a red cube", "-o", "x.glb", "--format", "obj"], "contradicts"),
        (["a red cube", "-o", "x.ply", "--uv-texture"], "--uv-texture needs"),
        (["a red cube", "--resolution", "2"], "resolution must be an integer in [4, 512]"),
        (["a red cube", "--model", "{missing}"], "no model folder at"),
    ],
    ids=["empty-prompt", "unknown-suffix", "unknown-format", "file-for-two", "format-clash", "uv-ply", "resolution",
         "missing-model"],
)
def test_bad_input_exits_2_with_a_message(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [arg.replace("{missing}", str(tmp_path / "no_such_model")) for arg in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_default_model_says_how_to_choose_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "nowhere"))
    assert main(["a red cube", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no model folder at" in err and "--model" in err and MODEL_ENV in err


def test_slugs():
    assert slugify("  A red cube, please!  ") == "a_red_cube_please"
    assert slugify("¿?") == "mesh"
    assert len(slugify("word " * 100)) <= 64
