"""CLIP-L pooled text embedding at a tiny size."""

from __future__ import annotations

import torch

from model_core.text.clip import ClipPooledEncoder


def test_pooled_is_final_state_at_end_of_text(clip_model, clip_tokenizer) -> None:
    enc = ClipPooledEncoder(clip_model, clip_tokenizer)
    prompts = ["a cat sleeps", "A man and a dog walk along a beach at sunset ."]
    pooled = enc.encode(prompts)
    assert pooled.shape == (2, 16)
    ids = clip_tokenizer(prompts, max_length=77, padding="max_length", truncation=True, return_tensors="pt")
    assert ids["input_ids"].shape == (2, 77)
    with torch.no_grad():
        last = clip_model(input_ids=ids["input_ids"]).last_hidden_state  # final layer norm applied
    # <|startoftext|> + words + <|endoftext|>: the end token of "a cat sleeps" sits at index 4
    eos = [4, 1 + len(["A", "man", "and", "a", "dog", "walk", "along", "a", "beach", "at", "sunset", "."])]
    for i, e in enumerate(eos):
        assert ids["input_ids"][i, e] == clip_tokenizer.eos_token_id
        torch.testing.assert_close(pooled[i], last[i, e])


def test_padding_and_batching_do_not_change_pooled(clip_model, clip_tokenizer) -> None:
    enc = ClipPooledEncoder(clip_model, clip_tokenizer)
    both = enc.encode(["a cat sleeps", "A woman smiles at the camera ."])
    torch.testing.assert_close(both[0], enc.encode(["a cat sleeps"])[0])
    assert not torch.allclose(both[0], both[1])


def test_long_prompts_truncate_to_77_tokens(clip_model, clip_tokenizer) -> None:
    enc = ClipPooledEncoder(clip_model, clip_tokenizer)
    long = " ".join(["cat"] * 200)
    pooled = enc.encode([long, long + " sleeps"])  # the difference lies past token 77
    torch.testing.assert_close(pooled[0], pooled[1])
