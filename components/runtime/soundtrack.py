"""The soundtrack of a deliverable: loudness normalisation with a true-peak limiter, and a foley bed ducked under a
voice.

Measurements that decide whether a soundtrack meets its target are made with the project's EBU R128 meter
(``media.loudness``: ffmpeg's ``ebur128``, ITU-R BS.1770 gated loudness and 4x oversampled true peak). The
in-process meter here (the same BS.1770-4 K-weighting and gating, in numpy) only steers gains between those
measurements: the ducking gain curve, and the limiter's oversampled peaks.

Normalisation is two-pass: measure, apply the gain that brings the integrated loudness to the target, limit the
true peak under the ceiling (less a headroom for the AAC encoder, whose output can overshoot its input by a few
tenths of a dB), measure again and correct the remaining error (:func:`normalise`). Clips shorter than one 400 ms
gating block have no integrated loudness; they are measured looped to 3 s (:func:`measure`).

Ducking rule (:func:`duck_under`): in every 400 ms window where the voice speaks (its momentary loudness within
20 LU of its loudest window and above -70 LUFS), the bed is lowered until its momentary loudness is at least
``DUCK_MARGIN_LU`` (12 LU) under the voice's; the delivery rule is 10 LU, the 2 LU more cover the meters'
different window alignments. The gain moves smoothly (50 ms ramps) and never rises above what a window needs.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np
from numpy.typing import NDArray

from components.runtime import media

__all__ = [
    "AAC_HEADROOM_DB",
    "DUCK_MARGIN_LU",
    "RATE",
    "SPEECH_RANGE_LU",
    "Normalised",
    "duck_under",
    "integrated_lufs",
    "limit_true_peak",
    "limiter_gain",
    "measure",
    "momentary_lufs",
    "normalise",
    "read_audio",
    "speaking",
    "true_peak_dbtp",
    "voice_over_bed_lu",
    "write_wav",
]

Audio = NDArray[np.float64]  # [channels, samples] or [samples], float in [-1, 1]

RATE = 48000
BLOCK_SECONDS = 0.4  # BS.1770 gating block (momentary window)
HOP_SECONDS = 0.1  # 75 % overlap
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LOOP_SECONDS = 3.0  # a clip shorter than one block is measured looped to this length
AAC_HEADROOM_DB = 1.0  # the limiter's ceiling sits this far under the delivery ceiling
DUCK_MARGIN_LU = 12.0  # voice over bed while the voice speaks (the rule is 10 LU)
SPEECH_RANGE_LU = 20.0  # windows within this of the voice's loudest count as speech
SILENCE_LUFS = -70.0  # at or below: nothing to normalise

# ITU-R BS.1770-4 K-weighting at 48 kHz: a high-shelf (head effects) then a high-pass (RLB), as biquads (b, a)
_SHELF = ((1.53512485958697, -2.69169618940638, 1.19839281085285), (1.0, -1.69065929318241, 0.73248077421585))
_HIGHPASS = ((1.0, -2.0, 1.0), (1.0, -1.99004745483398, 0.99007225036621))


def _channels(x: Audio) -> Audio:
    return x[None] if x.ndim == 1 else x


# file I/O -----------------------------------------------------------------------------------------------------


def read_audio(path: str | os.PathLike[str], rate: int = RATE) -> Audio:
    """The first audio stream of a file as mono float64 samples at ``rate`` (ffmpeg decodes and resamples)."""
    info = media.probe(path)
    if info.audio is None:
        raise media.MissingStreamError(f"{info.path}: has no audio stream; pass a WAV or another audio file")
    stream = (
        ffmpeg.input(str(info.path))
        .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=rate, map="0:a:0")
        .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
    )
    ffmpeg_bin = media._binary("ffmpeg")
    done = subprocess.run([ffmpeg_bin, *stream.get_args()], capture_output=True, check=False)
    if done.returncode != 0:
        raise media.FFmpegFailed(
            f"decoding the audio of {info.path} failed (ffmpeg exit {done.returncode}):\n"
            f"{done.stderr.decode('utf-8', 'replace')[-2000:]}"
        )
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float64)


def write_wav(path: str | os.PathLike[str], x: Audio, rate: int = RATE) -> Path:
    """Write samples (``[samples]`` mono or ``[channels, samples]``) as a 24-bit PCM WAV, clipped to [-1, 1]."""
    x = _channels(np.asarray(x, dtype=np.float64))
    scaled = np.clip(np.round(x.T * (2**23 - 1)), -(2**23), 2**23 - 1).astype("<i4")  # [samples, channels]
    pcm = scaled.reshape(-1).view(np.uint8).reshape(-1, 4)[:, :3]  # little-endian: drop the top byte
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(x.shape[0])
        out.setsampwidth(3)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


# the in-process BS.1770 meter ---------------------------------------------------------------------------------


def _k_weight(x: Audio) -> Audio:
    """K-weighted samples (48 kHz), filtered in the frequency domain with the two biquads' response."""
    x = _channels(x)
    n = x.shape[-1]
    size = 1 << math.ceil(math.log2(n + 16384))  # zero padding outlasts the high-pass's impulse response
    z = np.exp(-1j * np.pi * np.arange(size // 2 + 1) / (size // 2))  # e^{-jw} on the rfft bins
    response = np.ones_like(z)
    for b, a in (_SHELF, _HIGHPASS):
        response *= (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    return np.fft.irfft(np.fft.rfft(x, size) * response, size)[..., :n]


def _block_powers(x: Audio, rate: int) -> Audio:
    """Mean square of the K-weighted signal over 400 ms blocks every 100 ms, summed over channels: ``[blocks]``."""
    weighted = _k_weight(x)
    block, hop = round(BLOCK_SECONDS * rate), round(HOP_SECONDS * rate)
    n = weighted.shape[-1]
    if n < block:
        return np.zeros(0)
    starts = np.arange(0, n - block + 1, hop)
    cumulative = np.concatenate([np.zeros((weighted.shape[0], 1)), np.cumsum(weighted**2, axis=-1)], axis=-1)
    powers = (cumulative[:, starts + block] - cumulative[:, starts]) / block
    return np.asarray(powers.sum(axis=0))  # channel weights are 1 for left, right and mono


def _lufs(power: Audio | float) -> Audio:
    return np.asarray(-0.691 + 10 * np.log10(np.maximum(power, 1e-20)))


def momentary_lufs(x: Audio, rate: int = RATE) -> Audio:
    """Momentary loudness (LUFS) of the 400 ms windows starting every 100 ms."""
    return _lufs(_block_powers(x, rate))


def integrated_lufs(x: Audio, rate: int = RATE) -> float:
    """Gated integrated loudness (LUFS); -inf when no block passes the absolute gate."""
    powers = _block_powers(x, rate)
    powers = powers[_lufs(powers) > ABSOLUTE_GATE_LUFS]
    if powers.size == 0:
        return float("-inf")
    relative = float(_lufs(powers.mean())) + RELATIVE_GATE_LU
    gated = powers[_lufs(powers) > relative]
    return float(_lufs(gated.mean()))


def _oversampled(x: Audio, factor: int = 4) -> Audio:
    """Band-limited ``factor``x oversampling (FFT zero padding) of ``[channels, samples]``."""
    n = x.shape[-1]
    spectrum = np.fft.rfft(x, 2 * n)  # zero padded: no wrap-around between the clip's two ends
    return np.fft.irfft(spectrum, 2 * n * factor)[..., : n * factor] * factor


def _sample_peaks(x: Audio, factor: int = 4) -> Audio:
    """The largest oversampled magnitude at or after each sample, before the next, over all channels."""
    x = _channels(x)
    up = np.abs(_oversampled(x, factor)).max(axis=0)
    return np.asarray(np.maximum(up.reshape(-1, factor).max(axis=1), np.abs(x).max(axis=0)))


def true_peak_dbtp(x: Audio) -> float:
    """4x oversampled peak (dBTP) of all channels."""
    peak = float(_sample_peaks(x).max()) if _channels(x).shape[-1] else 0.0
    return 20 * math.log10(peak) if peak > 0 else float("-inf")


# gain curves --------------------------------------------------------------------------------------------------


def _running_min(x: Audio, width: int) -> Audio:
    """``out[i] = min(x[i - width // 2 : i - width // 2 + width])`` (edges use the samples that exist)."""
    if width <= 1:
        return x.copy()
    pad = np.concatenate([np.full(width // 2, np.inf), x, np.full(width, np.inf)])
    out, span = pad, 1
    while span * 2 <= width:  # out[i] = min(pad[i : i + span]), span doubling
        out = np.minimum(out[:-span], out[span:])
        span *= 2
    out = np.minimum(out[: len(out) - (width - span)], out[width - span :])  # two overlapping spans
    return np.asarray(out[: x.shape[0]])


def _moving_average(x: Audio, width: int) -> Audio:
    """Centred moving average; the edges repeat the end values."""
    if width <= 1:
        return x.copy()
    half = width // 2
    padded = np.concatenate([np.full(half, x[0]), x, np.full(width - half, x[-1])])
    cumulative = np.concatenate([[0.0], np.cumsum(padded)])
    return np.asarray((cumulative[width:] - cumulative[:-width])[: x.shape[0]] / width)


def _smooth_under(required: Audio, width: int) -> Audio:
    """A smooth gain curve that is nowhere above ``required``: a running minimum over 2 ``width`` samples, then a
    moving average over ``width`` (every averaged value is a minimum over a window holding the sample)."""
    return _moving_average(_running_min(required, 2 * width + 1), width)


def limiter_gain(x: Audio, ceiling_dbtp: float, rate: int = RATE, *, ramp_seconds: float = 0.005) -> Audio:
    """The per-sample gain ``[samples]`` of a look-ahead limiter: lowered smoothly (``ramp_seconds`` ramps) where
    the 4x oversampled peak of ``x`` would pass ``ceiling_dbtp``, 1 elsewhere."""
    x = _channels(np.asarray(x, dtype=np.float64))
    ceiling = 10 ** (ceiling_dbtp / 20)
    gain = np.ones(x.shape[-1])
    for _ in range(4):  # a smoothed gain changes the oversampled peaks a little: repeat until under
        peaks = _sample_peaks(x * gain)
        if peaks.max() <= ceiling:
            break
        required = np.minimum(1.0, 0.999 * ceiling / np.maximum(peaks, 1e-12))
        gain = gain * _smooth_under(required, max(1, round(ramp_seconds * rate)))
    return gain


def limit_true_peak(x: Audio, ceiling_dbtp: float, rate: int = RATE) -> Audio:
    """``x`` through the look-ahead limiter of :func:`limiter_gain`."""
    x = _channels(np.asarray(x, dtype=np.float64))
    return x * limiter_gain(x, ceiling_dbtp, rate)


def speaking(voice_lufs: Audio) -> NDArray[np.bool_]:
    """Windows where the voice speaks: within ``SPEECH_RANGE_LU`` of its loudest window, above the absolute gate."""
    if voice_lufs.size == 0:
        return np.zeros(0, dtype=bool)
    loudest = float(voice_lufs.max())
    return np.asarray((voice_lufs > ABSOLUTE_GATE_LUFS) & (voice_lufs > loudest - SPEECH_RANGE_LU))


def duck_under(
    bed: Audio,
    voice: Audio,
    rate: int = RATE,
    *,
    margin_lu: float = DUCK_MARGIN_LU,
    ramp_seconds: float = 0.05,
) -> tuple[Audio, float]:
    """(the bed, mono, lowered under the voice by the rule of the module docstring; the largest cut in dB).

    ``voice`` is cut or zero-padded to the bed's length first."""
    bed = np.asarray(bed, dtype=np.float64)
    voice = np.asarray(voice, dtype=np.float64)[: bed.shape[-1]]
    voice = np.pad(voice, (0, bed.shape[-1] - voice.shape[-1]))
    v, b = momentary_lufs(voice, rate), momentary_lufs(bed, rate)
    cut_db = np.where(speaking(v), np.maximum(0.0, b - (v - margin_lu)), 0.0)
    # a sample's gain is the lowest any window holding it needs
    block, hop = round(BLOCK_SECONDS * rate), round(HOP_SECONDS * rate)
    required = np.ones(bed.shape[-1])
    for k in np.flatnonzero(cut_db > 0):
        start = k * hop
        required[start : start + block] = np.minimum(required[start : start + block], 10 ** (-cut_db[k] / 20))
    gain = _smooth_under(required, max(1, round(ramp_seconds * rate)))
    return bed * gain, float(cut_db.max(initial=0.0))


# normalisation with the project's meter -----------------------------------------------------------------------


def measure(x: Audio, scratch: Path, rate: int = RATE) -> media.Loudness:
    """The project meter's reading (``media.loudness``) of samples; a clip shorter than one 400 ms block is
    measured looped to 3 s (its integrated loudness is then that of the loop)."""
    x = _channels(x)
    n = x.shape[-1]
    if 0 < n < round(BLOCK_SECONDS * rate):
        x = np.tile(x, (1, math.ceil(LOOP_SECONDS * rate / n)))
    with tempfile.NamedTemporaryFile(suffix=".wav", dir=scratch, delete=False) as tmp:
        path = Path(tmp.name)
    try:
        write_wav(path, x, rate)
        return media.loudness(path)
    finally:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Normalised:
    """A soundtrack brought to a loudness target: the samples and the project meter's last reading of them."""

    samples: Audio  # [channels, samples]
    gain: Audio  # [samples]: the linear gain applied to the input (the loudness gain times the limiter's)
    integrated_lufs: float
    true_peak_dbtp: float
    gain_db: float  # the gain applied before the limiter (cumulative over the passes)
    passes: int
    silent: bool  # nothing to normalise (at or below -70 LUFS)


def normalise(
    x: Audio,
    target_lufs: float,
    ceiling_dbtp: float,
    scratch: Path,
    *,
    tolerance_lu: float = 0.5,
    headroom_db: float = AAC_HEADROOM_DB,
    max_passes: int = 4,
    meter: Callable[[Audio], media.Loudness] | None = None,
) -> Normalised:
    """Bring ``x`` to ``target_lufs`` integrated with its true peak under ``ceiling_dbtp - headroom_db``.

    Pass 1 measures and applies the gain; each further pass measures the gained and limited result and corrects
    the error left (the limiter takes loudness off), until within ``tolerance_lu``. ``meter`` defaults to
    :func:`measure` (the project meter)."""
    read = meter or (lambda y: measure(y, scratch))
    x = _channels(np.asarray(x, dtype=np.float64))
    first = read(x)
    if first.integrated_lufs <= SILENCE_LUFS:
        unity = np.ones(x.shape[-1])
        return Normalised(x, unity, first.integrated_lufs, first.true_peak_dbtp, 0.0, 1, silent=True)
    gain_db = target_lufs - first.integrated_lufs
    out, gain, reading, passes = x, np.ones(x.shape[-1]), first, 1
    for passes in range(2, max_passes + 2):
        gained = x * 10 ** (gain_db / 20)
        limiter = limiter_gain(gained, ceiling_dbtp - headroom_db)
        out, gain = gained * limiter, limiter * 10 ** (gain_db / 20)
        reading = read(out)
        error = target_lufs - reading.integrated_lufs
        if abs(error) <= tolerance_lu or passes > max_passes:
            break
        gain_db += error
    return Normalised(
        out, gain, reading.integrated_lufs, reading.true_peak_dbtp, gain_db, passes, silent=False
    )


def voice_over_bed_lu(voice: Audio, bed: Audio, scratch: Path, rate: int = RATE) -> float | None:
    """The smallest margin (LU) of the voice's momentary loudness over the bed's in the windows where the voice
    speaks, both measured with the project meter (``media.loudness_curve``); None if the voice never speaks."""
    curves = []
    for name, x in (("voice", voice), ("bed", bed)):
        with tempfile.NamedTemporaryFile(suffix=f"-{name}.wav", dir=scratch, delete=False) as tmp:
            path = Path(tmp.name)
        try:
            write_wav(path, x, rate)
            curves.append(np.asarray(media.loudness_curve(path).momentary_lufs))
        finally:
            path.unlink(missing_ok=True)
    v, b = curves
    n = min(v.size, b.size)
    speech = speaking(v[:n])
    if not speech.any():
        return None
    return float((v[:n] - b[:n])[speech].min())
