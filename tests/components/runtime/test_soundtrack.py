"""The soundtrack: the in-process meter against the project's (ffmpeg ebur128), the limiter, two-pass
normalisation, and the ducking rule measured on the demo's voice with the project meter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.runtime import media, soundtrack
from components.runtime.soundtrack import RATE


def _noise(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * level


def test_in_process_meter_agrees_with_the_project_meter(tmp_path: Path) -> None:
    t = np.arange(3 * RATE) / RATE
    for x in (
        0.1 * np.sin(2 * np.pi * 997 * t),
        _noise(3, 0.05),
        np.stack([_noise(3, 0.2), _noise(3, 0.02, 1)]),
    ):
        ours = soundtrack.integrated_lufs(x)
        theirs = soundtrack.measure(x, tmp_path)
        assert ours == pytest.approx(theirs.integrated_lufs, abs=0.15)
        assert soundtrack.true_peak_dbtp(x) == pytest.approx(theirs.true_peak_dbtp, abs=0.3)


def test_wav_round_trip_is_24_bit(tmp_path: Path) -> None:
    x = np.stack([_noise(0.5, 0.3), -_noise(0.5, 0.3)]).clip(-1, 1)
    path = soundtrack.write_wav(tmp_path / "a.wav", x)
    info = media.probe(path)
    assert info.audio is not None and (info.audio.sample_rate, info.audio.channels) == (RATE, 2)
    mono = soundtrack.read_audio(path)  # downmixed: the two channels cancel
    assert np.abs(mono).max() < 1e-5
    assert np.abs(soundtrack.read_audio(soundtrack.write_wav(tmp_path / "b.wav", x[0])) - x[0]).max() < 2**-22


def test_limiter_holds_the_true_peak_and_leaves_quiet_parts_alone() -> None:
    x = _noise(1.0, 0.02)
    x[RATE // 2 : RATE // 2 + 200] += 0.9 * np.sin(np.arange(200) * 2.9)  # a loud click near Nyquist
    gain = soundtrack.limiter_gain(x, -3.0)
    assert soundtrack.true_peak_dbtp(x * gain) <= -3.0
    assert np.all(gain[: RATE // 4] == 1.0) and np.all(gain[3 * RATE // 4 :] == 1.0)
    assert np.all(np.abs(np.diff(gain)) < 0.01)  # ramps, no steps


@pytest.mark.parametrize(("target", "ceiling"), [(-23.0, -1.0), (-14.0, -1.0), (-24.0, -2.0)])
def test_two_pass_normalisation_reaches_the_target(tmp_path: Path, target: float, ceiling: float) -> None:
    x = np.stack([_noise(2.0, 0.01), _noise(2.0, 0.01, 1)])
    x[:, RATE : RATE + 100] = 0.5  # a transient that needs the limiter at the louder targets
    out = soundtrack.normalise(x, target, ceiling, tmp_path)
    level = soundtrack.measure(out.samples, tmp_path)
    assert abs(level.integrated_lufs - target) <= 0.5 and level.true_peak_dbtp <= ceiling - 0.9
    np.testing.assert_allclose(out.samples, x * out.gain)


def test_silence_is_left_alone(tmp_path: Path) -> None:
    out = soundtrack.normalise(np.zeros((2, RATE)), -23.0, -1.0, tmp_path)
    assert out.silent and not out.samples.any()


def test_ducking_keeps_the_voice_10_lu_above_the_bed(demo_media: Path, tmp_path: Path) -> None:
    """The rule: wherever the voice speaks (momentary loudness within 20 LU of its loudest 400 ms, above -70
    LUFS) the bed's momentary loudness is at least 10 LU under the voice's, measured with the project meter."""
    voice = soundtrack.read_audio(demo_media / "voiceover.wav")[: 4 * RATE]
    bed = _noise(voice.shape[0] / RATE, 0.2, 3)  # a bed far louder than the voice
    assert soundtrack.voice_over_bed_lu(voice, bed, tmp_path) < 0  # before: the bed drowns the voice
    ducked, cut = soundtrack.duck_under(bed, voice)
    margin = soundtrack.voice_over_bed_lu(voice, ducked, tmp_path)
    assert margin is not None and margin >= 10.0 and cut > 10.0
    # the mix at the delivery loudness keeps it: one gain for voice and bed
    out = soundtrack.normalise(np.stack([voice + ducked] * 2), -23.0, -1.0, tmp_path)
    after = soundtrack.voice_over_bed_lu(voice * out.gain, ducked * out.gain, tmp_path)
    assert after is not None and after >= 10.0
    # where the voice is silent the bed comes back
    v = soundtrack.momentary_lufs(voice)
    quiet = ~soundtrack.speaking(v)
    if quiet.any():
        b0, b1 = soundtrack.momentary_lufs(bed), soundtrack.momentary_lufs(ducked)
        assert np.max((b0 - b1)[quiet]) < np.max((b0 - b1)[~quiet])
