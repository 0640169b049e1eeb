"""Avatar jobs in the campaign spec: `model: avatar` on a presenter job, its defaults, models, sizes and lengths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.runtime.spec import AVATAR_NEGATIVE_PROMPT, CampaignError, Mode, load_campaign

PRESENTER: dict[str, Any] = {
    "id": "presenter",
    "prompt": "A woman talks to the camera about a shampoo.",
    "subjects": [{"word": "woman", "image": "woman.png"}],
    "audio": {"uri": "voice.wav"},
    "model": "avatar",
}


def _load(tmp_path: Path, *jobs: dict[str, Any]) -> Any:
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump({"id": "c", "jobs": list(jobs)}))
    return load_campaign(path)


def _problems(tmp_path: Path, *jobs: dict[str, Any]) -> str:
    with pytest.raises(CampaignError) as caught:
        _load(tmp_path, *jobs)
    return str(caught.value)


def test_presenter_job_resolves_to_avatar_with_the_release_defaults(tmp_path: Path) -> None:
    campaign = _load(tmp_path, PRESENTER, {**PRESENTER, "id": "custom", "model": "hunyuancustom"})
    job, custom = campaign.jobs
    assert (job.mode, custom.mode) == (Mode.AVATAR, Mode.AUDIO)
    assert (job.size.height, job.size.width, job.frames, job.delivery.fps) == (704, 704, 129, 25)
    assert job.negative_prompt == AVATAR_NEGATIVE_PROMPT and not job.foley.enabled
    options = job.sampling_options(7)
    assert (options.num_steps, options.cfg_scale, options.shift, options.avatar, options.deepcache) == (
        50, 7.5, 5.0, True, True,
    )  # fmt: skip
    refs = campaign.models_for(job)
    assert refs["dit"] == "hunyuanvideo-avatar-dit@production"
    assert (
        refs["face_detector"] == "face-detector@production"
        and refs["audio_encoder"] == "whisper-tiny@production"
    )
    assert "face_detector" not in campaign.models_for(custom)
    assert campaign.warnings == ()  # 704x704 is an Avatar size


def test_only_avatar_renders_past_129_frames(tmp_path: Path) -> None:
    assert _load(tmp_path, {**PRESENTER, "frames": 377}).jobs[0].frames == 377  # 15 s at 25 fps
    message = _problems(tmp_path, {**PRESENTER, "model": "hunyuancustom", "frames": 137})
    assert "jobs[0].frames" in message and "only model: avatar" in message
    assert "749 for model: avatar" in _problems(tmp_path, {**PRESENTER, "frames": 753})


def test_avatar_needs_one_presenter_and_a_voice(tmp_path: Path) -> None:
    no_voice = {k: v for k, v in PRESENTER.items() if k != "audio"}
    assert "add audio: {uri: voice.wav}" in _problems(tmp_path, no_voice)
    two = {**PRESENTER, "prompt": "A woman and a man talk.", "subjects": [*PRESENTER["subjects"], {"word": "man", "image": "man.png"}]}  # fmt: skip
    assert "exactly one subject" in _problems(tmp_path, two)
    assert "model" in _problems(tmp_path, {**PRESENTER, "model": "avatr"})
    assert "remove audio.strength" in _problems(tmp_path, {**PRESENTER, "audio": {"uri": "voice.wav", "strength": 0.5}})  # fmt: skip


def test_avatar_sizes_are_multiples_of_64_within_704_by_1216(tmp_path: Path) -> None:
    campaign = _load(tmp_path, {**PRESENTER, "sizes": ["1216x704", "720x1280"]})
    (warning,) = campaign.warnings
    assert warning.path == "jobs[0].sizes" and "720x1280" in warning.message
    assert "multiples of 64" in warning.message


def test_skip_uncond_from_reaches_the_sampler_and_is_checked_against_the_steps(tmp_path: Path) -> None:
    job = _load(tmp_path, {**PRESENTER, "skip_uncond_from": 40}).jobs[0]
    assert job.sampling_options(1).skip_uncond_from == 40
    assert "skip_uncond_from must be in 0..steps (30)" in _problems(
        tmp_path, {**PRESENTER, "steps": 30, "skip_uncond_from": 40}
    )
