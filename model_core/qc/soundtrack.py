"""Foley sanity: does a foley bed sound like speech or music? A signal-level rule, no model.

HunyuanVideo-Foley is known to babble (speech-like sounds with no words) on talking-head videos, and a foley bed
is meant to hold sound effects, not a voice or a tune. The rule, on the bed decoded to mono 16 kHz:

1. voicing: in 40 ms frames (hop 20 ms) louder than 40 dB under the loudest, the peak of the normalised
   autocorrelation at lags 2.5-12.5 ms (a pitch of 80-400 Hz, the range of voices and most melodies); a frame is
   periodic when the peak exceeds 0.5. ``periodic`` = the fraction of periodic frames.
2. syllabic modulation: the RMS envelope of the 300-3400 Hz band in 10 ms frames; its depth (std / mean) and the
   share of its modulation power (mean removed, Hann window) at 2-8 Hz among 0.5-25 Hz. Speech carries most of
   its envelope modulation at the syllable rate, about 4 Hz; steady tones and stationary noise carry little.
3. flags: ``speech`` when periodic >= 0.3, depth >= 0.3 and the 2-8 Hz share >= 0.5 (voiced sound switched on
   and off at the syllable rate); ``music`` when, not speech, ``tonal`` >= 0.6: the fraction of loud frames whose
   50-5000 Hz spectrum is peaky (spectral flatness under 0.1; white noise is about 0.56), i.e. sustained tones.
   ``speech_likeness`` = periodic x share (0 when the depth is under 0.1), a number to sort beds by.

It flags sustained tonal sound and pitched sound gated at syllable rate; it does not recognise words, and a
rhythmic pitched effect (an engine at 4 Hz) can pass for speech. The thresholds were set on synthetic signals
(tests/model_core/qc/test_soundtrack.py): a 150 Hz voice gated at 4 Hz, a sustained chord, white noise, and
noise bursts at 4 Hz.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SAMPLE_RATE", "BedCharacter", "bed_character"]

SAMPLE_RATE = 16000
RECIPE = (
    "signal rule: periodic fraction (autocorrelation peak > 0.5 at 80-400 Hz pitch), 300-3400 Hz envelope depth "
    "and 2-8 Hz modulation share; speech: periodic >= 0.3, depth >= 0.3, share >= 0.5; music: else tonal "
    "(spectral flatness < 0.1) >= 0.6"
)


@dataclass(frozen=True)
class BedCharacter:
    """What a soundtrack sounds like, by the rule above."""

    seconds: float
    periodic: float  # fraction of loud frames with a pitch
    envelope_depth: float  # std / mean of the speech-band envelope
    syllabic_share: float  # share of envelope modulation power at 2-8 Hz
    speech_likeness: float
    speech: bool
    music: bool
    tonal: float  # fraction of loud frames with a peaky spectrum
    recipe: str = RECIPE


def _loud_frames(x: np.ndarray, sr: int) -> np.ndarray:
    """40 ms frames, hop 20 ms, within 40 dB of the loudest ``[K, frame]`` (none for silence)."""
    frame, hop = int(0.04 * sr), int(0.02 * sr)
    if len(x) < frame:
        return np.zeros((0, frame))
    frames = np.stack([x[s : s + frame] for s in range(0, len(x) - frame + 1, hop)])
    energy = (frames**2).mean(axis=1)
    if energy.max() <= 0:
        return np.zeros((0, frame))
    return frames[energy > energy.max() * 1e-4]


def _tonal_fraction(frames: np.ndarray, sr: int) -> float:
    """Fraction of frames whose 50-5000 Hz power spectrum is peaky: spectral flatness (geometric over arithmetic
    mean) under 0.1, where white noise is about 0.56 and a few sustained tones are near 0."""
    if len(frames) == 0:
        return 0.0
    power = np.abs(np.fft.rfft(frames * np.hanning(frames.shape[1]), axis=1)) ** 2
    freqs = np.fft.rfftfreq(frames.shape[1], 1 / sr)
    p = power[:, (freqs >= 50) & (freqs <= 5000)] + 1e-12
    flatness = np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1)
    return float((flatness < 0.1).mean())


def _periodic_fraction(frames: np.ndarray, sr: int) -> float:
    if len(frames) == 0:
        return 0.0
    frame = frames.shape[1]
    lo, hi = int(0.0025 * sr), int(0.0125 * sr)
    periodic = 0
    for f in frames:
        f = f - f.mean()
        spec = np.fft.rfft(f, n=2 * frame)
        ac = np.fft.irfft(np.abs(spec) ** 2)[:frame]
        if ac[0] <= 0:
            continue
        # normalise by the overlap length so that a periodic frame peaks near 1 at its period
        norm = ac / ac[0] * frame / (frame - np.arange(frame))
        periodic += bool(norm[lo : hi + 1].max() > 0.5)
    return periodic / len(frames)


def _envelope(x: np.ndarray, sr: int) -> np.ndarray:
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    band = np.fft.irfft(spec * ((freqs >= 300) & (freqs <= 3400)), n=len(x))
    hop = sr // 100
    n = len(band) // hop
    return np.sqrt((band[: n * hop].reshape(n, hop) ** 2).mean(axis=1))


def bed_character(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> BedCharacter:
    """The character of a mono soundtrack (float samples at ``sample_rate``)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    seconds = len(x) / sample_rate
    frames = _loud_frames(x, sample_rate)
    periodic = _periodic_fraction(frames, sample_rate)
    tonal = _tonal_fraction(frames, sample_rate)
    env = _envelope(x, sample_rate)
    depth = float(env.std() / env.mean()) if len(env) and env.mean() > 0 else 0.0
    share = 0.0
    if len(env) >= 50:  # half a second of envelope: enough to see a 2 Hz modulation once
        e = (env - env.mean()) * np.hanning(len(env))
        power = np.abs(np.fft.rfft(e)) ** 2
        freqs = np.fft.rfftfreq(len(e), 1 / 100)
        total = power[(freqs >= 0.5) & (freqs <= 25)].sum()
        share = float(power[(freqs >= 2) & (freqs <= 8)].sum() / total) if total > 0 else 0.0
    speech = periodic >= 0.3 and depth >= 0.3 and share >= 0.5
    likeness = periodic * share if depth >= 0.1 else 0.0
    return BedCharacter(
        seconds=round(seconds, 3),
        periodic=round(periodic, 4),
        envelope_depth=round(depth, 4),
        syllabic_share=round(share, 4),
        speech_likeness=round(likeness, 4),
        speech=speech,
        music=tonal >= 0.6 and not speech,
        tonal=round(tonal, 4),
    )
