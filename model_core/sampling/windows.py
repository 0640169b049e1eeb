"""HunyuanVideo-Avatar's sliding window over long audio, as plain arithmetic (no torch: the campaign spec and the
plan read it): which latent frames each window covers at a step, which audio frames go with them, and how many
latent frames a voice takes. See `model_core.sampling.avatar` for the rules and their source.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AVATAR_WINDOW",
    "AVATAR_WINDOW_SHIFT",
    "avatar_audio_frames",
    "avatar_latent_frames",
    "avatar_windows",
    "window_audio_indices",
]

AVATAR_WINDOW = 33  # latent frames per window: 129 video frames
AVATAR_WINDOW_SHIFT = 10  # latent frames the windows' start moves back by after every step
_SINGLE_WINDOW_AUDIO = 129  # the release pads a voice of up to 129 frames to 129
_LONG_AUDIO_PAD = 5  # and a longer one by 5 zero frames
_AUDIO_PER_LATENT = 4  # video frames per latent frame (the VAE's time compression)


def avatar_latent_frames(audio_frames: int) -> int:
    """Latent frames the release samples for a voice of `audio_frames` video frames (25 fps)."""
    if audio_frames < 1:
        raise ValueError(f"audio_frames must be >= 1, got {audio_frames}")
    if audio_frames <= _SINGLE_WINDOW_AUDIO:
        return AVATAR_WINDOW
    padded = audio_frames + _LONG_AUDIO_PAD
    return (padded // 128 + 1) * 32 + 1


def avatar_audio_frames(latent_frames: int) -> int:
    """Audio feature frames the sampler takes for `latent_frames`: one window's 4(T-1)+1 up to 33 latent frames,
    4T beyond (the windows wrap around the end of the audio as they do around the video)."""
    if latent_frames <= AVATAR_WINDOW:
        return (latent_frames - 1) * _AUDIO_PER_LATENT + 1
    return latent_frames * _AUDIO_PER_LATENT


def avatar_windows(latent_frames: int, step: int) -> list[list[int]]:
    """The latent-frame indices of each window at `step`: one window of all frames up to 33, else windows of 33
    starting at 33k - shift (shift = 10 * step mod 33), wrapping around the end."""
    if latent_frames <= AVATAR_WINDOW:
        return [list(range(latent_frames))]
    shift = (AVATAR_WINDOW_SHIFT * step) % AVATAR_WINDOW
    return [
        [(start - shift + k) % latent_frames for k in range(AVATAR_WINDOW)]
        for start in range(0, latent_frames, AVATAR_WINDOW)
    ]


def window_audio_indices(window: Sequence[int], latent_frames: int) -> list[int]:
    """The audio feature frames of a window: 4(T-1)+1 frames from 4 x its first latent frame, wrapping at 4T."""
    first = window[0]
    total = avatar_audio_frames(latent_frames)
    count = (len(window) - 1) * _AUDIO_PER_LATENT + 1
    return [(first * _AUDIO_PER_LATENT + k) % total for k in range(count)]
