"""benchmarks/gpu_check.py at its cpu scale (a few seconds): every check reports, the CUDA-only
ones say why they were skipped, and the numbers the checks exist for are sane."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from atom.pipeline import AToMPipeline

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("_atom_gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = gpu_check
spec.loader.exec_module(gpu_check)


@pytest.fixture(scope="module")
def report(tmp_path_factory, one_thread) -> dict:
    folder = tmp_path_factory.mktemp("gpu_check")
    gpu_check.main(["--scale", "cpu", "--json", str(folder / "report.json"), "--workdir", str(folder / "work")])
    return json.loads((folder / "report.json").read_text())


def test_every_check_reports(report):
    assert set(report) == {"environment", *gpu_check.CHECKS}
    assert report["environment"]["torch"] == torch.__version__
    for name in gpu_check.CHECKS:
        assert "error" not in report[name], report[name]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA these checks run")
def test_cuda_only_checks_are_skipped_with_a_reason(report):
    for name in ("nvdiffrast", "parity"):
        assert "CUDA" in report[name]["skipped"]


def test_torch_backend_silhouette_gradient_matches_finite_differences(report):
    rows = {(r["backend"], r["faces"], r["px"]): r["ratio"] for r in report["gradients"]["rows"]}
    assert set(rows) >= {("torch", 1280, 64), ("torch", 20480, 64)}
    assert rows["torch", 1280, 64] == pytest.approx(1.0, abs=0.25)
    assert rows["torch", 20480, 64] == pytest.approx(1.0, abs=0.25)


def test_inference_times_every_batch_and_output_type(report):
    rows = report["inference"]["rows"]
    assert {(r["batch"], r["output_type"]) for r in rows} == {(b, t) for b in (1, 8) for t in ("mesh", "trimesh")}
    assert all(r["ms_per_prompt"] > 0 for r in rows)


def test_training_ran_both_stages_and_saved_a_pipeline(report):
    training = report["training"]
    assert training["steps"] == gpu_check.TRAIN_STEPS
    assert training["stage_steps"] == {"1": gpu_check.STAGE1_STEPS, "2": gpu_check.TRAIN_STEPS - gpu_check.STAGE1_STEPS}
    for stage in ("1", "2"):
        assert training[f"stage{stage}_s_per_step"] > 0
        assert training[f"stage{stage}_s_per_step_median"] > 0
    assert training["peak_gib_process_rss" if not torch.cuda.is_available() else "peak_gib_cuda_allocated"] > 0
    pipe = AToMPipeline.from_pretrained(training["pipeline"])
    assert pipe.text_to_triplane.config.text_embed_dim == gpu_check.SIZES["cpu"]["t5"]["d_model"]


def test_unknown_check_is_refused():
    with pytest.raises(SystemExit):
        gpu_check.main(["--checks", "gradients,bogus"])
