"""The Shapes world (atom.data): primitives, meshes, prompts, captions and ground-truth metrics."""
import math
import random

import numpy as np
import pytest
import torch
import trimesh

from atom.data import (
    COLORS,
    HELD_OUT,
    PARAPHRASE_SYNONYMS,
    PARAPHRASES,
    PHRASINGS,
    SEEN,
    SHAPES,
    SHAPES64,
    SYNONYMS,
    VIEWS,
    caption,
    caption_variants,
    evaluate_mesh,
    parse_prompt,
    prompt_for,
    sample_surface,
    shape_area,
    shape_mesh,
    shape_sdf,
    shape_volume,
    summarize,
    view_word,
    voxelize,
)
from atom.data.voxelize import grid_centers
from atom.data.world import SNOWMAN_CREASE_RHO, SNOWMAN_CREASE_Y
from atom.geometry import Mesh, build_tet_grid, marching_tets


def sdf(name, points):
    return shape_sdf(name, torch.tensor(points, dtype=torch.float64)).numpy()


# ---------------------------------------------------------------- names, SDFs


def test_names_and_colors_follow_design_order():
    assert SHAPES == ("sphere", "cube", "cylinder", "cone", "torus", "pyramid", "capsule", "snowman")
    assert list(COLORS) == ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
    assert COLORS["cyan"] == (0.10, 0.80, 0.85) and COLORS["pink"] == (0.95, 0.45, 0.70)


SURFACE_POINTS = {
    "sphere": [(0.6, 0, 0), (0, -0.6, 0), (0, 0, 0.6)],
    "cube": [(0.5, 0, 0), (0, -0.5, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.1, 0.2, -0.5)],
    "cylinder": [(0.45, 0, 0), (0, 0.55, 0), (0, -0.55, 0.2), (0.45, 0.55, 0), (0, 0.3, -0.45)],
    "cone": [(0, 0.55, 0), (0.55, -0.55, 0), (0, -0.55, 0), (0.275, 0, 0), (0, 0, -0.275)],
    "torus": [(0.68, 0, 0), (0.32, 0, 0), (0.5, 0.18, 0), (0, -0.18, 0.5), (0, 0, -0.68)],
    "pyramid": [(0, 0.5, 0), (0.5, -0.5, 0.5), (0, -0.5, 0), (0.25, 0, 0), (-0.25, 0, 0.1), (0.1, 0, -0.25)],
    "capsule": [(0, 0.65, 0), (0, -0.65, 0), (0.35, 0, 0), (0.35, 0.3, 0), (0, -0.3, 0.35)],
    "snowman": [(0, -0.7, 0), (0, 0.63, 0), (0.4, -0.3, 0), (0.28, 0.35, 0), (SNOWMAN_CREASE_RHO, SNOWMAN_CREASE_Y, 0)],
}


@pytest.mark.parametrize("name", SHAPES)
def test_sdf_is_zero_on_known_surface_points(name):
    np.testing.assert_allclose(sdf(name, SURFACE_POINTS[name]), 0.0, atol=1e-12)


@pytest.mark.parametrize(
    "name, point, expected",
    [
        ("sphere", (0, 0, 0), -0.6),
        ("sphere", (1, 0, 0), 0.4),
        ("cube", (0, 0, 0), -0.5),
        ("cube", (1, 1, 1), 0.5 * math.sqrt(3)),
        ("cube", (0.4, 0.3, 0), -0.1),
        ("cylinder", (0, 0, 0), -0.45),
        ("cylinder", (1, 1, 0), math.hypot(0.55, 0.45)),
        ("cone", (0, 1, 0), 0.45),
        ("cone", (0, 0, 0), -0.55 * 0.55 / math.hypot(0.55, 1.1)),
        ("cone", (0, -1, 0), 0.45),
        ("torus", (0.5, 0, 0), -0.18),
        ("torus", (0, 0, 0), 0.32),
        ("pyramid", (0, 1, 0), 0.5),
        ("pyramid", (0, 0, 0), -0.25 / math.hypot(1, 0.5)),
        ("pyramid", (0, -0.45, 0), -0.05),
        ("pyramid", (1, -0.5, 1), math.sqrt(0.5)),
        ("capsule", (0, 0, 0), -0.35),
        ("capsule", (0, 1, 0), 0.35),
        ("snowman", (0, -0.3, 0), -0.4),
        ("snowman", (0, 0.35, 0), -0.28),
        ("snowman", (0, 1, 0), 0.37),
        # Inside, on the axis at the crease: the nearest surface is the crease circle.
        ("snowman", (0, SNOWMAN_CREASE_Y, 0), -SNOWMAN_CREASE_RHO),
    ],
)
def test_sdf_values_and_signs(name, point, expected):
    assert sdf(name, [point])[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", SHAPES)
def test_sdf_is_the_exact_distance(name):
    """Stepping -sdf x grad lands on the surface (a surface point at distance |sdf|), and no
    surface sample is closer than |sdf|: the distance is exact, inside and outside."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)
    points = torch.from_numpy(np.concatenate([rng.uniform(-1, 1, (500, 3)), rng.uniform(-0.4, 0.4, (500, 3))]))
    points.requires_grad_(True)
    d = shape_sdf(name, points)
    (grad,) = torch.autograd.grad(d.sum(), points)
    landed = (points - d[:, None] * grad).detach()
    assert shape_sdf(name, landed).abs().max() < 1e-9
    nearest = cKDTree(sample_surface(name, 20_000, seed=1)).query(points.detach().numpy())[0]
    distance = d.detach().abs().numpy()
    assert (nearest >= distance - 1e-9).all() and (nearest - distance).max() < 0.03


@pytest.mark.parametrize("name", SHAPES)
def test_sdf_gradient_has_unit_norm_and_is_finite_on_the_surface(name):
    points = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2000, 3))).requires_grad_(True)
    (grad,) = torch.autograd.grad(shape_sdf(name, points).sum(), points)
    np.testing.assert_allclose(grad.norm(dim=-1).numpy(), 1.0, atol=1e-6)
    on_surface = torch.tensor(SURFACE_POINTS[name] + [(0, 0, 0)], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(shape_sdf(name, on_surface).sum(), on_surface)
    assert torch.isfinite(grad).all()


def test_sdf_keeps_batch_shape_and_dtype_and_rejects_unknown_names():
    out = shape_sdf("torus", torch.zeros(2, 5, 3))
    assert out.shape == (2, 5) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="unknown shape 'banana'.*sphere, cube"):
        shape_sdf("banana", torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        shape_sdf("cube", torch.zeros(4, 2))


# ---------------------------------------------------------------- meshes, samples


# (max x, min y, max y) of the solids whose extent is not the obvious one.
EXTENTS = {
    "cone": (0.55, -0.55, 0.55),
    "pyramid": (0.5, -0.5, 0.5),
    "snowman": (0.4, -0.7, 0.63),
    "torus": (0.68, -0.18, 0.18),
}


@pytest.mark.parametrize("name", SHAPES)
def test_shape_mesh_matches_analytic_volume_area_and_extent(name):
    mesh = shape_mesh(name)
    assert mesh.is_watertight and mesh.volume > 0
    exact = name in ("cube", "pyramid")
    assert mesh.volume == pytest.approx(shape_volume(name), rel=1e-12 if exact else 0.01)
    assert mesh.area == pytest.approx(shape_area(name), rel=1e-12 if exact else 0.01)
    # Faceted curved surfaces are inscribed: never larger than the true solid.
    assert mesh.volume <= shape_volume(name) + 1e-12
    assert np.abs(sdf(name, mesh.vertices)).max() < 1e-12
    if name in EXTENTS:
        np.testing.assert_allclose([mesh.bounds[1, 0], *mesh.bounds[:, 1]], EXTENTS[name], atol=1e-3)
    inside = voxelize(mesh.vertices, mesh.faces, 32)
    c = grid_centers(32)
    truth = sdf(name, np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)).reshape(inside.shape) < 0
    assert (inside & truth).sum() / (inside | truth).sum() > 0.98


def test_analytic_volumes_and_areas():
    assert shape_volume("sphere") == pytest.approx(4 / 3 * math.pi * 0.216)
    assert shape_volume("pyramid") == pytest.approx(1 / 3)
    assert shape_area("pyramid") == pytest.approx(1 + math.sqrt(5))
    assert shape_volume("capsule") == pytest.approx(math.pi * 0.35**2 * 0.6 + 4 / 3 * math.pi * 0.35**3)
    # The snowman is a union: less than the two spheres together, more than either.
    spheres = 4 / 3 * math.pi * (0.4**3 + 0.28**3)
    assert 4 / 3 * math.pi * 0.4**3 < shape_volume("snowman") < spheres
    assert shape_area("snowman") < 4 * math.pi * (0.4**2 + 0.28**2)
    with pytest.raises(ValueError, match="unknown shape"):
        shape_area("Cube")


def test_shape_mesh_colors_and_cache_safety():
    mesh = shape_mesh("cube", "orange")
    np.testing.assert_array_equal(mesh.visual.vertex_colors, np.tile([242, 128, 26, 255], (8, 1)))
    mesh.vertices *= 2
    assert shape_mesh("cube").volume == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown color 'magenta'.*red, orange"):
        shape_mesh("cube", "magenta")


def test_sample_surface_is_on_the_surface_seeded_and_uniform():
    points = sample_surface("cylinder", 20_000, seed=3)
    assert points.shape == (20_000, 3)
    assert np.abs(sdf("cylinder", points)).max() < 1e-9
    np.testing.assert_array_equal(points, sample_surface("cylinder", 20_000, seed=3))
    assert not np.array_equal(points, sample_surface("cylinder", 20_000, seed=4))
    on_caps = np.isclose(np.abs(points[:, 1]), 0.55, atol=1e-9).mean()
    assert on_caps == pytest.approx(0.45 / (1.1 + 0.45), abs=0.015)  # cap area / total area


def test_snowman_samples_only_the_outer_surface():
    points = sample_surface("snowman", 20_000, seed=0)
    bottom = np.linalg.norm(points - [0, -0.3, 0], axis=1)
    top = np.linalg.norm(points - [0, 0.35, 0], axis=1)
    assert (bottom > 0.4 - 1e-9).all() and (top > 0.28 - 1e-9).all()  # never inside either sphere
    on_top = (np.abs(top - 0.28) < 1e-9).mean()
    cap_inside_bottom = 0.28 - (0.35 - SNOWMAN_CREASE_Y)  # height of the top sphere's hidden cap
    top_area = 4 * math.pi * 0.28**2 - 2 * math.pi * 0.28 * cap_inside_bottom
    assert on_top == pytest.approx(top_area / shape_area("snowman"), abs=0.015)


# ---------------------------------------------------------------- prompts, captions


def test_shapes64_split():
    prompts = [r.prompt for r in SHAPES64]
    assert len(set(prompts)) == 64
    assert SHAPES64[0].prompt == "a red sphere" and SHAPES64[1].prompt == "an orange sphere"  # shape-major
    assert SHAPES64[8] == ("a red cube", "cube", "red")
    assert [r.prompt for r in HELD_OUT] == [
        "a red sphere",
        "an orange cube",
        "a yellow cylinder",
        "a green cone",
        "a cyan torus",
        "a blue pyramid",
        "a purple capsule",
        "a pink snowman",
    ]
    assert len(SEEN) == 56 and not set(SEEN) & set(HELD_OUT) and set(SEEN) | set(HELD_OUT) == set(SHAPES64)


def test_articles():
    assert prompt_for("cube", "orange") == "an orange cube"
    assert prompt_for("sphere", "red") == "a red sphere"
    for r in SHAPES64:
        assert r.prompt.startswith("an " if r.color == "orange" else "a ")
    with pytest.raises(ValueError, match="unknown color 'Red'"):
        prompt_for("sphere", "Red")


def test_parse_prompt_round_trip_and_synonyms():
    for r in SHAPES64:
        assert parse_prompt(r.prompt) == (r.shape, r.color)
    assert parse_prompt("a red ball") == ("sphere", "red")
    assert parse_prompt("An  Orange Donut, back view.") == ("torus", "orange")
    assert parse_prompt("a pink snow man, overhead view") == ("snowman", "pink")
    assert parse_prompt("blue pill") == ("capsule", "blue")
    for bad in ("a red banana", "a magenta sphere", "a red sphere, upside view", "red", "", "a sphere red"):
        assert parse_prompt(bad) is None


def test_synonyms_are_unambiguous():
    names = [n for s in SHAPES for n in (s, *SYNONYMS[s])]
    assert len(names) == len(set(names)) and not set(names) & set(COLORS)


def test_captions_parse_back_and_use_synonyms_at_the_given_rate():
    rng = random.Random(0)
    captions = [caption("sphere", "orange", rng) for _ in range(2000)]
    assert all(parse_prompt(c) == ("sphere", "orange") for c in captions)
    assert all(c.startswith("an orange ") for c in captions)
    assert sum(c != "an orange sphere" for c in captions) / 2000 == pytest.approx(0.3, abs=0.04)
    assert {caption("sphere", "red", rng, use_synonym_prob=1.0) for _ in range(50)} == {"a red ball", "a red orb"}
    assert caption("cone", "red", rng, use_synonym_prob=1.0) == "a red cone"  # no synonyms
    assert caption("cube", "red", rng, use_synonym_prob=0.0, view="side view") == "a red cube, side view"
    assert caption("torus", "cyan", random.Random(5)) == caption("torus", "cyan", random.Random(5))
    with pytest.raises(ValueError, match="unknown view 'top view'"):
        caption("cube", "red", rng, view="top view")


@pytest.mark.parametrize(
    "elevation, azimuth, expected",
    [
        (0, 0, "front view"),
        (30, 45, "front view"),
        (30, -45, "front view"),
        (0, 45.5, "side view"),
        (0, 90, "side view"),
        (0, -90, "side view"),
        (0, 135, "back view"),
        (0, -135, "back view"),
        (0, 180, "back view"),
        (0, -180, "back view"),
        (0, 225, "back view"),
        (0, 270, "side view"),
        (0, 360, "front view"),
        (0, -350, "front view"),
        (60, 0, "front view"),
        (61, 180, "overhead view"),
        (90, 90, "overhead view"),
    ],
)
def test_view_word(elevation, azimuth, expected):
    assert view_word(elevation, azimuth) == expected
    assert expected in VIEWS


# ---------------------------------------------------------------- metrics


def test_true_meshes_with_true_colors_are_correct():
    for shape, color in zip(SHAPES, reversed(list(COLORS))):
        result = evaluate_mesh(shape_mesh(shape, color), shape, color)
        assert result["correct"] and result["nearest_shape"] == shape and result["nearest_color"] == color
        assert result["chamfer"] < 0.01 and result["volume_iou"] > 0.98
        assert result["mean_albedo"] == pytest.approx(np.round(255 * np.array(COLORS[color])) / 255)


def test_wrong_shape_and_wrong_color_are_detected():
    result = evaluate_mesh(shape_mesh("cube", "red"), "sphere", "blue", num_samples=2000)
    assert result["nearest_shape"] == "cube" and result["nearest_color"] == "red"
    assert not (result["shape_correct"] or result["color_correct"] or result["correct"])
    assert result["chamfer"] > 0.05 and result["volume_iou"] < 0.8
    result = evaluate_mesh(shape_mesh("capsule", "pink"), "capsule", "purple", num_samples=2000)
    assert result["shape_correct"] and not result["color_correct"] and not result["correct"]


def test_marching_tets_mesh_of_the_sdf_is_correct():
    grid = build_tet_grid(32)
    verts, faces = marching_tets(grid.verts, shape_sdf("torus", grid.verts), grid.tets)
    colors = torch.tensor(COLORS["green"]).expand(len(verts), 3)
    result = evaluate_mesh(Mesh(verts, faces, colors).to_trimesh(), "torus", "green", num_samples=3000)
    assert result["correct"] and result["volume_iou"] > 0.95 and result["chamfer"] < 0.015


def test_mean_albedo_is_area_weighted():
    big, small = shape_mesh("cube", "red"), shape_mesh("cube", "blue")
    small.apply_scale(0.5)
    small.apply_translation([0.0, 0.0, 0.9])
    result = evaluate_mesh(trimesh.util.concatenate([big, small]), "cube", "red", num_samples=500)
    red, blue = np.round(255 * np.array(COLORS["red"])) / 255, np.round(255 * np.array(COLORS["blue"])) / 255
    assert result["mean_albedo"] == pytest.approx((6 * red + 1.5 * blue) / 7.5)


def test_empty_and_uncolored_meshes_warn_and_score_as_wrong():
    with pytest.warns(UserWarning, match="empty"):
        result = evaluate_mesh(Mesh.empty().to_trimesh(), "cube", "red")
    assert result["chamfer"] == math.inf and result["volume_iou"] == 0.0
    assert result["nearest_shape"] is None and result["nearest_color"] is None
    assert not (result["shape_correct"] or result["color_correct"] or result["correct"])
    with pytest.warns(UserWarning, match="no colors"):
        result = evaluate_mesh(shape_mesh("cube"), "cube", "red", num_samples=500)
    assert result["shape_correct"] and result["nearest_color"] is None and not result["correct"]
    with pytest.raises(ValueError, match="unknown shape 'ball'"):
        evaluate_mesh(shape_mesh("sphere"), "ball", "red")


def test_summarize_overall_and_per_split():
    def record(correct_shape, correct_color, chamfer, split):
        return {
            "shape_correct": correct_shape,
            "color_correct": correct_color,
            "correct": correct_shape and correct_color,
            "chamfer": chamfer,
            "volume_iou": 0.5,
            "split": split,
        }

    results = [
        record(True, True, 0.01, "seen"),
        record(True, False, 0.03, "seen"),
        record(False, False, math.inf, "held_out"),
    ]
    summary = summarize(results)
    assert summary["count"] == 3 and summary["accuracy"] == pytest.approx(1 / 3)
    assert summary["shape_accuracy"] == pytest.approx(2 / 3) and summary["color_accuracy"] == pytest.approx(1 / 3)
    assert summary["mean_chamfer"] == math.inf and summary["mean_iou"] == pytest.approx(0.5)
    assert list(summary["splits"]) == ["seen", "held_out"]
    seen = summary["splits"]["seen"]
    assert seen["count"] == 2 and seen["accuracy"] == 0.5 and seen["mean_chamfer"] == pytest.approx(0.02)
    assert "splits" not in summarize([{k: v for k, v in results[0].items() if k != "split"}])
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


# ---------------------------------------------------------------- voxelize


def test_voxelize_counts_rays_through_edges_and_vertices_once():
    """A box whose faces, edges and face diagonals lie exactly on grid columns: points on the
    boundary belong to exactly one side per axis (half-open), none is lost or counted twice."""
    half = 33 / 64  # a cell center of the 64-grid
    box = trimesh.creation.box(extents=(2 * half,) * 3)
    inside = voxelize(box.vertices, box.faces, 64)
    c = grid_centers(64)
    closed = np.abs(c) <= half
    assert not (inside & ~(closed[:, None, None] & closed[None, :, None] & closed)).any()
    assert inside.sum() == ((np.abs(c) < half).sum() + 1) ** 3
    box.invert()
    np.testing.assert_array_equal(voxelize(box.vertices, box.faces, 64), inside)


def test_voxelize_overlapping_closed_parts_is_their_union():
    a = trimesh.creation.box(extents=(1.0, 1.0, 1.0))  # [-0.5, 0.5]^3
    b = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    b.apply_translation([0.3, 0.3, 0.3])  # [0, 0.6]^3, overlapping a
    both = trimesh.util.concatenate([a, b])
    c = grid_centers(32)
    in_a = np.abs(c) < 0.5
    in_b = (c > 0) & (c < 0.6)
    expected = (in_a[:, None, None] & in_a[None, :, None] & in_a) | (in_b[:, None, None] & in_b[None, :, None] & in_b)
    np.testing.assert_array_equal(voxelize(both.vertices, both.faces, 32), expected)


def test_every_training_caption_parses_back_to_its_pair():
    for shape in SHAPES:
        for color in COLORS:
            variants = caption_variants(shape, color, PHRASINGS)
            assert len(variants) == len(PHRASINGS) * (1 + len(SYNONYMS[shape])) == len(set(variants))
            for text in variants:
                assert parse_prompt(text) == (shape, color) == parse_prompt(f"{text.upper()}, side view.")


def test_caption_draws_every_phrasing_and_one_phrasing_draws_as_before():
    rng = random.Random(0)
    drawn = {caption("torus", "red", rng, 0.5, phrasings=PHRASINGS) for _ in range(400)}
    assert drawn == set(caption_variants("torus", "red", PHRASINGS))
    # One phrasing: the same rng draws and captions as the captions of the shipped teachers.
    a, b = random.Random(3), random.Random(3)
    for _ in range(50):
        name = b.choice(SYNONYMS["cube"]) if b.random() < 0.3 else "cube"
        assert caption("cube", "orange", a, 0.3) == f"an orange {name}"
    assert a.random() == b.random()
    with pytest.raises(ValueError, match="at least one"):
        caption("cube", "red", rng, phrasings=[])


def test_paraphrases_are_wordings_training_never_draws():
    assert len(PARAPHRASES) >= 32 and len({r.prompt for r in PARAPHRASES}) == len(PARAPHRASES)
    assert len({(r.shape, r.color) for r in PARAPHRASES}) == len(PARAPHRASES)
    assert {r.shape for r in PARAPHRASES} == set(SHAPES) and {r.color for r in PARAPHRASES} == set(COLORS)
    training = {v.lower() for s in SHAPES for c in COLORS for v in caption_variants(s, c, PHRASINGS)}
    for record in PARAPHRASES:
        assert parse_prompt(record.prompt) == (record.shape, record.color)
        assert record.prompt.lower() not in training
    names = {n for r in PARAPHRASES for n in PARAPHRASE_SYNONYMS[r.shape] if n in r.prompt}
    assert names and not names & {n for s in SHAPES for n in SYNONYMS[s]}
