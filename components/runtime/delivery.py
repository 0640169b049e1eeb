"""Broadcast and delivery checks of a finished mp4: loudness, black and frozen picture, file conformance.

A :class:`DeliveryProfile` names what a destination accepts: a loudness target (integrated loudness and its
tolerance, maximum true peak, optionally a maximum loudness range and a maximum short-term loudness) and the
file format (container, codecs, codec profiles, pixel format, audio sample rate and channel layout).
:func:`check_delivery` measures a file with ffmpeg (``components.runtime.media``) and returns one
:class:`Check` per rule with the measured value and the limit, so that a report can show why a file failed.

Named profiles (:data:`DELIVERY_PROFILES`; a campaign picks one with ``qc.name``):

==================  =========================  ======================================================
``ebu-r128``        -23 LUFS ±1 LU, -1 dBTP    EBU R 128; max short-term -18 LUFS (R 128 s1, adverts)
``atsc-a85``        -24 LKFS ±2 LU, -2 dBTP    ATSC A/85 (the US CALM Act's recommended practice)
``streaming-14``    -14 LUFS ±1 LU, -1 dBTP    streaming platforms normalising to -14 LUFS
``streaming-16``    -16 LUFS ±1 LU, -1 dBTP    streaming platforms normalising to -16 LUFS
``web-r128``        as ``ebu-r128``            the campaign default: EBU R 128 loudness, web MP4 format
==================  =========================  ======================================================

Every profile expects MP4 with H.264 video in ``yuv420p`` (High, Main or Constrained Baseline profile) and,
when the file has sound, AAC-LC at 48 kHz stereo. Size, frame rate and duration are per render unit, so they
are passed to :func:`check_delivery` as :class:`Expected`. LUFS and LKFS are the same unit (ITU-R BS.1770).

Check statuses: ``pass``, ``fail``, ``warn`` (reported, does not fail the file), ``info`` (a measurement
with no limit in the profile) and ``n/a`` (not applicable, e.g. loudness of a file that is silent by design). Each check also says whether a new render seed can fix it
(``seed_fixable``: black or frozen picture can; a wrong codec or a missing soundtrack cannot).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from components.runtime import media

__all__ = [
    "DELIVERY_PROFILES",
    "Check",
    "CheckStatus",
    "DeliveryProfile",
    "DeliveryReport",
    "Expected",
    "LoudnessTarget",
    "check_delivery",
    "check_loudness",
    "delivery_profile",
]

CheckStatus = Literal["pass", "fail", "warn", "info", "n/a"]


@dataclass(frozen=True)
class LoudnessTarget:
    """Loudness rules of a destination (ITU-R BS.1770 measurement: gated integrated loudness, true peak)."""

    integrated_lufs: float
    tolerance_lu: float
    max_true_peak_dbtp: float
    max_range_lu: float | None = None  # loudness range (EBU Tech 3342); None: measured and reported only
    max_short_term_lufs: float | None = None  # loudest 3 s window; None: not limited


@dataclass(frozen=True)
class DeliveryProfile:
    """What a destination accepts. ``source`` says where the numbers come from."""

    name: str
    loudness: LoudnessTarget
    source: str
    container: str = "mp4"  # one of the names ffprobe lists in format_name
    video_codec: str = "h264"
    video_profiles: tuple[str, ...] = ("High", "Main", "Constrained Baseline")
    pix_fmt: str = "yuv420p"
    audio_codec: str = "aac"
    audio_profiles: tuple[str, ...] = ("LC",)
    sample_rate: int = 48000
    channel_layout: str = "stereo"
    fps_tolerance: float = 0.01  # frames per second
    duration_tolerance_frames: float = 1.0  # container rounding: one frame either way


_MP4 = "ISO/IEC 14496-14 MP4, H.264 yuv420p + AAC-LC 48 kHz stereo (the usual web and social delivery format)"
_R128 = LoudnessTarget(-23.0, 1.0, -1.0, max_short_term_lufs=-18.0)

DELIVERY_PROFILES: Mapping[str, DeliveryProfile] = {
    p.name: p
    for p in (
        DeliveryProfile(
            "ebu-r128",
            _R128,
            "EBU R 128 (2020): -23 LUFS ±1 LU, max true peak -1 dBTP; EBU R 128 s1: short-form content (adverts) "
            f"max short-term loudness -18 LUFS. {_MP4}",
        ),
        DeliveryProfile(
            "atsc-a85",
            LoudnessTarget(-24.0, 2.0, -2.0),
            f"ATSC A/85:2013 recommended practice: -24 LKFS ±2 dB, max true peak -2 dBTP. {_MP4}",
        ),
        DeliveryProfile(
            "streaming-14",
            LoudnessTarget(-14.0, 1.0, -1.0),
            f"streaming platforms that normalise playback to -14 LUFS, -1 dBTP (±1 LU: adrender's choice). {_MP4}",
        ),
        DeliveryProfile(
            "streaming-16",
            LoudnessTarget(-16.0, 1.0, -1.0),
            f"streaming platforms that normalise playback to -16 LUFS, -1 dBTP (±1 LU: adrender's choice). {_MP4}",
        ),
        DeliveryProfile(
            "web-r128",
            _R128,
            f"the campaign default: EBU R 128 loudness as ebu-r128. {_MP4}",
        ),
    )
}


def delivery_profile(name: str, *, tolerance_lu: float | None = None) -> DeliveryProfile:
    """The named profile; ``tolerance_lu`` replaces its loudness tolerance (a campaign's own tolerance)."""
    try:
        profile = DELIVERY_PROFILES[name]
    except KeyError:
        raise KeyError(
            f"unknown delivery profile {name!r}; set the campaign's qc.name to one of "
            f"{', '.join(sorted(DELIVERY_PROFILES))}"
        ) from None
    if tolerance_lu is not None:
        profile = replace(profile, loudness=replace(profile.loudness, tolerance_lu=tolerance_lu))
    return profile


@dataclass(frozen=True)
class Expected:
    """What one render unit's file must be: its size, frame rate and length, and whether it has sound.

    ``audio``: True when the unit's deliverable carries a soundtrack (foley ran, or driving audio), False for
    a render that is silent by design (loudness checks are then ``n/a``; a stray audio stream is reported).
    """

    width: int
    height: int
    fps: float
    frames: int
    audio: bool

    @property
    def duration(self) -> float:
        """Seconds: frames / fps."""
        return self.frames / self.fps


@dataclass(frozen=True)
class Check:
    """One rule applied to one file."""

    name: str  # e.g. "loudness.integrated", "video.codec", "picture.black"
    status: CheckStatus
    measured: Any  # a number, a string, or a list of [start, end] stretches
    limit: str  # the rule, as a person reads it: "-23 ±1 LUFS", "h264", "no stretch >= 0.25 s"
    seed_fixable: bool = False  # a new render seed may fix a failure (picture content, not file format)
    detail: str = ""

    @property
    def failed(self) -> bool:
        """True when the check fails the file."""
        return self.status == "fail"


@dataclass(frozen=True)
class DeliveryReport:
    """Every check of one file against one profile."""

    profile: str
    checks: tuple[Check, ...]
    loudness_curve: media.LoudnessCurve | None = field(default=None, compare=False)

    @property
    def passed(self) -> bool:
        """True when no check failed (warnings do not fail a file)."""
        return not any(c.failed for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        """The failed checks."""
        return tuple(c for c in self.checks if c.failed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: profile, passed, checks, and the loudness curve when measured."""
        out: dict[str, Any] = {
            "profile": self.profile,
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
        }
        if self.loudness_curve is not None:
            out["loudness_curve"] = asdict(self.loudness_curve)
        return out


def _status(ok: bool) -> CheckStatus:
    return "pass" if ok else "fail"


def _db(value: float) -> float | None:
    """A level for JSON: -inf (digital silence) becomes None."""
    return round(value, 2) if math.isfinite(value) else None


GATING_BLOCK_SECONDS = 0.4  # BS.1770's gating block: integrated loudness needs at least one
SHORT_TERM_SECONDS = 3.0  # EBU Tech 3341's short-term window, which the loudness range and its maximum use


def check_loudness(
    measured: media.Loudness,
    target: LoudnessTarget,
    curve: media.LoudnessCurve | None = None,
    *,
    duration: float | None = None,
) -> list[Check]:
    """Integrated loudness, true peak, loudness range and (with a curve) short-term loudness against ``target``.

    ``duration``: the audio's length in seconds; a measure whose window is longer (integrated loudness under
    0.4 s, loudness range and short-term maximum under 3 s) is ``n/a`` instead of judged on no data."""
    lo, hi = target.integrated_lufs - target.tolerance_lu, target.integrated_lufs + target.tolerance_lu
    integrated = measured.integrated_lufs
    too_short = duration is not None and duration < GATING_BLOCK_SECONDS
    no_short_term = duration is not None and duration < SHORT_TERM_SECONDS
    if too_short:
        detail = f"the audio is shorter than one {GATING_BLOCK_SECONDS:g} s gating block"
    else:
        detail = "" if lo <= integrated <= hi else f"{integrated - target.integrated_lufs:+.1f} LU off target"
    checks = [
        Check(
            "loudness.integrated",
            "n/a" if too_short else _status(lo <= integrated <= hi),
            _db(integrated),
            f"{target.integrated_lufs:g} ±{target.tolerance_lu:g} LUFS",
            detail=detail,
        ),
        Check(
            "loudness.true_peak",
            _status(measured.true_peak_dbtp <= target.max_true_peak_dbtp),
            _db(measured.true_peak_dbtp),
            f"<= {target.max_true_peak_dbtp:g} dBTP",
        ),
        Check(
            "loudness.range",
            "n/a"
            if no_short_term
            else "info"
            if target.max_range_lu is None
            else _status(measured.range_lu <= target.max_range_lu),
            _db(measured.range_lu),
            "reported (no limit in the profile)"
            if target.max_range_lu is None
            else f"<= {target.max_range_lu:g} LU",
        ),
    ]
    if target.max_short_term_lufs is not None and curve is not None:
        loudest = curve.max_short_term_lufs
        checks.append(
            Check(
                "loudness.short_term_max",
                "n/a" if no_short_term else _status(loudest <= target.max_short_term_lufs),
                _db(loudest),
                f"<= {target.max_short_term_lufs:g} LUFS",
            )
        )
    return checks


def _stretches(found: Sequence[media.Interval]) -> list[list[float]]:
    return [[i.start, i.end] for i in found]


def check_delivery(
    path: str | os.PathLike[str],
    profile: DeliveryProfile,
    expected: Expected,
    *,
    black_min_seconds: float = media.BLACK_MIN_SECONDS,
    black_pixel_threshold: float = media.BLACK_PIXEL_THRESHOLD,
    freeze_min_seconds: float = media.FREEZE_MIN_SECONDS,
    freeze_noise: float = media.FREEZE_NOISE,
) -> DeliveryReport:
    """Measure ``path`` and check it against ``profile`` and the unit's ``expected`` format.

    Raises the errors of :mod:`components.runtime.media` for a file that is missing or not media at all;
    anything a file can get wrong is a failed :class:`Check`.
    """
    info = media.probe(path, count_frames=True)
    checks: list[Check] = []
    video, audio = info.video, info.audio

    # 1. container and video stream
    containers = info.format_name.split(",")
    checks.append(
        Check("container", _status(profile.container in containers), info.format_name, profile.container)
    )
    if video is None:
        checks.append(Check("video.present", "fail", False, "a video stream"))
    else:
        frame_dur = 1.0 / expected.fps
        checks += [
            Check(
                "video.codec", _status(video.codec == profile.video_codec), video.codec, profile.video_codec
            ),
            Check(
                "video.profile",
                _status(video.profile in profile.video_profiles),
                video.profile,
                " | ".join(profile.video_profiles),
            ),
            Check("video.pix_fmt", _status(video.pix_fmt == profile.pix_fmt), video.pix_fmt, profile.pix_fmt),
            Check(
                "video.size",
                _status((video.width, video.height) == (expected.width, expected.height)),
                f"{video.width}x{video.height}",
                f"{expected.width}x{expected.height} (width x height)",
            ),
            Check(
                "video.fps",
                _status(video.fps is not None and abs(video.fps - expected.fps) <= profile.fps_tolerance),
                video.frame_rate,
                f"{expected.fps:g} fps",
            ),
            Check(
                "video.frames",
                _status(video.frame_count == expected.frames),
                video.frame_count,
                f"{expected.frames} frames",
            ),
            Check(
                "duration",
                _status(
                    abs(info.duration - expected.duration) <= profile.duration_tolerance_frames * frame_dur
                ),
                round(info.duration, 3),
                f"{expected.duration:.3f} s ±{profile.duration_tolerance_frames:g} frame",
            ),
        ]
        # 2. picture content: the campaign's thresholds; a new seed may render a clean picture
        black = media.detect_black(path, min_seconds=black_min_seconds, pixel_threshold=black_pixel_threshold)
        frozen = media.detect_frozen(path, min_seconds=freeze_min_seconds, noise=freeze_noise)
        checks += [
            Check(
                "picture.black",
                _status(not black),
                _stretches(black),
                f"no black stretch >= {black_min_seconds:g} s (pixels < {black_pixel_threshold:g})",
                seed_fixable=True,
            ),
            Check(
                "picture.frozen",
                _status(not frozen),
                _stretches(frozen),
                f"no frozen stretch >= {freeze_min_seconds:g} s (noise {freeze_noise:g})",
                seed_fixable=True,
            ),
        ]

    # 3. audio stream and loudness
    curve: media.LoudnessCurve | None = None
    if audio is None:
        checks.append(
            Check(
                "audio.present",
                "fail" if expected.audio else "n/a",
                False,
                "a soundtrack" if expected.audio else "silent render: no soundtrack expected",
            )
        )
    else:
        checks += [
            Check(
                "audio.present",
                "pass" if expected.audio else "warn",
                True,
                "a soundtrack" if expected.audio else "silent render: no soundtrack expected",
            ),
            Check(
                "audio.codec", _status(audio.codec == profile.audio_codec), audio.codec, profile.audio_codec
            ),
            Check(
                "audio.profile",
                _status(audio.profile in profile.audio_profiles),
                audio.profile,
                " | ".join(profile.audio_profiles),
            ),
            Check(
                "audio.sample_rate",
                _status(audio.sample_rate == profile.sample_rate),
                audio.sample_rate,
                f"{profile.sample_rate} Hz",
            ),
            Check(
                "audio.channel_layout",
                _status(audio.channel_layout == profile.channel_layout),
                audio.channel_layout or f"{audio.channels} channel(s)",
                profile.channel_layout,
            ),
        ]
        curve = media.loudness_curve(path)
        seconds = audio.duration if audio.duration is not None else info.duration
        checks += check_loudness(media.loudness(path), profile.loudness, curve, duration=seconds)
    return DeliveryReport(profile.name, tuple(checks), curve)
