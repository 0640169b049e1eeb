"""Referenced media checked before GPU time, against the real ffmpeg (and moto's S3 server for s3:// assets).

Inputs are made in tmp_path: stills and videos with numpy through ffmpeg, audio with the wave module.
"""

from __future__ import annotations

import io
import math
import shutil
import wave
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
import pytest
import yaml

from components.runtime import media
from components.runtime.assets import AssetNotFound, check_assets, localize
from components.runtime.settings import RuntimeSettings
from components.runtime.spec import CampaignIssue, load_campaign

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

FRAMES = 33  # the jobs below render 33 frames (1.32 s at 25 fps), so the test media stay tiny
SETTINGS = RuntimeSettings()


def pattern(h: int, w: int, t: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 3 + t) % 256, (y * 2) % 256, (x + y + 5 * t) % 256], axis=-1).astype(np.uint8)


def write_png(path: Path, h: int, w: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}")
        .output(str(path), vframes=1)
        .global_args("-loglevel", "error")
        .overwrite_output()
        .run(input=pattern(h, w).tobytes())
    )
    return path


def write_wav(path: Path, seconds: float, amplitude: float = 0.3, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    samples = np.round(amplitude * np.sin(2 * math.pi * 220 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def write_mp4(path: Path, frames: int, h: int = 72, w: int = 128) -> Path:
    return media.write_video(path, (pattern(h, w, t) for t in range(frames)), 25)


def campaign_file(folder: Path, jobs: list[dict[str, Any]]) -> Path:
    file = folder / "campaign.yaml"
    file.write_text(
        yaml.safe_dump({"id": "spring", "defaults": {"frames": FRAMES}, "jobs": jobs}, sort_keys=False)
    )
    return file


def image_job(image: str = "assets/woman.png", job_id: str = "intro") -> dict[str, Any]:
    return {"id": job_id, "prompt": "A woman smiles.", "subjects": [{"word": "woman", "image": image}]}


def audio_job(uri: str = "assets/voice.wav") -> dict[str, Any]:
    return {**image_job(job_id="talk"), "audio": {"uri": uri}, "foley": False}


def edit_job(video: str = "assets/src.mp4", mask: str = "assets/mask.mp4", **extra: Any) -> dict[str, Any]:
    return {**image_job(job_id="swap"), "edit": {"video": video, "mask": mask}, **extra}


def check(file: Path, cache: Path | None = None) -> list[CampaignIssue]:
    campaign = load_campaign(file)
    return check_assets(campaign, SETTINGS, cache or file.parent / "cache")


def only(issues: list[CampaignIssue], path: str, severity: str = "error") -> CampaignIssue:
    found = [i for i in issues if i.path == path and i.severity == severity]
    assert len(found) == 1, "\n".join(f"{i.severity} {i}" for i in issues)
    return found[0]


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    """A campaign folder whose three jobs (image, audio, editing) have fitting media."""
    write_png(tmp_path / "assets" / "woman.png", 96, 80)
    write_wav(tmp_path / "assets" / "voice.wav", seconds=FRAMES / 25 + 0.01)
    write_mp4(tmp_path / "assets" / "src.mp4", FRAMES)  # 72x128 (height x width) is 16:9, as 720x1280
    write_mp4(tmp_path / "assets" / "mask.mp4", FRAMES)
    return campaign_file(tmp_path, [image_job(), audio_job(), edit_job()])


def test_fitting_media_pass(good: Path) -> None:
    assert check(good) == []


def test_missing_files_are_named_with_the_fix(tmp_path: Path) -> None:
    file = campaign_file(tmp_path, [image_job(), audio_job(), edit_job()])
    issues = check(file)
    assert all(i.file == str(file) and i.severity == "error" for i in issues)
    # the image shared by the three jobs is reported once, at the first field naming it
    image = only(issues, "jobs[0].subjects[0].image")
    assert image.message == (
        "identity image assets/woman.png: no such file; check the path, or copy the file there"
    )
    assert str(image) == f"{file}: jobs[0].subjects[0].image: {image.message}"
    assert only(issues, "jobs[1].audio.uri").message.startswith(
        "driving audio assets/voice.wav: no such file"
    )
    assert only(issues, "jobs[2].edit.video").message.startswith("edit video assets/src.mp4: no such file")
    assert only(issues, "jobs[2].edit.mask").message.startswith("mask video assets/mask.mp4: no such file")
    assert len(issues) == 4


def test_small_and_broken_images(tmp_path: Path) -> None:
    write_png(tmp_path / "assets" / "tiny.png", 32, 48)
    (tmp_path / "assets" / "broken.png").write_bytes(b"\x89PNG not really an image" * 10)
    file = campaign_file(tmp_path, [image_job("assets/tiny.png", "a"), image_job("assets/broken.png", "b")])
    issues = check(file)
    tiny = only(issues, "jobs[0].subjects[0].image").message
    assert tiny.startswith(
        "identity image assets/tiny.png: is 48x32 pixels; an identity image needs at least 64"
    )
    assert "use a larger photo" in tiny
    broken = only(issues, "jobs[1].subjects[0].image").message
    assert broken.startswith("identity image assets/broken.png: is not an image ffmpeg can read")
    assert broken.endswith("export it again as PNG or JPEG")


def test_audio_silent_short_and_long(tmp_path: Path) -> None:
    write_png(tmp_path / "assets" / "woman.png", 96, 80)
    write_wav(tmp_path / "assets" / "silent.wav", seconds=2, amplitude=0.0)
    write_wav(tmp_path / "assets" / "short.wav", seconds=0.5)
    write_wav(tmp_path / "assets" / "long.wav", seconds=3)
    (tmp_path / "assets" / "text.wav").write_text("not audio")
    jobs = [audio_job(f"assets/{name}.wav") | {"id": name} for name in ("silent", "short", "long", "text")]
    issues = check(campaign_file(tmp_path, jobs))
    silent = only(issues, "jobs[0].audio.uri").message
    assert silent.startswith("driving audio assets/silent.wav: audio is silent")
    assert "give a voice or music track" in silent
    short = only(issues, "jobs[1].audio.uri").message
    assert short.startswith(
        "driving audio assets/short.wav lasts 0.50 s (12 frames at 25 fps) but the job renders 33"
    )
    assert short.endswith("give a longer track or set the job's frames to 9 or fewer")
    long = only(issues, "jobs[2].audio.uri", "warning").message
    assert long.startswith("driving audio assets/long.wav: audio 3.00 s trimmed to the video's 1.32 s")
    text = only(issues, "jobs[3].audio.uri").message
    assert text.startswith("driving audio assets/text.wav: is not audio ffmpeg can read")
    assert text.endswith("export it again as WAV")
    assert len(issues) == 4


def test_edit_video_frames_mask_and_aspect(tmp_path: Path) -> None:
    write_png(tmp_path / "assets" / "woman.png", 96, 80)
    write_mp4(tmp_path / "assets" / "short.mp4", 20)
    write_mp4(tmp_path / "assets" / "long.mp4", 40)
    write_mp4(tmp_path / "assets" / "long_mask.mp4", 40)
    write_mp4(tmp_path / "assets" / "other_size.mp4", 40, h=36, w=64)
    write_mp4(tmp_path / "assets" / "tall.mp4", FRAMES, h=128, w=72)
    jobs = [
        edit_job("assets/short.mp4", "assets/short.mp4") | {"id": "short"},
        edit_job("assets/long.mp4", "assets/long_mask.mp4") | {"id": "long"},
        edit_job("assets/long.mp4", "assets/other_size.mp4") | {"id": "mask"},
        edit_job("assets/tall.mp4", "assets/tall.mp4", sizes=["720x1280", "1280x720", "720x720"])
        | {"id": "tall"},
        edit_job("assets/long.mp4", "assets/short.mp4") | {"id": "mask-frames"},
    ]
    issues = check(campaign_file(tmp_path, jobs))
    short = only(issues, "jobs[0].edit.video").message
    assert short == (
        "edit video assets/short.mp4 has 20 frames but the job renders 33; give a longer video or set the job's "
        "frames to 17 or fewer"
    )
    trimmed = only(issues, "jobs[1].edit.video", "warning").message
    assert trimmed.startswith(
        "edit video assets/long.mp4 has 40 frames; the first 33 are used and the rest is trimmed"
    )
    mask = only(issues, "jobs[2].edit.mask").message
    assert mask == (
        "mask video assets/other_size.mp4 is 36x64 but the edit video is 72x128; export the mask at the video's size"
    )
    tall = only(issues, "jobs[3].edit.video").message
    assert tall.startswith(
        "edit video assets/tall.mp4 is 128x72 (height x width) but the job renders 720x1280, 720x720, another"
    )
    assert "would be stretched; crop the video to the job's aspect ratio" in tall
    frames = only(issues, "jobs[4].edit.mask").message
    assert frames.startswith("mask video assets/short.mp4 has 20 frames but the edit video has 40")
    assert [i.path for i in issues if i.severity == "error"].count("jobs[1].edit.video") == 0


def test_s3_assets_are_downloaded_once(s3_server: Any, tmp_path: Path, good: Path) -> None:
    from minio import Minio

    client = Minio(
        s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key, secure=False
    )
    bucket = s3_server.new_bucket_name()
    client.make_bucket(bucket)
    data = (good.parent / "assets" / "woman.png").read_bytes()
    client.put_object(bucket, "people/woman.png", io.BytesIO(data), len(data))
    settings = RuntimeSettings(
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_secure=False,
    )
    cache = tmp_path / "cache"
    uri = f"s3://{bucket}/people/woman.png"
    first = localize(uri, settings, cache)
    assert first.read_bytes() == data and first.is_relative_to(cache) and first.name == "woman.png"
    stamp = first.stat().st_mtime_ns
    assert (
        localize(uri, settings, cache) == first and first.stat().st_mtime_ns == stamp
    )  # not downloaded again
    with pytest.raises(
        AssetNotFound, match=rf"s3://{bucket}/people/nobody\.png: no such object at .*upload it"
    ):
        localize(f"s3://{bucket}/people/nobody.png", settings, cache)

    file = campaign_file(tmp_path, [image_job(uri), image_job(f"s3://{bucket}/people/nobody.png", "b")])
    issues = check_assets(load_campaign(file), settings, cache)
    (issue,) = issues
    assert issue.path == "jobs[1].subjects[0].image"
    assert issue.message.startswith(f"identity image s3://{bucket}/people/nobody.png: no such object at")


def test_localize_file_uri(tmp_path: Path) -> None:
    image = write_png(tmp_path / "a b.png", 64, 64)
    assert localize(image.as_uri(), SETTINGS, tmp_path / "cache") == image
    with pytest.raises(AssetNotFound, match="no such file"):
        localize((tmp_path / "absent.png").as_uri(), SETTINGS, tmp_path / "cache")


def test_only_some_jobs(tmp_path: Path) -> None:
    write_png(tmp_path / "assets" / "woman.png", 96, 80)
    file = campaign_file(tmp_path, [image_job(), image_job("assets/absent.png", "b")])
    campaign = load_campaign(file)
    assert check_assets(campaign, SETTINGS, tmp_path / "cache", only={"intro"}) == []
    (issue,) = check_assets(campaign, SETTINGS, tmp_path / "cache", only={"b"})
    assert issue.path == "jobs[1].subjects[0].image"


def test_the_example_renders_with_fitting_media(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "campaign.yaml"
    file = tmp_path / "campaign.yaml"
    shutil.copy(example, file)
    for name in ("woman", "man", "bottle"):
        write_png(tmp_path / "assets" / f"{name}.png", 96, 96)
    write_wav(tmp_path / "assets" / "voiceover.wav", seconds=129 / 25 + 0.01)
    write_mp4(tmp_path / "assets" / "shelf.mp4", 125)  # 72x128: the editing job's 720x1280 aspect
    write_mp4(tmp_path / "assets" / "shelf_mask.mp4", 125)
    assert check(file) == []
