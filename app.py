"""Gradio demo of AToM: a text prompt -> a textured mesh, in one forward pass.

    python app.py                                  # the shipped model, pretrained/atom-shapes64
    python app.py --model DIR_OR_HUB_ID --port 7860
    ATOM_MODEL=user/atom-shapes64 python app.py    # on a Hugging Face Space: set ATOM_MODEL

The pipeline is loaded once, in `main`, before the server starts; `build_demo(pipe, ...)` only
wires the page, so tests can build it around any pipeline. It runs on CUDA when there is a
GPU (inside `spaces.GPU` calls on ZeroGPU), else on the CPU.

API: `/generate` takes the prompt first and returns the GLB first:

    from gradio_client import Client
    glb_path, downloads, info = Client("http://127.0.0.1:7860").predict("a red cube", api_name="/generate")

Files: each request writes its GLB / OBJ into its own folder under one temporary folder of the
app. Folders older than `FILE_MAX_AGE_S` are removed as new requests come in, gradio's own
copies of them likewise (`delete_cache`), and the whole folder when the app stops (Ctrl-C or
SIGTERM).
"""
from __future__ import annotations

# ZeroGPU (Hugging Face Spaces) wants `spaces` imported before torch; elsewhere it is absent.
try:
    import spaces
except ImportError:
    spaces = None

import argparse
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import torch
import trimesh

from atom.__main__ import MODEL_ENV, UsageError, load_pipeline, slugify
from atom.data.prompts import HELD_OUT, SEEN, prompt_for
from atom.data.world import COLORS, SHAPES
from atom.export import export_mesh
from atom.pipeline import AToMPipeline

logger = logging.getLogger("atom.app")

DEFAULT_MODEL = Path(__file__).resolve().parent / "pretrained" / "atom-shapes64"
MAX_PROMPT_CHARS = 300  # checked before tokenizing; the token limit is the model's text_max_length
RESOLUTION_LIMITS = (8, 128)  # marching resolution offered in the page (the pipeline accepts 4-512)
COLOR_MODES = (("Vertex colors", "vertex"), ("UV texture (baked with xatlas)", "uv"))
FILE_MAX_AGE_S = 3600  # how long a request's files stay downloadable
CACHE_SWEEP_S = 600  # how often gradio removes its expired copies
THEME = gr.themes.Soft()
VIEWER = {  # gr.Model3D: light background, seen from above at an angle, framed automatically
    "clear_color": (0.94, 0.95, 0.97, 1.0), "camera_position": (60, 70, None), "display_mode": "solid", "height": 420,
}


def on_gpu(fn: Callable) -> Callable:
    """`spaces.GPU(fn)` when the `spaces` package is importable (ZeroGPU attaches a GPU for each
    call; it pickles the call's arguments and result), else `fn` unchanged."""
    return fn if spaces is None else spaces.GPU(fn)


class ResultFolders:
    """One new folder per request under `root`; folders older than `max_age_s` are removed
    whenever a new one is made."""

    def __init__(self, root: Path, max_age_s: float = FILE_MAX_AGE_S):
        self.root = Path(root)
        self.max_age_s = max_age_s
        self.root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        self.prune()
        return Path(tempfile.mkdtemp(prefix="request-", dir=self.root))

    def prune(self) -> None:
        cutoff = time.time() - self.max_age_s
        for folder in self.root.glob("request-*"):
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)


def prompt_split(prompt: str) -> str:
    """Where a prompt stands in the Shapes64 experiment: "seen in training", "held out" or "new prompt"."""
    text = " ".join(prompt.lower().split())
    if any(record.prompt == text for record in HELD_OUT):
        return "held out"
    if any(record.prompt == text for record in SEEN):
        return "seen in training"
    return "new prompt"


def example_prompts() -> tuple[list[str], list[str]]:
    """(seen, held out) examples: each shape once in each list (seen: the shape with the next
    color of the held-out diagonal, so that every color shows up too)."""
    colors = list(COLORS)
    seen = [prompt_for(shape, colors[(i + 1) % len(colors)]) for i, shape in enumerate(SHAPES)]
    return seen, [record.prompt for record in HELD_OUT]


class MeshService:
    """What the page's events call: input checks, the pipeline, the files.

    Args:
        pipe: a loaded `AToMPipeline`, already on its device.
        folders: where each request's files go.
    """

    def __init__(self, pipe: AToMPipeline, folders: ResultFolders):
        self.pipe = pipe
        self.folders = folders
        self.max_tokens = pipe.config.text_max_length
        # Only prompts, numbers and a trimesh cross the GPU-call boundary, never the pipeline.
        self._prompt_mesh = on_gpu(self._prompt_mesh_on_device)
        self._blend_mesh = on_gpu(self._blend_mesh_on_device)

    @property
    def default_resolution(self) -> int:
        return int(self.pipe.mesh_generator.config.tet_resolution)

    def check_prompt(self, prompt: str | None) -> None:
        """Raises `gr.Error` if `prompt` is empty or longer than the model reads."""
        self._clean(prompt, "prompt")

    def check_pair(self, prompt_a: str | None, prompt_b: str | None) -> None:
        self._clean(prompt_a, "first prompt")
        self._clean(prompt_b, "second prompt")

    def _clean(self, prompt: str | None, name: str) -> str:
        """`prompt` stripped; `gr.Error` naming it if it is empty or longer than the model reads."""
        text = (prompt or "").strip()
        if not text:
            raise gr.Error(f"The {name} is empty: describe a shape, for example 'a red cube'.")
        if len(text) > MAX_PROMPT_CHARS:
            raise gr.Error(f"The {name} is too long: {len(text)} characters, at most {MAX_PROMPT_CHARS}.")
        tokens = len(self.pipe.tokenizer(text)["input_ids"])
        if tokens > self.max_tokens:
            raise gr.Error(f"The {name} is too long: {tokens} tokens; this model reads at most {self.max_tokens}.")
        return text

    def generate(self, prompt: str, resolution: float, colors: str) -> tuple[str, list[str], str]:
        """Prompt -> (GLB path for the viewer, download paths [GLB, OBJ, ...], info markdown).

        Args:
            prompt: the text; empty or over-long prompts raise `gr.Error`.
            resolution: marching resolution, cubes per axis of the tet grid.
            colors: "vertex" (vertex colors) or "uv" (a baked UV texture).
        """
        text = self._clean(prompt, "prompt")
        start = time.perf_counter()
        mesh = self._prompt_mesh(text, int(resolution))
        seconds = time.perf_counter() - start
        logger.info("%r: %d faces in %.2f s", text, len(mesh.faces), seconds)
        glb, files = self._write(mesh, slugify(text), colors, f"{text!r}")
        return glb, files, self._info(mesh, seconds, f"{text} ({prompt_split(text)})")

    def interpolate(
        self, prompt_a: str, prompt_b: str, weight: float, resolution: float, colors: str
    ) -> tuple[str, list[str], str]:
        """The mesh of a blend of two prompts' text embeddings; returns what `generate` returns.

        Args:
            weight: 0 gives `prompt_a`'s mesh, 1 gives `prompt_b`'s.
        """
        text_a, text_b = self._clean(prompt_a, "first prompt"), self._clean(prompt_b, "second prompt")
        weight = float(weight)
        start = time.perf_counter()
        mesh = self._blend_mesh(text_a, text_b, weight, int(resolution))
        seconds = time.perf_counter() - start
        logger.info("%r -> %r at %.2f: %d faces in %.2f s", text_a, text_b, weight, len(mesh.faces), seconds)
        label = f"{text_a} -> {text_b} at {weight:.2f}"
        glb, files = self._write(mesh, slugify(f"{text_a} to {text_b} {round(100 * weight)}"), colors, label)
        return glb, files, self._info(mesh, seconds, label)

    def _prompt_mesh_on_device(self, prompt: str, resolution: int) -> trimesh.Trimesh:
        return self.pipe(prompt, marching_resolution=resolution).meshes[0]

    def _blend_mesh_on_device(self, prompt_a: str, prompt_b: str, weight: float, resolution: int) -> trimesh.Trimesh:
        return self.pipe.interpolate(prompt_a, prompt_b, weights=[weight], marching_resolution=resolution).meshes[0]

    def _write(self, mesh: trimesh.Trimesh, stem: str, colors: str, label: str) -> tuple[str, list[str]]:
        """Writes `<stem>.glb` and `<stem>.obj` (+ .mtl and .png with a UV texture) into a new
        request folder; returns (GLB path, all paths)."""
        if len(mesh.faces) == 0:
            gr.Warning(f"{label} gave no surface: the mesh is empty.")
        folder = self.folders.new()
        uv_texture = colors == "uv"
        glb = export_mesh(mesh, folder / f"{stem}.glb", "glb", uv_texture=uv_texture)
        obj = export_mesh(mesh, folder / f"{stem}.obj", "obj", uv_texture=uv_texture)
        extras = [obj.with_suffix(".mtl"), obj.with_suffix(".png")] if uv_texture and len(mesh.faces) else []
        return str(glb), [str(path) for path in (glb, obj, *extras)]

    def _info(self, mesh: trimesh.Trimesh, seconds: float, label: str) -> str:
        device = self.pipe.text_to_triplane.device
        return f"**{seconds:.2f} s** on {device.type} · {len(mesh.faces):,} faces · {label}"


def build_demo(
    pipe: AToMPipeline, output_root: str | os.PathLike, *, concurrency_limit: int = 1, max_queue: int = 64
) -> gr.Blocks:
    """The page around a loaded pipeline (nothing is loaded here).

    Args:
        pipe: an `AToMPipeline` on its device.
        output_root: the app's temporary folder; each request writes its files in a new folder there.
        concurrency_limit: pipeline calls running at once (generate and interpolate together).
        max_queue: requests that may wait; more are turned away with an error.
    """
    service = MeshService(pipe, ResultFolders(Path(output_root)))
    seen, held_out = example_prompts()
    resolution_max = max(RESOLUTION_LIMITS[1], service.default_resolution)
    with gr.Blocks(title="AToM: text to mesh", delete_cache=(CACHE_SWEEP_S, FILE_MAX_AGE_S)) as demo:
        gr.Markdown(
            "# AToM: Amortized Text-to-Mesh\n"
            "One network turns a prompt into a textured mesh in a single forward pass, no per-prompt "
            "optimization. The model knows the *Shapes64* world: `a {color} {shape}`."
        )
        with gr.Tab("Text to mesh"), gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", placeholder="a red cube", elem_id="prompt")
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                gr.Examples([[p] for p in seen], inputs=prompt, label="Seen in training")
                gr.Examples([[p] for p in held_out], inputs=prompt, label="Held out (never trained on)")
            with gr.Column():
                outputs = _result_components("")
        with gr.Tab("Interpolation"), gr.Row():
            with gr.Column():
                prompt_a = gr.Textbox(label="First prompt", value=seen[0], elem_id="prompt-a")
                prompt_b = gr.Textbox(label="Second prompt", value=seen[1], elem_id="prompt-b")
                weight = gr.Slider(0, 1, value=0.5, step=0.05, label="Blend: 0 = first prompt, 1 = second")
                blend_button = gr.Button("Blend", variant="primary", elem_id="blend")
            with gr.Column():
                blend_outputs = _result_components("blend-")
        with gr.Accordion("Advanced options", open=False):
            resolution = gr.Slider(
                RESOLUTION_LIMITS[0], resolution_max, value=service.default_resolution, step=4, precision=0,
                label="Marching resolution", info="cubes per axis of the tet grid: finer meshes, slower",
            )
            colors = gr.Radio(list(COLOR_MODES), value="vertex", label="Colors")

        # The check has no concurrency limit, so bad input is reported at once even while the
        # pipeline is busy; `generate` checks again for API callers.
        gr.on(
            [generate_button.click, prompt.submit], service.check_prompt, inputs=prompt,
            concurrency_limit=None, api_visibility="private",
        ).success(
            service.generate, inputs=[prompt, resolution, colors], outputs=outputs,
            api_name="generate", concurrency_id="pipeline",
        )
        blend_button.click(
            service.check_pair, inputs=[prompt_a, prompt_b], concurrency_limit=None, api_visibility="private"
        ).success(
            service.interpolate, inputs=[prompt_a, prompt_b, weight, resolution, colors], outputs=blend_outputs,
            api_name="interpolate", concurrency_id="pipeline",
        )
    return demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue)


def _result_components(prefix: str) -> list[gr.components.Component]:
    """[3D viewer (GLB), downloads, info] with element ids `<prefix>viewer`, ...: the outputs of
    `generate` and `interpolate`."""
    return [
        gr.Model3D(label="Mesh", elem_id=f"{prefix}viewer", **VIEWER),
        gr.File(label="Downloads (GLB, OBJ)", file_count="multiple", interactive=False, elem_id=f"{prefix}downloads"),
        gr.Markdown(elem_id=f"{prefix}info"),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The AToM text-to-mesh demo (Gradio).")
    parser.add_argument("--model", default=None,
                        help=f"pipeline folder or Hub repo id (default: ${MODEL_ENV}, else {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--concurrency", type=int, default=1, help="pipeline calls at once (default: 1)")
    parser.add_argument("--max-queue", type=int, default=64, help="requests that may wait (default: 64)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # gradio closes its server on it; `main` then removes the temp folder


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("atom").setLevel(logging.INFO)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        pipe = load_pipeline(args.model or os.environ.get(MODEL_ENV) or str(DEFAULT_MODEL), device)
    except UsageError as error:
        raise SystemExit(f"app.py: error: {error}") from error
    with tempfile.TemporaryDirectory(prefix="atom-app-") as root:
        logger.info("request files under %s", root)
        # gradio's copies of the outputs go there too, unless the caller chose a folder for them.
        os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(root) / "gradio"))
        demo = build_demo(pipe, Path(root) / "results", concurrency_limit=args.concurrency, max_queue=args.max_queue)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False, theme=THEME)
    logger.info("stopped; removed %s", root)


if __name__ == "__main__":
    main()
