"""The campaign spec: what a user asks adrender to render, validated before any GPU time is spent.

A campaign file (YAML or JSON) holds campaign-wide settings and a list of render jobs::

    id: spring-shampoo            # safe id, see SAFE_ID_PATTERN
    schedule: "0 6 * * 1"         # optional 5-field crontab
    territory: [US, CA]           # optional: where the videos are shown (ISO 3166-1 alpha-2, or EU)
    defaults: {sizes: [720x1280, 1280x720], variants: 2}
    models: {dit: hunyuancustom-dit@production}
    qc: {freeze_min_seconds: 0.5}
    output_prefix: renders
    jobs:
      - id: woman-intro
        prompt: A woman holds up a shampoo bottle and smiles.
        subjects: [{word: woman, image: assets/woman.png}]

`load_campaign(path)` returns a resolved, frozen `Campaign` or raises one `CampaignError` that lists every
problem of the file, each as ``<file>: <field path>: <what is wrong and how to fix it>``. Things that are
allowed but probably not meant (a negative prompt that cfg 1.0 ignores, ``UK`` for ``GB``) are kept on
`Campaign.warnings`.

Resolution. A field a job leaves unset is taken from the campaign `defaults`, then from the per-mode
defaults, so every value the renderer will use is visible in the loaded model. Sampling settings (steps,
cfg scale, flow shift, embedded guidance, DeepCache) come from `model_core.sampling.options.MODE_DEFAULTS`
and are checked by building the sampler's own `SamplingOptions` (`Job.sampling_options`); the spec keeps
only what the sampler does not know (`RENDER_DEFAULTS`: frames, size, fps, negative prompt, foley). The
mode is derived from what the job gives: `editing` (an `edit` block), `audio` (an `audio` block), `image`
(subjects only), `t2v` (no subjects); a presenter job (one subject and an `audio` voice track) chooses
HunyuanVideo-Avatar with ``model: avatar`` (mode `avatar`), the only mode that renders past 129 frames. Seeds left unset are derived from the campaign id, the job id and the
variant index (`derive_seed`), so a rerun of the same file renders the same videos.

Render units. A job renders every one of its `sizes` (one creative in 9:16, 16:9 and 1:1 is common) times
every variant; `Campaign.render_units()` lists them (at most `MAX_UNITS` per campaign). A variant uses the
same seed in every size.

Strict types. Numbers must be written as numbers: ``steps: yes`` (a YAML boolean) and ``steps: "30"`` (a
quoted string) are rejected rather than converted, and so are ``1``/``"true"`` for true/false switches.

Files. Validation here checks the form of asset URIs: ``s3://bucket/key``, ``file:///abs/path`` or a path
relative to the campaign file that stays inside the campaign's folder (symbolic links resolved). Whether
the files exist and decode is checked by `components.runtime.assets.check_assets` (``adrender validate``
runs it unless ``--no-media``). YAML merge keys (``<<: *base``) are supported; complex keys, nesting
deeper than `MAX_NESTING` and alias expansions beyond `MAX_NODES` values are refused.

Safe ids. Campaign and job ids become parts of storage keys, folder names and metric labels, so they match
`SAFE_ID_PATTERN`: 1-63 characters of lowercase letters, digits, ``-`` and ``_``, starting and ending with a
letter or digit. No ``/``, no ``.`` (so no ``..``), no spaces, and no uppercase, because two ids that differ
only in case would collide on a case-insensitive file system.

This module does not import torch: `model_core.sampling` is imported inside the functions that need it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
import reprlib
import typing
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from components.runtime.registry import ModelRef
from components.runtime.territory import ALIASES, TerritoryError, canonical_code, normalise_territories

if TYPE_CHECKING:
    from model_core.sampling.options import SamplingOptions

try:  # libyaml's parser: ten times faster on large campaigns
    from yaml import CSafeLoader as _YamlLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _YamlLoader  # type: ignore[assignment]

__all__ = [
    "AVATAR_MODEL",
    "AVATAR_NEGATIVE_PROMPT",
    "MAX_AVATAR_FRAMES",
    "MAX_NESTING",
    "MAX_NODES",
    "MAX_UNITS",
    "RENDER_DEFAULTS",
    "SAFE_ID_PATTERN",
    "SUPPORTED_SIZES",
    "AudioDrive",
    "Campaign",
    "CampaignError",
    "CampaignIssue",
    "Delivery",
    "DitRefs",
    "EditSource",
    "Foley",
    "FoleyOffloadMode",
    "Job",
    "JobDefaults",
    "Mode",
    "ModelRef",
    "ModelRefs",
    "QCProfile",
    "RenderUnit",
    "Size",
    "Subject",
    "derive_seed",
    "load_campaign",
    "parse_campaign",
    "parse_model_ref",
    "size_supported",
    "sizes_hint",
]

SAFE_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$"
_SAFE_ID = re.compile(SAFE_ID_PATTERN)

# The sizes the released checkpoints render (height x width): HunyuanVideo's 540p and 720p table
# (Tencent/HunyuanVideo README) and HunyuanCustom's 1-GPU 512x896, plus its vertical twin for 9:16 ads.
MIN_SIDE, MAX_SIDE = 32, 1280
SUPPORTED_SIZES: tuple[tuple[int, int], ...] = (
    (544, 960),
    (960, 544),
    (624, 832),
    (832, 624),
    (720, 720),
    (720, 1280),
    (1280, 720),
    (1104, 832),
    (832, 1104),
    (960, 960),
    (512, 896),
    (896, 512),
)
MAX_FRAMES = 129  # the models are trained on 129 frames (33 latent frames)
# Avatar samples longer videos as sliding windows of 129 frames; Whisper encodes the voice's first 30 s
MAX_AVATAR_FRAMES = 749
MIN_FRAMES = 5  # two latent frames; a single frame is a picture, not an ad
MAX_VARIANTS = 16
MAX_SUBJECTS = 4
MAX_UNITS = 10_000  # render units (jobs x sizes x variants) of one campaign
SEED_MAX = 2**32 - 1  # numpy and every torch generator accept 32-bit seeds
# Parser limits. A campaign nests about 6 levels deep and holds some 60 values per job (600,000 for the
# largest campaign); the limits only stop files that would exhaust memory or the stack.
MAX_NESTING = 32
MAX_NODES = 2_000_000
MAX_FILE_BYTES = 64 * 1024 * 1024

# The negative prompt of HunyuanCustom's example scripts (Tencent-Hunyuan/HunyuanCustom, scripts/), used by
# the HunyuanCustom modes when nothing is given.
DEFAULT_NEGATIVE_PROMPT = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
    "bad teeth, bad eyes, bad limbs, distortion, blurring, text, subtitles, static, picture, black border."
)

AVATAR_MODEL = "avatar"  # `model: avatar` in a job: HunyuanVideo-Avatar
# HunyuanVideo-Avatar's negative prompt (hymm_sp/sample_inference_audio.py)
AVATAR_NEGATIVE_PROMPT = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, bad teeth, "
    "bad eyes, bad limbs, distortion, blurring, Lens changes"
)

_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp")
_AUDIO_EXT = (".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg")
_VIDEO_EXT = (".mp4", ".mov", ".mkv", ".webm")


class Mode(str, Enum):
    """What a job renders, derived from the inputs it gives (see `Job.mode`)."""

    IMAGE = "image"  # identity image(s) + prompt -> hunyuancustom
    AUDIO = "audio"  # identity image + driving audio -> hunyuancustom audio
    EDITING = "editing"  # identity image + source video + mask video -> hunyuancustom editing
    T2V = "t2v"  # prompt only -> hunyuanvideo t2v
    AVATAR = "avatar"  # presenter image + voice, `model: avatar` -> hunyuanvideo-avatar


@dataclass(frozen=True)
class _RenderDefaults:
    frames: int
    size: tuple[int, int]
    fps: int
    negative_prompt: str  # used only when the job runs real CFG (cfg_scale > 1)
    foley: bool


# HunyuanCustom's example scripts and HunyuanVideo's sample_video.py defaults. Sizes: the 720p default of each.
# Sampling defaults are model_core's (`model_core.sampling.options.MODE_DEFAULTS`), not repeated here.
RENDER_DEFAULTS: Mapping[Mode, _RenderDefaults] = {
    Mode.IMAGE: _RenderDefaults(129, (720, 1280), 25, DEFAULT_NEGATIVE_PROMPT, True),
    # the driving audio is the soundtrack: no foley on top of it by default
    Mode.AUDIO: _RenderDefaults(129, (720, 1280), 25, DEFAULT_NEGATIVE_PROMPT, False),
    Mode.EDITING: _RenderDefaults(129, (720, 1280), 25, DEFAULT_NEGATIVE_PROMPT, True),
    # T2V runs without real CFG (cfg 1.0, embedded guidance 6.0), so a negative prompt would be unused
    Mode.T2V: _RenderDefaults(129, (720, 1280), 24, "", True),
    # HunyuanVideo-Avatar: --image-size 704 (the short side), its negative prompt, the voice as the soundtrack
    Mode.AVATAR: _RenderDefaults(129, (704, 704), 25, AVATAR_NEGATIVE_PROMPT, False),
}

# the spec's field names for the sampler's option names
_SAMPLING_FIELDS: Mapping[str, str] = {
    "steps": "num_steps",
    "flow_shift": "shift",
    "cfg_scale": "cfg_scale",
    "embedded_guidance": "embedded_guidance",
    "skip_uncond_from": "skip_uncond_from",
}


def _sampling_defaults(mode: Mode) -> SamplingOptions:
    """model_core's defaults for `mode` (imported here: model_core.sampling pulls in torch)."""
    from model_core.sampling.options import MODE_DEFAULTS, SamplingMode

    return MODE_DEFAULTS[SamplingMode(mode.value)]


def _sampling_error(exc: ValueError) -> str:
    """model_core's message with the spec's field names (num_steps -> steps, shift -> flow_shift)."""
    text = str(exc)
    for spec_name, option in _SAMPLING_FIELDS.items():
        if spec_name != option:
            text = re.sub(rf"\b{option}\b", spec_name, text)
    return text


# errors ---------------------------------------------------------------------------------------------------

_SHOW = reprlib.Repr()  # bounded work and length whatever the value's size
_SHOW.maxlevel, _SHOW.maxdict, _SHOW.maxlist, _SHOW.maxtuple, _SHOW.maxset = 2, 4, 4, 4, 4
_SHOW.maxstring = _SHOW.maxother = 70
SHOW_CHARS = 80


def _show(value: Any) -> str:
    """A short repr of a user's value for a message: never more than ~80 characters, whatever its size."""
    text = _SHOW.repr(value)
    return text if len(text) <= SHOW_CHARS else text[: SHOW_CHARS - 3] + "..."


@dataclass(frozen=True)
class CampaignIssue:
    """One problem in a campaign file: where it is and how to fix it.

    `severity` is "error" (the campaign is rejected) or "warning" (allowed, but probably not meant).
    """

    file: str
    path: str  # field path such as "jobs[2].frames"; "" for the file as a whole
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


class CampaignError(ValueError):
    """A campaign file is invalid. `issues` lists every problem found in it."""

    def __init__(self, issues: Sequence[CampaignIssue]):
        self.issues: tuple[CampaignIssue, ...] = tuple(issues)
        files = sorted({i.file for i in self.issues})
        head = f"{len(self.issues)} problem(s) in {', '.join(files)}"
        super().__init__("\n".join([head, *(f"  {i}" for i in self.issues)]))


def _problems(items: Sequence[tuple[str, str]]) -> PydanticCustomError:
    """One validation error carrying several (sub-path, message) problems; `_translate` expands them."""
    return PydanticCustomError(
        "adrender_spec", "{summary}", {"summary": items[0][1], "problems": tuple(items)}
    )


def _problem(message: str, at: str = "") -> PydanticCustomError:
    return _problems([(at, message)])


def _run_then_check(
    handler: ValidatorFunctionWrapHandler, value: Any, problems: list[tuple[str, str]]
) -> Any:
    """Run the inner validation, then report its errors and `problems` together."""
    try:
        result = handler(value)
    except ValidationError as exc:
        if not problems:
            raise
        details = [
            InitErrorDetails(
                type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")), loc=e["loc"], input=e["input"]
            )
            for e in exc.errors()
        ]
        details.append(InitErrorDetails(type=_problems(problems), loc=(), input=value))
        raise ValidationError.from_exception_data(exc.title, details) from None
    if problems:
        raise _problems(problems)
    return result


# shared field types -----------------------------------------------------------------------------------------


def _check_id(value: str) -> str:
    if not _SAFE_ID.match(value):
        slug = re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-_")[:63] or "my-id"
        raise _problem(
            f"id {_show(value)} is unsafe in a storage key or path; use 1-63 lowercase letters, digits, '-' or "
            f"'_', starting and ending with a letter or digit, e.g. {slug!r}"
        )
    return value


def _check_frames(value: int) -> int:
    # up to MAX_AVATAR_FRAMES here; the job checks that only Avatar goes past MAX_FRAMES
    if value % 4 != 1 or not MIN_FRAMES <= value <= MAX_AVATAR_FRAMES:
        top = MAX_FRAMES if value <= MAX_FRAMES + 4 else MAX_AVATAR_FRAMES
        lower = max(MIN_FRAMES, min(top, (value - 1) // 4 * 4 + 1))
        upper = min(top, lower + 4)
        near = f"{lower}" if lower == upper else f"{lower} or {upper}"
        raise _problem(
            f"got {_show(value)}; frames must be 4k+1 between {MIN_FRAMES} and {MAX_FRAMES} ({MAX_AVATAR_FRAMES} "
            f"for model: avatar) (the VAE packs 4 frames per latent frame after the first), e.g. {near}"
        )
    return value


def _check_text(value: str) -> str:
    if not value.strip():
        raise _problem("must not be empty or blank; write what the video shows")
    return value


def _sampling_check(name: str) -> AfterValidator:
    """Check one sampling setting with the sampler's own rules (`SamplingOptions`), on a mode-neutral base."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        error = _sampling_refusal(_SAMPLING_FIELDS[name], value)
        if error is not None:
            hint = _FIX_HINTS.get(name, "")
            raise _problem(error + (f" ({hint})" if hint else ""))
        return value

    return AfterValidator(check)


@functools.lru_cache(maxsize=1024)
def _sampling_refusal(option: str, value: float) -> str | None:
    """The sampler's message refusing `option=value`, or None (cached: a campaign repeats its values)."""
    try:
        _sampling_defaults(Mode.T2V).with_(**{option: value})
    except ValueError as exc:
        return _sampling_error(exc)
    return None


def _uri_checker(kind: str, extensions: tuple[str, ...]) -> AfterValidator:
    """An after-validator for an asset URI: s3://bucket/key, file:///abs/path or a path relative to the file.

    A relative path must stay inside the campaign file's folder, also after symbolic links are resolved.
    """

    def check(value: str, info: ValidationInfo) -> str:
        value = value.strip()
        example = f"assets/example{extensions[0]}"
        if not value:
            raise _problem(
                f"empty {kind} URI; give s3://bucket/key, file:///abs/path or a relative path like {example!r}"
            )
        if "\\" in value:
            raise _problem(f"{_show(value)} contains a backslash; use / as separator, e.g. {example!r}")
        scheme, sep, rest = value.partition("://")
        if sep:
            if scheme == "s3":
                bucket, _, key = rest.partition("/")
                if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or not key:
                    raise _problem(
                        f"{_show(value)} is not an s3://bucket/key URI; e.g. 's3://ads-assets/{example}'"
                    )
                if ".." in PurePosixPath(key).parts:
                    raise _problem(
                        f"{_show(value)}: '..' is not allowed inside an S3 key; write the key in full"
                    )
                path_part = key
            elif scheme == "file":
                if not rest.startswith("/"):
                    raise _problem(
                        f"{_show(value)}: file URIs need an absolute path, e.g. 'file:///data/{example}'"
                    )
                path_part = rest
            else:
                raise _problem(
                    f"URI scheme {_show(scheme + '://')} is not supported; copy the {kind} to S3 and use s3://bucket/key, "
                    "or use file:///abs/path or a relative path"
                )
        elif value.startswith("/"):
            raise _problem(
                f"absolute path {_show(value)}: write it as {_show('file://' + value)} or make it relative to the file"
            )
        elif (info.context or {}).get("base_uri"):
            # a campaign read from S3: its relative assets are objects beside it, under the same prefix
            path_part = value
            if ".." in PurePosixPath(value).parts:
                raise _problem(
                    f"{_show(value)} leads outside the campaign's S3 folder; keep assets beside the campaign "
                    "(or below it), or name them explicitly as s3://bucket/key"
                )
            value = f"{str((info.context or {})['base_uri']).rstrip('/')}/{PurePosixPath(value)}"
        else:
            path_part = value
            context = info.context or {}
            base = context.get("base_dir_resolved") or (Path(context.get("base_dir") or Path.cwd())).resolve()
            # one resolution per distinct path and load: jobs of a campaign share their assets
            known: dict[str, str] = (
                context.setdefault("resolved_paths", {}) if info.context is not None else {}
            )
            uri = known.get(value)
            if uri is None:
                target = base.joinpath(value).resolve()
                uri = known[value] = target.as_uri() if target.is_relative_to(base) else ""
            if not uri:
                how = "through a symbolic link " if ".." not in PurePosixPath(value).parts else ""
                raise _problem(
                    f"{_show(value)} leads {how}outside the campaign's folder {base}; keep assets in that folder "
                    "(or below it), or name them explicitly as file:///abs/path or s3://bucket/key"
                )
            value = uri
        if not path_part.lower().endswith(extensions):
            article = "an" if kind[0] in "aeiou" else "a"
            raise _problem(
                f"{_show(path_part)} does not look like {article} {kind} file; expected one of {', '.join(extensions)}"
            )
        return value

    return AfterValidator(check)


SafeId = Annotated[str, AfterValidator(_check_id)]
Prompt = Annotated[str, Field(max_length=2000), AfterValidator(_check_text)]
Frames = Annotated[int, AfterValidator(_check_frames)]
# lower bounds are the sampler's (`SamplingOptions`); upper bounds only catch typos
Steps = Annotated[int, Field(le=200), _sampling_check("steps")]
CfgScale = Annotated[float, Field(le=30.0), _sampling_check("cfg_scale")]
FlowShift = Annotated[float, Field(le=30.0), _sampling_check("flow_shift")]
Guidance = Annotated[float, Field(ge=1.0, le=20.0)]
Variants = Annotated[int, Field(ge=1, le=MAX_VARIANTS)]
ImageUri = Annotated[str, _uri_checker("image", _IMAGE_EXT)]
AudioUri = Annotated[str, _uri_checker("audio", _AUDIO_EXT)]
VideoUri = Annotated[str, _uri_checker("video", _VIDEO_EXT)]


class _Strict(BaseModel):
    # strict: no silent conversions (`steps: yes` is not 1, `steps: "30"` is not 30)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# model references ---------------------------------------------------------------------------------------------

# One parser for model references, the registry's: a reference the spec accepts is one `plan` can resolve
# (same name rules, same alias rules, MLflow's reserved aliases 'latest' and 'v<n>' refused here already).


def parse_model_ref(text: str) -> ModelRef:
    """Parse `name@alias` or `name/version` (see `components.runtime.registry.ModelRef.parse`).

    Raises ValueError naming the accepted forms or the rule the name or alias breaks.
    """
    return ModelRef.parse(text)


def _check_model_ref(value: str) -> str:
    """Validate a reference and return its canonical spelling (`name@alias` / `name/version`)."""
    try:
        return str(parse_model_ref(value))
    except ValueError as exc:
        raise _problem(str(exc)) from None


ModelRefText = Annotated[str, AfterValidator(_check_model_ref)]


class DitRefs(_Strict):
    """The DiT checkpoint used for each mode (the five are different registered models).

    A single reference (``dit: hunyuancustom-dit@production``) is the DiT of every job when all the
    campaign's jobs use one mode; a campaign mixing modes names one per mode.
    """

    image: ModelRefText = "hunyuancustom-dit@production"
    audio: ModelRefText = "hunyuancustom-audio-dit@production"
    editing: ModelRefText = "hunyuancustom-editing-dit@production"
    t2v: ModelRefText = "hunyuanvideo-t2v-dit@production"
    avatar: ModelRefText = "hunyuanvideo-avatar-dit@production"

    @model_validator(mode="before")
    @classmethod
    def _one_for_all(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, str):
            return data
        modes: list[str] = (info.context or {}).get("job_modes") or [Mode.IMAGE.value]
        if len(modes) > 1:
            example = ", ".join(f"{m}: {getattr(DitRefs.model_fields[m], 'default', '')}" for m in modes)
            raise _problem(
                f"one reference {_show(data)} for jobs of several modes ({', '.join(modes)}), which need different "
                f"checkpoints; name one per mode, e.g. dit: {{{example}}}"
            )
        return {modes[0]: data}


class ModelRefs(_Strict):
    """Registry references per model role; `plan` resolves each alias to one version for the whole run."""

    dit: DitRefs = DitRefs()
    vae: ModelRefText = "hunyuan-vae@production"
    text_encoder: ModelRefText = "llava-llama-3-8b@production"  # LLaVA, hidden_states[-3]
    text_encoder_2: ModelRefText = "clip-vit-large@production"  # CLIP-L pooled
    audio_encoder: ModelRefText = "whisper-tiny@production"  # audio and avatar modes
    face_detector: ModelRefText = "face-detector@production"  # avatar mode: the presenter's face box
    foley: ModelRefText = "hunyuanvideo-foley@production"  # the MMDiT, DAC-VAE and Synchformer release
    foley_image_encoder: ModelRefText = "siglip2-base-patch16-512@production"  # Foley's SigLIP2 frames
    foley_text_encoder: ModelRefText = "larger-clap-general@production"  # Foley's CLAP text

    def for_mode(self, mode: Mode, *, foley: bool) -> dict[str, str]:
        """The references a job of `mode` needs, by role (foley: the Foley release and its two encoders)."""
        refs = {
            "dit": getattr(self.dit, mode.value),
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
        }
        if mode in (Mode.AUDIO, Mode.AVATAR):
            refs["audio_encoder"] = self.audio_encoder
        if mode is Mode.AVATAR:
            refs["face_detector"] = self.face_detector
        if foley:
            refs["foley"] = self.foley
            refs["foley_image_encoder"] = self.foley_image_encoder
            refs["foley_text_encoder"] = self.foley_text_encoder
        return refs


# job parts --------------------------------------------------------------------------------------------------


class Size(_Strict):
    """Video size in pixels. Written as "720x1280" (height x width) or {height: 720, width: 1280}."""

    height: int
    width: int

    @model_validator(mode="before")
    @classmethod
    def _parse_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", data)
            if not match:
                raise _problem(f"size {_show(data)} must be 'HEIGHTxWIDTH', e.g. '720x1280'")
            return {"height": int(match[1]), "width": int(match[2])}
        if isinstance(data, (list, tuple)) and len(data) == 2:
            return {"height": data[0], "width": data[1]}
        return data

    @model_validator(mode="after")
    def _supported(self) -> Size:
        if self.height % 16 or self.width % 16:
            raise _problem(
                f"{self.height}x{self.width}: height and width must be multiples of 16; " + _sizes_hint()
            )
        if not MIN_SIDE <= min(self.height, self.width) or max(self.height, self.width) > MAX_SIDE:
            raise _problem(
                f"{self.height}x{self.width}: each side must be {MIN_SIDE} to {MAX_SIDE} pixels; "
                + _sizes_hint()
            )
        # a size the released checkpoints were not trained at is a warning here (`Campaign.warnings`) and an
        # error in `plan` for a released model: the tiny test models of the demo render any size
        return self

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"


# HunyuanVideo-Avatar resizes the presenter image to multiples of 64 with 704 px on the short side, at most
# 704 x 1216 pixels in area (hymm_sp/data_kits/audio_dataset.py)
AVATAR_MAX_AREA = 704 * 1216


def size_supported(mode: Mode, height: int, width: int) -> bool:
    """Whether the released checkpoint of `mode` renders `height x width`."""
    if mode is Mode.AVATAR:
        return height % 64 == 0 and width % 64 == 0 and height * width <= AVATAR_MAX_AREA
    return (height, width) in SUPPORTED_SIZES


def sizes_hint(mode: Mode) -> str:
    """The sizes the released checkpoint of `mode` renders, for error messages."""
    if mode is Mode.AVATAR:
        return "use multiples of 64 of at most 704 x 1216 pixels, e.g. 704x704, 1216x704 or 704x1216 (height x width)"
    return _sizes_hint()


def _sizes_hint() -> str:
    return "use one of " + ", ".join(f"{h}x{w}" for h, w in SUPPORTED_SIZES) + " (height x width)"


def _check_sizes(sizes: list[Size]) -> list[Size]:
    first: dict[Size, int] = {}
    problems = []
    for i, size in enumerate(sizes):
        if size in first:
            problems.append((f"[{i}]", f"{size} is listed twice (also [{first[size]}]); list each size once"))
        first.setdefault(size, i)
    if problems:
        raise _problems(problems)
    return sizes


Sizes = Annotated[list[Size], Field(min_length=1), AfterValidator(_check_sizes)]


# Scripts written without spaces between words: a subject word is found as a substring of the prompt.
_UNSPACED_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x9FFF),  # CJK radicals and symbols, Hiragana, Katakana, Bopomofo, CJK ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables (Korean particles attach to the noun)
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3FFFF),  # CJK extensions
)


_UNSPACED = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _UNSPACED_RANGES) + "]")


def _unspaced(ch: str) -> bool:
    return _UNSPACED.match(ch) is not None


def _joins(ch: str) -> bool:
    """Whether `ch` continues a word of a spaced script (so a match next to it is only part of a word)."""
    return (ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")) and not _unspaced(ch)


def _word_in(word: str, text: str) -> bool:
    """Whether `word` occurs in `text` as a whole word, ignoring case.

    In scripts written without spaces (Chinese, Japanese, Korean, Thai...) any occurrence counts: ``女士`` is
    found in ``一位女士微笑``. Elsewhere the match must not continue a longer word (``wom`` is not in ``woman``).
    """
    needle, hay = word.strip().casefold(), text.casefold()
    if not needle:
        return False
    if _UNSPACED.search(needle):
        return needle in hay
    start = hay.find(needle)
    while start >= 0:
        end = start + len(needle)
        if (start == 0 or not _joins(hay[start - 1])) and (end == len(hay) or not _joins(hay[end])):
            return True
        start = hay.find(needle, start + 1)
    return False


def _word_form_ok(word: str) -> bool:
    word = word.strip()
    first_is_letter = bool(word) and unicodedata.category(word[0]).startswith("L")
    return first_is_letter and all(unicodedata.category(ch)[0] in "LM" or ch in " '-’" for ch in word)


def _check_word(value: str) -> str:
    if not _word_form_ok(value):
        raise _problem(
            f"subject word {_show(value)} must be a word of the prompt: letters of any script, spaces, ' or -, "
            "starting with a letter, e.g. 'woman', 'red panda' or '女士'"
        )
    return value.strip()


class Subject(_Strict):
    """An identity: the word that names it in the prompt and a reference image of it."""

    word: Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_check_word)]
    image: ImageUri


class AudioDrive(_Strict):
    """Driving audio (speech or music) for the audio-driven mode."""

    uri: AudioUri
    strength: Annotated[float, Field(gt=0.0, le=2.0)] = 0.8  # §2.6 examples use 0.8


class EditSource(_Strict):
    """Editing mode: the video to edit and a mask video (white = region to replace with the subject).

    Both are resized and trimmed to the job's size and `frames`; the official editing script takes the
    size and frame count from the input video instead (docs/FIDELITY.md).
    """

    video: VideoUri
    mask: VideoUri
    mask_expand: Annotated[int, Field(ge=-50, le=50)] = 5  # pixels of dilation (<0 erodes); §2.6 uses 5


# `model_core.audio.foley.offload.FoleyOffload` (this module does not import torch): `encoders` parks the
# encoders outside feature extraction, `sequential` the MMDiT and the DAC decoder too (the lowest peak, the
# slowest), `none` keeps everything on the device
FoleyOffloadMode = Literal["encoders", "sequential", "none"]


class Foley(_Strict):
    """Generated sound effects for the video (HunyuanVideo-Foley). `prompt` empty = the job's prompt.

    Off by default in audio mode, where the driving voice is the soundtrack; turned on there, the foley bed is
    mixed under the voice and ducked while it speaks (``components.runtime.soundtrack.duck_under``)."""

    enabled: bool = True
    prompt: Annotated[str, Field(max_length=500)] = ""
    negative_prompt: Annotated[str, Field(max_length=500)] = "noisy, harsh"
    # what leaves the device between a clip's phases: `model_core.audio.foley.offload.FoleyOffload`'s values
    offload: FoleyOffloadMode = "encoders"

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, data: Any) -> Any:
        # `foley: off` / `foley: false` is the natural YAML shorthand
        return {"enabled": data} if isinstance(data, bool) else data


class Delivery(_Strict):
    """Delivery profile: loudness target, true-peak ceiling and frame rate of the published file."""

    loudness_lufs: Annotated[float, Field(ge=-40.0, le=-5.0)] = -23.0  # EBU R128
    true_peak_dbtp: Annotated[float, Field(ge=-10.0, le=0.0)] = -1.0
    fps: Annotated[int, Field(ge=8, le=60)] = 25

    @model_validator(mode="after")
    def _peak_above_target(self) -> Delivery:
        if self.true_peak_dbtp <= self.loudness_lufs:
            raise _problem(
                f"true_peak_dbtp {self.true_peak_dbtp} is at or below loudness_lufs {self.loudness_lufs}; the ceiling "
                "must be above the target, e.g. loudness_lufs -23 with true_peak_dbtp -1",
                "true_peak_dbtp",
            )
        return self


def _one_size_field(data: Mapping[str, Any]) -> None:
    if data.get("size") is not None and data.get("sizes") is not None:
        raise _problem(
            "give size (one size) or sizes (a list), not both; e.g. sizes: [720x1280, 1280x720]", "sizes"
        )


class JobDefaults(_Strict):
    """Values applied to every job that does not set them (before the per-mode defaults)."""

    negative_prompt: Annotated[str, Field(max_length=2000)] | None = None
    size: Size | None = None
    sizes: Sizes | None = None
    frames: Frames | None = None
    steps: Steps | None = None
    cfg_scale: CfgScale | None = None
    flow_shift: FlowShift | None = None
    variants: Variants | None = None
    foley: Foley | None = None
    delivery: Delivery | None = None

    @model_validator(mode="before")
    @classmethod
    def _size_or_sizes(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            _one_size_field(data)
        return data


def _mode_of(data: Mapping[str, Any]) -> Mode:
    if data.get("model") == AVATAR_MODEL:
        return Mode.AVATAR
    if data.get("edit") is not None:
        return Mode.EDITING
    if data.get("audio") is not None:
        return Mode.AUDIO
    return Mode.IMAGE if data.get("subjects") else Mode.T2V


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Job(_Strict):
    """One render job. After loading, every field holds the value the renderer will use.

    A job renders each of its `sizes` (``size: 720x1280`` is a one-element list) in each variant.
    Up to `MAX_SUBJECTS` subjects are accepted; the released HunyuanCustom code conditions on one identity
    image, so more than one is an adrender extension (docs/FIDELITY.md).
    """

    id: SafeId
    prompt: Prompt
    negative_prompt: Annotated[str, Field(max_length=2000)]
    subjects: Annotated[list[Subject], Field(max_length=MAX_SUBJECTS)] = []
    audio: AudioDrive | None = None
    edit: EditSource | None = None
    # the model family: the mode's HunyuanCustom / HunyuanVideo checkpoint, or HunyuanVideo-Avatar for a presenter
    model: Literal["hunyuancustom", "avatar"] = "hunyuancustom"
    sizes: Sizes
    frames: Frames
    steps: Steps
    cfg_scale: CfgScale
    embedded_guidance: Guidance | None
    flow_shift: FlowShift
    # speed lever, off by default: from this step on only the conditional branch runs (docs/FIDELITY.md)
    skip_uncond_from: Annotated[int, Field(ge=0, le=200)] | None = None
    variants: Variants
    seeds: Annotated[
        list[Annotated[int, Field(ge=0, le=SEED_MAX)]], Field(min_length=1, max_length=MAX_VARIANTS)
    ]
    foley: Foley
    delivery: Delivery

    @model_validator(mode="before")
    @classmethod
    def _fill_mode_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        _one_size_field(data)
        mode = _mode_of(data)
        d = RENDER_DEFAULTS[mode]
        s = _sampling_defaults(mode)
        out = dict(data)
        size = out.pop("size", None)
        if out.get("sizes") is None:
            out["sizes"] = [size if size is not None else {"height": d.size[0], "width": d.size[1]}]
        for name, value in (
            ("steps", s.num_steps),
            ("cfg_scale", s.cfg_scale),
            ("flow_shift", s.shift),
            ("embedded_guidance", s.embedded_guidance),
            ("frames", d.frames),
        ):
            out.setdefault(name, value)
        if "negative_prompt" not in out:
            # the default negative prompt only where real CFG runs: at cfg 1.0 nothing would read it
            cfg = out["cfg_scale"]
            out["negative_prompt"] = d.negative_prompt if not _is_number(cfg) or cfg > 1.0 else ""
        if "variants" not in out:
            seeds = out.get("seeds")
            out["variants"] = len(seeds) if isinstance(seeds, list) and seeds else 1
        foley = out.get("foley", {})
        foley = {"enabled": foley} if isinstance(foley, bool) else foley
        out["foley"] = {"enabled": d.foley, **foley} if isinstance(foley, Mapping) else foley
        delivery = out.get("delivery", {})
        out["delivery"] = {"fps": d.fps, **delivery} if isinstance(delivery, Mapping) else delivery
        return out

    @property
    def mode(self) -> Mode:
        """The job's mode, derived from its inputs."""
        return _mode_of(
            {"edit": self.edit, "audio": self.audio, "subjects": self.subjects, "model": self.model}
        )

    @property
    def size(self) -> Size:
        """The first of `sizes` (the only one for most jobs)."""
        return self.sizes[0]

    def sampling_options(self, seed: int) -> SamplingOptions:
        """Exactly what the sampler uses for a unit of this job: the mode's `SamplingOptions` (DeepCache and
        identity guidance as released) with the job's steps, flow shift, cfg scale and embedded guidance."""
        return _sampling_defaults(self.mode).with_(
            num_steps=self.steps,
            shift=self.flow_shift,
            cfg_scale=self.cfg_scale,
            embedded_guidance=self.embedded_guidance,
            skip_uncond_from=self.skip_uncond_from,
            seed=seed,
        )

    # cross-field checks live in field validators that look back at earlier fields (`info.data`), so that they
    # still run when an unrelated field of the same job is wrong and every problem is reported at once.

    @field_validator("subjects", mode="wrap")
    @classmethod
    def _words_in_prompt(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> list[Subject]:
        # wrap, so that the words are checked even when an image URI of the list is wrong
        prompt = info.data.get("prompt")
        problems = []
        seen: set[str] = set()
        for i, s in enumerate(value if isinstance(value, list) else []):
            word = s.get("word") if isinstance(s, Mapping) else getattr(s, "word", None)
            if not isinstance(word, str) or not word.strip():
                continue
            if prompt is not None and _word_form_ok(word) and not _word_in(word, prompt):
                message = (
                    f"subject word {_show(word)} does not occur in the prompt; the model ties the image to that "
                    f"word, so use the prompt's word for it or add {_show(word)} to the prompt"
                )
                problems.append((f"[{i}].word", message))
            key = word.strip().casefold()
            if key in seen:
                problems.append(
                    (
                        f"[{i}].word",
                        f"subject word {_show(word)} is given twice; give each subject its own word",
                    )
                )
            seen.add(key)
        subjects: list[Subject] = _run_then_check(handler, value, problems)  # checked by pydantic
        return subjects

    @field_validator("audio")
    @classmethod
    def _audio_needs_subject(cls, audio: AudioDrive | None, info: ValidationInfo) -> AudioDrive | None:
        if audio is not None and "subjects" in info.data and not info.data["subjects"]:
            raise _problem(
                "audio-driven jobs animate a subject: add subjects: [{word: ..., image: ...}] "
                "naming the person who speaks, or remove audio"
            )
        return audio

    @field_validator("edit")
    @classmethod
    def _edit_alone(cls, edit: EditSource | None, info: ValidationInfo) -> EditSource | None:
        if edit is None:
            return edit
        if info.data.get("audio") is not None:
            raise _problem(
                "a job is either audio-driven or editing, not both (no checkpoint does both); "
                "split it into two jobs or remove audio or edit"
            )
        if "subjects" in info.data and not info.data["subjects"]:
            raise _problem(
                "editing replaces the masked region with a subject: add subjects: [{word: ..., image: ...}]"
            )
        return edit

    @field_validator("model")
    @classmethod
    def _avatar_is_a_presenter(cls, model: str, info: ValidationInfo) -> str:
        if model != AVATAR_MODEL:
            return model
        problems = []
        if "audio" in info.data and info.data["audio"] is None:
            problems.append(
                "model: avatar animates a presenter from a voice track: add audio: {uri: voice.wav}, or remove "
                "model: avatar"
            )
        subjects = info.data.get("subjects")
        if subjects is not None and len(subjects) != 1:
            problems.append(
                f"model: avatar takes exactly one subject (the presenter's image), got {len(subjects)}; keep "
                "the presenter alone, or remove model: avatar"
            )
        if info.data.get("edit") is not None:
            problems.append("model: avatar does not edit videos: remove edit, or remove model: avatar")
        audio = info.data.get("audio")
        if audio is not None and "strength" in audio.model_fields_set:
            problems.append(
                "audio.strength scales HunyuanCustom's audio branch; Avatar's adapters take the voice whole: "
                "remove audio.strength, or remove model: avatar"
            )
        if problems:
            raise _problems([("", p) for p in problems])
        return model

    @field_validator("frames")
    @classmethod
    def _long_only_avatar(cls, frames: int, info: ValidationInfo) -> int:
        if frames > MAX_FRAMES and info.data.get("model") != AVATAR_MODEL:
            raise _problem(
                f"got {frames}; frames must be 4k+1 between {MIN_FRAMES} and {MAX_FRAMES}, e.g. {MAX_FRAMES}: only "
                "model: avatar (a presenter with a voice track) renders longer spots, as windows over the voice"
            )
        return frames

    @field_validator("embedded_guidance")
    @classmethod
    def _guidance_only_t2v(cls, value: float | None, info: ValidationInfo) -> float | None:
        mode = _mode_of(info.data)
        if value is not None and mode is not Mode.T2V:
            raise _problem(
                f"the {mode.value}-mode checkpoint has no guidance embedding; remove embedded_guidance "
                "(it applies to text-to-video jobs only) and use cfg_scale"
            )
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds_match_variants(cls, seeds: list[int], info: ValidationInfo) -> list[int]:
        problems = []
        variants = info.data.get("variants")
        if variants is not None and variants != len(seeds):
            message = (
                f"{len(seeds)} seeds but variants is {variants}; give one seed per variant or "
                "drop one of the two (seeds alone set the variant count)"
            )
            problems.append(("", message))
        dupes = sorted(seed for seed, n in Counter(seeds).items() if n > 1)
        if dupes:
            message = f"seed(s) {_show(dupes)} repeated; a repeated seed renders the same video twice, use distinct seeds"
            problems.append(("", message))
        if problems:
            raise _problems(problems)
        return seeds

    @model_validator(mode="after")
    def _sampler_accepts(self) -> Job:
        # every setting passed its own check; this catches rules of the sampler that combine settings
        try:
            self.sampling_options(0)
        except ValueError as exc:
            raise _problem(f"the sampler refuses these settings: {_sampling_error(exc)}") from None
        return self


# campaign ---------------------------------------------------------------------------------------------------

_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
_CRON_NAMES = {
    3: {
        m: i + 1
        for i, m in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        )
    },
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}


def _check_cron(expr: str) -> str:
    fields = expr.split()
    if len(fields) != 5:
        raise _problem(
            f"schedule {_show(expr)} has {len(fields)} fields; write a 5-field crontab "
            "'minute hour day-of-month month day-of-week', e.g. '0 6 * * 1' (Mondays 06:00 UTC)"
        )
    for index, (text, (name, lo, hi)) in enumerate(zip(fields, _CRON_FIELDS, strict=True)):
        names = _CRON_NAMES.get(index, {})
        for part in text.split(","):
            match = re.fullmatch(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?", part.lower())
            ok = match is not None and (match[2] is None or int(match[2]) >= 1)
            if ok and match is not None and match[1] != "*":
                for bound in match[1].split("-"):
                    number = names.get(bound, int(bound) if bound.isdigit() else None)
                    ok = ok and number is not None and lo <= number <= hi
            if not ok:
                raise _problem(
                    f"schedule field {name} {_show(text)} is invalid; use *, a number in {lo}-{hi}, a range "
                    f"a-b, a list a,b or a step */n"
                )
    return expr


def _check_territory(codes: list[str]) -> list[str]:
    if not codes:
        raise _problem("list at least one territory (e.g. [US, CA]) or remove territory")
    out: list[str] = []
    problems = []
    for i, code in enumerate(codes):
        try:
            canonical = canonical_code(code)
        except TerritoryError as exc:
            problems.append((f"[{i}]", str(exc)))
            continue
        if canonical not in out:
            out.append(canonical)
    if problems:
        raise _problems(problems)
    return out


class QCProfile(_Strict):
    """Quality-control thresholds applied to every unit. Durations are in seconds.

    The defaults suit 5-30 s spots: a black or frozen stretch of a quarter or half a second is visible in a
    short ad, while ffmpeg's own defaults (2 s) would let it pass.
    """

    name: Annotated[str, Field(min_length=1, max_length=64)] = "web-r128"
    loudness_tolerance_lu: Annotated[float, Field(gt=0.0, le=5.0)] = 1.0  # EBU R128: ±1 LU
    black_min_seconds: Annotated[float, Field(gt=0.0, le=10.0)] = 0.25
    black_pixel_threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.10
    freeze_min_seconds: Annotated[float, Field(gt=0.0, le=10.0)] = 0.5
    freeze_noise: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.001
    min_text_video_similarity: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    # DINO-Sim and Face-Sim have their own scales (HunyuanCustom's averages: 0.593 and 0.627), so each has a field
    min_identity_similarity: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # DINO-Sim
    min_face_similarity: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # Face-Sim
    # DeSync (|audio-video offset|, s) above it fails a unit; unset, above 0.8 s only warns (docs/QC.md)
    max_desync_seconds: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    max_rerenders: Annotated[int, Field(ge=0, le=5)] = 2  # a failed unit is re-rendered with a new seed


@dataclass(frozen=True)
class RenderUnit:
    """One (job, size, variant): the unit of rendering, caching and publishing.

    `multi_size` is set when the job renders several sizes; the size is then part of `unit_id`.
    """

    campaign_id: str
    job_id: str
    index: int
    seed: int
    height: int
    width: int
    multi_size: bool = False

    @property
    def unit_id(self) -> str:
        """`<job>-v<NN>`, or `<job>-<H>x<W>-v<NN>` for a job with several sizes: a safe storage-key segment,
        unique within a campaign (`Campaign` rejects job ids that would make two units share one)."""
        size = f"-{self.height}x{self.width}" if self.multi_size else ""
        return f"{self.job_id}{size}-v{self.index:02d}"


def derive_seed(campaign_id: str, job_id: str, index: int) -> int:
    """The seed of variant `index` of a job when the campaign gives none: stable across runs and machines."""
    digest = hashlib.sha256(f"adrender-seed/{campaign_id}/{job_id}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class _Origin:
    """Where a campaign was loaded from and what it warned about. Not part of the campaign's value: two
    campaigns with the same fields are equal whichever file they came from."""

    file: str = "<campaign>"
    warnings: tuple[CampaignIssue, ...] = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Origin)

    def __hash__(self) -> int:
        return 0


def _count(raw: Any, key: str) -> int:
    value = raw.get(key) if isinstance(raw, Mapping) else None
    return len(value) if isinstance(value, list) and value else 1


class Campaign(_Strict):
    """A validated campaign with every job resolved (see the module docstring)."""

    id: SafeId
    description: Annotated[str, Field(max_length=2000)] = ""
    schedule: Annotated[str, AfterValidator(_check_cron)] | None = None
    territory: Annotated[list[str], AfterValidator(_check_territory)] | None = None
    defaults: JobDefaults = JobDefaults()
    models: ModelRefs = ModelRefs()
    qc: QCProfile = QCProfile()
    output_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$")] = "renders"
    jobs: Annotated[list[Job], Field(min_length=1)]  # at most MAX_UNITS render units, see _unique_ids

    _origin: _Origin = PrivateAttr(default_factory=_Origin)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("jobs"), list):
            return data
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, Mapping):
            return data
        # a wrong default is reported once, under `defaults`, not again under every job that inherits it
        try:
            JobDefaults.model_validate(defaults, context=info.context)
            bad: set[Any] = set()
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
            if any(not e["loc"] or e["loc"][0] not in defaults for e in exc.errors()):
                bad |= {"size", "sizes"}  # size and sizes both given
        usable = {k: v for k, v in defaults.items() if k not in bad and v is not None}
        raw_id = data.get("id")
        campaign_id = raw_id if isinstance(raw_id, str) else ""
        jobs = []
        modes: set[str] = set()
        for raw in data["jobs"]:
            if not isinstance(raw, Mapping):
                jobs.append(raw)
                continue
            job = dict(raw)
            modes.add(_mode_of(job).value)
            for key, value in usable.items():
                if key == "variants" and "seeds" in job:
                    continue  # seeds alone set the variant count
                if key in ("size", "sizes") and ("size" in job or "sizes" in job):
                    continue  # the job's own size(s) replace the default ones
                if isinstance(value, Mapping) and isinstance(job.get(key), Mapping):
                    job[key] = {**value, **job[key]}
                else:
                    job.setdefault(key, value)
            if "seeds" not in job:
                n = job.get("variants", 1)
                # with a wrong variant count (reported under `variants`) one seed keeps `seeds` quiet
                n = n if _is_number(n) and n in range(1, MAX_VARIANTS + 1) else 1
                job["seeds"] = [derive_seed(campaign_id, str(job.get("id", "")), i) for i in range(n)]
            jobs.append(job)
        if info.context is not None:
            # for `models.dit` given as one reference (see DitRefs)
            info.context["job_modes"] = [m.value for m in Mode if m.value in modes]
        return {**data, "jobs": jobs}

    @field_validator("jobs", mode="wrap")
    @classmethod
    def _unique_ids(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> list[Job]:
        # wrap, so that duplicates and the unit count are reported even when some jobs have other problems
        first: dict[str, int] = {}
        problems = []
        raw_jobs = value if isinstance(value, list) else []
        for i, job in enumerate(raw_jobs):
            job_id = job.get("id") if isinstance(job, Mapping) else getattr(job, "id", None)
            if not isinstance(job_id, str):
                continue
            if job_id in first:
                message = (
                    f"duplicate job id {_show(job_id)} (also jobs[{first[job_id]}]); job ids name storage keys, "
                    "make each one unique"
                )
                problems.append((f"[{i}].id", message))
            first.setdefault(job_id, i)
        units = sum(_count(job, "sizes") * _count(job, "seeds") for job in raw_jobs)
        if units > MAX_UNITS:
            message = (
                f"{units} render units (jobs x sizes x variants); a campaign holds at most {MAX_UNITS}: split it "
                "into several campaigns or render fewer sizes or variants"
            )
            problems.append(("", message))
        jobs: list[Job] = _run_then_check(handler, value, problems)  # checked by pydantic
        # `<job>-<H>x<W>-v<NN>` of a job with several sizes must not be a unit id of a job named `<job>-<H>x<W>`
        single = {job.id: i for i, job in enumerate(jobs) if len(job.sizes) == 1}
        for i, job in enumerate(jobs):
            for size in job.sizes if len(job.sizes) > 1 else ():
                other = single.get(f"{job.id}-{size}")
                if other is not None:
                    message = (
                        f"job id {_show(jobs[other].id)} gives the same unit ids as size {size} of jobs[{i}] "
                        f"({_show(job.id)}, several sizes), e.g. '{job.id}-{size}-v00'; rename one of the two jobs"
                    )
                    problems.append((f"[{other}].id", message))
        if problems:
            raise _problems(problems)
        return jobs

    @property
    def file(self) -> str:
        """The campaign file it was loaded from ("<campaign>" when built from data)."""
        return self._origin.file

    @property
    def warnings(self) -> tuple[CampaignIssue, ...]:
        """Things the file allows but probably does not mean (each with severity "warning")."""
        return self._origin.warnings

    @property
    def territory_codes(self) -> frozenset[str] | None:
        """The ISO codes of `territory` with EU expanded to its members; None when the campaign gives none."""
        return None if self.territory is None else normalise_territories(self.territory)

    def render_units(self) -> list[RenderUnit]:
        """Every (job, size, variant) of the campaign, in file order; a variant has one seed in every size."""
        units = []
        for job in self.jobs:
            multi = len(job.sizes) > 1
            for size in job.sizes:
                for i, seed in enumerate(job.seeds):
                    units.append(RenderUnit(self.id, job.id, i, seed, size.height, size.width, multi))
        return units

    def models_for(self, job: Job) -> dict[str, str]:
        """The model references `job` needs, by role."""
        return self.models.for_mode(job.mode, foley=job.foley.enabled)


def _warnings_of(campaign: Campaign, data: Mapping[str, Any], file: str) -> tuple[CampaignIssue, ...]:
    out = []
    for i, job in enumerate(campaign.jobs):
        if job.negative_prompt.strip() and job.cfg_scale <= 1.0:
            message = (
                f"is ignored: at cfg_scale {job.cfg_scale} no unconditional branch runs, so the negative prompt has "
                'no effect; remove negative_prompt (or set it to ""), or set cfg_scale above 1 (7.5 is the '
                "HunyuanCustom default)"
            )
            out.append((f"jobs[{i}].negative_prompt", message))
        for size in job.sizes:
            if not size_supported(job.mode, size.height, size.width):
                message = (
                    f"{size} is not a size the released checkpoints render; only tiny test models (the demo) "
                    f"render it, and plan rejects it for a released model: {sizes_hint(job.mode)}"
                )
                out.append((f"jobs[{i}].sizes", message))
    qc = campaign.qc
    if qc.min_identity_similarity is not None and qc.min_face_similarity is None:
        message = (
            "bounds DINO-Sim only; Face-Sim is reported, not judged: set qc.min_face_similarity to judge it too "
            "(HunyuanCustom's average is 0.627, docs/QC.md)"
        )
        out.append(("qc.min_identity_similarity", message))
    raw_territory = data.get("territory")
    for i, code in enumerate(raw_territory if isinstance(raw_territory, list) else []):
        text = code.strip().upper() if isinstance(code, str) else ""
        if text in ALIASES:
            message = (
                f"{code!r} is not an ISO 3166-1 code; read as {ALIASES[text]!r}, write {ALIASES[text]!r}"
            )
            out.append((f"territory[{i}]", message))
    return tuple(CampaignIssue(file, path, message, "warning") for path, message in out)


# pydantic errors -> issues (the one place) ---------------------------------------------------------------------

_FIX_HINTS: Mapping[str, str] = {
    "steps": "30 is the HunyuanCustom default, 50 for editing and text-to-video",
    "cfg_scale": "7.5 is the HunyuanCustom default; 1.0 (no CFG) for text-to-video",
    "flow_shift": "13.0 for HunyuanCustom image/audio, 5.0 for editing, 7.0 for text-to-video",
    "embedded_guidance": "6.0 is the text-to-video default",
    "variants": f"1 to {MAX_VARIANTS} videos per job",
    "seeds": f"integers from 0 to {SEED_MAX}, at most {MAX_VARIANTS}",
    "loudness_lufs": "-23 for EBU R128, -24 for ATSC A/85, -14 for most streaming platforms",
    "true_peak_dbtp": "-1 for EBU R128, -2 for ATSC A/85",
    "fps": "25 for HunyuanCustom, 24 for text-to-video",
    "strength": "0.8 is the usual audio strength",
    "mask_expand": "5 pixels is the usual mask expansion; negative values erode",
    "word": "a word of the prompt naming the subject, e.g. 'woman'",
    "prompt": "describe the scene in one or two sentences",
    "output_prefix": "lowercase key segments separated by '/', e.g. 'renders/spring'",
    "jobs": "list at least one job under jobs:",
    "subjects": f"at most {MAX_SUBJECTS} subjects per job",
    "sizes": "e.g. sizes: [720x1280, 1280x720, 720x720]",
    "territory": "ISO 3166-1 alpha-2 codes, e.g. [US, CA], or EU",
    "offload": "encoders is the default; sequential has the lowest GPU memory peak, see docs/BENCHMARKS.md",
    "min_text_video_similarity": "bounds CLIP-B-T; HunyuanCustom's average is 0.306",
    "min_identity_similarity": "bounds DINO-Sim; HunyuanCustom's average is 0.593, see docs/QC.md",
    "min_face_similarity": "bounds Face-Sim; HunyuanCustom's average is 0.627, see docs/QC.md",
    "max_desync_seconds": "bounds DeSync in seconds (0-2, Synchformer's range); HunyuanVideo-Foley's averages "
    "are 0.54-0.74 s, see docs/QC.md",
}


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The pydantic model whose field set applies at `loc` (for 'did you mean')."""
    model: Any = Campaign
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = model.model_fields[part].annotation
        # unwrap Optional[...] and list[...] down to a model class
        for _ in range(4):
            args = [a for a in typing.get_args(model) if a is not type(None)]
            if isinstance(model, type) and issubclass(model, BaseModel) or not args:
                break
            model = args[0]
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _wrong_type(value: Any, wanted: str, hint: str) -> str:
    if isinstance(value, bool):
        return (
            f"got {str(value).lower()} (YAML reads yes/no/on/off/true/false as a switch); must be {wanted}, "
            f"written as a number{hint}"
        )
    if isinstance(value, str) and _is_number(yaml.safe_load(value) if len(value) < 40 else None):
        return f"got the text {_show(value)}; must be {wanted}: write it without quotes{hint}"
    return f"got {_show(value)}; must be {wanted}{hint}"


def _describe(error: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(path, message) lines for one pydantic error."""
    loc = [p for p in error["loc"] if not (isinstance(p, str) and "[" in p)]  # drop union/function tags
    path, kind, ctx, value = _path(loc), error["type"], error.get("ctx") or {}, error.get("input")
    field_name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    hint = _FIX_HINTS.get(field_name, "")
    hint = f" ({hint})" if hint else ""
    if kind == "adrender_spec":
        return [
            (path + sub if sub.startswith("[") or not (sub and path) else f"{path}.{sub}", msg)
            for sub, msg in ctx["problems"]
        ]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        if parent is Job:
            allowed = sorted([*allowed, "size"])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        return [(path, f"unknown field {_show(loc[-1])}; {guess}allowed here: {', '.join(allowed)}")]
    if kind == "missing":
        return [(path, f"required field is missing; add {field_name}: ...{hint}")]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bounds = {
            "greater_than": "> {gt}",
            "greater_than_equal": ">= {ge}",
            "less_than": "< {lt}",
            "less_than_equal": "<= {le}",
        }[kind].format(**ctx)
        return [(path, f"got {_show(value)}; must be {bounds}{hint}")]
    if kind == "literal_error":
        return [(path, f"got {_show(value)}; must be one of {ctx.get('expected')}{hint}")]
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return [(path, _wrong_type(value, "a whole number", hint))]
    if kind in ("float_parsing", "float_type"):
        return [(path, _wrong_type(value, "a number", hint))]
    if kind in ("bool_parsing", "bool_type"):
        return [(path, f"got {_show(value)}; must be true or false (unquoted)")]
    if kind in ("string_type",):
        return [(path, f"got {_show(value)}; must be text (quote it in YAML)")]
    if kind == "string_too_short":
        return [(path, f"must not be empty{hint}")]
    if kind == "string_too_long":
        return [(path, f"is longer than {ctx.get('max_length')} characters; shorten it")]
    if kind == "string_pattern_mismatch":
        return [(path, f"got {_show(value)}; does not have the expected form{hint}")]
    if kind in ("too_short", "too_long"):
        what = "at least {min_length}" if kind == "too_short" else "at most {max_length}"
        return [(path, f"must have {what.format(**ctx)} item(s){hint}")]
    if kind in ("list_type",):
        return [(path, f"must be a list (YAML '- item' lines or [a, b]){hint}")]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return [(path, f"must be a mapping of fields, got {type(value).__name__}")]
    return [(path, f"{error['msg']}{hint}")]


def _as_written(loc: Sequence[int | str], data: Any) -> list[int | str]:
    """`loc` with the spelling the file used: a job's `size: ...` is validated as `sizes: [...]`."""
    out: list[int | str] = []
    node = data
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        if (
            part == "sizes"
            and isinstance(node, Mapping)
            and "sizes" not in node
            and "size" in node
            and i + 1 < len(parts)
            and parts[i + 1] == 0
        ):
            out.append("size")
            node = node["size"]
            i += 2
            continue
        out.append(part)
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        i += 1
    return out


def _issues_from(exc: ValidationError, file: str, data: Any) -> list[CampaignIssue]:
    issues: list[CampaignIssue] = []
    for e in exc.errors():
        error = {**e, "loc": _as_written(e["loc"], data)}
        issues.extend(CampaignIssue(file, path, message) for path, message in _describe(error))
    return issues


# loading ----------------------------------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE = object()  # the key of a merge entry while its mapping is read


def _file_error(name: str, message: str) -> CampaignError:
    return CampaignError([CampaignIssue(name, "", message)])


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}: " if mark is not None else ""


def _too_deep(name: str, where: str) -> CampaignError:
    return _file_error(
        name,
        f"{where}nested more than {MAX_NESTING} levels deep; a campaign needs about 6 (jobs, subjects, ...), "
        "check the indentation or brackets",
    )


def _yaml_error(problem: str, mark: Any) -> yaml.YAMLError:
    return yaml.constructor.ConstructorError(None, None, problem, mark)


@dataclass
class _Open:
    """A sequence or mapping being read: its items, where it starts, and its size with aliases expanded."""

    mapping: bool
    start: Any  # the parser's mark
    anchor: str | None
    items: list[Any] = field(default_factory=list)
    keys: list[Any] = field(default_factory=list)  # mappings: the key of each item (_MERGE for '<<')
    marks: list[Any] = field(default_factory=list)  # mappings: where each key is
    values: int = 1
    depth: int = 0


def _close(node: _Open) -> Any:
    """The Python value of a finished sequence or mapping. In a mapping, keys it sets itself win over merged
    ones (`<<: *base`), and of several merged mappings (`<<: [*a, *b]`) the first wins."""
    if not node.mapping:
        return node.items
    out: dict[Any, Any] = {}
    merged: list[dict[Any, Any]] = []
    for key, value, mark in zip(node.keys, node.items, node.marks, strict=True):
        if key is _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(v, dict) for v in sources):
                raise _yaml_error("'<<' merges a mapping (<<: *base) or a list of them (<<: [*a, *b])", mark)
            merged.extend(sources)
        elif key in out:
            raise _yaml_error(f"duplicate key {_show(key)}; each field may appear once per mapping", mark)
        else:
            out[key] = value
    if not merged:
        return out
    base: dict[Any, Any] = {}
    for source in reversed(merged):
        base.update(source)
    return {**base, **out}


def _scalar(loader: Any, event: Any, resolved: dict[tuple[str, Any], str]) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        key = (event.value, event.implicit)
        tag = resolved.get(key)
        if tag is None:
            tag = resolved.setdefault(key, loader.resolve(yaml.ScalarNode, event.value, event.implicit))
    if tag == _STR_TAG:
        return event.value
    if tag == _MERGE_TAG:
        return _MERGE
    construct = loader.yaml_constructors.get(tag)
    if construct is None:
        raise _yaml_error(f"the tag {_show(tag)} is not allowed in a campaign", event.start_mark)
    return construct(loader, yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark))


def _load_yaml(text: str, name: str) -> Any:
    """Read one YAML document into plain Python values, in one pass over the parser's events (no recursion).

    On the way it refuses what would exhaust the stack or memory later: nesting deeper than `MAX_NESTING`
    (also through aliases), alias bombs ("billion laughs": more than `MAX_NODES` values once aliases are
    expanded) and aliases inside the value they name; and what cannot name a field: duplicate keys and
    complex (list or mapping) keys. An alias gives the very object of its anchor, whose expanded size was
    counted once when it was read, so nothing is ever expanded. Safe tags only, as `yaml.safe_load`.
    """
    loader = _YamlLoader(text)
    try:
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # document start
        anchors: dict[str, tuple[Any, int, int]] = {}  # anchor -> (value, values, depth)
        open_anchors: set[str] = set()
        stack: list[_Open] = []
        resolved: dict[tuple[str, Any], str] = {}  # plain scalars repeat (keys): resolve each once
        while True:
            event: Any = loader.get_event()  # the stubs type it as the base Event
            kind = type(event)
            values, depth = 1, 0
            if kind is yaml.ScalarEvent:
                value = _scalar(loader, event, resolved)
                if event.anchor is not None:
                    anchors[event.anchor] = (value, values, depth)
            elif kind is yaml.AliasEvent:
                if event.anchor in open_anchors:
                    raise _file_error(
                        name,
                        f"{_line(event.start_mark)}the alias *{event.anchor} is inside the value it names (a loop); "
                        "a campaign cannot contain itself",
                    )
                if event.anchor not in anchors:
                    raise _yaml_error(f"found undefined alias *{event.anchor}", event.start_mark)
                value, values, depth = anchors[event.anchor]
            elif kind is yaml.SequenceStartEvent or kind is yaml.MappingStartEvent:
                mapping = kind is yaml.MappingStartEvent
                if event.tag not in (None, "!", _MAP_TAG if mapping else _SEQ_TAG):
                    raise _yaml_error(
                        f"the tag {_show(event.tag)} is not allowed in a campaign", event.start_mark
                    )
                stack.append(_Open(mapping, event.start_mark, event.anchor))
                if event.anchor is not None:
                    open_anchors.add(event.anchor)
                if len(stack) > MAX_NESTING:
                    raise _too_deep(name, _line(event.start_mark))
                continue
            elif kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
                node = stack.pop()
                value, values, depth = _close(node), node.values, node.depth + 1
                if node.anchor is not None:
                    open_anchors.discard(node.anchor)
                    anchors[node.anchor] = (value, values, depth)
            else:  # pragma: no cover - the parser emits nothing else inside a document
                raise _yaml_error(f"unexpected {kind.__name__}", event.start_mark)
            parent = stack[-1] if stack else None
            if value is _MERGE and (
                parent is None or not parent.mapping or len(parent.keys) > len(parent.items)
            ):
                raise _yaml_error(
                    "'<<' is YAML's merge key; quote it ('<<') to write it as text", event.start_mark
                )
            if parent is None:
                break
            if parent.mapping and len(parent.keys) == len(parent.items):
                if isinstance(value, (dict, list)):
                    raise _yaml_error(
                        "a mapping key must be a plain name, not a list or mapping ('? ' keys are not "
                        "supported); write field: value",
                        event.start_mark,
                    )
                parent.keys.append(value)
                parent.marks.append(event.start_mark)
            else:
                parent.items.append(value)
            parent.values += values
            parent.depth = max(parent.depth, depth)
            if parent.values > MAX_NODES:
                raise _file_error(
                    name,
                    f"{_line(event.start_mark)}the document expands to more than {MAX_NODES:,} values through YAML "
                    "aliases (*name); a campaign needs far fewer, write the values out or use fewer aliases",
                )
            if len(stack) + depth > MAX_NESTING:
                raise _too_deep(name, _line(event.start_mark) + "through YAML aliases, ")
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            extra: Any = loader.get_event()
            raise _yaml_error(
                "a campaign file holds one YAML document; remove the second '---'", extra.start_mark
            )
        return value
    finally:
        loader.dispose()


def _check_json_nesting(data: Any, name: str) -> None:
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth + 1 > MAX_NESTING:
                raise _too_deep(name, "")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


def _parse_text(text: str, name: str, as_json: bool) -> Any:
    if as_json:

        def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, v in pairs:
                if k in out:
                    raise ValueError(f"duplicate key {_show(k)}; each field may appear once per object")
                out[k] = v
            return out

        try:
            data = json.loads(text, object_pairs_hook=unique)
        except json.JSONDecodeError as exc:
            raise _file_error(name, f"line {exc.lineno}: invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise _too_deep(name, "") from None
        except ValueError as exc:
            raise _file_error(name, str(exc)) from None
        _check_json_nesting(data, name)
        return data
    try:
        return _load_yaml(text, name)
    except CampaignError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if "nesting depth" in problem:  # libyaml's own limit on flow nesting, met while looking ahead
            raise _too_deep(name, _line(mark)) from None
        raise _file_error(name, f"{_line(mark)}invalid YAML: {problem}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-13-45
        raise _file_error(name, f"invalid YAML value: {_show(str(exc))}") from None


def parse_campaign(
    data: Any, *, file: str = "<campaign>", base_dir: Path | None = None, base_uri: str | None = None
) -> Campaign:
    """Validate already-parsed campaign data; relative asset paths resolve against `base_dir` (default: cwd)
    and must stay inside it. With `base_uri` (``s3://bucket/folder``: where the file itself was read from),
    they resolve to objects under that folder instead."""
    if not isinstance(data, Mapping):
        what = type(data).__name__
        raise _file_error(file, f"the file must hold a mapping with id: and jobs:, not {what}")
    base = (base_dir if base_dir is not None else Path.cwd()).resolve()
    context: dict[str, Any] = {"base_dir": base_dir, "base_dir_resolved": base, "base_uri": base_uri}
    try:
        campaign = Campaign.model_validate(data, context=context)
    except ValidationError as exc:
        raise CampaignError(_issues_from(exc, file, data)) from None
    campaign._origin = _Origin(file, _warnings_of(campaign, data, file))
    return campaign


def load_campaign(path: str | Path, *, source_uri: str | None = None) -> Campaign:
    """Load and validate a campaign file (`.json` as JSON, anything else as YAML).

    Raises `CampaignError` listing every problem of the file. Asset URIs are checked for form only; whether
    the files exist and decode is checked by `components.runtime.assets.check_assets`. `source_uri`: the
    ``s3://`` URI that `path` is a downloaded copy of; messages name it, and relative asset paths resolve to
    objects beside it.
    """
    path = Path(path)
    name = source_uri or str(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _file_error(
                name, f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB; split the campaign"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _file_error(name, "no such file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _file_error(name, f"cannot read the file: {exc}") from None
    data = _parse_text(text, name, as_json=path.suffix.lower() == ".json")
    if source_uri is not None:
        return parse_campaign(data, file=name, base_uri=source_uri.rsplit("/", 1)[0])
    return parse_campaign(data, file=name, base_dir=path.resolve().parent)
