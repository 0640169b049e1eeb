"""Foley's conditioning: frame sampling and lengths, and the SigLIP2 / CLAP wrappers against transformers."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    ClapTextConfig,
    ClapTextModelWithProjection,
    PreTrainedTokenizerFast,
    Siglip2VisionConfig,
    Siglip2VisionModel,
    SiglipConfig,
    SiglipModel,
    SiglipTextConfig,
    SiglipVisionConfig,
)

from model_core.audio.foley.encoders import (
    ClapTextEncoder,
    SiglipImageEncoder,
    latent_length,
    preprocess_siglip,
    preprocess_synchformer,
    sample_frames,
)


def test_latent_length_is_computed_in_floats_as_released() -> None:
    assert latent_length(201) == 401  # 201 / 25 * 50 = 401.99999999999994
    assert latent_length(250) == 500
    assert latent_length(125) == 250


def test_frame_sampling_follows_the_reader() -> None:
    # 25 fps source to 8 fps: tick k at the accumulated sum of k * 0.125
    times = [i / 25 for i in range(50)]
    picked = sample_frames(times, 8)
    expected, tick = [], 0.0
    for i, t in enumerate(times):
        while t >= tick:
            expected.append(i)
            tick += 0.125
    assert picked == expected
    assert len(picked) == 16 and picked[:4] == [0, 4, 7, 10]
    # a slower source repeats frames; frames after 15 s are not read
    assert sample_frames([0.0, 0.1, 0.2], 25) == [0, 1, 1, 2, 2, 2]
    # the tick is a running sum, not k / fps: at 25 fps on a 25 fps video it passes frame 6 (0.24 s) and
    # takes frame 7 twice; the frame at exactly 15.0 s is still read
    same_rate = sample_frames([i / 25 for i in range(500)], 25)
    assert 6 not in same_rate and same_rate.count(7) == 2
    assert len(same_rate) == 376 and same_rate[-1] == 375
    assert sample_frames([-0.04, 0.0], 25) == [1]


def test_preprocessing_shapes_and_range() -> None:
    frames = torch.randint(0, 256, (3, 40, 60, 3), dtype=torch.uint8)
    sig = preprocess_siglip(frames, size=32)
    sync = preprocess_synchformer(frames, size=24)
    assert sig.shape == (3, 3, 32, 32) and sync.shape == (3, 3, 24, 24)
    assert sig.min() >= -1 and sig.max() <= 1 and sync.min() >= -1 and sync.max() <= 1
    white = torch.full((1, 40, 60, 3), 255, dtype=torch.uint8)
    torch.testing.assert_close(preprocess_synchformer(white, size=24), torch.ones(1, 3, 24, 24))


def test_siglip_wrapper_gives_the_models_image_features() -> None:
    torch.manual_seed(0)
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
    )
    text = SiglipTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    model = SiglipModel(SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())).eval()
    pixels = preprocess_siglip(torch.randint(0, 256, (5, 48, 64, 3), dtype=torch.uint8), size=32)
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixels).pooler_output
    got = SiglipImageEncoder(model, batch_size=2)(pixels)
    assert got.shape == (5, 32)
    torch.testing.assert_close(got, expected)


def test_siglip_wrapper_refuses_a_naflex_siglip2() -> None:
    """google/siglip2-base-patch16-512 loads as model_type "siglip"; a NaFlex SigLIP2 tower is refused, named."""
    config = Siglip2VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    with pytest.raises(ValueError, match="NaFlex SigLIP2.*siglip2_vision_model.*model_type 'siglip'"):
        SiglipImageEncoder(Siglip2VisionModel(config))


def _word_tokenizer() -> PreTrainedTokenizerFast:
    words = [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "noisy,",
        "harsh",
        "a",
        "glass",
        "bottle",
        "clinks",
        "on",
        "table",
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def test_clap_wrapper_tokenizes_negative_and_prompt_together() -> None:
    torch.manual_seed(0)
    config = ClapTextConfig(
        vocab_size=12,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=16,
        max_position_embeddings=100,
        pad_token_id=1,
    )
    model = ClapTextModelWithProjection(config).eval()
    tokenizer = _word_tokenizer()
    prompt = "a glass bottle clinks on a table"
    uncond, cond = ClapTextEncoder(model, tokenizer).encode(prompt)
    batch = tokenizer(["noisy, harsh", prompt], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    assert (
        uncond.shape == cond.shape == (1, 7, 32)
    )  # padded to the longer text, hidden states (not projected)
    torch.testing.assert_close(torch.cat([uncond, cond]), expected)
    long_uncond, _ = ClapTextEncoder(model, tokenizer, max_tokens=3).encode(prompt)
    assert long_uncond.shape[1] == 3
