"""Production loading: released-style folders written with save_pretrained, read back with local files only."""

from __future__ import annotations

from pathlib import Path

import torch

from model_core.text import ClipPooledEncoder, LlavaTextEncoder, TransformersChatBackend, make_rewriter

PROMPT = "A woman in a red coat holds a bottle of shampoo and smiles at the camera in a bright bathroom ."


def test_llava_folder_round_trip(tmp_path: Path, llava_model, llama_tokenizer, video_template) -> None:
    llava_model.save_pretrained(tmp_path / "llava")
    llama_tokenizer.save_pretrained(tmp_path / "llava")
    loaded = LlavaTextEncoder.from_pretrained(
        tmp_path / "llava", dtype=torch.float32, template=video_template
    )
    reference = LlavaTextEncoder(llava_model, llama_tokenizer, template=video_template)
    pixels = torch.randn(1, 1, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    a = loaded.encode([PROMPT], ["woman"], pixels)
    b = reference.encode([PROMPT], ["woman"], pixels)
    assert loaded.supports_images and loaded.pad_token_id == llama_tokenizer.pad_token_id
    torch.testing.assert_close(a.states, b.states)
    assert torch.equal(a.mask, b.mask)


def test_language_model_folder_round_trip(
    tmp_path: Path, llava_model, llama_tokenizer, video_template
) -> None:
    lm = llava_model.model.language_model
    lm.save_pretrained(tmp_path / "text_encoder")
    llama_tokenizer.save_pretrained(tmp_path / "text_encoder")
    loaded = LlavaTextEncoder.from_pretrained(
        tmp_path / "text_encoder", with_vision=False, dtype=torch.float32, template=video_template
    )
    assert not loaded.supports_images
    ref = LlavaTextEncoder(lm, llama_tokenizer, template=video_template).encode([PROMPT])
    torch.testing.assert_close(loaded.encode([PROMPT]).states, ref.states)


def test_clip_folder_round_trip(tmp_path: Path, clip_model, clip_tokenizer) -> None:
    clip_model.save_pretrained(tmp_path / "clip")
    clip_tokenizer.save_pretrained(tmp_path / "clip")
    loaded = ClipPooledEncoder.from_pretrained(tmp_path / "clip", dtype=torch.float32)
    ref = ClipPooledEncoder(clip_model, clip_tokenizer)
    torch.testing.assert_close(loaded.encode([PROMPT]), ref.encode([PROMPT]))


def test_chat_lm_folder_round_trip(tmp_path: Path, tiny_chat_lm) -> None:
    model, tok = tiny_chat_lm
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    rewriter = make_rewriter("transformers", path=tmp_path / "lm", dtype=torch.float32, max_new_tokens=4)
    assert isinstance(rewriter.backend, TransformersChatBackend)
    messages = [{"role": "user", "content": "a cat sleeps"}]
    answer = rewriter.backend.complete(messages)
    assert isinstance(answer, str) and len(answer.split()) <= 4
    assert answer == TransformersChatBackend(model, tok, max_new_tokens=4).complete(messages)  # same weights
    result = rewriter.rewrite("a cat sleeps", ["cat"])
    assert result.backend == "transformers" and not result.rewritten  # 4 random tokens: caught by the guard
