"""train/evaluate.py (ground-truth metrics of AToM pipelines) and train/evaluate_prior.py (the
shapes-prior acceptance check: its judges in train/prior_judges.py, the render classifier and view
matching under symmetry, and the CLI)."""
import json
import math
from pathlib import Path

import pytest
import torch
import trimesh

from atom.data import HELD_OUT, SHAPES, SHAPES64, parse_prompt, shape_mesh
from atom.data.renders import ShapeRenders
from atom.pipeline import AToMPipeline
from atom.render import Cameras, sample_cameras
from train_scripts import load_train_script

ROOT = Path(__file__).resolve().parents[1]


ev = load_train_script("evaluate")
ep = load_train_script("evaluate_prior")
pj = load_train_script("prior_judges")

RECORD_KEYS = {"prompt", "split", "pair_split", "parsed", "num_vertices", "num_faces", "empty", "genus", "generate_seconds",
               "shape", "color", "chamfer", "volume_iou", "nearest_shape", "mean_albedo", "nearest_color",
               "shape_correct", "color_correct", "correct"}


def _strict_json(path: Path):
    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


pytestmark = pytest.mark.usefixtures("one_thread")  # rendering runs ~10x slower with 2 threads here


@pytest.fixture(scope="module")
def tiny_pipe():
    torch.manual_seed(0)
    pipe = AToMPipeline.from_components("tiny")
    torch.nn.init.normal_(pipe.mesh_generator.sdf_net[-1].weight, std=0.5)  # prompt-dependent geometry
    return pipe


def test_evaluate_tiny_pipeline_records(tiny_pipe):
    prompts = ["a red sphere", "an orange sphere", "a teapot on a table"]
    result = ev.evaluate(tiny_pipe, prompts, marching_resolution=16, num_samples=1000, progress=False)
    records = result["records"]
    assert [r["prompt"] for r in records] == prompts
    assert all(set(r) == RECORD_KEYS for r in records)
    assert [r["split"] for r in records] == ["held_out", "seen", "other"]
    assert [r["parsed"] for r in records] == [True, True, False]
    assert result["unparsed"] == ["a teapot on a table"]
    for r in records[:2]:
        assert r["shape"] == "sphere" and r["color"] in ("red", "orange")
        assert r["empty"] == (r["num_faces"] == 0)
        assert 0.0 <= r["volume_iou"] <= 1.0
        assert r["chamfer"] >= 0 and (math.isfinite(r["chamfer"]) or r["empty"])
        assert r["empty"] or (r["nearest_shape"] in SHAPES and isinstance(r["correct"], bool))
    assert records[2]["chamfer"] is None and records[2]["correct"] is None and records[2]["shape"] is None
    summary = result["summary"]
    assert summary["count"] == 2 and set(summary["splits"]) == {"held_out", "seen"}
    assert 0.0 <= summary["accuracy"] <= summary["shape_accuracy"] <= 1.0
    card = ev.card_metrics(result)
    assert list(card) == ["seen", "held_out", "all"] and card["all"]["prompts"] == 2


def test_true_primitives_score_perfectly_and_wrong_meshes_do_not():
    prompts = [r.prompt for r in HELD_OUT] + ["a green box"]  # all 8 shapes; a synonym is split "other"

    def truth(prompt: str):
        return shape_mesh(*parse_prompt(prompt))

    result = ev.evaluate(truth, prompts, num_samples=2000, progress=False)
    summary = result["summary"]
    assert summary["accuracy"] == summary["shape_accuracy"] == summary["color_accuracy"] == 1.0
    assert summary["mean_chamfer"] < 0.012 and summary["mean_iou"] > 0.95
    assert set(summary["splits"]) == {"held_out", "other"} and summary["splits"]["other"]["count"] == 1
    assert result["records"][-1]["pair_split"] == "seen"  # "a green box" names the seen pair (cube, green)

    genus = {r["shape"]: r["genus"] for r in result["records"]}
    assert genus["torus"] == 1 and genus["sphere"] == genus["cube"] == genus["snowman"] == 0
    assert "torus prompts whose mesh has a hole (genus >= 1): 1 of 1" in ev.format_table(result)
    flat = trimesh.creation.cylinder(radius=0.7, height=0.2)  # a torus-sized disc, no hole
    assert ev.surface_genus(flat) == 0 and ev.surface_genus(trimesh.Trimesh()) is None

    wrong = ev.evaluate(lambda prompt: shape_mesh("cube", "red"), prompts[:4], num_samples=1000, progress=False)
    verdicts = [(r["shape_correct"], r["color_correct"]) for r in wrong["records"]]
    assert verdicts == [(False, True), (True, False), (False, False), (False, False)]  # sphere/red, cube/orange, ...
    assert wrong["summary"]["accuracy"] == 0.0


def test_evaluate_cli_writes_strict_json_and_grid(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model", include_text_encoder=False)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a blue pyramid\na pink capsule\nsomething else\n")
    out, grid = tmp_path / "out" / "eval.json", tmp_path / "out" / "grid.png"
    ev.main(["--model", str(tmp_path / "model"), "--prompts", str(prompts), "--resolution", "16", "--num_samples", "500",
             "--json", str(out), "--grid", str(grid), "--views", "2", "--grid_resolution", "32", "--no_progress"])
    data = _strict_json(out)
    assert [r["prompt"] for r in data["records"]] == ["a blue pyramid", "a pink capsule", "something else"]
    assert [r["split"] for r in data["records"]] == ["held_out", "seen", "other"]
    assert data["summary"]["count"] == 2 and data["model"] == str(tmp_path / "model")
    assert set(data["card_metrics"]) == {"seen", "held_out", "all"}
    from PIL import Image

    with Image.open(grid) as image:
        assert image.height == 3 * 32 and image.width > 2 * 32


def test_overview_lays_out_the_shape_color_table_and_frames_held_out_and_wrong(tmp_path):
    from PIL import Image

    def spheres(prompt: str):  # right for sphere prompts, wrong shape for the rest
        return shape_mesh("sphere", parse_prompt(prompt)[1])

    prompts = ["a red sphere", "an orange sphere", "a red cube"]  # held out, seen, wrong
    result = ev.evaluate(spheres, prompts, num_samples=500, progress=False, return_meshes=True)
    res = 24
    path = ev.save_overview(result, tmp_path / "overview.png", resolution=res, progress=False)
    with Image.open(path) as image:
        image = image.convert("RGB")
        assert image.size == (8 * res, 8 * res)

        def cell(row, col, dx, dy):  # a pixel of the cell (shape row, color column)
            return image.getpixel((col * res + dx, row * res + dy))

        mid = res // 2
        assert cell(0, 0, 0, 0) == (0, 0, 0)  # (sphere, red): held out, black frame
        assert cell(0, 1, 0, 0) == (255, 255, 255)  # (sphere, orange): seen and right, no frame
        red, green, blue = cell(0, 1, mid, mid)
        assert red > green > blue  # an orange sphere in the middle of its cell
        assert cell(1, 0, 3, 3) == (220, 0, 0)  # (cube, red): a red sphere, wrong: red frame
        assert all(cell(7, 7, dx, dy) == (255, 255, 255) for dx in range(res) for dy in range(res))  # no prompt

    teapot = ev.evaluate(lambda prompt: shape_mesh("sphere", "red"), ["a teapot"], progress=False, return_meshes=True)
    with pytest.raises(ValueError, match="not one"):
        ev.save_overview(teapot, tmp_path / "x.png", progress=False)
    twice = ev.evaluate(spheres, ["a red sphere", "a red ball"], num_samples=200, progress=False, return_meshes=True)
    with pytest.raises(ValueError, match="two prompts"):
        ev.save_overview(twice, tmp_path / "y.png", progress=False)
    with pytest.raises(ValueError, match="return_meshes"):
        ev.save_overview({"records": []}, tmp_path / "z.png")


def test_view_matching_respects_symmetry():
    for shape in SHAPES:
        if shape not in ("cube", "pyramid"):
            assert pj.view_tolerance(shape) is None and pj.view_matches(shape, 0.0, 90.0) is None
    assert pj.view_tolerance("cube") == (90.0, 11.25)
    assert pj.view_matches("cube", 95.0, 5.0)  # a quarter turn apart: the same image
    assert pj.view_matches("pyramid", 359.0, 1.0) and pj.view_matches("pyramid", 44.0, -44.0)  # 2 degrees mod 90
    assert not pj.view_matches("cube", 20.0, 5.0)  # 15 > 11.25
    assert pj.view_matches("cube", 20.0, 5.0, tolerance_deg=90.0)  # 15 <= 22.5
    # Why the tolerance is scaled: modulo 90, no two azimuths are more than 45 degrees apart.
    angles = torch.linspace(-180, 180, 97)
    assert float(pj.azimuth_error(angles[:, None], angles[None, :], 90.0).max()) <= 45.0
    assert torch.allclose(pj.azimuth_error(torch.tensor([350.0, 10.0]), torch.tensor([10.0, 190.0])),
                          torch.tensor([20.0, 180.0], dtype=torch.float64))


def test_score_predictions_checks_views_on_cube_and_pyramid_only():
    shape_index = torch.tensor([SHAPES.index(s) for s in ("sphere", "cube", "pyramid", "cube", "torus")])
    color_index = torch.tensor([0, 1, 2, 3, 4])
    cams = Cameras(torch.tensor([10.0, 20.0, 30.0, 0.0, 5.0]), torch.tensor([0.0, 100.0, -30.0, 45.0, 170.0]),
                   torch.full((5,), 3.0), torch.full((5,), 40.0))
    pred = {"shape": shape_index.clone(), "color": torch.tensor([0, 1, 2, 0, 4]),
            "azimuth": torch.tensor([80.0, 12.0, 60.0, 0.0, 0.0]), "elevation": torch.tensor([0.0, 20.0, 25.0, 0.0, 5.0])}
    v = pj.score_predictions(pred, shape_index, color_index, cams)
    assert v["view_checked"].tolist() == [False, True, True, True, False]
    assert v["view_correct"].tolist() == [False, True, True, False, False]  # errors 2, 0, 45 (mod 90)
    assert v["correct"].tolist() == [True, True, True, False, True]
    assert math.isnan(v["elevation_error"][0]) and v["elevation_error"][2] == 5.0
    agg = pj.aggregate(v)
    assert agg["view_count"] == 3 and agg["view_accuracy"] == pytest.approx(2 / 3)
    assert agg["color_accuracy"] == pytest.approx(0.8) and agg["shape_accuracy"] == 1.0


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A classifier trained briefly on 16x16 GT renders (the tiny prior's size), cached in a folder."""
    out = tmp_path_factory.mktemp("prior_eval")
    cfg = pj.ClassifierConfig(resolution=16, views_per_pair=8, val_views_per_pair=2, supersample=2,
                              max_seconds=40.0, max_epochs=25, seed=0)
    model, info = pj.load_or_train_classifier(cfg, out / "classifier", progress=False)
    return out, cfg, model, info


def test_classifier_learns_ground_truth_renders(classifier):
    out, cfg, model, info = classifier
    val = info["validation"]
    assert val["val_images"] == 64 * 2 and val["train_images"] == 64 * 8
    assert val["color_accuracy"] >= 0.9 and val["shape_accuracy"] >= 0.5  # chance: 0.125
    # Fresh renders at new cameras (two per shape, in the colors of the held-out diagonal).
    shape_index = torch.arange(len(SHAPES)).repeat(2)
    cameras = sample_cameras(len(shape_index), generator=torch.Generator().manual_seed(99))
    fresh = ShapeRenders(pj.render_gt(shape_index, shape_index, cameras, 16, seed=99), shape_index, shape_index, cameras)
    scores = pj.score_renders(model, fresh)
    assert scores["color_accuracy"] >= 0.85 and scores["shape_accuracy"] >= 0.5
    assert scores["view_count"] == 4  # cube and pyramid images only
    untrained = pj.score_renders(pj.RenderClassifier(cfg.width).eval(), fresh)
    assert untrained["accuracy"] < scores["accuracy"]
    # Cached: the same settings load the same weights without training.
    again, info_again = pj.load_or_train_classifier(cfg, out / "classifier", progress=False)
    assert info_again == info
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_evaluate_prior_cli_on_a_tiny_prior(classifier, tmp_path):
    from atom.guidance.shapes_prior import ShapesPriorPipeline, build_prior_scheduler, build_prior_unet

    out, _, _, info = classifier
    torch.manual_seed(0)
    ShapesPriorPipeline(unet=build_prior_unet("tiny"), scheduler=build_prior_scheduler()).save_pretrained(tmp_path / "prior")
    result = ep.main(["--model", str(tmp_path / "prior"), "--output_dir", str(out), "--steps", "2",
                      "--samples_per_prompt", "1", "--batch_size", "40", "--classifier_views", "8",
                      "--classifier_val_views", "2", "--classifier_epochs", "25", "--no_progress"])
    assert result["classifier"]["validation"] == info["validation"]  # the cached classifier was used
    data = _strict_json(out / "prior_eval.json")
    assert data["samples"]["count"] == 64 and len(data["per_prompt"]) == 64
    assert data["samples"]["view_count"] == 16 and data["reference"]["view_count"] == 16
    assert data["passed"] is False  # an untrained prior draws noise
    assert data["reference"]["color_accuracy"] > data["samples"]["color_accuracy"]
    assert set(data["splits"]) == {"seen", "held_out"} and data["splits"]["held_out"]["count"] == 8
    assert (out / "samples.png").is_file() and (out / "samples-detail.png").is_file()
    assert [r["prompt"] for r in data["per_prompt"]] == [r.prompt for r in SHAPES64]


def test_nearest_render_judge_recovers_pairs_and_views():
    """Renders at known cameras (another light seed), clean and with grain: the judge names
    every shape and color, and the cube / pyramid azimuth modulo 90; a wrong pair loses."""
    shape_index = torch.arange(len(SHAPES)).repeat(2)
    color_index = torch.roll(shape_index, 3)
    cameras = sample_cameras(len(shape_index), generator=torch.Generator().manual_seed(7))
    clean = pj.render_gt(shape_index, color_index, cameras, 16, seed=123).float() / 255
    grainy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    judge = pj.nearest_render_judge(cameras, shape_index, color_index, 16)
    for images in (clean, grainy):
        pred = judge(images)
        assert pred["shape"].tolist() == shape_index.tolist() and pred["color"].tolist() == color_index.tolist()
        v = pj.score_predictions(pred, shape_index, color_index, cameras)
        # 3 of 4 (chance: 1 in 4): a cube seen nearly edge-on (azimuth 41, elevation 1) under a light
        # jittered 30 deg off the camera reads 17 deg off at 16 px; the judge lights from the camera.
        assert v["view_checked"].sum() == 4 and v["view_correct"][v["view_checked"]].sum() >= 3
    # Cube and pyramid drawn turned by 45 deg (the farthest view modulo 90): the shape is still
    # named, the view is wrong; the verdict at the requested view only is kept alongside.
    turned_shapes = torch.tensor([SHAPES.index("cube"), SHAPES.index("pyramid")]).repeat(4)
    turned_colors = torch.arange(len(turned_shapes)) % len(pj.COLOR_NAMES)
    cams = sample_cameras(len(turned_shapes), generator=torch.Generator().manual_seed(8))
    turned = pj.render_gt(turned_shapes, turned_colors, cams.turned(45), 16, seed=5)
    pred = pj.nearest_render_judge(cams, turned_shapes, turned_colors, 16)(turned)
    v = pj.score_predictions(pred, turned_shapes, turned_colors, cams)
    assert v["shape_correct"].all() and not v["view_correct"].any()
    assert "shape_correct_at_view" in v and "shape_accuracy_at_requested_view" in pj.aggregate(v)
    # Judged against the pair it is not: shape wrong.
    swapped = torch.roll(shape_index, 1)
    pred = pj.nearest_render_judge(cameras, swapped, color_index, 16)(clean)
    assert (pred["shape"] != swapped).all()


def test_evaluate_prior_rescores_saved_samples_with_the_nearest_judge(classifier, tmp_path):
    """--samples reuses an earlier run's samples.pt (no sampling); --judge nearest needs no classifier."""
    out = classifier[0]
    if not (out / "samples.pt").is_file():
        pytest.skip("needs the samples of test_evaluate_prior_cli_on_a_tiny_prior")
    from atom.guidance.shapes_prior import ShapesPriorPipeline, build_prior_scheduler, build_prior_unet

    ShapesPriorPipeline(unet=build_prior_unet("tiny"), scheduler=build_prior_scheduler()).save_pretrained(tmp_path / "prior")
    result = ep.main(["--model", str(tmp_path / "prior"), "--output_dir", str(tmp_path / "eval"), "--samples",
                      str(out / "samples.pt"), "--judge", "nearest", "--no_progress"])
    assert result["classifier"] is None and result["settings"]["judge"] == "nearest"
    assert result["samples"]["count"] == 64 and result["reference"]["shape_accuracy"] >= 0.9
    assert not (tmp_path / "eval" / "classifier").exists() and not (tmp_path / "eval" / "samples.pt").exists()
