"""components.runtime.media against the real ffmpeg: frames made with numpy, audio with the wave module."""

from __future__ import annotations

import math
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from components.runtime import media

pytestmark = pytest.mark.skipif(media.shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

H, W, FPS = 64, 96, 25


def moving_frame(t: int) -> np.ndarray:
    """A smooth pattern that moves 3 px per frame, so consecutive frames differ clearly."""
    y, x = np.mgrid[0:H, 0:W]
    r = 128 + 100 * np.sin((x + 3 * t) / 9.0)
    g = 128 + 100 * np.cos((y - 2 * t) / 7.0)
    b = (x * 2 + y + 5 * t) % 256
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def frames(n: int, *, black: range = range(0), frozen: range = range(0)) -> Iterator[np.ndarray]:
    for t in range(n):
        if t in black:
            yield np.zeros((H, W, 3), np.uint8)
        elif t in frozen:
            yield moving_frame(frozen.start)
        else:
            yield moving_frame(t)


def write_sine(
    path: Path, *, seconds: float, amplitude: float, freq: float = 997.0, rate: int = 48000
) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    samples = np.round(amplitude * np.sin(2 * math.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of moving pattern, written from a generator."""
    return media.write_video(tmp_path_factory.mktemp("media") / "clip.mp4", frames(50), FPS)


def test_write_and_probe(clip: Path) -> None:
    info = media.probe(clip)
    assert (info.codec, info.width, info.height) == ("h264", W, H)
    assert info.video is not None and info.video.pix_fmt == "yuv420p"
    assert info.fps == pytest.approx(FPS)
    assert info.frame_count == 50
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.audio is None and [s.kind for s in info.streams] == ["video"]


def test_read_back_frames_match(clip: Path) -> None:
    got = list(media.read_video_frames(clip))
    assert len(got) == 50
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in got)
    for t in (0, 17, 49):
        err = np.abs(got[t].astype(np.int16) - moving_frame(t).astype(np.int16)).mean()
        assert err < 8, f"frame {t} differs by {err:.1f} on average"
    # frames come back in order: frame 17 is closer to the original 17 than to 18
    d17 = np.abs(got[17].astype(np.int16) - moving_frame(17)).mean()
    d18 = np.abs(got[17].astype(np.int16) - moving_frame(18)).mean()
    assert d17 < d18 / 2


def test_reader_stopped_early_leaves_no_process(clip: Path) -> None:
    reader = media.read_video_frames(clip)
    first = next(reader)
    reader.close()  # kills ffmpeg; must not hang or raise
    assert first.shape == (H, W, 3)


def test_writer_is_atomic_and_checks_frames(tmp_path: Path) -> None:
    out = tmp_path / "bad.mp4"
    with (
        pytest.raises(ValueError, match=r"every frame must have the first frame's size"),
        media.VideoWriter(out, FPS) as writer,
    ):
        writer.write(moving_frame(0))
        writer.write(np.zeros((32, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == [], "an aborted write left a file behind"
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        media.write_video(out, [np.zeros((H, W, 3), np.float32)], FPS)
    with pytest.raises(ValueError, match=r"must be even"):
        media.write_video(out, [np.zeros((H + 1, W, 3), np.uint8)], FPS)
    assert not out.exists()


def test_mux_audio_aac_48k(clip: Path, tmp_path: Path) -> None:
    wav = write_sine(tmp_path / "tone.wav", seconds=3.0, amplitude=0.25, rate=44100)
    out = media.mux_audio(clip, wav, tmp_path / "muxed.mp4")
    info = media.probe(out)
    assert [s.kind for s in info.streams] == ["video", "audio"]
    assert info.audio is not None
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 48000, 1)
    assert info.codec == "h264" and info.frame_count == 50  # video copied untouched
    assert info.duration == pytest.approx(2.0, abs=0.1)  # shortest: the 3 s tone is cut to the video


@pytest.mark.parametrize("target_lufs", [-23.0, -14.0])
def test_loudness_of_known_sine(tmp_path: Path, target_lufs: float) -> None:
    # BS.1770: a 997 Hz sine of peak 1.0 in one channel reads -3.01 LUFS, so peak A reads -3.01 + 20 log10 A
    amplitude = 10 ** ((target_lufs + 3.01) / 20)
    wav = write_sine(tmp_path / "tone.wav", seconds=4.0, amplitude=amplitude)
    measured = media.loudness(wav)
    assert measured.integrated_lufs == pytest.approx(target_lufs, abs=1.0)
    assert measured.true_peak_dbtp == pytest.approx(20 * math.log10(amplitude), abs=0.5)
    assert measured.range_lu == pytest.approx(0.0, abs=1.0)  # a steady tone has no loudness range


def test_loudness_survives_mux(clip: Path, tmp_path: Path) -> None:
    wav = write_sine(tmp_path / "tone.wav", seconds=2.0, amplitude=0.1)
    muxed = media.mux_audio(clip, wav, tmp_path / "muxed.mp4")
    assert media.loudness(muxed).integrated_lufs == pytest.approx(
        media.loudness(wav).integrated_lufs, abs=1.0
    )


def test_loudness_needs_audio(clip: Path) -> None:
    with pytest.raises(media.MissingStreamError, match=r"clip\.mp4: has no audio stream"):
        media.loudness(clip)


def test_black_segment_detected(tmp_path: Path) -> None:
    path = media.write_video(tmp_path / "black.mp4", frames(75, black=range(25, 50)), FPS)
    found = media.detect_black(path)
    assert len(found) == 1
    assert found[0].start == pytest.approx(1.0, abs=0.05)
    assert found[0].end == pytest.approx(2.0, abs=0.05)


def test_frozen_segment_detected(tmp_path: Path) -> None:
    path = media.write_video(tmp_path / "frozen.mp4", frames(75, frozen=range(25, 50)), FPS)
    found = media.detect_frozen(path)
    assert len(found) == 1
    assert found[0].start == pytest.approx(1.0, abs=0.1)
    assert found[0].end == pytest.approx(2.0, abs=0.1)
    assert media.detect_black(path) == []


def test_clean_clip_has_no_black_or_frozen(clip: Path) -> None:
    assert media.detect_black(clip) == []
    assert media.detect_frozen(clip) == []


def test_short_stretches_below_threshold_pass(tmp_path: Path) -> None:
    # 4 black frames = 0.16 s: below the 0.25 s default, above a 0.1 s threshold
    path = media.write_video(tmp_path / "blip.mp4", frames(50, black=range(20, 24)), FPS)
    assert media.detect_black(path) == []
    assert len(media.detect_black(path, min_seconds=0.1)) == 1


def test_not_media(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file with a video extension\n" * 20)
    with pytest.raises(media.NotMediaError, match=r"notes\.mp4: not a media file"):
        media.probe(text)
    with pytest.raises(media.NotMediaError, match=r"notes\.mp4"):
        media.loudness(text)
    with pytest.raises(media.NotMediaError):
        list(media.read_video_frames(text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(media.MediaFileNotFound, match=r"absent\.mp4: no such file"):
        media.probe(tmp_path / "absent.mp4")


def test_ffmpeg_missing(tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no ffmpeg, no ffprobe
    with pytest.raises(media.FFmpegNotFound, match=r"not found on PATH; install it"):
        media.probe(clip)
    with pytest.raises(media.FFmpegNotFound, match=r"ffmpeg not found"):
        media.write_video(tmp_path / "x.mp4", frames(2), FPS)
    assert not (tmp_path / "x.mp4").exists()


def test_freeze_until_the_end_closes_at_the_duration(tmp_path: Path) -> None:
    # ffmpeg prints no freeze_end when the picture stays frozen to the last frame
    path = media.write_video(tmp_path / "tail.mp4", frames(75, frozen=range(50, 75)), FPS)
    found = media.detect_frozen(path)
    assert len(found) == 1
    assert found[0].start == pytest.approx(2.0, abs=0.1)
    assert found[0].end == pytest.approx(3.0, abs=0.05)
