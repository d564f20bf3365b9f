"""The text encoder on the real all-MiniLM-L6-v2 weights (shipped by a package, offline) and a tiny random T5."""
from pathlib import Path

import pytest
import torch
from transformers import BertModel, T5Config, T5EncoderModel, T5ForConditionalGeneration

from atom.models import (
    PromptEmbeddingCache,
    TextToTriplane,
    atom_model_config,
    default_text_encoder_path,
    encode_prompts,
    load_text_encoder,
)


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder()


def test_default_encoder_is_frozen_minilm(minilm):
    tokenizer, encoder = minilm
    assert isinstance(encoder, BertModel)
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())


def test_encode_shapes_and_mask(minilm):
    tokenizer, encoder = minilm
    prompts = ["a red cube", "a blue torus lying flat on the ground"]
    embeds, mask = encode_prompts(tokenizer, encoder, prompts, max_length=16)
    assert embeds.shape == (2, 16, 384) and embeds.dtype == torch.float32
    assert mask.shape == (2, 16) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    assert (embeds[0] - embeds[1]).abs().max() > 0.1
    stripped, _ = encode_prompts(tokenizer, encoder, ["  a red cube\n"], max_length=16)
    assert torch.equal(stripped[0], embeds[0])


def test_embeddings_train_the_triplane_network(minilm):
    """Embeddings made under inference_mode still work as inputs of a network that is trained."""
    embeds, mask = encode_prompts(*minilm, ["a green cone"], max_length=8)
    torch.manual_seed(0)
    model = TextToTriplane(**atom_model_config("tiny", text_embed_dim=384)[0])
    model(embeds, mask).square().mean().backward()
    assert model.text_proj.weight.grad.abs().sum() > 0


def test_truncation_warns_with_the_prompt(minilm):
    prompt = "a very large purple snowman wearing a tiny orange hat next to a yellow pyramid"
    with pytest.warns(UserWarning, match="truncated") as record:
        embeds, mask = encode_prompts(*minilm, [prompt, "a cube"], max_length=8)
    assert len(record) == 1 and prompt in str(record[0].message)
    assert embeds.shape == (2, 8, 384) and mask[0].all()


@pytest.mark.parametrize(
    ("prompts", "max_length", "error", "match"),
    [
        ("a red cube", 8, TypeError, "list of strings"),
        ([], 8, ValueError, "at least one"),
        (["a cube", "   "], 8, ValueError, r"prompts\[1\]"),
        (["a cube", 3], 8, TypeError, r"prompts\[1\] must be a str"),
        (["a cube"], 0, ValueError, "max_length"),
    ],
)
def test_bad_inputs_raise(minilm, prompts, max_length, error, match):
    with pytest.raises(error, match=match):
        encode_prompts(*minilm, prompts, max_length=max_length)


def test_cache_encodes_each_prompt_once(minilm):
    tokenizer, encoder = minilm
    encoded_rows = []
    handle = encoder.register_forward_pre_hook(
        lambda module, args, kwargs: encoded_rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        cache = PromptEmbeddingCache(tokenizer, encoder, max_length=12)
        embeds, mask = cache(["a red cube", "a cyan torus", "a red cube"])
        assert encoded_rows == [2]
        assert embeds.shape == (3, 12, 384) and mask.shape == (3, 12)
        assert torch.equal(embeds[0], embeds[2])
        again, _ = cache([" a cyan torus ", "a pink capsule"])
        assert encoded_rows == [2, 1]
        assert torch.equal(again[0], embeds[1])
        assert len(cache) == 3 and "a red cube" in cache and "a blue cone" not in cache
        direct, _ = encode_prompts(tokenizer, encoder, ["a pink capsule"], max_length=12)
        assert torch.allclose(cache["a pink capsule"][0], direct[0], atol=1e-5)
        # Released: cached prompts still come back, a new one is a clear error.
        cache.release_encoder()
        assert torch.equal(cache(["a red cube"])[0][0], embeds[0])
        with pytest.raises(KeyError, match="a blue cone"):
            cache(["a blue cone"])
    finally:
        handle.remove()


def test_t5_checkpoint_loads_only_the_encoder(tmp_path, minilm):
    """A tiny random T5 (with the MiniLM tokenizer) saved locally loads as T5EncoderModel."""
    tokenizer, _ = minilm
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    t5_tokenizer, encoder = load_text_encoder(tmp_path)
    assert type(encoder) is T5EncoderModel
    assert not any(p.requires_grad for p in encoder.parameters())
    embeds, mask = encode_prompts(t5_tokenizer, encoder, ["an orange cube", "a cone"], max_length=10)
    assert embeds.shape == (2, 10, 32) and mask.sum(1).tolist() == [5, 4]


def test_default_path_is_a_local_folder():
    assert (Path(default_text_encoder_path()) / "config.json").is_file()
