"""Model cards and Hugging Face Hub uploads for `AToMPipeline` folders.

    from atom.hub import prepare_hub_folder, render_model_card, upload_pipeline
    card_data = {"base_model": "user/shapes-prior", "metrics": {"seen": {"accuracy": 0.9}}}
    print(render_model_card(card_data))
    prepare_hub_folder(pipe, "hub/atom-shapes64", card_data)  # to look at before uploading
    upload_pipeline(pipe, "user/atom-shapes64", card_data)  # what pipe.push_to_hub(...) does

The card template is `model_card/atom_model_card.md` (Jinja2) at the top of the repository.
An installed wheel carries it as the resource package `atom.model_card` (pyproject maps the
folder there); a source checkout reads it from the folder itself.
"""
from __future__ import annotations

import importlib.resources
import json
import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "atom_model_card.md"
PAPER_URL = "https://arxiv.org/abs/2402.00867"
DEFAULT_TAGS = ("text-to-3d", "text-to-mesh", "amortized", "score-distillation", "atom", "dmtet", "triplane", "mesh")
DEFAULT_LIMITATIONS = (
    "An unofficial reimplementation: its numbers are not comparable to the paper's, which were "
    "measured with other teachers, prompts and metrics.",
    "It knows what its training prompts cover; prompts far from them (other objects, styles, "
    "scenes) give plausible-looking but wrong meshes.",
    "Meshes are as fine as the marching resolution and carry vertex colors only (no UV "
    "texture, no materials); parts thinner than a grid cell are lost.",
    "It inherits its teacher's biases and failure modes, and score distillation's own "
    "(oversaturated colors, multi-face 'Janus' shapes with image teachers).",
)

# card_data keys -> expected type; every key is optional.
CARD_FIELDS: dict[str, type] = {
    "model_name": str,  # title (default "AToM text-to-mesh")
    "repo_id": str,  # the id in the usage snippet (upload_pipeline sets it)
    "license": str,  # SPDX-like Hub license id (default "apache-2.0")
    "base_model": str,  # the teacher: a Hub id goes into the front matter, anything else only into the text
    "tags": list,  # extra tags, added to DEFAULT_TAGS
    "code_url": str,  # where the reimplementation's code lives
    "example_prompt": str,  # the prompt of the usage snippet (default: the first training prompt)
    "architecture": dict,  # component -> description (prepare_hub_folder fills it from the pipeline)
    "prompt_set": str,  # name of the prompt set (e.g. "Shapes64")
    "train_prompts": list,  # prompts seen in training
    "heldout_prompts": list,  # prompts held out from training (unseen)
    "metrics": dict,  # name -> value, or split -> {name -> value} (e.g. {"seen": {...}, "unseen": {...}})
    "metrics_description": str,  # how the metrics were measured
    "results": str,  # markdown after the metrics table (ablations, comparisons with other runs)
    "samples_image": str,  # an image of samples, relative to the card (e.g. "samples.png")
    "samples_caption": str,  # its alt text
    "training_time": dict,  # stage -> seconds (number) or a description (str)
    "hardware": str,  # what it was trained on
    "training_command": str,  # the exact command line
    "limitations": list,  # added to DEFAULT_LIMITATIONS
}


def _template_text() -> str:
    """The card template, from the installed package or else from the source checkout.

    Raises:
        FileNotFoundError: naming the places looked in.
    """
    try:
        packaged = importlib.resources.files("atom.model_card") / TEMPLATE_NAME
    except ModuleNotFoundError:  # a source checkout installed without the pyproject mapping
        packaged = None
    if packaged is not None and packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parent.parent / "model_card" / TEMPLATE_NAME
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"model card template {TEMPLATE_NAME!r} not found: neither the package resource "
        f"atom.model_card/{TEMPLATE_NAME} nor {checkout} exists"
    )


def _check_card_data(card_data: Mapping[str, Any]) -> dict[str, Any]:
    """`card_data` without None values, after checking keys and types."""
    if not isinstance(card_data, Mapping):
        raise TypeError(f"card_data must be a dict, got {type(card_data).__name__}: {card_data!r}")
    unknown = sorted(set(card_data) - set(CARD_FIELDS))
    if unknown:
        raise ValueError(f"unknown card_data keys {unknown}; allowed: {', '.join(CARD_FIELDS)}")
    data = {key: value for key, value in card_data.items() if value is not None}
    for key, value in data.items():
        expected = CARD_FIELDS[key]
        if expected is list:
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise TypeError(f"card_data[{key!r}] must be a list of strings, got {type(value).__name__}: {value!r}")
            bad = [item for item in value if not isinstance(item, str)]
            if bad:
                raise TypeError(f"card_data[{key!r}] must hold strings only, got {bad!r}")
        elif expected is dict:
            if not isinstance(value, Mapping):
                raise TypeError(f"card_data[{key!r}] must be a dict, got {type(value).__name__}: {value!r}")
        elif not isinstance(value, str) or not value.strip():
            raise TypeError(f"card_data[{key!r}] must be a non-empty string, got {value!r}")
    return data


def _cell(value: Any) -> str:
    """A Markdown table cell: floats to 4 significant digits, missing as an en dash, pipes escaped."""
    if value is None:
        return "–"
    if isinstance(value, float):
        value = f"{value:.4g}"
    return " ".join(str(value).split()).replace("|", "\\|")


def _metrics_table(metrics: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a flat {metric: value} dict or a nested {split: {metric: value}} dict."""
    nested = [isinstance(value, Mapping) for value in metrics.values()]
    if not any(nested):
        return ["metric", "value"], [[_cell(name), _cell(value)] for name, value in metrics.items()]
    if not all(nested):
        flat = [name for name, is_nested in zip(metrics, nested) if not is_nested]
        raise TypeError(f"card_data['metrics'] mixes splits (dicts) and plain values: {flat!r} are not dicts")
    names = list(dict.fromkeys(name for split in metrics.values() for name in split))
    rows = [[_cell(name)] + [_cell(split.get(name)) for split in metrics.values()] for name in names]
    return ["metric"] + [_cell(split) for split in metrics], rows


def _format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _training_time_rows(training_time: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(stage, duration) rows; numbers are seconds, strings are shown as given; a total if all are numbers."""
    rows, total = [], 0.0
    for stage, value in training_time.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"card_data['training_time'][{stage!r}] must be >= 0 seconds, got {value!r}")
            rows.append((_cell(stage), _format_duration(value)))
            total += value
        elif isinstance(value, str):
            rows.append((_cell(stage), _cell(value)))
            total = float("nan")
        else:
            raise TypeError(
                f"card_data['training_time'][{stage!r}] must be seconds (a number) or a string, got {value!r}"
            )
    if len(rows) > 1 and total == total:  # not NaN: every stage was a number
        rows.append(("**total**", f"**{_format_duration(total)}**"))
    return rows


def _is_hub_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def render_model_card(card_data: Mapping[str, Any]) -> str:
    """Renders the Hugging Face model card (README.md) of an AToM pipeline.

    Args:
        card_data: what the card reports; every key is optional and None counts as missing
            (its section is left out). Keys and types are listed in `CARD_FIELDS`: model_name,
            repo_id, license (default "apache-2.0"), base_model (the teacher; a Hub repo id
            also goes into the front matter), tags, code_url, example_prompt, architecture,
            prompt_set, train_prompts / heldout_prompts (lists of prompts), metrics ({name:
            value} or {split: {name: value}}), metrics_description, samples_image (a path relative
            to the card) and samples_caption, training_time ({stage:
            seconds or text}), hardware, training_command, limitations (added to the defaults).

    Returns:
        The card text: YAML front matter (library_name diffusers, pipeline_tag text-to-3d,
        license, tags, base_model) and a Markdown body; `huggingface_hub.ModelCard` parses it.

    Raises:
        ValueError / TypeError: an unknown key or a value of the wrong type, named.
    """
    data = _check_card_data(card_data)
    base_model = data.get("base_model")
    base_model_is_repo_id = base_model is not None and _is_hub_repo_id(base_model)
    if base_model is not None and not base_model_is_repo_id:
        logger.warning("base_model %r is not a Hub repo id: it is named in the card's text only", base_model)
    front_matter = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-3d",
        license=data.get("license", "apache-2.0"),
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *data.get("tags", [])])),
        base_model=base_model if base_model_is_repo_id else None,
    )
    train_prompts, heldout_prompts = data.get("train_prompts", []), data.get("heldout_prompts", [])
    example_prompt = data.get("example_prompt") or [*train_prompts, *heldout_prompts, "a red cube"][0]
    metrics_header, metrics_rows = _metrics_table(data.get("metrics", {}))
    context = {
        **dict.fromkeys(CARD_FIELDS),  # optional fields are None (falsy in the template) when missing
        **data,
        "front_matter": front_matter.to_yaml(),
        "paper_url": PAPER_URL,
        "model_name": data.get("model_name", "AToM text-to-mesh"),
        "repo_id": data.get("repo_id", "path/to/this-folder-or-repo-id"),
        "architecture": [(_cell(name), _cell(details)) for name, details in data.get("architecture", {}).items()],
        "example_prompt_literal": json.dumps(example_prompt, ensure_ascii=False),  # a Python string literal
        "example_file": (re.sub(r"\W+", "_", example_prompt).strip("_") or "mesh") + ".glb",
        "prompt_lists": [
            (title, prompts)
            for title, prompts in (
                ("Seen in training", train_prompts),
                ("Held out, never seen in training", heldout_prompts),
            )
            if prompts
        ],
        "metrics_header": metrics_header,
        "metrics_rows": metrics_rows,
        "training_time_rows": _training_time_rows(data.get("training_time", {})),
        "limitations": [*DEFAULT_LIMITATIONS, *data.get("limitations", [])],
    }
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
    )
    text = environment.from_string(_template_text()).render(context)
    ModelCard(text)  # raises if the front matter does not parse
    return text


def pipeline_architecture(pipe) -> dict[str, str]:
    """component -> a one-line description with parameter counts, from the pipeline itself."""
    from .pipeline import DEFAULT_TEXT_ENCODER

    def parameters(module) -> str:
        count = sum(p.numel() for p in module.parameters())
        return f"{count / 1e6:.1f} M parameters" if count >= 1e5 else f"{count / 1e3:.1f} k parameters"

    generator = pipe.mesh_generator.config
    architecture = {}
    if pipe.text_encoder is not None:
        source = pipe.config.text_encoder_name_or_path
        name = "all-MiniLM-L6-v2" if source == DEFAULT_TEXT_ENCODER else source
        architecture["text encoder (frozen)"] = (
            f"{name} ({type(pipe.text_encoder).__name__}, {parameters(pipe.text_encoder)}, "
            f"{pipe.config.text_max_length} tokens of width {pipe.text_encoder.config.hidden_size})"
        )
    heads = f"SDF / deformation / color MLPs, marching tetrahedra at {generator.tet_resolution}^3 cubes by default"
    if "num_params" in pipe.text_to_triplane.config:  # the hypernetwork baseline (atom.models.hyper_field)
        architecture["text-to-hypernetwork"] = (
            f"{parameters(pipe.text_to_triplane)}, writes a modulation of the field's "
            f"{pipe.text_to_triplane.config.num_params} weights"
        )
        architecture["hypernetwork field-to-mesh generator"] = (
            f"{parameters(pipe.mesh_generator)}, a {generator.field_num_layers}-layer coordinate MLP of width "
            f"{generator.field_hidden_dim} instead of triplanes, {heads}"
        )
        return architecture
    architecture["text-to-triplane"] = (
        f"{parameters(pipe.text_to_triplane)}, triplanes of {pipe.text_to_triplane.config.triplane_channels} channels"
    )
    architecture["triplane-to-mesh generator"] = f"{parameters(pipe.mesh_generator)}, {heads}"
    return architecture


def prepare_hub_folder(pipe, folder: str | Path, card_data: Mapping[str, Any]) -> Path:
    """Writes what `upload_pipeline` uploads: the whole pipeline and its model card.

    Args:
        pipe: an `AToMPipeline`.
        folder: a new or empty folder.
        card_data: as for `render_model_card`; "architecture" defaults to a description of
            `pipe` (parameter counts, marching resolution).

    Returns:
        `folder` as a Path, holding model_index.json, one subfolder per component (config +
        safetensors weights, the text encoder and tokenizer included) and README.md.

    Raises:
        ValueError: `folder` exists and is not an empty folder.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"folder {str(folder)!r} must be new or an empty folder, so that nothing stale is uploaded")
    card_data = {"architecture": pipeline_architecture(pipe), **card_data}
    card = render_model_card(card_data)  # before saving: bad card data fails fast
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, include_text_encoder=True)
    (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


def upload_pipeline(
    pipe,
    repo_id: str,
    card_data: Mapping[str, Any],
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload AToM pipeline",
) -> str:
    """Uploads the pipeline and its model card to a Hub model repository (created if need be).

    The folder is prepared (`prepare_hub_folder`) in a temporary directory that is removed
    afterwards.

    Args:
        pipe: an `AToMPipeline`.
        repo_id: "namespace/name" of the model repository.
        card_data: as for `render_model_card`; its repo_id is set to `repo_id`.
        private: visibility of a newly created repository (None: the Hub's default).
        token: a Hub token; None uses the locally saved one.
        commit_message: the commit's summary line.

    Returns:
        The URL of the commit.

    Raises:
        ValueError: `repo_id` is not "namespace/name"; bad card data (before anything is uploaded).
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not _is_hub_repo_id(repo_id):
        raise ValueError(f"repo_id must be a Hub model id 'namespace/name', got {repo_id!r}")
    card_data = {**card_data, "repo_id": repo_id}
    with tempfile.TemporaryDirectory(prefix="atom-hub-") as tmp:
        folder = prepare_hub_folder(pipe, Path(tmp) / "pipeline", card_data)
        api = HfApi(token=token)
        repo_url = api.create_repo(repo_id, exist_ok=True, private=private)
        logger.info("uploading the pipeline to %s", repo_url)
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return commit.commit_url
