"""Delivery checks on files made here with numpy and ffmpeg: tones of known loudness, clipped peaks, black and
frozen inserts, a wrong frame rate or pixel format, a missing soundtrack.

The reference loudness is computed from the signal, not measured: ITU-R BS.1770 is calibrated so that a 997 Hz
sine at full scale in one channel reads -3.01 LUFS, so the same sine of amplitude A in both channels of a stereo
file reads 20*log10(A) LUFS, and its true peak is 20*log10(A) dBTP.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from components.runtime import delivery, media

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

H, W, FPS, FRAMES = 64, 96, 25, 100  # 4 s: the short-term loudness window is 3 s
RATE = 48000


def pattern(t: int) -> np.ndarray:
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
            yield pattern(frozen.start)
        else:
            yield pattern(t)


def write_stereo(path: Path, signal: np.ndarray) -> Path:
    pcm = np.round(np.clip(signal, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.repeat(pcm[:, None], 2, axis=1).tobytes())
    return path


def tone(lufs: float, seconds: float = FRAMES / FPS) -> np.ndarray:
    """A stereo 997 Hz sine reading `lufs` (see the module docstring)."""
    t = np.arange(int(seconds * RATE)) / RATE
    return 10 ** (lufs / 20) * np.sin(2 * math.pi * 997 * t)


def ad(folder: Path, name: str, signal: np.ndarray | None, **picture: range) -> Path:
    """A 4 s H.264 mp4 with `signal` muxed as AAC 48 kHz stereo by the pipeline's own mux."""
    video = media.write_video(folder / f"{name}-silent.mp4", frames(FRAMES, **picture), FPS)
    if signal is None:
        return video
    wav = write_stereo(folder / f"{name}.wav", signal)
    return media.mux_audio(video, wav, folder / f"{name}.mp4")


EXPECTED = delivery.Expected(width=W, height=H, fps=FPS, frames=FRAMES, audio=True)
R128 = delivery.delivery_profile("ebu-r128")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("delivery")


@pytest.fixture(scope="module")
def good(folder: Path) -> Path:
    return ad(folder, "good", tone(-23.0))


def by_name(report: delivery.DeliveryReport) -> dict[str, delivery.Check]:
    return {c.name: c for c in report.checks}


def test_profiles_name_their_standards() -> None:
    p = delivery.DELIVERY_PROFILES
    assert (p["ebu-r128"].loudness.integrated_lufs, p["ebu-r128"].loudness.tolerance_lu) == (-23.0, 1.0)
    assert p["ebu-r128"].loudness.max_true_peak_dbtp == -1.0
    assert (p["atsc-a85"].loudness.integrated_lufs, p["atsc-a85"].loudness.max_true_peak_dbtp) == (
        -24.0,
        -2.0,
    )
    assert p["streaming-14"].loudness.integrated_lufs == -14.0
    assert p["streaming-16"].loudness.integrated_lufs == -16.0
    assert p["web-r128"].loudness == p["ebu-r128"].loudness  # the campaign spec's default profile name
    assert delivery.delivery_profile("atsc-a85", tolerance_lu=0.5).loudness.tolerance_lu == 0.5
    with pytest.raises(KeyError, match="qc.name to one of atsc-a85"):
        delivery.delivery_profile("r128")


def test_conforming_ad_passes_every_check(good: Path) -> None:
    report = delivery.check_delivery(good, R128, EXPECTED)
    checks = by_name(report)
    assert report.passed, [c for c in report.checks if c.status not in ("pass", "info")]
    assert checks["loudness.integrated"].measured == pytest.approx(-23.0, abs=0.3)
    assert checks["loudness.true_peak"].measured == pytest.approx(-23.0, abs=0.5)
    assert checks["loudness.short_term_max"].measured == pytest.approx(-23.0, abs=0.3)
    assert checks["video.size"].measured == f"{W}x{H}" and checks["video.fps"].measured == "25/1"
    assert (
        checks["audio.channel_layout"].measured == "stereo" and checks["audio.sample_rate"].measured == RATE
    )
    assert checks["picture.black"].measured == [] and checks["picture.frozen"].measured == []
    assert {"container", "video.codec", "video.profile", "video.pix_fmt", "video.frames", "duration"} <= set(
        checks
    )
    # the curve covers the file every 100 ms
    assert report.loudness_curve is not None and len(report.loudness_curve.times) >= 35
    assert report.to_dict()["passed"] is True


@pytest.mark.parametrize(
    ("lufs", "profile", "passes"),
    [
        (-23.0, "ebu-r128", True),
        (-21.5, "ebu-r128", False),  # 1.5 LU loud
        (-24.0, "atsc-a85", True),
        (-25.5, "atsc-a85", True),  # within A/85's ±2
        (-14.0, "streaming-14", True),
        (-14.0, "streaming-16", False),
        (-16.0, "streaming-16", True),
    ],
)
def test_integrated_loudness_against_profiles(folder: Path, lufs: float, profile: str, passes: bool) -> None:
    wav = write_stereo(folder / f"tone{lufs}.wav", tone(lufs))
    measured = media.loudness(wav)
    assert measured.integrated_lufs == pytest.approx(
        lufs, abs=0.15
    )  # the meter against BS.1770's calibration
    target = delivery.delivery_profile(profile).loudness
    checks = {c.name: c for c in delivery.check_loudness(measured, target)}
    assert (checks["loudness.integrated"].status == "pass") is passes


def test_over_peak_clip_fails_true_peak_only(folder: Path) -> None:
    signal = tone(-23.0)
    burst = slice(2 * RATE, 2 * RATE + 3 * RATE // 1000)  # 3 ms at nearly full scale: +0.6 LU of energy
    signal[burst] *= 0.99 / 10 ** (-23.0 / 20)
    path = ad(folder, "clicks", signal)
    checks = by_name(delivery.check_delivery(path, R128, EXPECTED))
    assert checks["loudness.true_peak"].status == "fail" and checks["loudness.true_peak"].measured > -1.0
    assert checks["loudness.integrated"].status == "pass"


def test_loudness_range_limit(folder: Path) -> None:
    # 8 s at -30 LUFS then 8 s at -20: a 10 LU step, inside the range's -20 LU relative gate
    signal = np.concatenate([tone(-30.0, 8.0), tone(-20.0, 8.0)])
    measured = media.loudness(write_stereo(folder / "step.wav", signal))
    assert measured.range_lu == pytest.approx(
        10.0, abs=0.5
    )  # the step, between the 10th and 95th percentiles
    target = delivery.LoudnessTarget(-23.0, 1.0, -1.0, max_range_lu=5.0)
    checks = {c.name: c for c in delivery.check_loudness(measured, target)}
    assert checks["loudness.range"].status == "fail"
    reported = {c.name: c for c in delivery.check_loudness(measured, R128.loudness)}
    assert reported["loudness.range"].status == "info" and "no limit" in reported["loudness.range"].limit


def test_black_and_frozen_inserts_are_found_with_the_campaign_thresholds(folder: Path) -> None:
    # 0.4 s of black at 1.0 s, 0.8 s frozen at 2.4 s
    path = ad(folder, "inserts", tone(-23.0), black=range(25, 35), frozen=range(60, 80))
    checks = by_name(delivery.check_delivery(path, R128, EXPECTED))
    assert checks["picture.black"].status == "fail" and checks["picture.black"].seed_fixable
    [[b0, b1]] = checks["picture.black"].measured
    assert (b0, b1) == (pytest.approx(1.0, abs=0.05), pytest.approx(1.4, abs=0.05))
    [[f0, f1]] = checks["picture.frozen"].measured
    assert f0 == pytest.approx(2.4, abs=0.1) and f1 == pytest.approx(3.2, abs=0.1)
    # longer minimum stretches than the inserts: nothing flagged
    lenient = by_name(
        delivery.check_delivery(path, R128, EXPECTED, black_min_seconds=0.5, freeze_min_seconds=1.0)
    )
    assert lenient["picture.black"].status == "pass" and lenient["picture.frozen"].status == "pass"


def test_wrong_fps_pixel_format_and_missing_audio(folder: Path, good: Path) -> None:
    slow = media.write_video(folder / "24fps.mp4", frames(FRAMES), 24)
    checks = by_name(delivery.check_delivery(slow, R128, EXPECTED))
    assert checks["video.fps"].status == "fail" and checks["video.fps"].measured == "24/1"
    assert checks["duration"].status == "fail"  # 100 frames at 24 fps last 4.17 s
    assert checks["audio.present"].status == "fail"  # the unit expects a soundtrack
    assert not any(c.name.startswith("loudness.") for c in checks.values())

    yuv444 = folder / "yuv444.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(good), "-c:v", "libx264",
         "-pix_fmt", "yuv444p", "-c:a", "copy", str(yuv444)],
        check=True,
    )  # fmt: skip
    checks = by_name(delivery.check_delivery(yuv444, R128, EXPECTED))
    assert checks["video.pix_fmt"].status == "fail" and checks["video.pix_fmt"].measured == "yuv444p"
    assert checks["video.profile"].status == "fail"  # High 4:4:4 Predictive
    assert not checks["video.pix_fmt"].seed_fixable

    small = by_name(delivery.check_delivery(good, R128, delivery.Expected(W * 2, H, FPS, FRAMES, True)))
    assert small["video.size"].status == "fail" and small["video.size"].measured == f"{W}x{H}"


def test_silent_render_by_design_is_not_failed_for_its_silence(folder: Path) -> None:
    silent = ad(folder, "silent", None)
    report = delivery.check_delivery(silent, R128, delivery.Expected(W, H, FPS, FRAMES, audio=False))
    assert report.passed and by_name(report)["audio.present"].status == "n/a"


def test_mono_44k_soundtrack_fails_layout_and_rate(folder: Path, good: Path) -> None:
    mono = folder / "mono.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(good), "-c:v", "copy",
         "-c:a", "aac", "-ac", "1", "-ar", "44100", str(mono)],
        check=True,
    )  # fmt: skip
    checks = by_name(delivery.check_delivery(mono, R128, EXPECTED))
    assert (
        checks["audio.channel_layout"].status == "fail" and checks["audio.channel_layout"].measured == "mono"
    )
    assert checks["audio.sample_rate"].status == "fail" and checks["audio.sample_rate"].measured == 44100


def test_clips_shorter_than_the_measurement_windows_are_not_judged_on_no_data() -> None:
    silent_blocks = media.Loudness(integrated_lufs=-70.0, true_peak_dbtp=-12.0, range_lu=0.0)
    curve = media.LoudnessCurve((0.1, 0.2), (-20.0, -20.0), (-120.7, -120.7))
    short = {c.name: c for c in delivery.check_loudness(silent_blocks, R128.loudness, curve, duration=0.3)}
    assert (
        short["loudness.integrated"].status == "n/a"
        and "0.4 s gating block" in short["loudness.integrated"].detail
    )
    assert short["loudness.true_peak"].status == "pass"  # the peak needs no window
    assert short["loudness.range"].status == "n/a" and short["loudness.short_term_max"].status == "n/a"
    two_s = {c.name: c for c in delivery.check_loudness(silent_blocks, R128.loudness, curve, duration=2.0)}
    assert two_s["loudness.integrated"].status == "fail" and two_s["loudness.short_term_max"].status == "n/a"
