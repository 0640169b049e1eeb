"""Every malformed input is refused before any compute, with a message naming the expected shape."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch

from model_core.configs import PRESETS

Factory = Callable[..., Any]
CUSTOM = "tiny-hunyuancustom-720p"


def call(model: Any, inp: Any, **overrides: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(*inp.args, **{**inp.extras, **overrides})


@pytest.fixture(scope="module")
def custom(model_factory: Factory) -> Any:
    return model_factory(CUSTOM)


@pytest.fixture
def inp(inputs_factory: Factory) -> Any:
    return inputs_factory(PRESETS[CUSTOM], batch=2, frames=3, height=4, width=6, text_len=9)


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("x", torch.randn(2, 12, 3, 4, 6), r"x must be \[B, 16, T, H, W\] latents, got \(2, 12, 3, 4, 6\)"),
        ("x", torch.randn(2, 16, 4, 6), r"x must be \[B, 16, T, H, W\] latents, got \(2, 16, 4, 6\)"),
        ("x", torch.randn(2, 16, 3, 5, 6), r"multiples of the patch \(1, 2, 2\), got \(2, 16, 3, 5, 6\)"),
        ("t", torch.rand(3) * 1000, r"t must be \[B\] = \[2\] float timesteps, got \(3,\)"),
        ("t", torch.tensor(500.0), r"t must be \[B\] = \[2\]"),
        (
            "text_states",
            torch.randn(2, 9, 48),
            r"text_states must be \[B, L, 32\] with B = 2, got \(2, 9, 48\)",
        ),
        (
            "text_states",
            torch.randn(1, 9, 32),
            r"text_states must be \[B, L, 32\] with B = 2, got \(1, 9, 32\)",
        ),
        ("text_mask", torch.ones(2, 8, dtype=torch.long), r"text_mask must be \[B, L\] = \[2, 9\]"),
        ("text_pooled", torch.randn(2, 768), r"text_pooled must be \[B, 16\] = \[2, 16\], got \(2, 768\)"),
    ],
)
def test_wrong_core_inputs(custom: Any, inp: Any, field: str, bad: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(custom, dataclasses.replace(inp, **{field: bad}))


def test_empty_text_mask_row(custom: Any, inp: Any) -> None:
    mask = inp.text_mask.clone()
    mask[1] = 0
    with pytest.raises(ValueError, match="no real token"):
        call(custom, dataclasses.replace(inp, text_mask=mask))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.randn(2, 16, 1, 4, 8), r"ref_latents must be \[B, 16, K, H, W\] = \[2, 16, K, 4, 6\]"),
        (torch.randn(1, 16, 1, 4, 6), r"ref_latents must be \[B, 16, K, H, W\] = \[2, 16, K, 4, 6\]"),
        (torch.randn(2, 16, 0, 4, 6), r"K >= 1 identity images"),
    ],
)
def test_wrong_identity_latents(custom: Any, inp: Any, bad: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(custom, inp, ref_latents=bad)


def test_guidance_only_for_the_distilled_t2v(
    custom: Any, inp: Any, model_factory: Factory, inputs_factory: Factory
) -> None:
    with pytest.raises(ValueError, match="no guidance_in"):
        call(custom, inp, guidance=torch.full((2,), 6016.0))
    t2v = model_factory("tiny-hunyuanvideo-t2v-720p")
    t2v_inp = inputs_factory(PRESETS["tiny-hunyuanvideo-t2v-720p"])
    with pytest.raises(ValueError, match=r"pass guidance \[B\]"):
        call(t2v, t2v_inp, guidance=None)
    with pytest.raises(ValueError, match=r"guidance must be \[B\] = \[2\]"):
        call(t2v, t2v_inp, guidance=torch.full((1,), 6016.0))
    with pytest.raises(ValueError, match="takes no identity image"):
        call(t2v, t2v_inp, ref_latents=torch.randn(2, 16, 1, 4, 6))


def test_extras_the_preset_lacks(custom: Any, inp: Any) -> None:
    with pytest.raises(ValueError, match="no audio branch"):
        call(custom, inp, audio_states=torch.randn(2, 9, 2, 3, 8))
    with pytest.raises(ValueError, match="no video condition"):
        call(custom, inp, video_cond=torch.randn(2, 32, 3, 4, 6))


def test_audio_frame_count_must_match_the_latent_frames(
    model_factory: Factory, inputs_factory: Factory
) -> None:
    preset = "tiny-hunyuancustom-audio-720p"
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset], frames=3)
    with pytest.raises(
        ValueError,
        match=r"\[2, 9, 10, 5, 16\].*got \(2, 13, 10, 5, 16\).*F = \(T-1\)\*4\+1 video frames for T = 3",
    ):
        call(model, inp, audio_states=torch.randn(2, 13, 10, 5, 16))
    with pytest.raises(ValueError, match=r"audio_states must be \[B, F, window, layers, dim\]"):
        call(model, inp, audio_states=torch.randn(2, 9, 10, 5, 384))


def test_video_condition_must_match_the_latents(model_factory: Factory, inputs_factory: Factory) -> None:
    preset = "tiny-hunyuancustom-editing-720p"
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset], frames=3)
    with pytest.raises(
        ValueError,
        match=r"video_cond must be \[B, 32, T, H, W\] = \[2, 32, 3, 4, 6\] like x, got \(2, 32, 2, 4, 6\)",
    ):
        call(model, inp, video_cond=torch.randn(2, 32, 2, 4, 6))
    with pytest.raises(ValueError, match=r"got \(2, 16, 3, 4, 6\)"):
        call(model, inp, video_cond=torch.randn(2, 16, 3, 4, 6))


def test_rope_rows_must_match_the_image_tokens(custom: Any, inp: Any) -> None:
    """A state whose positions belong to another frame count is refused, not broadcast."""
    with torch.no_grad():
        state = custom.embed(*inp.args, **inp.extras)
        short = dataclasses.replace(state, rope_cos=state.rope_cos[:-6], rope_sin=state.rope_sin[:-6])
        with pytest.raises(ValueError, match=r"RoPE cos/sin \(18, 16\) must be \[N, D\] = \[24, 16\]"):
            custom.run_double_blocks(short)
        with pytest.raises(ValueError, match="needs 24"):
            custom.final(dataclasses.replace(state, img=state.img[:, :20]))
