"""The conditioning encoders' outputs go straight into the tiny DiT: text (T2V, identity + CFG), audio, editing."""

from __future__ import annotations

import dataclasses
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from model_core.audio import WhisperAudioEncoder
from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT
from model_core.text import (
    ClipPooledEncoder,
    LlavaTextEncoder,
    TextConditioning,
    encode_negative,
    encode_prompt,
)
from model_core.vision import EditVideo, edit_video_condition, expand_mask, identity_latents

LATENT = (2, 4, 4)  # T, H, W latent: 5 frames of 32 x 32 pixels


@pytest.fixture(scope="module")
def encoders(llava_model, llama_tokenizer, video_template, clip_model, clip_tokenizer):
    return LlavaTextEncoder(llava_model, llama_tokenizer, template=video_template), ClipPooledEncoder(
        clip_model, clip_tokenizer
    )


@pytest.fixture(scope="module")
def tiny_vae():
    from model_core.vae import CausalVAE3D, vae_preset

    torch.manual_seed(0)
    return CausalVAE3D(vae_preset("tiny-hunyuan-vae")).eval()


def _dit(name: str, **changes: object) -> HunyuanDiT:
    torch.manual_seed(0)
    return HunyuanDiT(dataclasses.replace(PRESETS[name], **changes)).eval()


def _x(batch: int) -> torch.Tensor:
    return torch.randn(batch, 16, *LATENT, generator=torch.Generator().manual_seed(0))


def test_t2v_text_into_dit(llava_model, llama_tokenizer, video_template, clip_model, clip_tokenizer) -> None:
    llava = LlavaTextEncoder(llava_model.model.language_model, llama_tokenizer, template=video_template)
    cond = encode_prompt(llava, ClipPooledEncoder(clip_model, clip_tokenizer), "a cat sleeps")
    dit = _dit("tiny-hunyuanvideo-t2v-720p")
    assert (
        cond.states.shape[-1] == dit.config.text_states_dim
        and cond.pooled.shape[-1] == dit.config.text_pooled_dim
    )
    with torch.no_grad():
        out = dit(_x(1), torch.tensor([900.0]), **cond.dit_kwargs(), guidance=torch.tensor([6016.0]))
    assert out.shape == (1, 16, *LATENT) and torch.isfinite(out).all()


def test_identity_text_and_latents_into_dit_with_cfg(encoders, tiny_vae) -> None:
    llava, clip = encoders
    face = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    pos = encode_prompt(llava, clip, "A woman smiles at the camera .", ["woman"], [face])
    neg = encode_negative(llava, clip, "low quality", ["woman"])
    assert torch.equal(neg.states, llava.encode_unconditional(["low quality"], ["person"]).states)
    batch = TextConditioning.cat([neg, pos])
    assert batch.states.shape == (2, 256 + 575, 32)
    with torch.no_grad():
        ref = identity_latents(tiny_vae, face, 32, 32, torch.Generator().manual_seed(1))
        dit = _dit("tiny-hunyuancustom-720p")
        out = dit(
            _x(2),
            torch.tensor([500.0, 500.0]),
            **batch.dit_kwargs(),
            ref_latents=ref.expand(2, -1, -1, -1, -1),
        )
    assert out.shape == (2, 16, *LATENT) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # the branches see different text


def test_audio_features_into_dit(encoders, tmp_path: Path) -> None:
    llava, clip = encoders
    torch.manual_seed(0)
    wcfg = WhisperConfig(
        d_model=16, encoder_layers=4, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500, vocab_size=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    whisper = WhisperAudioEncoder(WhisperModel(wcfg).encoder, WhisperFeatureExtractor())
    path = tmp_path / "voice.wav"
    t = np.arange(8000) / 16000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((0.4 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes())
    audio = whisper.encode_file(path, n_video_frames=5).with_unconditional()
    text = TextConditioning.cat(
        [encode_negative(llava, clip, "low quality"), encode_prompt(llava, clip, "a cat sleeps")]
    )

    dit = _dit("tiny-hunyuancustom-audio-720p")  # its audio branch takes whisper features as they come
    with torch.no_grad():
        out = dit(_x(2), torch.tensor([500.0, 500.0]), **text.dit_kwargs(), **audio.dit_kwargs())
        silent = dit(
            _x(2), torch.tensor([500.0, 500.0]), **text.dit_kwargs(), **audio.dit_kwargs(), audio_strength=0.0
        )
    assert out.shape == (2, 16, *LATENT) and torch.isfinite(out).all()
    assert not torch.allclose(out[1], silent[1])  # the audio features reach the model


def test_edit_condition_into_dit(encoders, tiny_vae) -> None:
    llava, clip = encoders
    frames = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    mask = torch.zeros(5, 32, 32, dtype=torch.bool)
    mask[:, 8:20, 10:24] = True
    edit = EditVideo(frames=frames, mask=expand_mask(mask, 3))
    with torch.no_grad():
        video_cond = edit_video_condition(tiny_vae, edit, torch.Generator().manual_seed(0))
        text = encode_prompt(llava, clip, "a cat sleeps")
        dit = _dit("tiny-hunyuancustom-editing-720p")
        out = dit(_x(1), torch.tensor([300.0]), **text.dit_kwargs(), video_cond=video_cond)
    assert video_cond.shape == (1, 32, *LATENT)
    assert out.shape == (1, 16, *LATENT) and torch.isfinite(out).all()


def test_text_conditioning_rejects_bad_shapes() -> None:
    states, mask, pooled = torch.zeros(2, 5, 8), torch.ones(2, 5, dtype=torch.long), torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"states must be \[B, L, D\] and mask \[B, L\]; got \(5, 8\)"):
        TextConditioning(states[0], mask, pooled)
    with pytest.raises(ValueError, match=r"got \(2, 5, 8\) and \(2, 4\)"):
        TextConditioning(states, mask[:, :4], pooled)
    with pytest.raises(ValueError, match=r"pooled must be \[B=2, D2\], got \(1, 4\)"):
        TextConditioning(states, mask, pooled[:1])
    with pytest.raises(ValueError, match="different lengths"):
        TextConditioning.cat(
            [TextConditioning(states, mask, pooled), TextConditioning(states[:, :4], mask[:, :4], pooled)]
        )
