"""train/train_per_prompt.py: one fresh model per prompt, trained on that prompt only, scored
on it, resumable (finished prompts are skipped)."""
import json
from pathlib import Path

import pytest

from atom.pipeline import AToMPipeline
from train_scripts import load_train_script

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "train" / "configs" / "tiny.yaml"

train_per_prompt = load_train_script("train_per_prompt")

pytestmark = pytest.mark.usefixtures("one_thread")


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_one_model_per_prompt_then_resume_skips_finished(prior_teacher, tmp_path):
    out = tmp_path / "per-prompt"
    argv = ["--config", str(CONFIG), "--output_dir", str(out), "--prompts", str(_prompt_file(tmp_path)),
            "--steps", "2", "--teacher", str(prior_teacher), "--validation_steps", "1000"]
    result = train_per_prompt.main(argv)

    assert [r["prompt"] for r in result["runs"]] == ["a red cube", "a green cone"]
    for run in result["runs"]:
        run_dir = Path(run["pipeline"]).parent
        assert run["steps"] == 2 and run["wall_seconds"] > 0
        # Both stages ran (stage1_steps scaled from tiny.yaml's 2 of 4), on this prompt alone.
        steps = [r for r in read_log(run_dir) if r["event"] == "step"]
        assert [r["stage"] for r in steps] == [1, 2]
        assert {p for r in steps for p in r["prompts"]} == {run["prompt"]}
        AToMPipeline.from_pretrained(run["pipeline"])(run["prompt"])
    assert result["total_wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for r in result["runs"]), abs=0.2)
    scored = {r["prompt"] for r in result["evaluation"]["records"]}
    assert scored == {"a red cube", "a green cone"} and result["evaluation"]["summary"]["count"] == 2
    saved = json.loads((out / "per_prompt_summary.json").read_text())
    assert saved["prompts"] == 2 and len(saved["runs"]) == 2

    # A rerun with --resume trains nothing new: the logs keep their length.
    lengths = [len(read_log(Path(r["pipeline"]).parent)) for r in result["runs"]]
    again = train_per_prompt.main(argv + ["--resume", "true", "--evaluate", "false"])
    assert [len(read_log(Path(r["pipeline"]).parent)) for r in again["runs"]] == lengths
    assert "evaluation" not in again


def test_bad_arguments():
    with pytest.raises(SystemExit):
        train_per_prompt.parse_args(["--config", str(CONFIG), "--steps", "0"])
    with pytest.raises(SystemExit):
        train_per_prompt.parse_args(["--steps", "3"])  # no --config


def _prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("# two prompts\na red cube\n\na green cone\n")
    return path
