"""Video and audio files through ffmpeg: encode, decode, mux, probe, loudness, black and frozen frames.

Commands are built with ffmpeg-python and run as subprocesses; frames move through pipes one at a time,
so a video is never held whole in memory. ffmpeg's log goes to a temporary file (a full stderr pipe
would stall ffmpeg) and is quoted in errors.

Errors (all name the file and the fix)::

    MediaError                      base class
    ├── FFmpegNotFound              ffmpeg or ffprobe is not on PATH
    ├── MediaFileNotFound           the input file does not exist
    ├── NotMediaError               the file is not audio or video ffmpeg can read
    ├── MissingStreamError          the file has no stream of the kind needed (e.g. loudness of a silent clip)
    └── FFmpegFailed                ffmpeg ran and failed (encode, mux or analysis)

Detection thresholds suit 5-30 s spots (see docs/FIDELITY.md, Media): ffmpeg's defaults only flag black or
frozen stretches of 2 s, which is a tenth of a 20 s ad; a quarter second of black or half a second of
frozen picture is already visible, so those are the defaults here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import ffmpeg
import numpy as np

__all__ = [
    "BLACK_MIN_SECONDS",
    "BLACK_PICTURE_RATIO",
    "BLACK_PIXEL_THRESHOLD",
    "FREEZE_MIN_SECONDS",
    "FREEZE_NOISE",
    "FFmpegFailed",
    "FFmpegNotFound",
    "Interval",
    "Loudness",
    "LoudnessCurve",
    "MediaError",
    "MediaFileNotFound",
    "MediaInfo",
    "MissingStreamError",
    "NotMediaError",
    "StreamInfo",
    "VideoWriter",
    "detect_black",
    "detect_frozen",
    "loudness",
    "loudness_curve",
    "mux_audio",
    "probe",
    "read_video_frames",
    "write_video",
]

BLACK_MIN_SECONDS = 0.25  # ffmpeg default 2.0
BLACK_PIXEL_THRESHOLD = 0.10  # luma below 10% of the range counts as black (ffmpeg default)
BLACK_PICTURE_RATIO = 0.98  # a frame is black when 98% of its pixels are (ffmpeg default)
FREEZE_MIN_SECONDS = 0.5  # ffmpeg default 2.0
FREEZE_NOISE = 0.001  # -60 dB, ffmpeg default: frames closer than this count as the same picture
_INSTALL_HINT = "install it (apt-get install ffmpeg, or `make apt`) or put it on PATH"


class MediaError(Exception):
    """Base class of media errors."""


class FFmpegNotFound(MediaError):
    """ffmpeg or ffprobe is not installed."""


class MediaFileNotFound(MediaError):
    """An input file does not exist."""


class NotMediaError(MediaError):
    """A file is not audio or video that ffmpeg can read."""


class MissingStreamError(MediaError):
    """A file has no stream of the kind an operation needs."""


class FFmpegFailed(MediaError):
    """ffmpeg exited with an error."""


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a media file. Video fields are None for audio streams and the reverse."""

    index: int
    kind: str  # "video", "audio", "subtitle", "data"
    codec: str
    duration: float | None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frame_count: int | None = None
    pix_fmt: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    profile: str | None = None  # codec profile as ffprobe names it ("High", "LC", ...)
    channel_layout: str | None = None  # "mono", "stereo", "5.1", ... (audio)
    frame_rate: str | None = None  # the exact rate as a fraction ("25/1", "30000/1001") (video)


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a file. The flat fields describe the first video stream (None without one)."""

    path: Path
    format_name: str
    duration: float
    size_bytes: int
    streams: tuple[StreamInfo, ...]
    codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    frame_count: int | None

    @property
    def video(self) -> StreamInfo | None:
        """The first video stream."""
        return next((s for s in self.streams if s.kind == "video"), None)

    @property
    def audio(self) -> StreamInfo | None:
        """The first audio stream."""
        return next((s for s in self.streams if s.kind == "audio"), None)


@dataclass(frozen=True)
class Loudness:
    """EBU R128 measurement of the first audio stream."""

    integrated_lufs: float  # gated integrated loudness; -70 or below means silence
    true_peak_dbtp: float  # 4x oversampled peak; -inf for digital silence
    range_lu: float  # loudness range (LRA)


@dataclass(frozen=True)
class Interval:
    """A stretch of a file, in seconds from its start."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start


# running ffmpeg ----------------------------------------------------------------------------------------------


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FFmpegNotFound(f"{name} not found on PATH; {_INSTALL_HINT}")
    return found


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MediaFileNotFound(f"{path}: no such file; check the path (and that the previous step wrote it)")
    return path


def _tail(log: str, lines: int = 8) -> str:
    return "\n".join(log.strip().splitlines()[-lines:])


def _looks_unreadable(log: str) -> bool:
    return any(
        s in log
        for s in (
            "Invalid data found",
            "could not find codec parameters",
            "moov atom not found",
            "Invalid argument",
            "does not contain any stream",
            "End of file",
        )
    )


def _run(stream: Any, what: str, path: Path) -> str:
    """Run a compiled ffmpeg-python stream to completion; return its log (stderr)."""
    args = [_binary("ffmpeg"), *stream.get_args()]
    with tempfile.TemporaryFile(mode="w+b") as log_file:
        proc = subprocess.run(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file, check=False
        )
        log_file.seek(0)
        log = log_file.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        if _looks_unreadable(log):
            raise NotMediaError(
                f"{path}: not a media file ffmpeg can read; check that it is the audio or video "
                f"you meant\n{_tail(log, 3)}"
            )
        raise FFmpegFailed(f"{what} failed for {path} (ffmpeg exit {proc.returncode}):\n{_tail(log)}")
    return log


# probe ------------------------------------------------------------------------------------------------------


def _rate(text: str | None) -> float | None:
    if not text or text in ("0/0", "0"):
        return None
    num, _, den = text.partition("/")
    return float(num) / float(den or 1) if float(den or 1) else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def probe(path: str | os.PathLike[str], *, count_frames: bool = False) -> MediaInfo:
    """Describe a media file. `count_frames` decodes the video to count frames when the container lacks the count."""
    path = _existing(path)
    _binary("ffprobe")
    extra = {"count_frames": None} if count_frames else {}
    try:
        data = ffmpeg.probe(str(path), cmd=shutil.which("ffprobe") or "ffprobe", **extra)
    except ffmpeg.Error as exc:
        log = (exc.stderr or b"").decode("utf-8", "replace")
        raise NotMediaError(
            f"{path}: not a media file ffprobe can read; check that it is the audio or video you "
            f"meant\n{_tail(log, 3)}"
        ) from None
    fmt = data.get("format", {})
    streams: list[StreamInfo] = []
    for s in data.get("streams", []):
        kind = s.get("codec_type", "data")
        streams.append(
            StreamInfo(
                index=int(s.get("index", len(streams))),
                kind=kind,
                codec=s.get("codec_name", "unknown"),
                duration=_float(s.get("duration")),
                width=_int(s.get("width")) if kind == "video" else None,
                height=_int(s.get("height")) if kind == "video" else None,
                fps=_rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate"))
                if kind == "video"
                else None,
                frame_count=_int(s.get("nb_read_frames") or s.get("nb_frames")) if kind == "video" else None,
                pix_fmt=s.get("pix_fmt") if kind == "video" else None,
                sample_rate=_int(s.get("sample_rate")) if kind == "audio" else None,
                channels=_int(s.get("channels")) if kind == "audio" else None,
                profile=s.get("profile") or None,
                channel_layout=s.get("channel_layout") or None if kind == "audio" else None,
                frame_rate=(s.get("avg_frame_rate") or s.get("r_frame_rate")) if kind == "video" else None,
            )
        )
    media = [s for s in streams if s.kind in ("video", "audio")]
    if not media:
        raise NotMediaError(f"{path}: holds no audio or video stream; check that it is the file you meant")
    video = next((s for s in streams if s.kind == "video"), None)
    duration = _float(fmt.get("duration")) or max((s.duration or 0.0 for s in media), default=0.0)
    return MediaInfo(
        path=path,
        format_name=fmt.get("format_name", "unknown"),
        duration=duration,
        size_bytes=_int(fmt.get("size")) or path.stat().st_size,
        streams=tuple(streams),
        codec=video.codec if video else None,
        width=video.width if video else None,
        height=video.height if video else None,
        fps=video.fps if video else None,
        frame_count=video.frame_count if video else None,
    )


# writing ----------------------------------------------------------------------------------------------------


class VideoWriter:
    """Stream RGB uint8 frames [H, W, 3] into an H.264 yuv420p mp4, one frame at a time.

    ::

        with VideoWriter("out.mp4", fps=25) as writer:
            for frame in frames:
                writer.write(frame)

    The file appears under `path` only when the writer closes without error (it is encoded under a
    temporary name in the same folder, then renamed), so a crash never leaves a truncated mp4 behind.
    Width and height are taken from the first frame and must be even (yuv420p halves the chroma).
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, *, crf: int = 18, preset: str = "medium"):
        if not 0 < fps <= 240:
            raise ValueError(f"fps must be in (0, 240], got {fps}")
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        self._size: tuple[int, int] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._tmp = self.path.with_name(f".{self.path.name}.partial{os.getpid()}.mp4")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _start(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise ValueError(
                f"frame size {height}x{width} must be even for yuv420p; crop or pad by one pixel"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stream = (
            ffmpeg.input(
                "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=self.fps
            )
            .output(
                str(self._tmp),
                vcodec="libx264",
                pix_fmt="yuv420p",
                crf=self.crf,
                preset=self.preset,
                r=self.fps,
                movflags="+faststart",
                format="mp4",
            )
            .global_args("-hide_banner", "-loglevel", "error")
            .overwrite_output()
        )
        # kept open for the writer's lifetime and closed in _cleanup
        self._log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [_binary("ffmpeg"), *stream.get_args()],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self._size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        """Append one frame: uint8 RGB of shape [H, W, 3], the same size for every frame."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"frame must be uint8 [H, W, 3] RGB, got {frame.dtype} {tuple(frame.shape)}; "
                "convert with (x.clip(0, 1) * 255).round().astype(np.uint8)"
            )
        if self._proc is None:
            self._start(frame.shape[0], frame.shape[1])
        size = self._size
        assert size is not None and self._proc is not None and self._proc.stdin is not None
        if frame.shape[:2] != size:
            raise ValueError(
                f"frame {self.frames_written} is {frame.shape[0]}x{frame.shape[1]}, the video is "
                f"{size[0]}x{size[1]}; every frame must have the first frame's size"
            )
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            raise self._failure("ffmpeg stopped reading frames") from None
        self.frames_written += 1

    def _failure(self, what: str) -> FFmpegFailed:
        log = ""
        if self._log is not None:
            self._log.seek(0)
            log = self._log.read().decode("utf-8", "replace")
        self.abort()
        return FFmpegFailed(f"encoding {self.path}: {what}:\n{_tail(log)}")

    def close(self) -> Path:
        """Finish encoding and move the file into place; returns its path."""
        if self._proc is None:
            raise ValueError(f"no frames were written to {self.path}; a video needs at least one frame")
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        if self._proc.wait() != 0:
            raise self._failure(f"ffmpeg exit {self._proc.returncode}")
        os.replace(self._tmp, self.path)
        self._cleanup()
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and remove the partial file."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._tmp.unlink(missing_ok=True)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._proc is not None and self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._proc = None


def write_video(
    path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: float, *, crf: int = 18
) -> Path:
    """Encode an iterable of uint8 RGB frames [H, W, 3] to an H.264 yuv420p mp4, streaming. Returns the path."""
    writer = VideoWriter(path, fps, crf=crf)
    with writer:
        for frame in frames:
            writer.write(frame)
    return writer.path


# reading ----------------------------------------------------------------------------------------------------


def read_video_frames(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Yield the frames of the first video stream as uint8 RGB [H, W, 3], one at a time."""
    info = probe(path)
    if info.width is None or info.height is None:
        raise MissingStreamError(f"{info.path}: has no video stream; pass a video file")
    frame_bytes = info.width * info.height * 3
    stream = (
        ffmpeg.input(str(info.path))
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", map="0:v:0")
        .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
    )
    with tempfile.TemporaryFile(mode="w+b") as log:
        proc = subprocess.Popen([_binary("ffmpeg"), *stream.get_args()], stdout=subprocess.PIPE, stderr=log)
        assert proc.stdout is not None
        try:
            while True:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                yield np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
        finally:
            if proc.poll() is None:
                proc.kill()  # the caller stopped early
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            log.seek(0)
            raise FFmpegFailed(
                f"decoding {info.path} failed (ffmpeg exit {code}):\n"
                f"{_tail(log.read().decode('utf-8', 'replace'))}"
            )


# muxing -----------------------------------------------------------------------------------------------------


def mux_audio(
    video: str | os.PathLike[str],
    audio: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    bitrate: str = "192k",
) -> Path:
    """Put `audio` (e.g. a WAV) into `video` as AAC 48 kHz; the video stream is copied, the output ends with the
    shorter of the two. Written atomically like `VideoWriter`."""
    vinfo, ainfo = probe(video), probe(audio)
    if vinfo.video is None:
        raise MissingStreamError(
            f"{vinfo.path}: has no video stream to mux audio into; pass the rendered mp4"
        )
    if ainfo.audio is None:
        raise MissingStreamError(f"{ainfo.path}: has no audio stream; pass a WAV or another audio file")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial{os.getpid()}.mp4")
    v_in, a_in = ffmpeg.input(str(vinfo.path)), ffmpeg.input(str(ainfo.path))
    stream = (
        ffmpeg.output(
            v_in["v:0"],
            a_in["a:0"],
            str(tmp),
            vcodec="copy",
            acodec="aac",
            ar=48000,
            audio_bitrate=bitrate,
            shortest=None,
            movflags="+faststart",
            format="mp4",
        )
        .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
        .overwrite_output()
    )
    try:
        _run(stream, "muxing audio", vinfo.path)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# analysis ---------------------------------------------------------------------------------------------------

_NUMBER = r"(-?(?:\d+(?:\.\d*)?|inf))"


def loudness(path: str | os.PathLike[str]) -> Loudness:
    """Integrated loudness (LUFS), true peak (dBTP) and loudness range of the first audio stream (EBU R128)."""
    info = probe(path)
    if info.audio is None:
        raise MissingStreamError(f"{info.path}: has no audio stream to measure; mux the soundtrack first")
    stream = (
        ffmpeg.input(str(info.path))
        .output("-", format="null", map="0:a:0", af="ebur128=peak=true:framelog=verbose")
        .global_args("-hide_banner", "-nostats", "-nostdin", "-loglevel", "info")
    )
    log = _run(stream, "loudness measurement", info.path)
    summary = log[log.rfind("Summary:") :] if "Summary:" in log else ""
    integrated = re.search(rf"I:\s+{_NUMBER} LUFS", summary)
    lra = re.search(rf"LRA:\s+{_NUMBER} LU", summary)
    peak = re.search(rf"Peak:\s+{_NUMBER} dBFS", summary)
    if not (integrated and lra and peak):
        raise FFmpegFailed(f"loudness of {info.path}: no EBU R128 summary in ffmpeg's output:\n{_tail(log)}")
    return Loudness(float(integrated[1]), float(peak[1]), float(lra[1]))


@dataclass(frozen=True)
class LoudnessCurve:
    """EBU R128 loudness over time (10 values a second): momentary (400 ms) and short-term (3 s) windows, LUFS.

    Values start at -120 LUFS or below while a window is still filling or silent."""

    times: tuple[float, ...]  # seconds from the start of the stream
    momentary_lufs: tuple[float, ...]
    short_term_lufs: tuple[float, ...]

    @property
    def max_short_term_lufs(self) -> float:
        """The loudest 3 s window (EBU R128 s1 limits it for short-form content); -inf for an empty curve."""
        return max(self.short_term_lufs, default=float("-inf"))


_FRAME_LINE = re.compile(rf"t:\s*{_NUMBER}\s+TARGET:.*?M:\s*{_NUMBER}\s+S:\s*{_NUMBER}")


def loudness_curve(path: str | os.PathLike[str]) -> LoudnessCurve:
    """Momentary and short-term loudness of the first audio stream every 100 ms (ffmpeg ebur128 frame log)."""
    info = probe(path)
    if info.audio is None:
        raise MissingStreamError(f"{info.path}: has no audio stream to measure; mux the soundtrack first")
    stream = (
        ffmpeg.input(str(info.path))
        .output("-", format="null", map="0:a:0", af="ebur128=framelog=verbose")
        .global_args("-hide_banner", "-nostats", "-nostdin", "-loglevel", "verbose")
    )
    log = _run(stream, "loudness curve", info.path)
    rows = [(float(t), float(m), float(st)) for t, m, st in _FRAME_LINE.findall(log)]
    return LoudnessCurve(
        times=tuple(r[0] for r in rows),
        momentary_lufs=tuple(r[1] for r in rows),
        short_term_lufs=tuple(r[2] for r in rows),
    )


def _intervals(starts: list[float], ends: list[float], duration: float) -> list[Interval]:
    # a stretch that lasts to the end of the file may have no end line
    ends = ends + [duration] * (len(starts) - len(ends))
    return [Interval(round(s, 3), round(e, 3)) for s, e in zip(starts, ends)]


def detect_black(
    path: str | os.PathLike[str],
    *,
    min_seconds: float = BLACK_MIN_SECONDS,
    pixel_threshold: float = BLACK_PIXEL_THRESHOLD,
    picture_ratio: float = BLACK_PICTURE_RATIO,
) -> list[Interval]:
    """Stretches of black picture at least `min_seconds` long (ffmpeg blackdetect)."""
    info = probe(path)
    if info.video is None:
        raise MissingStreamError(f"{info.path}: has no video stream to check for black frames")
    stream = (
        ffmpeg.input(str(info.path))
        .output(
            "-",
            format="null",
            map="0:v:0",
            vf=f"blackdetect=d={min_seconds}:pix_th={pixel_threshold}:pic_th={picture_ratio}",
        )
        .global_args("-hide_banner", "-nostats", "-nostdin", "-loglevel", "info")
    )
    log = _run(stream, "black detection", info.path)
    found = re.findall(rf"black_start:\s*{_NUMBER}\s+black_end:\s*{_NUMBER}", log)
    return [Interval(round(float(s), 3), round(float(e), 3)) for s, e in found]


def detect_frozen(
    path: str | os.PathLike[str], *, min_seconds: float = FREEZE_MIN_SECONDS, noise: float = FREEZE_NOISE
) -> list[Interval]:
    """Stretches where the picture does not change for at least `min_seconds` (ffmpeg freezedetect)."""
    info = probe(path)
    if info.video is None:
        raise MissingStreamError(f"{info.path}: has no video stream to check for frozen frames")
    stream = (
        ffmpeg.input(str(info.path))
        .output("-", format="null", map="0:v:0", vf=f"freezedetect=n={noise}:d={min_seconds}")
        .global_args("-hide_banner", "-nostats", "-nostdin", "-loglevel", "info")
    )
    log = _run(stream, "freeze detection", info.path)
    starts = [float(x) for x in re.findall(rf"freeze_start:\s*{_NUMBER}", log)]
    ends = [float(x) for x in re.findall(rf"freeze_end:\s*{_NUMBER}", log)]
    return _intervals(starts, ends, info.duration)
