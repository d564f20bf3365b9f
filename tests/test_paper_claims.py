"""benchmarks/paper_claims.py: the --quick harness end to end (every claim trains, scores and lands
in the table), its reuse of finished runs, and the measures its verdicts rest on."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import claims_metrics  # noqa: E402
import claims_report  # noqa: E402
import paper_claims  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def quick_run(prior_teacher, tmp_path_factory):
    work = tmp_path_factory.mktemp("claims")
    results = paper_claims.main(["all", "--quick", "--teacher", str(prior_teacher), "--work_dir", str(work)])
    return work, results


def test_quick_harness_fills_every_row(quick_run):
    work, results = quick_run
    assert set(results) == set(paper_claims.CLAIMS)
    report = (work / "paper_claims.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ") and "`python benchmarks/paper_claims.py" in line]
    assert len(table) == len(paper_claims.CLAIMS)
    assert all(any(v in line for v in ("**holds**", "**holds partly**", "**does not hold at this scale**")) for line in table)
    assert "not run yet" not in report
    # Each row names the code it was measured with (claims are refreshed one sitting at a time).
    commit = paper_claims.source_commit()
    if commit is not None:  # a git checkout, as CI's clone
        assert re.fullmatch(r"[0-9a-f]{4,40}(-dirty)?", commit)
        assert all(f"at commit {commit} |" in line for line in table)
        assert all(results[claim]["commit"] == commit for claim in results)
    # Every variant trained at the same budget, the stage-2-alone run only in stage 2, the hypernetwork as its preset.
    for name in ("triplane-s0", "stage1-only-s0", "stage2-only-s0", "hyper-s0", "no-aware-s0"):
        summary = json.loads((work / name / "pipeline" / "training_summary.json").read_text())
        assert summary["steps"] == paper_claims.QUICK["steps"], name
    assert json.loads((work / "stage2-only-s0" / "pipeline" / "training_summary.json").read_text())["stage_seconds"]["1"] == 0
    index = json.loads((work / "hyper-s0" / "pipeline" / "model_index.json").read_text())
    assert index["text_to_triplane"][0] == "atom.models.hyper_field"
    config = json.loads((work / "no-aware-s0" / "pipeline" / "text_to_triplane" / "config.json").read_text())
    assert config["aware_conv"] is False
    # The stages claim also reports the stage-1 model of the two-stage run, saved at the switch.
    assert any("same run" in r["name"] for r in results["stages"]["runs"])
    # Per-prompt: one run per shape of the tiny recipe, a snapshot per step, each prompt timed.
    cost = results["cost"]
    assert [p["prompt"] for p in cost["prompts"]] == ["a red cube", "a blue sphere", "a green cone"]
    # Each run ends at its first snapshot as good as the amortized model, or at the budget.
    assert all(len(p["curve"]) == (p["match_steps"] if p["matched"] else paper_claims.QUICK["per_prompt_steps"])
               for p in cost["prompts"])
    assert all(p["match_seconds"] > 0 for p in cost["prompts"])
    assert len(results["interpolation"]["pairs"][0]["labels"]) == paper_claims.QUICK["blends"]
    assert all(p["geometry_refinement"] > 0 and p["color_refinement"] > 0 for p in results["interpolation"]["pairs"])
    assert (work / "paper_claims" / "interpolation.png").is_file()
    assert (work / "paper_claims" / "loss-hypernetwork.png").is_file()
    assert 0 < results["inference"]["batch_1_seconds"] < 60


def test_a_second_sitting_reuses_runs_and_scores(quick_run, prior_teacher):
    work, _ = quick_run
    logs = {p: p.read_text() for p in work.glob("*/train_log.jsonl")}
    paper_claims.main(["stages", "--quick", "--teacher", str(prior_teacher), "--work_dir", str(work)])
    assert {p: p.read_text() for p in work.glob("*/train_log.jsonl")} == logs  # nothing trained again
    assert set(json.loads((work / "claims.json").read_text())["claims"]) == set(paper_claims.CLAIMS)  # merged, not replaced


def test_a_new_machine_reuses_the_results_file(quick_run, prior_teacher, tmp_path):
    """No run folders, only the (committed) results file: the scored runs are not trained again."""
    work, _ = quick_run
    results = tmp_path / "claims.json"
    results.write_text((work / "claims.json").read_text())
    claims = paper_claims.main(["stages", "hypernetwork", "--quick", "--teacher", str(prior_teacher),
                                "--work_dir", str(tmp_path / "fresh"), "--json", str(results)])
    assert not list((tmp_path / "fresh").glob("*/train_log.jsonl"))
    before = json.loads((work / "claims.json").read_text())["claims"]
    for claim in ("stages", "hypernetwork"):
        assert [r["mean_chamfer"] for r in claims[claim]["runs"]] == [r["mean_chamfer"] for r in before[claim]["runs"]]
    # Another step budget is another run: its key differs, so it is trained.
    store = json.loads(results.read_text())
    harness = paper_claims.Harness(paper_claims.parse_args(["stages", "--quick", "--steps", "3", "--teacher", str(prior_teacher),
                                                             "--work_dir", str(tmp_path / "fresh")]), store)
    assert harness.cached("triplane-s0", harness.run_key(["--seed", "0"])) is None


def test_train_only_trains_its_shard_of_the_missing_runs_and_scores_nothing(quick_run, prior_teacher, tmp_path):
    work, _ = quick_run
    store = json.loads((work / "claims.json").read_text())
    del store["runs"]["triplane-s0"], store["runs"]["hyper-s0"]
    results = tmp_path / "claims.json"
    results.write_text(json.dumps(store))
    argv = ["hypernetwork", "--quick", "--teacher", str(prior_teacher), "--work_dir", str(tmp_path / "w"), "--json", str(results),
            "--train_only", "--shard", "1/2"]
    paper_claims.main(argv)  # missing: triplane-s0, hyper-s0; shard 1 of 2: hyper-s0
    assert (tmp_path / "w" / "hyper-s0" / "pipeline" / "training_summary.json").is_file()
    assert not (tmp_path / "w" / "triplane-s0").exists()
    assert json.loads(results.read_text()) == store
    with pytest.raises(SystemExit):
        paper_claims.parse_args(["stages", "--shard", "2/2"])


def test_the_harness_cost_counts_only_the_runs_the_claims_use(quick_run, tmp_path):
    """The results file keeps runs of earlier recipes under their names; the cost line leaves them out."""
    work, _ = quick_run
    store = json.loads((work / "claims.json").read_text())

    def cost_line(runs: dict) -> str:
        report = claims_report.render(store["claims"], tmp_path, tmp_path, runs)
        return next(line for line in report.splitlines() if line.startswith("Cost of the harness"))

    stale = {**store["runs"], "old-recipe-s7": {"train_seconds": 36_000.0}}
    assert cost_line(stale) == cost_line(store["runs"])
    used = {r["name"] for c in store["claims"].values() for r in c.get("runs", [])} & set(store["runs"])
    assert f"in {len(used)} runs of the recipe's budget" in cost_line(store["runs"])


def test_source_commit_is_dirty_for_code_changes_but_not_for_the_harness_outputs(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    results, figure = tmp_path / "docs" / "claims.json", tmp_path / "docs" / "figures" / "loss.png"
    results.write_text("{}")
    figure.write_bytes(b"png")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    outputs = (str(results), str(figure.parent), "/elsewhere/report.md")  # one outside the checkout
    clean = paper_claims.source_commit(outputs, root=tmp_path)
    assert re.fullmatch(r"[0-9a-f]{4,40}", clean)
    results.write_text('{"claims": {}}')
    figure.write_bytes(b"png2")
    assert paper_claims.source_commit(outputs, root=tmp_path) == clean
    assert paper_claims.source_commit(root=tmp_path) == f"{clean}-dirty"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert paper_claims.source_commit(outputs, root=tmp_path) == f"{clean}-dirty"
    assert paper_claims.source_commit(root=tmp_path / "not-a-checkout") is None


def test_time_to_match_takes_the_first_snapshot_as_good_as_the_amortized_model():
    curve = [{"steps": 1, "seconds": 10.0, "correct": False, "chamfer": 0.05},
             {"steps": 2, "seconds": 20.0, "correct": True, "chamfer": 0.04},
             {"steps": 3, "seconds": 30.0, "correct": True, "chamfer": 0.02}]
    assert claims_metrics.time_to_match(curve, {"correct": True, "chamfer": 0.03})["match_seconds"] == 30.0
    assert claims_metrics.time_to_match(curve, {"correct": False, "chamfer": 0.05})["match_seconds"] == 10.0
    never = claims_metrics.time_to_match(curve, {"correct": True, "chamfer": 0.01})
    assert not never["matched"] and never["match_seconds"] == 30.0  # the budget: a lower bound
    assert claims_metrics.time_to_match(curve, {"correct": True, "chamfer": None})["match_steps"] == 2  # empty: no bar


def test_path_smoothness_sees_a_jump():
    def sphere(radius, color):
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=radius)
        mesh.visual.vertex_colors = [*color, 255]
        return mesh

    smooth = [sphere(0.55 + 0.025 * i, (200 - 20 * i, 0, 20 * i)) for i in range(5)]  # the world sphere: radius 0.6
    result = claims_metrics.path_smoothness(smooth, samples=2000)
    assert result["geometry_jump"] < 1.5 and result["color_jump"] < 1.5
    assert result["labels"][0].endswith("sphere")
    jumpy = smooth[:3] + [trimesh.creation.box(extents=(1.2, 1.2, 1.2))] + smooth[3:]
    jumpy[3].visual.vertex_colors = [255, 255, 0, 255]
    result = claims_metrics.path_smoothness(jumpy, samples=2000)
    assert result["geometry_jump"] > 3 and result["color_jump"] > 3
    assert "cube" in result["labels"][3]


def test_a_per_prompt_run_stops_at_its_first_snapshot_as_good_as_the_reference(prior_teacher, tmp_path):
    args = paper_claims.parse_args(["cost", "--quick", "--teacher", str(prior_teacher), "--work_dir", str(tmp_path),
                                    "--per_prompt_steps", "3"])
    harness = paper_claims.Harness(args, {})
    easy = harness.per_prompt_curve("a red cube", {"correct": False, "chamfer": 1.0})  # any mesh is as good
    assert [p["steps"] for p in easy] == [1]
    summary = json.loads((tmp_path / "per-prompt" / "a_red_cube" / "pipeline" / "training_summary.json").read_text())
    assert summary["steps"] == 1  # the final model is the one at the stop
    assert harness.per_prompt_curve("a red cube", {"correct": False, "chamfer": 1.0}) == easy  # kept, not run again
    # A reference that the kept curve does not reach: the run is made again, to the budget.
    hard = harness.per_prompt_curve("a red cube", {"correct": True, "chamfer": 0.0})
    assert [p["steps"] for p in hard] == [1, 2, 3] and hard[0]["chamfer"] == easy[0]["chamfer"]


def test_stages_run_a_second_seed_only_where_the_first_is_within_the_seed_spread(prior_teacher, tmp_path):
    args = paper_claims.parse_args(["stages", "--quick", "--seeds", "0", "1", "--teacher", str(prior_teacher),
                                    "--work_dir", str(tmp_path)])
    harness = paper_claims.Harness(args, {})

    def scored(name, extra, chamfer, accuracy):
        harness.store["runs"][name] = {"key": harness.run_key(extra), "name": name, "mean_chamfer": chamfer,
                                       "seen_accuracy": accuracy, "held_out_accuracy": accuracy, "nonfinite_losses": 0}

    def planned():
        return [name for name, _ in harness.planned_runs("stages")]

    scored("triplane-s0", ["--seed", "0"], 0.030, 1.0)
    scored("triplane-s1", ["--seed", "1"], 0.033, 0.95)  # seed spread: Chamfer 0.003, accuracy 5 %
    assert planned() == ["triplane-s0", "triplane-s1", "stage1-only-s0", "stage2-only-s0"]
    scored("stage1-only-s0", ["--stage", "1", "--seed", "0"], 0.032, 0.97)  # within the spread: a second seed
    scored("stage2-only-s0", ["--stage", "2", "--seed", "0"], 0.5, 0.0)  # far worse: one seed says it
    assert planned() == ["triplane-s0", "triplane-s1", "stage1-only-s0", "stage1-only-s1", "stage2-only-s0"]
