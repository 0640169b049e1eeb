"""Decode local audio, video and image files to numpy arrays with the ffmpeg command-line tools.

Every failure of ffmpeg or ffprobe (missing file, unknown format, no stream of the wanted kind) is raised as
`MediaDecodeError`, with the path and ffmpeg's own last lines, so a caller can tell a bad input from a bug.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np


class MediaDecodeError(RuntimeError):
    """A media file could not be read: it is missing, unreadable, or has no stream of the kind asked for."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as ffprobe reports it."""

    width: int
    height: int
    n_frames: int
    fps: float


def _stderr_tail(exc: ffmpeg.Error, lines: int = 4) -> str:
    text = (exc.stderr or b"").decode("utf-8", errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


def _existing(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if not p.is_file():
        raise MediaDecodeError(f"{p}: no such file; pass the path of a local media file")
    return str(p)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, frame count and frame rate of the first video stream of `path`.

    The frame count is counted by decoding (`-count_frames`) rather than read from the container header,
    because headers of edited or re-muxed files are often wrong, and the edit-video check needs the truth.
    """
    src = _existing(path)
    try:
        info = ffmpeg.probe(src, select_streams="v:0", count_frames=None)
    except ffmpeg.Error as exc:
        raise MediaDecodeError(f"{src}: ffprobe could not read the file: {_stderr_tail(exc)}") from exc
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "video"]
    if not streams:
        raise MediaDecodeError(f"{src}: the file has no video stream")
    s = streams[0]
    n_frames = int(s.get("nb_read_frames") or s.get("nb_frames") or 0)
    rate = s.get("avg_frame_rate") or s.get("r_frame_rate") or "0/1"
    fps = float(Fraction(rate)) if rate != "0/0" else 0.0
    return VideoInfo(width=int(s["width"]), height=int(s["height"]), n_frames=n_frames, fps=fps)


def read_video_frames(path: str | os.PathLike[str], max_frames: int | None = None) -> np.ndarray:
    """All frames (or the first `max_frames`) of `path` as RGB uint8, shape [F, H, W, 3], at the file's own size."""
    src = _existing(path)
    info = probe_video(src)
    stream = ffmpeg.input(src)
    out_kwargs: dict[str, object] = {"format": "rawvideo", "pix_fmt": "rgb24", "vsync": "passthrough"}
    if max_frames is not None:
        out_kwargs["vframes"] = int(max_frames)
    try:
        raw, _ = stream.output("pipe:", **out_kwargs).run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        raise MediaDecodeError(f"{src}: ffmpeg could not decode the video: {_stderr_tail(exc)}") from exc
    frame_bytes = info.width * info.height * 3
    if len(raw) == 0 or len(raw) % frame_bytes:
        raise MediaDecodeError(
            f"{src}: decoded {len(raw)} bytes, not a whole number of {info.width}x{info.height} RGB frames"
        )
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3).copy()


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """A still image (png, jpeg, webp, ...) as RGB uint8, shape [H, W, 3]."""
    src = _existing(path)
    frames = read_video_frames(src, max_frames=1)
    return frames[0]


def decode_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray:
    """Any audio file ffmpeg can read (wav, mp3, m4a, flac, the audio of a video) as mono float32 at `sample_rate`.

    Channels are averaged here (as librosa does) rather than by ffmpeg's downmix, which mixes stereo at -3 dB
    per channel; resampling uses ffmpeg's default resampler.
    """
    src = _existing(path)
    try:
        info = ffmpeg.probe(src, select_streams="a:0")
    except ffmpeg.Error as exc:
        raise MediaDecodeError(f"{src}: ffprobe could not read the file: {_stderr_tail(exc)}") from exc
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise MediaDecodeError(f"{src}: the file has no audio stream")
    channels = int(streams[0].get("channels") or 1)
    try:
        raw, _ = (
            ffmpeg.input(src)
            .output(
                "pipe:", format="f32le", acodec="pcm_f32le", ac=channels, ar=int(sample_rate), map="0:a:0"
            )
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        raise MediaDecodeError(f"{src}: ffmpeg could not decode audio: {_stderr_tail(exc)}") from exc
    samples = np.frombuffer(raw, np.float32)
    if samples.size % channels:
        raise MediaDecodeError(
            f"{src}: decoded {samples.size} samples, not a multiple of {channels} channels"
        )
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
