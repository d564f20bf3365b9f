"""The Gradio app (`app.py`), run as `python app.py` in a subprocess on a tiny random pipeline
and called with `gradio_client`, as a user of a Space would.

The helpers here (`tiny_model`, `running_app`) are shared with `test_app_browser.py`.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import trimesh
from gradio_client import Client
from gradio_client.exceptions import AppError

from atom.data.prompts import SHAPES64
from atom.pipeline import AToMPipeline

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
START_TIMEOUT_S = 180  # importing torch and gradio on 2 busy cores can take half a minute
STOP_TIMEOUT_S = 60


@dataclass
class RunningApp:
    url: str
    process: subprocess.Popen
    model: Path
    tmp: Path  # the app's TMPDIR: its temporary folder is made in there
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_env(tmp: Path) -> dict[str, str]:
    """The environment for the app and for gradio_client: no analytics, no Hub, every temp and
    cache folder inside `tmp` (see shared/BROWSER_TESTING.md)."""
    env = dict(os.environ)
    for name in ("GRADIO_TEMP_DIR", "ATOM_MODEL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        env.pop(name, None)
    env.update(
        GRADIO_ANALYTICS_ENABLED="False",
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TMPDIR=str(tmp),
        XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_CACHE_HOME=str(tmp / "cache"),
        PYTHONUNBUFFERED="1",
        # One torch thread: with two on a 2-core machine that is also busy with other work,
        # OpenMP's spinning makes a tiny model's call ~20x slower (4 s instead of 0.2 s).
        OMP_NUM_THREADS="1",
    )
    return env


def tiny_model(folder: Path) -> Path:
    """A tiny random pipeline saved to `folder` (the text encoder comes from its PyPI package)."""
    AToMPipeline.from_components("tiny").save_pretrained(folder, include_text_encoder=False)
    return folder


def wait_until_up(app: RunningApp, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            pytest.fail(f"app.py exited with {app.process.returncode}:\n{app.log.read_text()}")
        try:
            with urllib.request.urlopen(app.url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"app.py did not answer at {app.url} within {timeout} s:\n{app.log.read_text()}")


def stop(app: RunningApp, timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM (what a Space or docker sends), then wait; returns the exit status."""
    if app.process.poll() is None:
        app.process.send_signal(signal.SIGTERM)
    try:
        return app.process.wait(timeout)
    except subprocess.TimeoutExpired:
        app.process.kill()
        app.process.wait()
        pytest.fail(f"app.py did not stop within {timeout} s of SIGTERM:\n{app.log.read_text()}")


@contextmanager
def running_app(model: Path, tmp: Path, *args: str):
    """`python app.py --model <model> --port <free port> *args`, answering HTTP; stopped on exit.
    Meanwhile this process's temporary files go to `tmp/client_tmp` (gradio_client leaves an
    empty folder in the temp folder for each file it downloads)."""
    app_tmp, client_tmp = tmp / "app_tmp", tmp / "client_tmp"
    app_tmp.mkdir(parents=True, exist_ok=True)
    client_tmp.mkdir(exist_ok=True)
    port = free_port()
    log = tmp / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(APP), "--model", str(model), "--port", str(port), *args],
            cwd=tmp, env=quiet_env(app_tmp), stdout=out, stderr=subprocess.STDOUT,
        )
    app = RunningApp(f"http://127.0.0.1:{port}/", process, model, app_tmp, log)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(client_tmp))
        patch.setenv("TMPDIR", str(client_tmp))
        try:
            wait_until_up(app)
            yield app
        finally:
            stop(app)


def load_mesh(path: str) -> trimesh.Trimesh:
    """The one mesh in a file (kept whole: concatenating scene geometry drops COLOR_0)."""
    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Trimesh):
        return loaded
    (mesh,) = loaded.geometry.values()
    return mesh


# ---- the app as a subprocess ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    with running_app(tiny_model(tmp / "model"), tmp) as app:
        yield app


@contextmanager
def connected(app: RunningApp, downloads: Path):
    """A gradio_client `Client` of `app`, closed on exit (an open heartbeat delays the app's shutdown)."""
    client = Client(app.url, download_files=str(downloads), verbose=False, analytics_enabled=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def client(server):
    with connected(server, server.tmp.parent / "downloads") as client:
        yield client


def test_generate_returns_the_pipelines_colored_mesh_as_glb_first(client, server):
    glb, downloads, info = client.predict("a red cube", api_name="/generate")
    assert glb.endswith("a_red_cube.glb")
    mesh = load_mesh(glb)
    expected = AToMPipeline.from_pretrained(server.model)("a red cube").meshes[0]
    np.testing.assert_allclose(mesh.vertices, expected.vertices, atol=1e-6)
    # glTF's COLOR_0 is linear: the pipeline's sRGB-encoded 8-bit colors, decoded.
    srgb = expected.visual.vertex_colors[:, :3] / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(mesh.visual.vertex_attributes["color"][:, :3], linear, atol=1e-6)
    assert sorted(Path(p).suffix for p in downloads) == [".glb", ".obj"]
    assert len(load_mesh(next(p for p in downloads if p.endswith(".obj"))).faces) == len(mesh.faces)
    assert " s** on cpu" in info and "a red cube (seen in training)" in info


def test_advanced_options_and_interpolation(client):
    glb, downloads, info = client.predict("a cyan torus", 24, "uv", api_name="/generate")
    assert sorted(Path(p).suffix for p in downloads) == [".glb", ".mtl", ".obj", ".png"]
    assert load_mesh(glb).visual.kind == "texture" and "(held out)" in info
    glb, downloads, info = client.predict("a red cube", "a blue torus", 0.25, api_name="/interpolate")
    assert len(load_mesh(glb).faces) > 0 and "a red cube -> a blue torus at 0.25" in info


BAD_INPUT = [
    (("",), "The prompt is empty"),
    (("   ",), "The prompt is empty"),
    (("a red cube " * 20,), "The prompt is too long: 62 tokens; this model reads at most 32"),
    (("x" * 301,), "The prompt is too long: 301 characters"),
    (("a red cube", 1000), "1000"),
    (("a red cube", 16, "stl"), "stl"),
]


def test_bad_input_is_an_error_and_the_app_stays_up(client):
    for args, message in BAD_INPUT:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/generate")
    glb, _, _ = client.predict("a blue cone", api_name="/generate")
    assert len(load_mesh(glb).faces) > 0


def test_twenty_concurrent_clients_all_succeed(server):
    prompts = [record.prompt for record in SHAPES64[::3]][:20]

    def request(prompt: str) -> tuple[str, str]:
        with connected(server, server.tmp.parent / "burst") as client:
            glb, _, info = client.predict(prompt, api_name="/generate")
        return glb, info

    with ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(request, prompts))
    assert len(results) == 20
    for prompt, (glb, info) in zip(prompts, results, strict=True):
        assert prompt in info and len(load_mesh(glb).faces) > 0


def test_sigterm_stops_the_app_and_removes_its_files(server, client):
    """Runs last of the subprocess tests (it stops the shared app)."""
    (app_folder,) = server.tmp.glob("atom-app-*")
    assert any(app_folder.rglob("*.glb"))
    client.close()
    assert stop(server) == 0
    assert not app_folder.exists()
    assert not [p for p in server.tmp.rglob("*") if p.is_file()]


# ---- in-process: the model argument and the file pruning --------------------------------------


@pytest.fixture(scope="module")
def app_module():
    spec = importlib.util.spec_from_file_location("atom_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_missing_model_exits_with_how_to_choose_one(app_module, tmp_path, monkeypatch):
    monkeypatch.setenv("ATOM_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as exit_:
        app_module.main([])
    message = str(exit_.value.code)
    assert f"no model folder at {tmp_path / 'nowhere'}" in message and "--model" in message and "ATOM_MODEL" in message
    assert app_module.DEFAULT_MODEL == ROOT / "pretrained" / "atom-shapes64"


def test_old_request_folders_are_pruned(app_module, tmp_path):
    folders = app_module.ResultFolders(tmp_path, max_age_s=60)
    old, recent = folders.new(), folders.new()
    os.utime(old, (time.time() - 120,) * 2)
    newest = folders.new()
    assert not old.exists() and recent.exists() and newest.exists()


def test_examples_are_labelled_seen_and_held_out(app_module):
    seen, held_out = app_module.example_prompts()
    assert len(seen) == len(held_out) == 8 and not set(seen) & set(held_out)
    assert {app_module.prompt_split(p) for p in seen} == {"seen in training"}
    assert {app_module.prompt_split(p) for p in held_out} == {"held out"}
    assert app_module.prompt_split("  A  Red Sphere ") == "held out"
    assert app_module.prompt_split("a red ball") == "new prompt"
