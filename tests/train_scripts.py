"""Imports the training scripts for tests (train/ is a folder of scripts, not a package)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_train_script(name: str):
    """Imports train/<name>.py under a private module name."""
    spec = importlib.util.spec_from_file_location(f"_atom_train_{name}", ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
