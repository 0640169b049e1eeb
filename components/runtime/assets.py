"""The media a campaign names, checked before any GPU time is spent: identity images, driving audio, edit
videos and their masks.

`check_assets(campaign, settings, cache_dir)` opens every file the campaign's jobs reference and returns
every problem at once as `CampaignIssue`s (file = the campaign file, path = the field naming the asset,
such as ``jobs[3].edit.video``), each naming the asset and the fix. Problems that do not stop a render
(an edit video longer than the job, trimmed) come back with severity "warning". ``adrender validate``
runs these checks unless ``--no-media``.

What is checked:

* identity images decode and have at least `MIN_IMAGE_SIDE` pixels on each side;
* driving audio decodes, is not silent and lasts at least the job's frames (the model's own checks in
  `model_core.audio.whisper`, loaded only here because they import torch);
* an edit video and its mask have a video stream and decode, have the same size and frame count, hold at
  least the job's frames (more are trimmed), and have the aspect ratio of every size the job renders
  (they are resized to it, so another aspect would be stretched). Sizes and frame counts come from
  ffprobe; a video is never decoded whole.

A file used by several jobs is opened once; a problem of the file itself (missing, unreadable, too small)
is reported at the first field that names it.

`localize(uri, settings, cache_dir)` gives the local path of an asset URI: a ``file://`` URI is the path
itself, an ``s3://bucket/key`` object is downloaded once into ``cache_dir``, keyed by bucket, key, ETag and
size, through the store's S3 client and retries (`components.runtime.store.S3Store`), with the endpoint and
credentials of `RuntimeSettings`.

Errors of `localize`::

    AssetError           an asset cannot be read (bad URI, store refused or unreachable)
    └── AssetNotFound    no file or object under the URI
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from components.runtime import media
from components.runtime.settings import RuntimeSettings
from components.runtime.spec import Campaign, CampaignIssue, Job

__all__ = [
    "ASPECT_TOLERANCE",
    "DEFAULT_CACHE_DIR",
    "MIN_IMAGE_SIDE",
    "AssetError",
    "AssetNotFound",
    "check_assets",
    "localize",
]

DEFAULT_CACHE_DIR = Path(".adrender") / "assets"
MIN_IMAGE_SIDE = 64  # HunyuanCustom crops the identity image to 512 px; below 64 px there is no face left
ASPECT_TOLERANCE = 0.02  # 1080x1920 and 720x1280 are the same 9:16; 1088x1920 (encoder padding) still fits
_CHUNK = 1024 * 1024


class AssetError(Exception):
    """An asset cannot be read: bad URI, store unreachable or refusing access."""


class AssetNotFound(AssetError):
    """No file or object under the URI."""


# localize ---------------------------------------------------------------------------------------------------


def localize(uri: str, settings: RuntimeSettings, cache_dir: Path) -> Path:
    """The local path of an asset: a ``file://`` URI's path, or an ``s3://`` object downloaded into
    ``cache_dir`` (once: a second call with the same ETag and size reuses the copy).

    Raises `AssetNotFound` naming the URI when there is no such file or object, `AssetError` otherwise.
    """
    scheme, sep, rest = uri.partition("://")
    if sep and scheme == "file":
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))
        if not path.is_file():
            raise AssetNotFound(f"{uri}: no such file; check the path, or copy the file there")
        return path
    if sep and scheme == "s3":
        bucket, _, key = rest.partition("/")
        if not bucket or not key:
            raise AssetError(f"{uri} is not an s3://bucket/key URI")
        return _download(uri, bucket, key, settings, Path(cache_dir))
    raise AssetError(f"{uri}: only file:// and s3:// URIs can be read; give one of those")


def _download(uri: str, bucket: str, key: str, settings: RuntimeSettings, cache_dir: Path) -> Path:
    from components.runtime.store import ObjectNotFound, S3Store, StoreError, StoreUnavailable

    store = S3Store.connect(
        settings.s3_endpoint,
        bucket,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        region=settings.s3_region,
        secure=settings.s3_secure,
    )
    client = store.client
    # Campaign assets are uploaded by other tools: they carry no sha256 of the store's own, so they are read
    # with the store's client and its retries (`_call`) rather than its verifying readers; the size is checked.
    try:
        stat = store._call("stat", key, lambda: client.stat_object(bucket, key))
    except ObjectNotFound:
        raise AssetNotFound(f"{uri}: no such object at {store.endpoint}; upload it or fix the URI") from None
    except StoreError as exc:
        raise AssetError(f"{uri}: cannot read it: {exc}") from exc
    size = int(stat.size or 0)
    etag = re.sub(r"[^A-Za-z0-9]", "", stat.etag or "") or "no-etag"
    folder = cache_dir / "s3" / bucket / hashlib.sha256(key.encode()).hexdigest()[:24] / f"{etag}-{size}"
    target = folder / (PurePosixPath(key).name or "object")
    if target.is_file() and target.stat().st_size == size:
        return target
    folder.mkdir(parents=True, exist_ok=True)

    def fetch() -> None:
        response = client.get_object(bucket, key)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in response.stream(_CHUNK):
                    out.write(chunk)
            got = Path(tmp).stat().st_size
            if got != size:  # a connection cut short: retried whole by `_call`
                raise StoreUnavailable(f"download of {uri} ended after {got} of {size} bytes")
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
            response.close()
            response.release_conn()

    try:
        store._call("get", key, fetch)
    except ObjectNotFound:
        raise AssetNotFound(f"{uri}: no such object at {store.endpoint}; upload it or fix the URI") from None
    except StoreError as exc:
        raise AssetError(f"{uri}: cannot download it: {exc}") from exc
    return target


# checks -----------------------------------------------------------------------------------------------------


@dataclass
class _File:
    """One asset, opened once: its local path and what ffprobe says, or why it cannot be used."""

    path: Path | None = None
    info: media.MediaInfo | None = None
    problem: str | None = None
    reported: bool = False


@dataclass
class _Checker:
    campaign: Campaign
    settings: RuntimeSettings
    cache_dir: Path
    issues: list[CampaignIssue] = field(default_factory=list)
    files: dict[str, _File] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)  # audio URI -> 16 kHz mono samples or a problem
    folder: Path | None = None

    def __post_init__(self) -> None:
        with contextlib.suppress(OSError):
            file = Path(self.campaign.file)
            self.folder = file.resolve().parent if file.is_file() else None

    def add(self, path: str, message: str, severity: Literal["error", "warning"] = "error") -> None:
        self.issues.append(CampaignIssue(self.campaign.file, path, message, severity))

    def shown(self, uri: str) -> str:
        """The asset as the user knows it: a path relative to the campaign's folder, else the URI."""
        if uri.startswith("file://"):
            path = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))
            if self.folder is not None and path.is_relative_to(self.folder):
                return str(path.relative_to(self.folder))
            return str(path)
        return uri

    def open(self, uri: str, opener: Callable[[Path], _File]) -> _File:
        """Localize and open `uri` once; later calls get the same result."""
        if uri not in self.files:
            try:
                path = localize(uri, self.settings, self.cache_dir)
            except AssetError as exc:
                self.files[uri] = _File(problem=str(exc).removeprefix(f"{uri}: "))
            else:
                self.files[uri] = opener(path)
        return self.files[uri]

    def file_problem(self, path: str, uri: str, entry: _File, kind: str) -> bool:
        """Report a problem of the file itself, once (at the first field naming it); True when it has one."""
        if entry.problem is None:
            return False
        if not entry.reported:
            entry.reported = True
            self.add(path, f"{kind} {self.shown(uri)}: {entry.problem}")
        return True


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _open_picture(path: Path, *, what: str, fix: str) -> _File:
    """Probe a still or a video and decode its first frame (a truncated file can probe fine)."""
    try:
        info = media.probe(path)
        if info.video is None or not info.width or not info.height:
            return _File(path, info, f"is not {what} ffmpeg can read (no picture in it); {fix}")
        frames = media.read_video_frames(path)
        try:
            next(frames)
        finally:
            close = getattr(frames, "close", None)  # a generator: stops ffmpeg after the first frame
            if close is not None:
                close()
    except StopIteration:
        return _File(path, None, f"holds no frame ffmpeg can decode; {fix}")
    except media.MediaError as exc:
        return _File(path, None, f"is not {what} ffmpeg can read ({_first_line(exc)}); {fix}")
    return _File(path, info)


def _open_image(path: Path) -> _File:
    entry = _open_picture(path, what="an image", fix="export it again as PNG or JPEG")
    info = entry.info
    small = info is not None and min(info.width or 0, info.height or 0) < MIN_IMAGE_SIDE
    if entry.problem is None and info is not None and small:
        entry.problem = (
            f"is {info.width}x{info.height} pixels; an identity image needs at least {MIN_IMAGE_SIDE} on each "
            "side (512 or more works best): use a larger photo of the subject"
        )
    return entry


def _open_video(path: Path) -> _File:
    entry = _open_picture(path, what="a video", fix="export it again as H.264 MP4")
    if entry.problem is None and entry.info is not None and entry.info.frame_count is None:
        # the container does not store a frame count: count by decoding (rare; mp4 and mov store it)
        try:
            entry.info = media.probe(path, count_frames=True)
        except media.MediaError as exc:
            entry.problem = f"cannot be read to the end ({_first_line(exc)}); export it again as H.264 MP4"
    return entry


def _open_plain(path: Path) -> _File:
    return _File(path)


def _frames_fix(frames: int, have: int) -> str:
    fits = (have - 1) // 4 * 4 + 1
    return f"set the job's frames to {fits} or fewer" if fits >= 5 else "the job needs at least 5 frames"


def _check_image(checker: _Checker, path: str, uri: str) -> None:
    checker.file_problem(path, uri, checker.open(uri, _open_image), "identity image")


def _check_audio(checker: _Checker, path: str, uri: str, job: Job) -> None:
    from model_core.audio.whisper import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, AudioInputError, prepare_audio
    from model_core.io import MediaDecodeError, decode_audio

    entry = checker.open(uri, _open_plain)
    if checker.file_problem(path, uri, entry, "driving audio"):
        return
    assert entry.path is not None
    if uri not in checker.samples:
        try:
            checker.samples[uri] = decode_audio(entry.path, SAMPLE_RATE)
        except MediaDecodeError as exc:
            checker.samples[uri] = (
                f"is not audio ffmpeg can read ({_first_line(exc)}); export it again as WAV"
            )
    samples = checker.samples[uri]
    shown = checker.shown(uri)
    if isinstance(samples, str):
        entry.problem = samples
        checker.file_problem(path, uri, entry, "driving audio")
        return
    have = samples.size // SAMPLES_PER_FRAME
    if samples.size and have < job.frames:
        checker.add(
            path,
            f"driving audio {shown} lasts {samples.size / SAMPLE_RATE:.2f} s ({have} frames at {FPS} fps) but the "
            f"job renders {job.frames} frames ({job.frames / FPS:.2f} s); give a longer track or "
            + _frames_fix(job.frames, have),
        )
        return
    try:
        prepared = prepare_audio(samples, job.frames, source=f"driving audio {shown}")
    except AudioInputError as exc:
        checker.add(path, str(exc))
        return
    for note in prepared.notes:
        checker.add(path, f"driving audio {shown}: {note}", "warning")


def _aspect(height: int, width: int) -> float:
    return width / height


def _check_edit(checker: _Checker, index: int, job: Job) -> None:
    assert job.edit is not None
    at = f"jobs[{index}].edit"
    video = checker.open(job.edit.video, _open_video)
    mask = checker.open(job.edit.mask, _open_video)
    bad_video = checker.file_problem(f"{at}.video", job.edit.video, video, "edit video")
    bad_mask = checker.file_problem(f"{at}.mask", job.edit.mask, mask, "mask video")
    shown, shown_mask = checker.shown(job.edit.video), checker.shown(job.edit.mask)
    if not bad_video and video.info is not None:
        info = video.info
        height, width, n = info.height or 0, info.width or 0, info.frame_count or 0
        if n < job.frames:
            checker.add(
                f"{at}.video",
                f"edit video {shown} has {n} frames but the job renders {job.frames}; give a longer video or "
                + _frames_fix(job.frames, n),
            )
        elif n > job.frames:
            checker.add(
                f"{at}.video",
                f"edit video {shown} has {n} frames; the first {job.frames} are used and the rest is trimmed "
                f"(set frames to use more, at most 129)",
                "warning",
            )
        wrong = [
            s
            for s in job.sizes
            if abs(_aspect(height, width) / _aspect(s.height, s.width) - 1) > ASPECT_TOLERANCE
        ]
        if wrong:
            sizes = ", ".join(str(s) for s in wrong)
            checker.add(
                f"{at}.video",
                f"edit video {shown} is {height}x{width} (height x width) but the job renders {sizes}, another "
                "aspect ratio: the video would be stretched; crop the video to the job's aspect ratio, or give "
                "the job sizes with the video's aspect ratio",
            )
        if not bad_mask and mask.info is not None:
            mask_size = (mask.info.height or 0, mask.info.width or 0)
            if mask_size != (height, width):
                checker.add(
                    f"{at}.mask",
                    f"mask video {shown_mask} is {mask_size[0]}x{mask_size[1]} but the edit video is "
                    f"{height}x{width}; export the mask at the video's size",
                )
            if (mask.info.frame_count or 0) != n:
                checker.add(
                    f"{at}.mask",
                    f"mask video {shown_mask} has {mask.info.frame_count or 0} frames but the edit video has {n}; "
                    "export the mask from the same clip, one mask frame per video frame",
                )


def check_assets(
    campaign: Campaign, settings: RuntimeSettings, cache_dir: Path, *, only: Collection[str] | None = None
) -> list[CampaignIssue]:
    """Every problem of the media `campaign` references, as issues of its file (see the module docstring).

    `settings` gives the S3 endpoint and credentials for ``s3://`` assets, which are downloaded into
    `cache_dir` once. `only` limits the checks to the jobs with these ids. Issues with severity "error"
    stop a render; "warning"s do not (an edit video longer than the job is trimmed). No errors means every
    asset can be rendered as the campaign asks.
    """
    checker = _Checker(campaign, settings, Path(cache_dir))
    for i, job in enumerate(campaign.jobs):
        if only is not None and job.id not in only:
            continue
        for k, subject in enumerate(job.subjects):
            _check_image(checker, f"jobs[{i}].subjects[{k}].image", subject.image)
        if job.audio is not None:
            _check_audio(checker, f"jobs[{i}].audio.uri", job.audio.uri, job)
        if job.edit is not None:
            _check_edit(checker, i, job)
    return checker.issues
