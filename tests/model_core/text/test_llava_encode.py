"""LLaVA text(-image) encode at a tiny size: legacy image-token expansion, crop, masks, unconditional branch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_core.text.llava import (
    ImageMaskMode,
    LlavaTextEncoder,
    compact_valid_prefix,
    expand_image_tokens,
    measure_crop_start,
)
from model_core.text.templates import IDENTITY_SUFFIX, VIDEO_TEMPLATE, identity_prompt

PROMPT = "A woman in a red coat holds a bottle of shampoo and smiles at the camera in a bright bathroom ."
N_IMG = 576  # (336 / 14) ** 2
EXTRA = N_IMG - 1


def _encoder(model, tokenizer, template, **kwargs) -> LlavaTextEncoder:
    return LlavaTextEncoder(model, tokenizer, template=template, **kwargs)


def _pixels(seed: int, k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, k, 3, 336, 336, generator=g)


def _n_prompt_tokens(tokenizer, template, text: str) -> int:
    """Tokens of the templated text (with suffixes) after the crop."""
    return len(tokenizer(text)["input_ids"]) - template.crop_start


# --- the expansion itself, against hand-written layouts ------------------------------------------------------


def test_expand_image_tokens_layout_by_hand() -> None:
    img, pad = 9, 0
    ids = torch.tensor([[5, 6, img, 7, pad, pad], [5, img, 6, 7, 8, pad]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
    embeds = torch.arange(1, 13, dtype=torch.float32).view(2, 6, 1).repeat(1, 1, 2)  # value = 1 + flat index
    feats = torch.tensor([[[100.0] * 2, [101.0] * 2, [102.0] * 2], [[200.0] * 2, [201.0] * 2, [202.0] * 2]])
    seq = expand_image_tokens(ids, mask, embeds, feats, image_token_id=img, pad_token_id=pad)

    assert seq.embeds.shape == (2, 8, 2)
    assert seq.embeds[0, :, 0].tolist() == [1, 2, 100, 101, 102, 4, 0, 0]  # pads zeroed
    assert seq.embeds[1, :, 0].tolist() == [7, 200, 201, 202, 9, 10, 11, 0]
    assert seq.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]]
    assert seq.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 1, 1], [0, 1, 2, 3, 4, 5, 6, 1]]
    assert seq.image_positions.tolist() == [
        [False, False, True, True, True, False, False, False],
        [False, True, True, True, False, False, False, False],
    ]


def test_expand_two_images_per_row_keeps_order() -> None:
    img = 9
    ids = torch.tensor([[5, img, 6, img, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    embeds = torch.zeros(1, 5, 1)
    feats = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])
    seq = expand_image_tokens(ids, mask, embeds, feats, image_token_id=img, pad_token_id=None)
    assert seq.embeds[0, :, 0].tolist() == [0, 1, 2, 0, 3, 4, 0]
    assert seq.image_positions[0].nonzero().flatten().tolist() == [1, 2, 4, 5]


def test_expand_rejects_uneven_image_counts() -> None:
    ids = torch.tensor([[9, 1], [1, 1]])
    with pytest.raises(ValueError, match="same number of <image>"):
        expand_image_tokens(ids, torch.ones_like(ids), torch.zeros(2, 2, 1), torch.zeros(1, 3, 1), 9)


def test_compact_valid_prefix_moves_valid_tokens_first() -> None:
    states = torch.arange(5, dtype=torch.float32).view(1, 5, 1)
    out = compact_valid_prefix(states, torch.tensor([[1, 0, 1, 1, 0]]))
    assert out.mask.tolist() == [[1, 1, 1, 0, 0]]
    assert out.states[0, :, 0].tolist() == [0, 2, 3, 0, 0]


# --- templates and crop --------------------------------------------------------------------------------------


def test_template_crop_is_checked_against_the_tokenizer(llava_model, llama_tokenizer) -> None:
    with pytest.raises(ValueError, match="crop_start=95"):
        _encoder(llava_model, llama_tokenizer, VIDEO_TEMPLATE)
    measured = measure_crop_start(llama_tokenizer, VIDEO_TEMPLATE)
    assert measured == len(llama_tokenizer(VIDEO_TEMPLATE.prefix)["input_ids"])
    assert llama_tokenizer.convert_ids_to_tokens(
        llama_tokenizer(VIDEO_TEMPLATE.format("a cat sleeps"))["input_ids"]
    )[measured : measured + 4] == ["a", "cat", "sleeps", "<|eot_id|>"]


def test_identity_suffix_follows_final_eot_in_subject_order() -> None:
    text = identity_prompt(VIDEO_TEMPLATE.format("x"), ["woman", "dog"])
    assert text.endswith("x<|eot_id|>\nThe woman looks like<image>\nThe dog looks like<image>")
    assert IDENTITY_SUFFIX == "\nThe {word} looks like<image>"


# --- T2V: language model only ------------------------------------------------------------------------------------


def test_t2v_language_model_only_takes_hidden_states_minus_3(
    llava_model, llama_tokenizer, video_template
) -> None:
    lm = llava_model.model.language_model
    enc = _encoder(lm, llama_tokenizer, video_template)
    assert not enc.supports_images
    out = enc.encode(["a cat sleeps", PROMPT])
    assert out.states.shape == (2, 256, 32)
    assert out.mask.tolist()[0][:5] == [1, 1, 1, 1, 0]  # a cat sleeps <|eot_id|>
    assert out.mask[1].sum().item() == _n_prompt_tokens(
        llama_tokenizer, video_template, video_template.format(PROMPT)
    )

    # hidden_states[-3] of a 4-layer model is the raw output of layer 1 (no final norm)
    captured = {}
    handle = lm.layers[1].register_forward_hook(
        lambda m, i, o: captured.setdefault("h", o[0] if isinstance(o, tuple) else o)
    )
    ids = llama_tokenizer(
        [video_template.format("a cat sleeps")],
        max_length=enc.max_length,
        padding="max_length",
        return_tensors="pt",
    )
    with torch.no_grad():
        lm(**ids)
    handle.remove()
    torch.testing.assert_close(out.states[0], captured["h"][0, video_template.crop_start :])


def test_t2v_prompt_starts_at_crop(llava_model, llama_tokenizer, video_template) -> None:
    enc = _encoder(llava_model.model.language_model, llama_tokenizer, video_template)
    a, b = enc.encode(["a cat sleeps"]), enc.encode(["the cat sleeps"])
    assert not torch.allclose(a.states[0, 0], b.states[0, 0])  # position 0 is the first prompt word


# --- HunyuanCustom: one and several subjects -----------------------------------------------------------------


def test_one_subject_shapes_mask_and_image_positions(llava_model, llama_tokenizer, video_template) -> None:
    enc = _encoder(llava_model, llama_tokenizer, video_template)
    out = enc.encode([PROMPT], ["woman"], _pixels(0, 1))
    assert out.states.shape == (1, 256 + EXTRA, 32)
    text = identity_prompt(video_template.format(PROMPT), ["woman"])
    n_text = _n_prompt_tokens(llama_tokenizer, video_template, text)  # incl. the <image> slot
    # legacy mask: tokenizer mask (cropped) then 575 ones: text prefix, padding zeros, ones at the very end
    expected = torch.zeros(256 + EXTRA, dtype=torch.long)
    expected[:n_text] = 1
    expected[256:] = 1
    assert torch.equal(out.mask[0], expected)
    assert out.mask.sum().item() == n_text + EXTRA  # = text tokens + all 576 image tokens

    # image tokens sit at [n_text - 1, n_text - 1 + 576): another image changes exactly those and later positions
    other = enc.encode([PROMPT], ["woman"], _pixels(1, 1))
    first_image = n_text - 1
    torch.testing.assert_close(out.states[0, :first_image], other.states[0, :first_image])
    assert not torch.allclose(out.states[0, first_image], other.states[0, first_image])


def test_matches_current_transformers_llava_on_pre_expanded_ids(
    llava_model, llama_tokenizer, video_template
) -> None:
    """Without pad zeroing, the legacy expansion must equal transformers' own LLaVA fed with 576 <image> ids."""
    enc = _encoder(llava_model, llama_tokenizer, video_template, pad_token_id=None)
    enc.pad_token_id = None
    pixels = _pixels(2, 1)
    ours = enc.encode([PROMPT], ["woman"], pixels)

    text = identity_prompt(video_template.format(PROMPT), ["woman"])
    tok = llama_tokenizer([text], max_length=enc.max_length, padding="max_length", return_tensors="pt")
    ids, mask = tok["input_ids"][0], tok["attention_mask"][0]
    img_id = llama_tokenizer.convert_tokens_to_ids("<image>")
    p = int((ids == img_id).nonzero())
    ids_x = torch.cat([ids[:p], torch.full((N_IMG,), img_id), ids[p + 1 :]])[None]
    mask_x = torch.cat([mask[:p], torch.ones(N_IMG, dtype=mask.dtype), mask[p + 1 :]])[None]
    pos = (mask_x.cumsum(-1) - 1).masked_fill(mask_x == 0, 1)
    with torch.no_grad():
        ref = llava_model(
            input_ids=ids_x,
            pixel_values=pixels[0],
            attention_mask=mask_x,
            position_ids=pos,
            output_hidden_states=True,
        ).hidden_states[-3][:, video_template.crop_start :]
    torch.testing.assert_close(ours.states, ref)


def test_pad_embeddings_are_zeroed_as_legacy(llava_model, llama_tokenizer, video_template) -> None:
    import copy

    model = copy.deepcopy(llava_model)
    with torch.no_grad():  # random init zeroes the padding_idx row; give it a value so zeroing is visible
        model.model.language_model.embed_tokens.weight[llama_tokenizer.pad_token_id] = 1.0
    zeroed = _encoder(model, llama_tokenizer, video_template).encode([PROMPT], ["woman"], _pixels(0, 1))
    plain = _encoder(model, llama_tokenizer, video_template)
    plain.pad_token_id = None
    kept = plain.encode([PROMPT], ["woman"], _pixels(0, 1))
    valid = zeroed.mask[0, :200].bool()  # the text prefix: identical either way (pads are masked keys)
    torch.testing.assert_close(zeroed.states[0, :200][valid], kept.states[0, :200][valid])
    assert not torch.allclose(zeroed.states[0, -1], kept.states[0, -1])  # padding rows (at the end) differ


def test_two_subjects(llava_model, llama_tokenizer, video_template) -> None:
    enc = _encoder(llava_model, llama_tokenizer, video_template)
    out = enc.encode(["A man and a dog walk along a beach at sunset ."], ["man", "dog"], _pixels(3, 2))
    assert out.states.shape == (1, 256 + 2 * EXTRA, 32)
    text = identity_prompt(
        video_template.format("A man and a dog walk along a beach at sunset ."), ["man", "dog"]
    )
    n_text = _n_prompt_tokens(llama_tokenizer, video_template, text)
    assert out.mask.sum().item() == n_text + 2 * EXTRA
    assert out.mask[0, -2 * EXTRA :].all() and out.mask[0, n_text:256].sum() == 0

    # the second image only moves positions from its own slot on: first slot = last token - 1 of the text
    swapped = torch.cat([_pixels(3, 2)[:, :1], _pixels(9, 1)], dim=1)
    other = enc.encode(["A man and a dog walk along a beach at sunset ."], ["man", "dog"], swapped)
    second_image = n_text - 1 + EXTRA  # after the first block of 576 and the second suffix's words
    torch.testing.assert_close(out.states[0, :second_image], other.states[0, :second_image])
    assert not torch.allclose(out.states[0, second_image], other.states[0, second_image])


def test_unconditional_legacy_keeps_one_image_slot(llava_model, llama_tokenizer, video_template) -> None:
    enc = _encoder(llava_model, llama_tokenizer, video_template)
    neg = "low quality"
    out = enc.encode_unconditional([neg], ["woman"])
    n_text = _n_prompt_tokens(
        llama_tokenizer, video_template, identity_prompt(video_template.format(neg), ["person"])
    )
    assert out.states.shape == (1, 256 + EXTRA, 32)
    assert out.mask[0, :n_text].all() and out.mask[0, n_text:].sum() == 0  # text + the <image> slot

    # the all-white image is what the vision tower saw, and the suffix says "person": same as passing both
    from model_core.vision.image import llava_pixels, white_image

    white = llava_pixels(white_image(40, 60))[None, None]
    torch.testing.assert_close(out.states, enc.encode([neg], ["person"], white, unconditional=True).states)


def test_unconditional_suffix_says_person_as_released(llava_model, llama_tokenizer, video_template) -> None:
    """The release tokenizes the negative prompt with `text2tokens`' default name 'person', not the subject."""
    enc = _encoder(llava_model, llama_tokenizer, video_template)
    neg = "low quality"
    person = llama_tokenizer.convert_tokens_to_ids("person")
    assert person != llama_tokenizer.unk_token_id
    from model_core.vision.image import llava_pixels, white_image

    white = llava_pixels(white_image(336, 336))[None, None]
    out = enc.encode_unconditional([neg], ["woman"])
    as_person = enc.encode([neg], ["person"], white, unconditional=True)
    assert torch.equal(out.states, as_person.states) and torch.equal(out.mask, as_person.mask)
    kept = enc.encode_unconditional([neg], ["woman"], negative_word=None)  # the subject word instead
    assert torch.equal(kept.states, enc.encode([neg], ["woman"], white, unconditional=True).states)
    assert not torch.allclose(out.states, kept.states)

    # several subjects: one "person" suffix and one white image each
    two = enc.encode_unconditional([neg], ["man", "dog"])
    both = enc.encode([neg], ["person", "person"], white.expand(1, 2, -1, -1, -1), unconditional=True)
    assert torch.equal(two.states, both.states) and torch.equal(two.mask, both.mask)
    n_text = _n_prompt_tokens(
        llama_tokenizer, video_template, identity_prompt(video_template.format(neg), ["person"] * 2)
    )
    assert two.mask[0, :n_text].all() and two.mask[0, n_text:].sum() == 0

    text = identity_prompt(video_template.format(neg), ["person"])
    ids = llama_tokenizer(text)["input_ids"]
    assert llama_tokenizer.convert_ids_to_tokens(ids[-5:]) == ["The", "person", "looks", "like", "<image>"]


def test_clean_mode_masks_exact_positions(llava_model, llama_tokenizer, video_template) -> None:
    enc = _encoder(llava_model, llama_tokenizer, video_template, mask_mode=ImageMaskMode.CLEAN)
    prompt = "A man and a dog walk along a beach at sunset ."
    words = ["man", "dog"]
    text = identity_prompt(video_template.format(prompt), words)
    n_text = _n_prompt_tokens(llama_tokenizer, video_template, text)
    cond = enc.encode([prompt], words, _pixels(4, 2))
    # valid: text incl. both image blocks, contiguous, no trailing ones
    assert cond.mask[0, : n_text + 2 * EXTRA].all() and cond.mask[0, n_text + 2 * EXTRA :].sum() == 0

    uncond = enc.encode_unconditional([prompt], words)
    n_words = n_text - 2  # every token but the two <image> slots
    assert uncond.mask[0, :n_words].all() and uncond.mask[0, n_words:].sum() == 0
    legacy = _encoder(llava_model, llama_tokenizer, video_template).encode_unconditional([prompt], words)
    # text before the first image is identical; the second suffix's words follow it directly
    first_image = (
        n_text
        - 1
        - (len(llama_tokenizer("The person looks like", add_special_tokens=False)["input_ids"]) + 1)
    )
    torch.testing.assert_close(uncond.states[0, :first_image], legacy.states[0, :first_image])
    torch.testing.assert_close(uncond.states[0, first_image], legacy.states[0, first_image + N_IMG])
    assert uncond.states[0, n_words:].abs().sum() == 0


def test_deterministic(llava_model, llama_tokenizer, video_template) -> None:
    enc = _encoder(llava_model, llama_tokenizer, video_template)
    a = enc.encode([PROMPT], ["woman"], _pixels(5, 1))
    b = enc.encode([PROMPT], ["woman"], _pixels(5, 1))
    assert torch.equal(a.states, b.states) and torch.equal(a.mask, b.mask)


def test_batched_rows_equal_single_rows(llava_model, llama_tokenizer, video_template) -> None:
    enc = _encoder(llava_model, llama_tokenizer, video_template)
    prompts = [PROMPT, "a cat sleeps"]
    pix = torch.cat([_pixels(6, 1), _pixels(7, 1)])
    both = enc.encode(prompts, ["woman"], pix)
    for i, p in enumerate(prompts):
        one = enc.encode([p], ["woman"], pix[i : i + 1])
        torch.testing.assert_close(both.states[i], one.states[0], atol=1e-5, rtol=1e-5)
        assert torch.equal(both.mask[i], one.mask[0])


def test_too_long_prompt_names_the_limit(llava_model, llama_tokenizer, video_template) -> None:
    enc = _encoder(llava_model, llama_tokenizer, video_template)
    with pytest.raises(ValueError, match="too long"):
        enc.encode([" ".join(["cat"] * 300)], ["woman"], _pixels(0, 1))


def test_identity_pixel_values_shape(llava_model, llama_tokenizer, video_template) -> None:
    enc = _encoder(llava_model, llama_tokenizer, video_template)
    imgs = [np.zeros((40, 30, 3), np.uint8), np.full((10, 90, 3), 128, np.uint8)]
    assert enc.identity_pixel_values(imgs).shape == (1, 2, 3, 336, 336)
