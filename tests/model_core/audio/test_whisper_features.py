"""Whisper audio features: ffmpeg decoding of real files, input checks, per-frame windows, tiny encoder."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

from model_core.audio import (
    AudioInputError,
    WhisperAudioEncoder,
    frame_windows,
    load_audio,
    max_video_frames,
    prepare_audio,
)
from model_core.io import decode_audio


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """samples: float in [-1, 1], [S] (mono) or [S, C]."""
    data = np.clip(samples, -1, 1)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((data * 32767).astype("<i2").tobytes())
    return path


def sine(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spec.argmax()])


@pytest.fixture(scope="module")
def whisper() -> WhisperAudioEncoder:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = WhisperConfig(
        d_model=16,
        encoder_layers=4,  # 5 hidden states, as whisper-tiny
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=1500,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    return WhisperAudioEncoder(WhisperModel(config).encoder, WhisperFeatureExtractor())


# --- decoding ----------------------------------------------------------------------------------------------------


def test_decode_wav_resamples_stereo_to_16k_mono(tmp_path: Path) -> None:
    left, right = sine(1.5, 44100, 440), sine(1.5, 44100, 440)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], 1), 44100)
    x = decode_audio(path, 16000)
    assert x.dtype == np.float32
    assert abs(len(x) - 24000) <= 16
    assert abs(peak_hz(x, 16000) - 440) < 2
    assert 0.45 < np.abs(x[1000:-1000]).max() < 0.55  # channels averaged, not summed


def test_decode_compressed_formats(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", sine(1.0, 22050, 1000), 22050)
    for ext in ("mp3", "m4a", "flac"):
        out = tmp_path / f"a.{ext}"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(out)], check=True)
        x = decode_audio(out, 16000)
        assert abs(len(x) / 16000 - 1.0) < 0.1, ext
        assert abs(peak_hz(x, 16000) - 1000) < 5, ext


def test_unreadable_and_missing_audio(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio at all")
    with pytest.raises(AudioInputError, match="unreadable audio"):
        load_audio(bad, 25)
    with pytest.raises(AudioInputError, match="no such file"):
        load_audio(tmp_path / "missing.mp3", 25)


def test_silence_is_rejected(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "silence.wav", np.zeros(32000), 16000)
    with pytest.raises(AudioInputError, match="silent"):
        load_audio(path, 25)


def test_short_audio_needs_pad_short(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "short.wav", sine(1.0, 16000), 16000)  # 25 frames
    with pytest.raises(AudioInputError, match=r"1\.00 s \(25 frames.*needs 1\.64 s \(41 frames\).*pad_short"):
        load_audio(path, 41)
    prepared = load_audio(path, 41, pad_short=True)
    assert (prepared.n_video_frames, prepared.n_audio_frames) == (41, 25)
    assert "padded" in prepared.notes[0]


def test_long_audio_is_trimmed_and_said(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "long.wav", sine(3.0, 16000), 16000)  # 75 frames
    prepared = load_audio(path, 33)
    assert prepared.n_audio_frames == 33
    assert "trimmed" in prepared.notes[0] and "42 frames dropped" in prepared.notes[0]


def test_frame_limit_of_one_whisper_window() -> None:
    assert max_video_frames() == 748  # (1500 + 4 - 10) // 2 + 1
    with pytest.raises(AudioInputError, match="exceed the 748 frames"):
        prepare_audio(sine(40, 16000).astype(np.float32), 749)


def test_bad_sample_arrays_and_batches(whisper: WhisperAudioEncoder) -> None:
    with pytest.raises(AudioInputError, match=r"mono \[S\] at 16000 Hz, got shape \(16000, 2\)"):
        prepare_audio(np.zeros((16000, 2), np.float32) + 0.5, 25)
    with pytest.raises(AudioInputError, match="no audio samples"):
        prepare_audio(np.zeros(0, np.float32), 25)
    with pytest.raises(AudioInputError, match="NaN"):
        prepare_audio(np.full(16000, np.nan, np.float32), 25)
    with pytest.raises(AudioInputError, match="n_video_frames must be >= 1"):
        prepare_audio(sine(1.0, 16000).astype(np.float32), 0)
    a = prepare_audio(sine(1.0, 16000).astype(np.float32), 25)
    b = prepare_audio(sine(1.0, 16000).astype(np.float32), 17)
    with pytest.raises(AudioInputError, match="same number of video frames"):
        whisper.encode([a, b])


def test_frame_windows_need_enough_encoder_frames() -> None:
    with pytest.raises(AudioInputError, match="5 frames need 18 encoder frames, have 14"):
        frame_windows(torch.zeros(1, 10, 2, 3), n_video_frames=5, n_audio_frames=5)


# --- windows -----------------------------------------------------------------------------------------------------


def test_frame_windows_by_hand() -> None:
    t = 30
    hidden = (torch.arange(t, dtype=torch.float32) + 1).view(1, t, 1, 1).expand(1, t, 2, 3).clone()
    out = frame_windows(hidden, n_video_frames=8, n_audio_frames=5)
    assert out.shape == (1, 8, 10, 2, 3)
    values = out[0, :, :, 0, 0]
    assert values[0].tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]  # 4 zero frames in front
    assert values[1].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert values[4].tolist() == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]  # hidden frames 2f-4 .. 2f+5
    assert values[5:].abs().sum() == 0  # no audio: zeros


# --- the tiny encoder --------------------------------------------------------------------------------------------


def test_encode_file_shapes_and_windows(tmp_path: Path, whisper: WhisperAudioEncoder) -> None:
    path = write_wav(tmp_path / "voice.wav", sine(2.0, 16000, 300) + sine(2.0, 16000, 1200, 0.2), 16000)
    cond = whisper.encode_file(path, 33)
    assert cond.features.shape == (1, 33, 10, 5, 16)
    hidden = whisper.hidden_states(decode_audio(path))
    assert hidden.shape == (1, 1500, 5, 16)
    for f, w in [(0, 4), (0, 9), (7, 0), (32, 9)]:
        torch.testing.assert_close(cond.features[0, f, w], hidden[0, 2 * f + w - 4])
    assert cond.features[0, 0, :4].abs().sum() == 0
    assert cond.features[0, 0, 4:].abs().sum() > 0
    assert cond.notes and "trimmed" in cond.notes[0]  # 50 audio frames for a 33-frame video

    again = whisper.encode_file(path, 33)
    assert torch.equal(cond.features, again.features)
    cfg = cond.with_unconditional()
    assert cfg.features.shape[0] == 2 and cfg.features[0].abs().sum() == 0
    assert torch.equal(cfg.features[1], cond.features[0])


def test_padded_frames_are_zero(tmp_path: Path, whisper: WhisperAudioEncoder) -> None:
    path = write_wav(tmp_path / "short.wav", sine(0.5, 16000), 16000)  # 12 frames
    cond = whisper.encode_file(path, 17, pad_short=True)
    assert cond.features[0, 12:].abs().sum() == 0
    assert cond.features[0, 11].abs().sum() > 0


def test_different_audio_gives_different_features(tmp_path: Path, whisper: WhisperAudioEncoder) -> None:
    a = whisper.encode_file(write_wav(tmp_path / "a.wav", sine(1.0, 16000, 300), 16000), 25)
    b = whisper.encode_file(write_wav(tmp_path / "b.wav", sine(1.0, 16000, 2000), 16000), 25)
    assert not torch.allclose(a.features[0, 5], b.features[0, 5])


def test_whisper_folder_round_trip(tmp_path: Path, whisper: WhisperAudioEncoder) -> None:
    from transformers import WhisperModel

    model = WhisperModel(whisper.encoder.config)
    model.encoder.load_state_dict(whisper.encoder.state_dict())
    model.save_pretrained(tmp_path / "whisper-tiny")
    whisper.feature_extractor.save_pretrained(tmp_path / "whisper-tiny")
    loaded = WhisperAudioEncoder.from_pretrained(tmp_path / "whisper-tiny")  # fp32 by default, as released
    assert {p.dtype for p in loaded.encoder.parameters()} == {torch.float32}
    path = write_wav(tmp_path / "a.wav", sine(1.0, 16000, 500), 16000)
    features = loaded.encode_file(path, 25).features
    assert features.dtype == torch.float32
    torch.testing.assert_close(features, whisper.encode_file(path, 25).features)

    half = WhisperAudioEncoder.from_pretrained(tmp_path / "whisper-tiny", dtype=torch.bfloat16)
    assert half.encode_file(path, 25).features.dtype == torch.float32  # features are handed on in fp32
