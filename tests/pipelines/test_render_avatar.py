"""Avatar jobs through the local runner: a presenter image and a voice track to a published mp4 with the voice
muxed in, one spot inside one window and one past 129 frames (two sliding windows), and a presenter image
without a face refused with the file named."""

from __future__ import annotations

import json
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

from components.runtime.manifest import StepManifest, read_manifest
from components.runtime.media import probe
from components.runtime.step import StepContext
from components.runtime.tensors import get_tensors
from pipelines.local import RenderOptions, render
from tests.campaigns import write_campaign

PRESENTER = {
    "prompt": "A man talks to the camera in a sunny kitchen.",
    "subjects": [{"word": "man", "image": "assets/man.png"}],
    "model": "avatar",
    "size": "64x64",
    "steps": 2,
}


def _longer_voice(src: Path, dst: Path, times: int) -> None:
    """The demo voice `times` over, end to end (the demo's is 5.2 s)."""
    with wave.open(str(src), "rb") as r:
        params, data = r.getparams(), r.readframes(r.getnframes())
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(data * times)


def _render_and_check(
    make_ctx: Callable[..., StepContext],
    demo_media: Path,
    tmp_path: Path,
    job: dict[str, object],
    latent_frames: int,
) -> None:
    campaign = write_campaign(tmp_path, demo_media, [job])
    _longer_voice(tmp_path / "assets/voiceover.wav", tmp_path / "assets/voice-long.wav", 2)
    ctx = make_ctx()
    report = render(ctx, RenderOptions(campaign, progress=False))
    assert [u.status for u in report.units] == ["published"], report.units

    unit, frames = f"{job['id']}-v00", int(job["frames"])  # type: ignore[call-overload]
    mp4 = tmp_path / "store/deliverables/test-campaign" / str(job["id"]) / f"{unit}.mp4"
    info = probe(mp4, count_frames=True)
    assert info.video is not None and info.audio is not None  # the voice is the soundtrack
    assert (info.video.height, info.video.width, info.video.frame_count) == (64, 64, frames)
    prov = json.loads(mp4.with_suffix(".json").read_text())
    assert prov["models"]["dit"]["name"] == "hunyuanvideo-avatar-dit"
    assert prov["sampling"]["avatar"] is True and prov["steps"]["v2a_foley"]["foley"] == "off"

    # the sampler ran the release's window rule: 33 latent frames per 129 video frames, 65 past them (two windows)
    (keys,) = report.stage_keys.values()
    sampled = read_manifest(ctx.store, keys["dit_sample"], StepManifest)
    latents = get_tensors(ctx.store, sampled.units[unit].artifacts["latents"].key)[0]["latents"]
    assert latents.shape == (1, 16, latent_frames, 8, 8) and float(latents.std()) > 0.1
    cond = read_manifest(ctx.store, keys["vae_encode"], StepManifest)
    tensors = get_tensors(ctx.store, cond.units[unit].artifacts["cond"].key)[0]
    assert tensors["ref_latents"].shape == (1, 16, 33, 8, 8)
    mask = tensors["face_mask"]
    assert mask.shape == (1, 1, 1, 8, 8) and float(mask.max()) == 1.0
    voice = tensors["audio_states"]
    assert voice.shape[1] == (129 if latent_frames == 33 else 4 * 65)
    assert not voice[:, frames:].any() and voice[:, :frames].abs().sum() > 0  # the voice, zero-padded


def test_avatar_job_renders_with_the_voice(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    job = {**PRESENTER, "id": "presenter-short", "audio": {"uri": "assets/voiceover.wav"}, "frames": 21}
    _render_and_check(make_ctx, demo_media, tmp_path, job, 33)


@pytest.mark.slow
def test_avatar_spot_past_129_frames_renders_as_two_windows(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    job = {**PRESENTER, "id": "presenter-long", "audio": {"uri": "assets/voice-long.wav"}, "frames": 137}
    _render_and_check(make_ctx, demo_media, tmp_path, job, 65)


def test_avatar_job_without_a_face_fails_naming_the_image(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_core.vision import face_detect

    monkeypatch.setattr(face_detect.FaceDetector, "largest", lambda self, image: None)
    job = {**PRESENTER, "id": "no-face", "audio": {"uri": "assets/voiceover.wav"}, "frames": 5, "steps": 1}
    campaign = write_campaign(tmp_path, demo_media, [job])
    report = render(make_ctx(), RenderOptions(campaign, progress=False))
    (unit,) = report.units
    assert unit.status == "failed"
    assert "presenter image" in unit.where and "man.png" in unit.where and "finds no face" in unit.where
