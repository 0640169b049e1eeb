"""Whisper audio features for HunyuanCustom's audio branch.

Audio is decoded with ffmpeg to 16 kHz mono; the first 30 s go through Whisper's log-mel front end and the
whisper-tiny encoder; its hidden states (embeddings + every layer: 5 x 384 for whisper-tiny) are stacked per
encoder frame (50 Hz). Video frame f (25 fps) gets the 10 encoder frames starting at 2f after 4 zero frames
are put in front, i.e. encoder frames [2f - 4, 2f + 6). Frames without audio are zeros; the unconditional
branch is all zeros.

The encoder runs in fp32 by default and the features are always fp32, as in the release.

Differences from the release, on purpose: decoding and resampling use ffmpeg instead of librosa (soxr), so
samples differ at the resampler's precision; audio shorter than the video is an error unless `pad_short`
(the release pads silently); audio longer than the video is cut to the video's frames and the cut is reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from model_core.io import MediaDecodeError, decode_audio

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640: one 25 fps video frame
WINDOW = 10  # encoder frames per video frame
LEAD_ZEROS = 4  # zero encoder frames put in front, so frame f is centred on its own time
ENCODER_STRIDE = 2  # 50 Hz encoder frames per 25 fps video frame
CHUNK_SECONDS = 30  # whisper sees one 30 s window (3000 mel frames -> 1500 encoder frames)
SILENCE_PEAK = 1e-4  # -80 dBFS


class AudioInputError(ValueError):
    """The audio cannot condition this video: unreadable, silent, too short or too long for the frame budget."""


@dataclass(frozen=True)
class PreparedAudio:
    """Decoded 16 kHz mono samples and how many video frames they cover."""

    samples: np.ndarray  # float32 [S]
    n_video_frames: int  # frames of the video to condition
    n_audio_frames: int  # frames covered by real audio (<= n_video_frames)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AudioConditioning:
    """The DiT's audio input.

    features: [B, F, 10, L, D] Whisper hidden states per video frame (whisper-tiny: L = 5, D = 384).
    notes: what was trimmed or padded, for the run's log and provenance.
    """

    features: torch.Tensor
    notes: tuple[str, ...] = field(default=())

    def dit_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for the DiT forward."""
        return {"audio_states": self.features}

    def with_unconditional(self) -> AudioConditioning:
        """The CFG batch [uncond, cond]: the unconditional audio is zeros."""
        return AudioConditioning(torch.cat([torch.zeros_like(self.features), self.features]), self.notes)


def max_video_frames() -> int:
    """The most video frames one 30 s Whisper window can condition."""
    encoder_frames = CHUNK_SECONDS * SAMPLE_RATE // 320  # 1500: whisper's conv front end halves 100 Hz mel
    return (encoder_frames + LEAD_ZEROS - WINDOW) // ENCODER_STRIDE + 1


def prepare_audio(
    samples: np.ndarray, n_video_frames: int, pad_short: bool = False, source: str = "audio"
) -> PreparedAudio:
    """Check decoded samples against the video's frame count.

    Raises `AudioInputError` for empty or silent audio, for audio shorter than the video unless `pad_short`
    (the missing frames then get zero features), and for videos longer than one Whisper window covers.
    Longer audio is accepted; only the video's frames are used, and a note says what was cut.
    """
    if n_video_frames < 1:
        raise AudioInputError(f"n_video_frames must be >= 1, got {n_video_frames}")
    limit = max_video_frames()
    if n_video_frames > limit:
        raise AudioInputError(
            f"{n_video_frames} video frames exceed the {limit} frames ({limit / FPS:.1f} s) one Whisper window "
            "conditions; render a shorter video"
        )
    if samples.ndim != 1:
        raise AudioInputError(
            f"{source}: samples must be mono [S] at {SAMPLE_RATE} Hz, got shape {tuple(samples.shape)}; "
            "decode with load_audio or average the channels"
        )
    if samples.size == 0:
        raise AudioInputError(f"{source}: no audio samples decoded; check that the file has an audio stream")
    peak = float(np.abs(samples).max())
    if not np.isfinite(peak):
        raise AudioInputError(f"{source}: audio holds NaN or infinite samples")
    if peak < SILENCE_PEAK:
        raise AudioInputError(
            f"{source}: audio is silent (peak {peak:.2e} < {SILENCE_PEAK:g}); give a voice or music track, or "
            "drop the audio condition"
        )
    have = samples.size // SAMPLES_PER_FRAME
    notes: list[str] = []
    if have < n_video_frames:
        need_s, have_s = n_video_frames / FPS, samples.size / SAMPLE_RATE
        if not pad_short:
            raise AudioInputError(
                f"{source}: audio is {have_s:.2f} s ({have} frames at {FPS} fps) but the video needs {need_s:.2f} s "
                f"({n_video_frames} frames); give longer audio or set pad_short to pad with silence"
            )
        notes.append(f"audio {have_s:.2f} s padded with silence features to the video's {need_s:.2f} s")
    elif have > n_video_frames:
        notes.append(
            f"audio {samples.size / SAMPLE_RATE:.2f} s trimmed to the video's {n_video_frames / FPS:.2f} s "
            f"({have - n_video_frames} frames dropped)"
        )
    return PreparedAudio(samples, n_video_frames, min(have, n_video_frames), tuple(notes))


def load_audio(path: str | os.PathLike[str], n_video_frames: int, pad_short: bool = False) -> PreparedAudio:
    """Decode any audio file with ffmpeg to 16 kHz mono and check it against the video (see `prepare_audio`)."""
    try:
        samples = decode_audio(path, SAMPLE_RATE)
    except MediaDecodeError as exc:
        raise AudioInputError(f"unreadable audio: {exc}") from exc
    return prepare_audio(samples, n_video_frames, pad_short=pad_short, source=str(path))


def frame_windows(hidden: torch.Tensor, n_video_frames: int, n_audio_frames: int) -> torch.Tensor:
    """Per-video-frame windows of stacked encoder states.

    hidden: [B, T, L, D] encoder frames (50 Hz). Returns [B, n_video_frames, 10, L, D]: frame f < n_audio_frames
    holds hidden frames [2f - 4, 2f + 6) (zeros before 0), later frames are zeros.
    """
    b, _t, n_layers, dim = hidden.shape
    padded = torch.cat([hidden.new_zeros(b, LEAD_ZEROS, n_layers, dim), hidden], dim=1)
    needed = ENCODER_STRIDE * (n_audio_frames - 1) + WINDOW
    if n_audio_frames and needed > padded.shape[1]:
        raise AudioInputError(f"{n_audio_frames} frames need {needed} encoder frames, have {padded.shape[1]}")
    out = hidden.new_zeros(b, n_video_frames, WINDOW, n_layers, dim)
    if n_audio_frames:
        # [B, T', L, D] -> windows of 10 with stride 2 -> [B, n, 10, L, D]
        win = padded.unfold(1, WINDOW, ENCODER_STRIDE)[:, :n_audio_frames]  # [B, n, L, D, 10]
        out[:, :n_audio_frames] = win.permute(0, 1, 4, 2, 3)
    return out


class WhisperAudioEncoder:
    """whisper(-tiny) encoder hidden states windowed per video frame.

    Args:
        encoder: a `WhisperEncoder` (`WhisperModel(...).encoder`).
        feature_extractor: the matching `WhisperFeatureExtractor` (80 mel bins, 30 s chunks).
    """

    def __init__(self, encoder: nn.Module, feature_extractor: object) -> None:
        self.encoder = encoder.eval()
        self.feature_extractor = feature_extractor

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> WhisperAudioEncoder:
        """Load a released `whisper-tiny` folder from local files (the encoder only is kept). fp32 by default, as
        the release runs whisper-tiny (a few MB; half precision saves nothing worth its rounding)."""
        from transformers import WhisperFeatureExtractor, WhisperModel

        extractor = WhisperFeatureExtractor.from_pretrained(path, local_files_only=True)
        model = WhisperModel.from_pretrained(path, local_files_only=True, dtype=dtype)
        # transformers wraps .to with functools.wraps, whose stub hides the bound self
        encoder = model.encoder.to(device)  # type: ignore[arg-type]
        return cls(encoder, extractor)

    def mel(self, samples: np.ndarray) -> torch.Tensor:
        """Log-mel input features [1, n_mels, 3000] of the first 30 s (zero-padded to 30 s as Whisper does)."""
        first = samples[: CHUNK_SECONDS * SAMPLE_RATE]
        feats = self.feature_extractor(first, sampling_rate=SAMPLE_RATE, return_tensors="pt")  # type: ignore[operator]
        return feats["input_features"]

    @torch.no_grad()
    def hidden_states(self, samples: np.ndarray) -> torch.Tensor:
        """Stacked encoder hidden states [1, 1500, L, D] (embeddings + each layer), float32 whatever the
        encoder's dtype, as the release hands its audio features on."""
        p = next(self.encoder.parameters())
        out = self.encoder(self.mel(samples).to(p.device, p.dtype), output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=2).float()

    def encode(self, audio: PreparedAudio | Sequence[PreparedAudio]) -> AudioConditioning:
        """Audio features [B, F, 10, L, D] of one or more prepared tracks (same video length)."""
        items = [audio] if isinstance(audio, PreparedAudio) else list(audio)
        if len({a.n_video_frames for a in items}) != 1:
            raise AudioInputError("all tracks of a batch must condition the same number of video frames")
        feats = [
            frame_windows(self.hidden_states(a.samples), a.n_video_frames, a.n_audio_frames) for a in items
        ]
        notes = tuple(n for a in items for n in a.notes)
        return AudioConditioning(torch.cat(feats), notes)

    def encode_file(
        self, path: str | os.PathLike[str], n_video_frames: int, pad_short: bool = False
    ) -> AudioConditioning:
        """Decode, check and encode one audio file for a video of `n_video_frames` frames."""
        return self.encode(load_audio(path, n_video_frames, pad_short=pad_short))
