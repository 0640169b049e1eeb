"""Tiny model folders: written in the released formats, read back by the real loaders, and chained into the
tiny DiTs (text, identity image, audio, edit video) with finite, input-dependent outputs."""

from __future__ import annotations

import hashlib
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from model_core.audio import WhisperAudioEncoder
from model_core.checkpoints import load_model, read_state_dict
from model_core.configs import PRESETS
from model_core.text import (
    IMAGE_TEMPLATE,
    VIDEO_TEMPLATE,
    ClipPooledEncoder,
    LlavaTextEncoder,
    TextConditioning,
    encode_negative,
    encode_prompt,
    measure_crop_start,
)
from model_core.tiny_models import (
    DIT_FILE,
    TINY_MODELS,
    clip_byte_tokenizer,
    llama_byte_tokenizer,
    write_tiny_model,
)
from model_core.vae import load_vae
from model_core.vision import EditVideo, edit_video_condition, expand_mask, identity_latents

LATENT = (2, 4, 4)  # T, H, W latent: 5 frames of 32 x 32 pixels
PROMPT = "A woman holds a bottle of shampoo and smiles at the camera."


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("tiny")
    return {name: write_tiny_model(preset, root / name) for name, preset in TINY_MODELS.items()}


@pytest.fixture(scope="module")
def encoders(folders: dict[str, Path]) -> tuple[LlavaTextEncoder, ClipPooledEncoder]:
    # the released templates apply unchanged: the byte-level tokenizer measures the same crop start
    llava = LlavaTextEncoder.from_pretrained(
        folders["llava-llama-3-8b"], with_vision=True, dtype=torch.float32
    )
    clip = ClipPooledEncoder.from_pretrained(folders["clip-vit-large"], dtype=torch.float32)
    return llava, clip


def _x(batch: int) -> torch.Tensor:
    return torch.randn(batch, 16, *LATENT, generator=torch.Generator().manual_seed(0))


def _dit(folders: dict[str, Path], name: str) -> torch.nn.Module:
    return load_model(TINY_MODELS[name], folders[name], dtype=torch.float32)


def _check_output(out: torch.Tensor, batch: int) -> None:
    assert out.shape == (batch, 16, *LATENT) and torch.isfinite(out).all()
    # not constant: random weights must still make an output that varies over positions and channels
    assert out.std() > 1e-3 and out.flatten(2).std(dim=2).min() > 1e-4


def test_names_and_presets_cover_every_role() -> None:
    assert {p for p in TINY_MODELS.values() if p in PRESETS} == {n for n in PRESETS if n.startswith("tiny-")}
    assert set(TINY_MODELS.values()) >= {"tiny-hunyuan-vae", "tiny-llava", "tiny-clip", "tiny-whisper"}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for preset in ("tiny-hunyuancustom-720p", "tiny-llava", "tiny-whisper"):
        a = _digests(write_tiny_model(preset, tmp_path / preset / "a"))
        b = _digests(write_tiny_model(preset, tmp_path / preset / "b"))
        c = _digests(write_tiny_model(preset, tmp_path / preset / "c", seed=1))
        assert a == b
        weights = DIT_FILE if preset.endswith("720p") else "model.safetensors"
        assert a[weights] != c[weights]


def test_unknown_or_production_preset_is_refused(tmp_path: Path) -> None:
    for preset in ("hunyuancustom-720p", "no-such-preset"):
        with pytest.raises(ValueError, match="no tiny model for preset .*tiny presets: .*tiny-clip"):
            write_tiny_model(preset, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_dit_folder_is_the_official_wrapped_file(folders: dict[str, Path]) -> None:
    folder = folders["hunyuancustom-dit"]
    assert [p.name for p in folder.iterdir()] == [DIT_FILE]
    raw = torch.load(folder / DIT_FILE, weights_only=True)
    assert list(raw) == ["module"]
    assert raw["module"].keys() == read_state_dict(folder).keys()
    assert "double_blocks.0.img_attn_qkv.weight" in raw["module"]


def test_byte_tokenizers_cover_any_text_and_keep_the_template_crops() -> None:
    tok = llama_byte_tokenizer()
    assert measure_crop_start(tok, VIDEO_TEMPLATE) == VIDEO_TEMPLATE.crop_start == 95
    assert measure_crop_start(tok, IMAGE_TEMPLATE) == IMAGE_TEMPLATE.crop_start == 36
    for text in ("一位女士拿着洗发水，对着镜头微笑。", "Ünïcödé ✓ zzqx", PROMPT):
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    # known words are one token each: an English prompt stays far below the 256-token text length
    assert len(tok(PROMPT, add_special_tokens=False)["input_ids"]) == 13
    clip = clip_byte_tokenizer()
    ids = clip("一位女士 Smiles")["input_ids"]
    assert ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id and clip.unk_token_id not in ids
    assert clip.decode(ids, skip_special_tokens=True) == "一位女士 smiles"


def test_vae_folder_loads_and_round_trips_shapes(folders: dict[str, Path]) -> None:
    vae = load_vae(folders["hunyuan-vae"])
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(video).mode()
        frames = vae.decode(latents)
    assert latents.shape == (1, 16, *LATENT) and frames.shape == video.shape
    assert torch.isfinite(frames).all()


def test_t2v_text_into_dit(folders: dict[str, Path], encoders) -> None:
    llava, clip = encoders
    cond = encode_prompt(llava, clip, "一位女士在阳光下微笑")
    assert cond.states.shape == (1, 256, PRESETS["tiny-hunyuanvideo-t2v-720p"].text_states_dim)
    assert cond.pooled.shape == (1, PRESETS["tiny-hunyuanvideo-t2v-720p"].text_pooled_dim)
    dit = _dit(folders, "hunyuanvideo-t2v-dit")
    with torch.no_grad():
        out = dit(_x(1), torch.tensor([900.0]), **cond.dit_kwargs(), guidance=torch.tensor([6016.0]))
    _check_output(out, 1)


def test_identity_image_into_dit_with_cfg(folders: dict[str, Path], encoders) -> None:
    llava, clip = encoders
    vae = load_vae(folders["hunyuan-vae"])
    face = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    batch = TextConditioning.cat(
        [
            encode_negative(llava, clip, "low quality", ["woman"]),
            encode_prompt(llava, clip, PROMPT, ["woman"], [face]),
        ]
    )
    assert batch.states.shape == (2, 256 + 575, 32)
    with torch.no_grad():
        ref = identity_latents(vae, face, 32, 32, torch.Generator().manual_seed(1))
        out = _dit(folders, "hunyuancustom-dit")(
            _x(2),
            torch.tensor([500.0, 500.0]),
            **batch.dit_kwargs(),
            ref_latents=ref.expand(2, -1, -1, -1, -1),
        )
    _check_output(out, 2)
    assert not torch.allclose(out[0], out[1])  # the branches see different text


def test_audio_features_into_dit(folders: dict[str, Path], encoders, tmp_path: Path) -> None:
    llava, clip = encoders
    whisper = WhisperAudioEncoder.from_pretrained(folders["whisper-tiny"])
    path = tmp_path / "voice.wav"
    t = np.arange(8000) / 16000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((0.4 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes())
    audio = whisper.encode_file(path, n_video_frames=5).with_unconditional()
    text = TextConditioning.cat(
        [encode_negative(llava, clip, "low quality"), encode_prompt(llava, clip, PROMPT)]
    )
    dit = _dit(folders, "hunyuancustom-audio-dit")
    with torch.no_grad():
        out = dit(_x(2), torch.tensor([500.0, 500.0]), **text.dit_kwargs(), **audio.dit_kwargs())
        silent = dit(
            _x(2), torch.tensor([500.0, 500.0]), **text.dit_kwargs(), **audio.dit_kwargs(), audio_strength=0.0
        )
    _check_output(out, 2)
    assert not torch.allclose(out[1], silent[1])  # the audio features reach the model


def test_edit_condition_into_dit(folders: dict[str, Path], encoders) -> None:
    llava, clip = encoders
    vae = load_vae(folders["hunyuan-vae"])
    frames = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    mask = torch.zeros(5, 32, 32, dtype=torch.bool)
    mask[:, 8:20, 10:24] = True
    with torch.no_grad():
        video_cond = edit_video_condition(
            vae, EditVideo(frames=frames, mask=expand_mask(mask, 3)), torch.Generator().manual_seed(0)
        )
        text = encode_prompt(llava, clip, PROMPT)
        out = _dit(folders, "hunyuancustom-editing-dit")(
            _x(1), torch.tensor([300.0]), **text.dit_kwargs(), video_cond=video_cond
        )
    assert video_cond.shape == (1, 32, *LATENT)
    _check_output(out, 1)
