"""Imports the training and benchmark scripts for tests (train/ and benchmarks/ are folders of
scripts, not packages)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(folder: str, name: str):
    spec = importlib.util.spec_from_file_location(f"_atom_{folder}_{name}", ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_train_script(name: str):
    """Imports train/<name>.py under a private module name."""
    return _load("train", name)


def load_benchmark(name: str):
    """Imports benchmarks/<name>.py under a private module name."""
    return _load("benchmarks", name)
