"""HunyuanDiT forward semantics: the HunyuanCustom extras against their formulas, invariances, and the steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch

from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT
from model_core.dit.audio import align_audio_to_latent_frames
from model_core.dit.refiner import refiner_attention_mask

TINY = [
    f"tiny-{n}"
    for n in (
        "hunyuanvideo-t2v-720p",
        "hunyuancustom-720p",
        "hunyuancustom-audio-720p",
        "hunyuancustom-editing-720p",
    )
]
Factory = Callable[..., Any]


def run(model: HunyuanDiT, inp: Any, **overrides: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(*inp.args, **{**inp.extras, **overrides})


@pytest.mark.parametrize("preset", TINY)
@pytest.mark.parametrize("num_refs", [1, 2])
def test_output_has_the_latent_shape_without_identity_frames(
    preset: str, num_refs: int, model_factory: Factory, inputs_factory: Factory
) -> None:
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset], frames=3, height=4, width=6, num_refs=num_refs)
    out = run(model, inp)
    assert out.shape == inp.x.shape  # identity tokens never add output frames
    assert torch.isfinite(out).all()
    torch.testing.assert_close(run(model, inp), out, rtol=0, atol=0)  # deterministic


@pytest.mark.parametrize("preset", TINY)
def test_padded_text_tokens_change_nothing(
    preset: str, model_factory: Factory, inputs_factory: Factory
) -> None:
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset], text_len=9, valid=(4, 7))
    out = run(model, inp)
    noisy = inp.text_states.clone()
    noisy[0, 4:] = 100 * torch.randn(5, noisy.shape[-1])
    noisy[1, 7:] = -100 * torch.randn(2, noisy.shape[-1])
    torch.testing.assert_close(
        run(model, dataclasses.replace(inp, text_states=noisy)), out, rtol=0, atol=1e-6
    )
    changed = inp.text_states.clone()
    changed[0, 3] += 1.0  # a real token: must matter
    assert not torch.allclose(run(model, dataclasses.replace(inp, text_states=changed)), out, atol=1e-4)


def test_refiner_mask_sees_valid_pairs_and_always_key_zero() -> None:
    mask = torch.tensor([[1, 0, 1, 1, 0]])
    got = refiner_attention_mask(mask)[0, 0]
    for i in range(5):
        for j in range(5):
            assert bool(got[i, j]) == (j == 0 or bool(mask[0, i] and mask[0, j]))


def test_main_attention_uses_only_the_mask_count(model_factory: Factory, inputs_factory: Factory) -> None:
    """As released: the first sum(mask) text tokens form the real segment, wherever the ones are."""
    model = model_factory("tiny-hunyuanvideo-t2v-720p")
    inp = inputs_factory(PRESETS["tiny-hunyuanvideo-t2v-720p"], batch=1, valid=(5,))
    with torch.no_grad():
        state = model.embed(*inp.args, **inp.extras)
        holes = inp.text_mask.clone()
        holes[0, 1], holes[0, 6] = 0, 1  # same count, different positions
        state_holes = model.embed(inp.x, inp.t, inp.text_states, holes, inp.text_pooled, **inp.extras)
    assert state.txt_valid_len == state_holes.txt_valid_len == (5,)
    assert not torch.allclose(state.txt, state_holes.txt)  # the refiner does read positions


def test_audio_strength_zero_equals_the_image_model(model_factory: Factory, inputs_factory: Factory) -> None:
    audio_model = model_factory("tiny-hunyuancustom-audio-720p")
    image_model = HunyuanDiT(PRESETS["tiny-hunyuancustom-720p"]).eval()
    shared = {k: v for k, v in audio_model.state_dict().items() if not k.startswith("audio_")}
    image_model.load_state_dict(shared, strict=True)
    inp = inputs_factory(PRESETS["tiny-hunyuancustom-audio-720p"])
    image_extras = {k: v for k, v in inp.extras.items() if k != "audio_states"}
    with torch.no_grad():
        expected = image_model(*inp.args, **image_extras)
    torch.testing.assert_close(run(audio_model, inp, audio_strength=0.0), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(run(audio_model, inp, audio_states=None), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(run(audio_model, inp, audio_strength=0.8), expected, atol=1e-4)


def test_audio_frames_align_to_latent_frames_with_frame_zero_padding() -> None:
    frames_per_latent, latent_frames = 4, 3
    video_frames = (latent_frames - 1) * frames_per_latent + 1  # 9
    tokens = torch.arange(video_frames, dtype=torch.float32)[None, :, None, None].expand(
        1, video_frames, 2, 1
    )
    aligned = align_audio_to_latent_frames(tokens, latent_frames, frames_per_latent)
    assert aligned.shape == (1, latent_frames, frames_per_latent * 2, 1)
    # latent frame 0 holds video frame 0 four times; latent frame j holds video frames 4j-3 .. 4j
    assert aligned[0, 0, :, 0].tolist() == [0.0] * 8
    for j in range(1, latent_frames):
        expected = [float(f) for f in range(4 * j - 3, 4 * j + 1) for _ in range(2)]
        assert aligned[0, j, :, 0].tolist() == expected
    with pytest.raises(ValueError, match="need \\(T-1\\)\\*4\\+1 = 9"):
        align_audio_to_latent_frames(tokens[:, :8], latent_frames, frames_per_latent)


def test_audio_is_added_to_video_tokens_only_and_per_frame(
    model_factory: Factory, inputs_factory: Factory
) -> None:
    preset = "tiny-hunyuancustom-audio-720p"
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset], batch=1, frames=3, height=4, width=4)
    audio = inp.extras["audio_states"]
    changed = audio.clone()
    changed[:, 5] += 1.0  # video frame 5 lies in latent frame 2 (frames 5..8)
    with torch.no_grad():
        states = [model.embed(*inp.args, **{**inp.extras, "audio_states": a}) for a in (audio, changed)]
        # double block 0 is followed by audio_models.0: compare right after it
        after = [model.run_double_blocks(s, stop=1).img for s in states]
    ref_tokens, per_frame = states[0].grid.ref_tokens, 2 * 2
    assert ref_tokens == 4
    delta = (after[0] - after[1]).abs().amax(dim=-1)[0]
    assert delta[:ref_tokens].max() == 0  # identity tokens untouched
    video = delta[ref_tokens:].reshape(3, per_frame)
    assert video[:2].max() == 0 and video[2].min() > 0  # only latent frame 2 moved


def test_video_condition_goes_to_video_tokens_only(model_factory: Factory, inputs_factory: Factory) -> None:
    preset = "tiny-hunyuancustom-editing-720p"
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset])
    cond = inp.extras["video_cond"]
    with torch.no_grad():
        with_cond = model.embed(*inp.args, **inp.extras)
        without = model.embed(*inp.args, **{**inp.extras, "video_cond": None})
        added = model.bg_proj(model.bg_in(cond))
    n_ref = with_cond.grid.ref_tokens
    assert torch.equal(with_cond.img[:, :n_ref], without.img[:, :n_ref])
    torch.testing.assert_close(with_cond.img[:, n_ref:], without.img[:, n_ref:] + added, rtol=0, atol=1e-6)


def test_zero_video_condition_equals_no_condition(model_factory: Factory, inputs_factory: Factory) -> None:
    """With bias-free condition layers, zero features add nothing: the injection touches nothing else."""
    preset = "tiny-hunyuancustom-editing-720p"
    model = model_factory(preset)
    with torch.no_grad():
        model.bg_in.proj.bias.zero_()
        model.bg_proj.bias.zero_()
    inp = inputs_factory(PRESETS[preset])
    no_cond = run(model, inp, video_cond=None)
    torch.testing.assert_close(
        run(model, inp, video_cond=torch.zeros_like(inp.extras["video_cond"])), no_cond, rtol=0, atol=0
    )
    assert not torch.allclose(run(model, inp), no_cond, atol=1e-4)


def test_identity_image_matters_and_subjects_are_ordered(
    model_factory: Factory, inputs_factory: Factory
) -> None:
    preset = "tiny-hunyuancustom-720p"
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset], num_refs=2)
    refs = inp.extras["ref_latents"]
    out = run(model, inp)
    assert not torch.allclose(run(model, inp, ref_latents=refs[:, :, :1]), out, atol=1e-4)
    # swapping the two subjects swaps their RoPE positions (t = -1 vs -2): not the same as the original
    assert not torch.allclose(run(model, inp, ref_latents=refs.flip(2)), out, atol=1e-4)


def test_guidance_feeds_vec(model_factory: Factory, inputs_factory: Factory) -> None:
    preset = "tiny-hunyuanvideo-t2v-720p"
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset])
    assert not torch.allclose(run(model, inp), run(model, inp, guidance=torch.full((2,), 1000.0)), atol=1e-4)


@pytest.mark.parametrize("preset", ["tiny-hunyuancustom-audio-720p", "tiny-hunyuanvideo-t2v-720p"])
def test_steps_compose_to_forward_and_single_blocks_split(
    preset: str, model_factory: Factory, inputs_factory: Factory
) -> None:
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset])
    expected = run(model, inp)
    last = len(model.single_blocks) - 1
    with torch.no_grad():
        state = model.run_double_blocks(model.embed(*inp.args, **inp.extras))
        cached = model.run_single_blocks(state, 0, last)  # the input of the last single block (DeepCache)
        out = model.final(model.run_single_blocks(cached, last))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_every_block_calls_the_replaceable_attention(model_factory: Factory, inputs_factory: Factory) -> None:
    preset = "tiny-hunyuancustom-720p"
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset])
    expected = run(model, inp)
    inner, calls = model.joint_attention, []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0].shape)
        return inner(*args, **kwargs)

    model.joint_attention = counting
    torch.testing.assert_close(run(model, inp), expected, rtol=0, atol=0)
    n_img = (1 + 3) * 2 * 3  # one identity image + 3 frames of a 2x3 token grid
    assert len(calls) == len(model.double_blocks) + len(model.single_blocks)
    assert all(shape == (2, n_img, 4, 16) for shape in calls)


def test_padded_image_tokens_are_masked_out(model_factory: Factory, inputs_factory: Factory) -> None:
    """Sequence parallelism pads the image tokens; with img_valid_len set the real output is unchanged."""
    preset = "tiny-hunyuancustom-audio-720p"
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset])
    expected = run(model, inp)
    pad = 5
    with torch.no_grad():
        state = model.embed(*inp.args, **inp.extras)
        padded = dataclasses.replace(
            state,
            img=torch.cat([state.img, 50 * torch.randn(2, pad, state.img.shape[-1])], dim=1),
            rope_cos=torch.cat([state.rope_cos, torch.ones(pad, state.rope_cos.shape[1])]),
            rope_sin=torch.cat([state.rope_sin, torch.zeros(pad, state.rope_sin.shape[1])]),
            img_valid_len=state.img.shape[1],
        )
        out = model.final(model.run_single_blocks(model.run_double_blocks(padded)))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_bf16_forward_stays_close_to_fp32(model_factory: Factory, inputs_factory: Factory) -> None:
    preset = "tiny-hunyuancustom-audio-720p"
    model = model_factory(preset)
    inp = inputs_factory(PRESETS[preset])
    expected = run(model, inp)
    out = run(model.to(torch.bfloat16), inp)
    assert out.dtype == torch.bfloat16
    assert ((out.float() - expected).norm() / expected.norm()).item() < 5e-2


def test_public_names_are_exported() -> None:
    from model_core import dit

    assert sorted(dit.__all__) == dit.__all__
    assert all(hasattr(dit, name) for name in dit.__all__)


def test_attention_backend_is_checked_when_set(model_factory: Factory) -> None:
    from model_core.dit import AttentionBackendUnavailable, SdpaJointAttention

    model = model_factory("tiny-hunyuancustom-720p")
    with pytest.raises(AttentionBackendUnavailable, match="flash"):
        model.set_attention_backend("flash_varlen", "cpu")  # missing package or not a CUDA device
    assert isinstance(model.joint_attention, SdpaJointAttention)
    model.set_attention_backend("sdpa", "cpu")
    assert isinstance(model.joint_attention, SdpaJointAttention)


def test_auto_attention_is_sdpa_on_the_cpu(model_factory: Factory) -> None:
    from model_core.dit import AUTO_ATTENTION, AttentionBackend, SdpaJointAttention, auto_attention_backend

    model = model_factory("tiny-hunyuancustom-720p")
    model.joint_attention = None  # type: ignore[assignment]
    model.set_attention_backend(AUTO_ATTENTION, "cpu")
    assert isinstance(model.joint_attention, SdpaJointAttention)
    for dtype in (torch.float32, torch.bfloat16):
        assert auto_attention_backend("cpu", dtype) is AttentionBackend.SDPA


def test_auto_attention_prefers_flash_where_it_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """With flash-attn installed on a CUDA device, auto picks it for fp16/bf16 weights and keeps SDPA for fp32."""
    from model_core.dit import (
        AttentionBackend,
        AttentionBackendUnavailable,
        auto_attention_backend,
        transformer,
    )

    def flash_on_cuda(backend: AttentionBackend, device: torch.device | str) -> AttentionBackend:
        if torch.device(device).type != "cuda":
            raise AttentionBackendUnavailable("cuda only")
        return AttentionBackend(backend)

    monkeypatch.setattr(transformer, "check_backend_available", flash_on_cuda)
    assert auto_attention_backend("cuda:0", torch.bfloat16) is AttentionBackend.FLASH_VARLEN
    assert auto_attention_backend("cuda:0", torch.float16) is AttentionBackend.FLASH_VARLEN
    assert auto_attention_backend("cuda:0", torch.float32) is AttentionBackend.SDPA  # flash needs half types
    assert auto_attention_backend("cpu", torch.bfloat16) is AttentionBackend.SDPA
