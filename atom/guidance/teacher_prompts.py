"""The teacher's own text conditioning: its text encoder, view-dependent prompts, the null prompt."""
from __future__ import annotations

import json
import os

import torch

from ..models.text_encoding import _ENCODER_ONLY_CLASSES, PromptEmbeddingCache, load_text_encoder
from ..render.cameras import Cameras
from .teacher import TeacherCondition

SHAPES_PRIOR_CLASS = "ShapesPriorPipeline"


class TeacherPrompts:
    """Embeds prompts for a teacher, caching each distinct prompt.

    Args:
        tokenizer, text_encoder: the teacher's text encoder (MiniLM for the shapes-prior, T5
            for DeepFloyd IF, CLIP for Stable Diffusion).
        max_length: tokens per prompt.
        null: how the unconditional branch of CFG is conditioned: "zeros" (zero embeddings,
            as the shapes-prior was trained) or "empty" (the empty prompt, as IF and SD).
    """

    def __init__(self, tokenizer, text_encoder, max_length: int, null: str = "empty"):
        if null not in ("zeros", "empty"):
            raise ValueError(f"null must be 'zeros' or 'empty', got {null!r}")
        self.cache = PromptEmbeddingCache(tokenizer, text_encoder, max_length)
        self.null = null
        self._null_embeds: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def for_teacher(cls, name_or_path: str | os.PathLike) -> "TeacherPrompts":
        """The text conditioning that goes with a teacher folder or Hub repo: its `text_encoder`
        and `tokenizer` subfolders when it has them (IF, SD), else MiniLM (the shapes-prior)."""
        from huggingface_hub import hf_hub_download

        from .shapes_prior import TEXT_MAX_LENGTH

        name_or_path = os.fspath(name_or_path)
        local = os.path.isdir(name_or_path)
        index_file = os.path.join(name_or_path, "model_index.json") if local else hf_hub_download(name_or_path, "model_index.json")
        with open(index_file) as f:
            index = json.load(f)
        if index.get("_class_name") == SHAPES_PRIOR_CLASS or index.get("text_encoder", [None])[0] is None:
            return cls(*load_text_encoder(None), max_length=TEXT_MAX_LENGTH, null="zeros")
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        # The pipeline's own subfolders (`load_text_encoder` expects a tokenizer beside the
        # model, which pipeline folders keep apart; a Hub id takes them as `subfolder`).
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, subfolder="tokenizer")
        config = AutoConfig.from_pretrained(name_or_path, subfolder="text_encoder")
        model_class = _ENCODER_ONLY_CLASSES.get(config.model_type, AutoModel)
        text_encoder = model_class.from_pretrained(name_or_path, subfolder="text_encoder").eval().requires_grad_(False)
        return cls(tokenizer, text_encoder, max_length=min(getattr(tokenizer, "model_max_length", 77), 77), null="empty")

    def encode_all(self, prompts: list[str], device: torch.device | str) -> None:
        """Encodes `prompts` and the null prompt on `device`, then releases the text encoder:
        a training loop that asks only for these prompts never runs it again, and a T5-XXL
        (19 GB in fp32) does not stay in memory beside the teacher."""
        self.cache.text_encoder.to(device)
        self.cache(list(dict.fromkeys(prompts)))
        self._null()
        self.cache.release_encoder()

    def _null(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._null_embeds is None:
            if self.null == "zeros":
                probe, mask = self.cache(["a"])
                self._null_embeds = torch.zeros_like(probe[0]), torch.ones_like(mask[0])
            else:
                tokens = self.cache.tokenizer([""], padding="max_length", max_length=self.cache.max_length, return_tensors="pt")
                if self.cache.text_encoder is None:
                    raise KeyError("the null prompt was not encoded before the text encoder was released")
                with torch.inference_mode():
                    embeds = self.cache.text_encoder(
                        input_ids=tokens["input_ids"].to(self.cache.text_encoder.device),
                        attention_mask=tokens["attention_mask"].to(self.cache.text_encoder.device),
                    ).last_hidden_state
                self._null_embeds = embeds[0].clone(), tokens["attention_mask"][0].bool()
        return self._null_embeds

    def condition(self, prompts: list[str], cameras: Cameras | None = None) -> TeacherCondition:
        """A `TeacherCondition` for B prompts (one per render) and their cameras."""
        embeds, mask = self.cache(prompts)
        null_embeds, null_mask = self._null()
        batch = len(prompts)
        return TeacherCondition(
            embeds=embeds,
            mask=mask,
            uncond_embeds=null_embeds.expand(batch, -1, -1),
            uncond_mask=null_mask.expand(batch, -1),
            cameras=cameras,
        )
