"""Command line: prompts -> mesh files.

    python -m atom "a red cube" -o red_cube.glb
    python -m atom "a red cube" "a blue torus" -o out/ --format obj --uv-texture

One prompt and an `-o` ending in .glb/.obj/.ply writes that file; otherwise `-o` is a folder
(created if need be) and each prompt gets `<slug of the prompt>.<format>` there. The model is
`--model`, else the environment variable ATOM_MODEL, else the repository's
`pretrained/atom-shapes64`. Results go to stdout (one line per prompt: prompt, file, seconds);
messages go to stderr. Exit status: 0 on success, 2 on bad input (empty prompt, unknown
format, a model that cannot be found or loaded, ...).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

import torch

from .export import EXPORT_FORMATS, TEXTURE_SIZE_RANGE, export_mesh

logger = logging.getLogger("atom")

MODEL_ENV = "ATOM_MODEL"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "pretrained" / "atom-shapes64"
RESOLUTION_RANGE = (4, 512)  # what AToMPipeline accepts as marching_resolution
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_HOW_TO_CHOOSE_A_MODEL = (
    f"pass --model with a pipeline folder or a Hub repo id (owner/name), or set {MODEL_ENV}; "
    "a folder comes from AToMPipeline.save_pretrained (for example the training script's output)"
)


class UsageError(Exception):
    """Bad command-line input; `main` reports it and returns 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m atom",
        description="Generate textured meshes from text prompts with an AToM model.",
    )
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help='text prompt(s), e.g. "a red cube"')
    parser.add_argument(
        "-o", "--output", default=".",
        help="output file (one prompt, suffix .glb/.obj/.ply) or folder (default: the current folder)",
    )
    parser.add_argument(
        "--model", default=None,
        help=f"pipeline folder or Hub repo id (default: ${MODEL_ENV}, else {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--format", choices=EXPORT_FORMATS, default=None, help="file format (default: from -o's suffix, else glb)"
    )
    parser.add_argument(
        "--resolution", type=_resolution, default=None,
        help=f"marching resolution, cubes per axis in {list(RESOLUTION_RANGE)} (default: the model's)",
    )
    parser.add_argument("--uv-texture", action="store_true", help="bake colors into a UV texture (glb, obj)")
    parser.add_argument(
        "--texture-size", type=_texture_size, default=512, help="UV texture width = height, pixels (default: 512)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line on `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and the error (or --help)
        return exit_.code if isinstance(exit_.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        prompts = _check_prompts(args.prompts)
        file_format, paths = _output_paths(prompts, args.output, args.format)
        if args.uv_texture and file_format == "ply":
            raise UsageError("--uv-texture needs --format glb or obj; PLY carries vertex colors only")
        device = _device(args.device)
        pipe = load_pipeline(args.model or os.environ.get(MODEL_ENV) or str(DEFAULT_MODEL), device)
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    for prompt, path in zip(prompts, paths):
        start = time.perf_counter()
        mesh = pipe(prompt, marching_resolution=args.resolution).meshes[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        export_mesh(mesh, path, file_format, uv_texture=args.uv_texture, texture_size=args.texture_size)
        empty = "  (empty: no surface)" if len(mesh.faces) == 0 else ""
        print(f"{prompt!r} -> {path}  {time.perf_counter() - start:.2f} s{empty}", flush=True)
    return 0


def slugify(prompt: str, max_length: int = 64) -> str:
    """A file name stem from a prompt: lowercase ASCII letters and digits joined by "_" ("mesh" if none)."""
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:max_length].rstrip("_")
    return slug or "mesh"


def _check_prompts(prompts: list[str]) -> list[str]:
    """`prompts` stripped of outer whitespace; an empty one is a UsageError naming it."""
    for number, prompt in enumerate(prompts, 1):
        if not prompt.strip():
            raise UsageError(
                f"prompt {number} of {len(prompts)} is empty ({prompt!r}); every prompt must be non-empty text"
            )
    return [prompt.strip() for prompt in prompts]


def _output_paths(prompts: list[str], output: str, file_format: str | None) -> tuple[str, list[Path]]:
    """The format and one path per prompt: `output` is a file for one prompt with a format
    suffix, a folder otherwise (an existing folder, a trailing slash, or no suffix)."""
    target = Path(output).expanduser()
    suffix = target.suffix.lstrip(".").lower()
    is_folder = target.is_dir() or output.endswith(("/", os.sep)) or not suffix
    if is_folder:
        file_format = file_format or "glb"
        stems = _unique([slugify(p) for p in prompts])
        return file_format, [target / f"{stem}.{file_format}" for stem in stems]
    if suffix not in EXPORT_FORMATS:
        raise UsageError(f"unknown format {target.suffix!r} in -o {output}; choose one of {', '.join(EXPORT_FORMATS)}")
    if len(prompts) > 1:
        raise UsageError(f"-o {output} names one file but {len(prompts)} prompts were given; pass a folder")
    if file_format is not None and file_format != suffix:
        raise UsageError(f"--format {file_format} contradicts -o {output}; drop one of them")
    return suffix, [target]


def _unique(stems: list[str]) -> list[str]:
    """`stems` with repeats numbered: ["a", "a", "b"] -> ["a", "a_2", "b"]."""
    seen: dict[str, int] = {}
    unique = []
    for stem in stems:
        seen[stem] = seen.get(stem, 0) + 1
        unique.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return unique


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"unknown --device {name!r}: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} but CUDA is not available here; use --device cpu")
    return device


def load_pipeline(model: str, device: torch.device):
    """The pipeline of a local folder or Hub repo id, on `device` (the CLI's and the app's loader).

    Raises:
        UsageError: naming the model and how to choose one, when it cannot be found or loaded.
    """
    from .pipeline import AToMPipeline

    if not Path(model).expanduser().is_dir() and not _HUB_ID.fullmatch(model):
        raise UsageError(f"no model folder at {model}; {_HOW_TO_CHOOSE_A_MODEL}")
    logger.info("loading %s on %s", model, device)
    try:
        pipe = AToMPipeline.from_pretrained(os.path.expanduser(model))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot load model {model!r}: {error}; {_HOW_TO_CHOOSE_A_MODEL}") from error
    return pipe.to(device)


def _resolution(text: str) -> int:
    return _int_in_range(text, RESOLUTION_RANGE, "resolution")


def _texture_size(text: str) -> int:
    return _int_in_range(text, TEXTURE_SIZE_RANGE, "texture size")


def _int_in_range(text: str, bounds: tuple[int, int], what: str) -> int:
    low, high = bounds
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what} must be an integer in [{low}, {high}], got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
