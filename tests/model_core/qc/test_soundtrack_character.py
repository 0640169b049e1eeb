"""Foley sanity rule on synthetic soundtracks: a voice gated at the syllable rate is speech, a sustained chord is
music, noise (steady or in bursts) is neither; the envelope depth of an AM tone has its closed form."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.qc.soundtrack import SAMPLE_RATE, bed_character

T = np.arange(SAMPLE_RATE * 3) / SAMPLE_RATE
RNG = np.random.default_rng(0)


def _voice(f0: float = 150.0) -> np.ndarray:
    """A 150 Hz harmonic source with a little vibrato, switched on and off four times a second."""
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 1.3 * T))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    source = np.sum([np.sin(k * phase) / k for k in range(1, 23)], axis=0)
    return 0.1 * source * np.clip(np.sin(2 * np.pi * 4 * T), 0, None)


def test_voice_gated_at_syllable_rate_is_speech() -> None:
    bed = bed_character(_voice())
    assert bed.speech and not bed.music
    assert bed.periodic > 0.6 and bed.syllabic_share > 0.9 and bed.speech_likeness > 0.5


def test_sustained_chord_is_music() -> None:
    chord = np.sum(
        [np.sin(2 * np.pi * f * k * T) / k for f in (220.0, 277.18, 329.63) for k in range(1, 6)], axis=0
    )
    bed = bed_character(0.05 * chord)
    assert bed.music and not bed.speech and bed.tonal == 1.0 and bed.speech_likeness == 0.0


@pytest.mark.parametrize("gated", [False, True])
def test_noise_is_neither(gated: bool) -> None:
    noise = RNG.normal(size=T.size) * (np.clip(np.sin(2 * np.pi * 4 * T), 0, None) if gated else 1.0)
    bed = bed_character(0.1 * noise)
    assert not bed.speech and not bed.music and bed.periodic < 0.05 and bed.tonal < 0.05
    # bursts at 4 Hz have a syllabic envelope, but no pitch: not speech
    assert (bed.syllabic_share > 0.9) is gated


def test_envelope_depth_of_an_am_tone() -> None:
    # a 1 kHz tone at (1 + m sin 4 Hz): its 10 ms RMS envelope is proportional to 1 + m sin, depth m / sqrt(2)
    m = 0.5
    bed = bed_character(0.1 * (1 + m * np.sin(2 * np.pi * 4 * T)) * np.sin(2 * np.pi * 1000 * T))
    assert bed.envelope_depth == pytest.approx(m / np.sqrt(2), abs=0.01)
    assert bed.syllabic_share > 0.95 and bed.periodic == 1.0


def test_silence_and_short_clips() -> None:
    assert bed_character(np.zeros(SAMPLE_RATE)).speech_likeness == 0.0
    short = bed_character(_voice()[:400])  # 25 ms: shorter than one analysis frame
    assert short.periodic == 0.0 and not short.speech and short.seconds == 0.025
