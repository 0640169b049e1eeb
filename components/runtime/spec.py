"""The campaign spec: what a user asks adrender to render, validated before any GPU time is spent.

A campaign file (YAML or JSON) holds campaign-wide settings and a list of render jobs::

    id: spring-shampoo            # safe id, see SAFE_ID_PATTERN
    schedule: "0 6 * * 1"         # optional 5-field crontab
    defaults: {size: 720x1280, variants: 2}
    models: {vae: hunyuan-vae@production}
    qc: {freeze_min_seconds: 0.5}
    output_prefix: renders
    jobs:
      - id: woman-intro
        prompt: A woman holds up a shampoo bottle and smiles.
        subjects: [{word: woman, image: assets/woman.png}]

`load_campaign(path)` returns a resolved, frozen `Campaign` or raises one `CampaignError` that lists every
problem of the file, each as ``<file>: <field path>: <what is wrong and how to fix it>``.

Resolution. A field a job leaves unset is taken from the campaign `defaults`, then from the per-mode
defaults of HunyuanCustom / HunyuanVideo (`MODE_DEFAULTS`), so every value the renderer will use is visible
in the loaded model. The mode is derived from what the job gives: `editing` (an `edit` block), `audio` (an
`audio` block), `image` (subjects only), `t2v` (no subjects). Seeds left unset are derived from the campaign
id, the job id and the variant index (`derive_seed`), so a rerun of the same file renders the same videos.

Validation checks syntax and consistency, not existence: asset URIs must have an allowed form and a
plausible extension, but the files they name are checked by the `plan` step, which reads the store.

Safe ids. Campaign and job ids become parts of storage keys, folder names and metric labels, so they match
`SAFE_ID_PATTERN`: 1-63 characters of lowercase letters, digits, ``-`` and ``_``, starting and ending with a
letter or digit. No ``/``, no ``.`` (so no ``..``), no spaces, and no uppercase, because two ids that differ
only in case would collide on a case-insensitive file system.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from components.runtime.registry import ModelRef

__all__ = [
    "MODE_DEFAULTS",
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
]

SAFE_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$"
_SAFE_ID = re.compile(SAFE_ID_PATTERN)

# HUNYUAN_FACTS.md §1.8 (HunyuanVideo 540p and 720p, height x width) and §2.6 (HunyuanCustom's 1-GPU
# 512x896, plus its vertical twin for 9:16 ads).
SUPPORTED_SIZES: tuple[tuple[int, int], ...] = (
    (544, 960), (960, 544), (624, 832), (832, 624), (720, 720),
    (720, 1280), (1280, 720), (1104, 832), (832, 1104), (960, 960),
    (512, 896), (896, 512),
)
MAX_FRAMES = 129  # the models are trained on 129 frames (33 latent frames)
MIN_FRAMES = 5  # two latent frames; a single frame is a picture, not an ad
MAX_VARIANTS = 16
MAX_SUBJECTS = 4
SEED_MAX = 2**32 - 1  # numpy and every torch generator accept 32-bit seeds

# HUNYUAN_FACTS.md §2.6 example negative prompt, used by the HunyuanCustom modes when nothing is given.
DEFAULT_NEGATIVE_PROMPT = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
    "bad teeth, bad eyes, bad limbs, distortion, blurring, text, subtitles, static, picture, black border."
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


@dataclass(frozen=True)
class _ModeDefaults:
    steps: int
    cfg_scale: float
    flow_shift: float
    embedded_guidance: float | None  # only the T2V checkpoint has a guidance embedding
    frames: int
    size: tuple[int, int]
    fps: int
    negative_prompt: str
    foley: bool


# HUNYUAN_FACTS.md §2.6 (HunyuanCustom) and §1.8 (HunyuanVideo T2V). Sizes: the 720p default of each.
MODE_DEFAULTS: Mapping[Mode, _ModeDefaults] = {
    Mode.IMAGE: _ModeDefaults(30, 7.5, 13.0, None, 129, (720, 1280), 25, DEFAULT_NEGATIVE_PROMPT, True),
    # the driving audio is the soundtrack: no foley on top of it by default
    Mode.AUDIO: _ModeDefaults(30, 7.5, 13.0, None, 129, (720, 1280), 25, DEFAULT_NEGATIVE_PROMPT, False),
    Mode.EDITING: _ModeDefaults(50, 7.5, 5.0, None, 129, (720, 1280), 25, DEFAULT_NEGATIVE_PROMPT, True),
    # T2V runs without real CFG (cfg 1.0, embedded guidance 6.0), so a negative prompt would be unused
    Mode.T2V: _ModeDefaults(50, 1.0, 7.0, 6.0, 129, (720, 1280), 24, "", True),
}


# errors ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignIssue:
    """One problem in a campaign file: where it is and how to fix it."""

    file: str
    path: str  # field path such as "jobs[2].frames"; "" for the file as a whole
    message: str

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
    return PydanticCustomError("adrender_spec", "{summary}", {"summary": items[0][1], "problems": tuple(items)})


def _problem(message: str, at: str = "") -> PydanticCustomError:
    return _problems([(at, message)])


def _run_then_check(handler: ValidatorFunctionWrapHandler, value: Any, problems: list[tuple[str, str]]) -> Any:
    """Run the inner validation, then report its errors and `problems` together."""
    try:
        result = handler(value)
    except ValidationError as exc:
        if not problems:
            raise
        details = [InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
                                    loc=e["loc"], input=e["input"]) for e in exc.errors()]
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
            f"id {value!r} is unsafe in a storage key or path; use 1-63 lowercase letters, digits, '-' or '_', "
            f"starting and ending with a letter or digit, e.g. {slug!r}"
        )
    return value


def _check_frames(value: int) -> int:
    if value % 4 != 1 or not MIN_FRAMES <= value <= MAX_FRAMES:
        lower = max(MIN_FRAMES, min(MAX_FRAMES, (value - 1) // 4 * 4 + 1))
        upper = min(MAX_FRAMES, lower + 4)
        near = f"{lower}" if lower == upper else f"{lower} or {upper}"
        raise _problem(
            f"got {value}; frames must be 4k+1 between {MIN_FRAMES} and {MAX_FRAMES} "
            f"(the VAE packs 4 frames per latent frame after the first), e.g. {near}"
        )
    return value


def _check_text(value: str) -> str:
    if not value.strip():
        raise _problem("must not be empty or blank; write what the video shows")
    return value


def _uri_checker(kind: str, extensions: tuple[str, ...]) -> AfterValidator:
    """An after-validator for an asset URI: s3://bucket/key, file:///abs/path or a path relative to the file."""

    def check(value: str, info: ValidationInfo) -> str:
        value = value.strip()
        example = f"assets/example{extensions[0]}"
        if not value:
            raise _problem(f"empty {kind} URI; give s3://bucket/key, file:///abs/path or a relative path like {example!r}")
        scheme, sep, rest = value.partition("://")
        if sep:
            if scheme == "s3":
                bucket, _, key = rest.partition("/")
                if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or not key:
                    raise _problem(f"{value!r} is not an s3://bucket/key URI; e.g. 's3://ads-assets/{example}'")
                if ".." in PurePosixPath(key).parts:
                    raise _problem(f"{value!r}: '..' is not allowed inside an S3 key; write the key in full")
                path_part = key
            elif scheme == "file":
                if not rest.startswith("/"):
                    raise _problem(f"{value!r}: file URIs need an absolute path, e.g. 'file:///data/{example}'")
                path_part = rest
            else:
                raise _problem(
                    f"URI scheme {scheme + '://'!r} is not supported; copy the {kind} to S3 and use s3://bucket/key, "
                    "or use file:///abs/path or a relative path"
                )
        elif value.startswith("/"):
            raise _problem(f"absolute path {value!r}: write it as 'file://{value}' or make it relative to the file")
        else:
            path_part = value
            base = (info.context or {}).get("base_dir")
            value = (Path(base) if base else Path.cwd()).joinpath(value).resolve().as_uri()
        if not path_part.lower().endswith(extensions):
            article = "an" if kind[0] in "aeiou" else "a"
            raise _problem(f"{path_part!r} does not look like {article} {kind} file; expected one of "
                           f"{', '.join(extensions)}")
        return value

    return AfterValidator(check)


SafeId = Annotated[str, AfterValidator(_check_id)]
Prompt = Annotated[str, Field(max_length=2000), AfterValidator(_check_text)]
Frames = Annotated[int, AfterValidator(_check_frames)]
Steps = Annotated[int, Field(ge=1, le=200)]
CfgScale = Annotated[float, Field(ge=0.0, le=30.0)]
FlowShift = Annotated[float, Field(gt=0.0, le=30.0)]
Variants = Annotated[int, Field(ge=1, le=MAX_VARIANTS)]
ImageUri = Annotated[str, _uri_checker("image", _IMAGE_EXT)]
AudioUri = Annotated[str, _uri_checker("audio", _AUDIO_EXT)]
VideoUri = Annotated[str, _uri_checker("video", _VIDEO_EXT)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    """The DiT checkpoint used for each mode (the four are different registered models)."""

    image: ModelRefText = "hunyuancustom-dit@production"
    audio: ModelRefText = "hunyuancustom-audio-dit@production"
    editing: ModelRefText = "hunyuancustom-editing-dit@production"
    t2v: ModelRefText = "hunyuanvideo-t2v-dit@production"


class ModelRefs(_Strict):
    """Registry references per model role; `plan` resolves each alias to one version for the whole run."""

    dit: DitRefs = DitRefs()
    vae: ModelRefText = "hunyuan-vae@production"
    text_encoder: ModelRefText = "llava-llama-3-8b@production"  # LLaVA, hidden_states[-3]
    text_encoder_2: ModelRefText = "clip-vit-large@production"  # CLIP-L pooled
    audio_encoder: ModelRefText = "whisper-tiny@production"  # audio mode only
    foley: ModelRefText = "hunyuanvideo-foley@production"

    def for_mode(self, mode: Mode, *, foley: bool) -> dict[str, str]:
        """The references a job of `mode` needs, by role."""
        refs = {"dit": getattr(self.dit, mode.value), "vae": self.vae,
                "text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2}
        if mode is Mode.AUDIO:
            refs["audio_encoder"] = self.audio_encoder
        if foley:
            refs["foley"] = self.foley
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
                raise _problem(f"size {data!r} must be 'HEIGHTxWIDTH', e.g. '720x1280'")
            return {"height": int(match[1]), "width": int(match[2])}
        if isinstance(data, (list, tuple)) and len(data) == 2:
            return {"height": data[0], "width": data[1]}
        return data

    @model_validator(mode="after")
    def _supported(self) -> Size:
        if self.height % 16 or self.width % 16:
            raise _problem(f"{self.height}x{self.width}: height and width must be multiples of 16; " + _sizes_hint())
        if (self.height, self.width) not in SUPPORTED_SIZES:
            raise _problem(f"{self.height}x{self.width} is not a size the models support; " + _sizes_hint())
        return self

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"


def _sizes_hint() -> str:
    return "use one of " + ", ".join(f"{h}x{w}" for h, w in SUPPORTED_SIZES) + " (height x width)"


class Subject(_Strict):
    """An identity: the word that names it in the prompt and a reference image of it."""

    word: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z][A-Za-z' -]*$")]
    image: ImageUri


class AudioDrive(_Strict):
    """Driving audio (speech or music) for the audio-driven mode."""

    uri: AudioUri
    strength: Annotated[float, Field(gt=0.0, le=2.0)] = 0.8  # §2.6 examples use 0.8


class EditSource(_Strict):
    """Editing mode: the video to edit and a mask video (white = region to replace with the subject).

    Both are resized and trimmed to the job's `size` and `frames`; the official editing script takes the
    size and frame count from the input video instead (docs/FIDELITY.md).
    """

    video: VideoUri
    mask: VideoUri
    mask_expand: Annotated[int, Field(ge=-50, le=50)] = 5  # pixels of dilation (<0 erodes); §2.6 uses 5


class Foley(_Strict):
    """Generated sound effects for the video (HunyuanVideo-Foley). `prompt` empty = the job's prompt."""

    enabled: bool = True
    prompt: Annotated[str, Field(max_length=500)] = ""
    negative_prompt: Annotated[str, Field(max_length=500)] = "noisy, harsh"

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


class JobDefaults(_Strict):
    """Values applied to every job that does not set them (before the per-mode defaults)."""

    negative_prompt: Annotated[str, Field(max_length=2000)] | None = None
    size: Size | None = None
    frames: Frames | None = None
    steps: Steps | None = None
    cfg_scale: CfgScale | None = None
    flow_shift: FlowShift | None = None
    variants: Variants | None = None
    foley: Foley | None = None
    delivery: Delivery | None = None


def _mode_of(data: Mapping[str, Any]) -> Mode:
    if data.get("edit") is not None:
        return Mode.EDITING
    if data.get("audio") is not None:
        return Mode.AUDIO
    return Mode.IMAGE if data.get("subjects") else Mode.T2V


def _word_in(word: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word.strip())}(?!\w)", text, re.IGNORECASE) is not None


class Job(_Strict):
    """One render job. After loading, every field holds the value the renderer will use.

    Up to `MAX_SUBJECTS` subjects are accepted; the released HunyuanCustom code conditions on one identity
    image, so more than one is an adrender extension (docs/FIDELITY.md).
    """

    id: SafeId
    prompt: Prompt
    negative_prompt: Annotated[str, Field(max_length=2000)]
    subjects: Annotated[list[Subject], Field(max_length=MAX_SUBJECTS)] = []
    audio: AudioDrive | None = None
    edit: EditSource | None = None
    size: Size
    frames: Frames
    steps: Steps
    cfg_scale: CfgScale
    embedded_guidance: Annotated[float, Field(ge=1.0, le=20.0)] | None
    flow_shift: FlowShift
    variants: Variants
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=SEED_MAX)]], Field(min_length=1, max_length=MAX_VARIANTS)]
    foley: Foley
    delivery: Delivery

    @model_validator(mode="before")
    @classmethod
    def _fill_mode_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        d = MODE_DEFAULTS[_mode_of(data)]
        out = dict(data)
        for name, value in (("steps", d.steps), ("cfg_scale", d.cfg_scale), ("flow_shift", d.flow_shift),
                            ("embedded_guidance", d.embedded_guidance), ("frames", d.frames),
                            ("size", {"height": d.size[0], "width": d.size[1]}),
                            ("negative_prompt", d.negative_prompt)):
            out.setdefault(name, value)
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
        return _mode_of({"edit": self.edit, "audio": self.audio, "subjects": self.subjects})

    # cross-field checks live in field validators that look back at earlier fields (`info.data`), so that they
    # still run when an unrelated field of the same job is wrong and every problem is reported at once.

    @field_validator("subjects", mode="wrap")
    @classmethod
    def _words_in_prompt(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                         info: ValidationInfo) -> list[Subject]:
        # wrap, so that the words are checked even when an image URI of the list is wrong
        prompt = info.data.get("prompt")
        problems = []
        seen: set[str] = set()
        for i, s in enumerate(value if isinstance(value, list) else []):
            word = s.get("word") if isinstance(s, Mapping) else getattr(s, "word", None)
            if not isinstance(word, str) or not word.strip():
                continue
            if prompt is not None and not _word_in(word, prompt):
                problems.append((f"[{i}].word", (
                    f"subject word {word!r} does not occur in the prompt; the model ties the image to that word, "
                    f"so use the prompt's word for it or add {word!r} to the prompt")))
            if word.lower() in seen:
                problems.append((f"[{i}].word", f"subject word {word!r} is given twice; give each subject its own word"))
            seen.add(word.lower())
        subjects: list[Subject] = _run_then_check(handler, value, problems)  # checked by pydantic
        return subjects

    @field_validator("audio")
    @classmethod
    def _audio_needs_subject(cls, audio: AudioDrive | None, info: ValidationInfo) -> AudioDrive | None:
        if audio is not None and "subjects" in info.data and not info.data["subjects"]:
            raise _problem("audio-driven jobs animate a subject: add subjects: [{word: ..., image: ...}] "
                           "naming the person who speaks, or remove audio")
        return audio

    @field_validator("edit")
    @classmethod
    def _edit_alone(cls, edit: EditSource | None, info: ValidationInfo) -> EditSource | None:
        if edit is None:
            return edit
        if info.data.get("audio") is not None:
            raise _problem("a job is either audio-driven or editing, not both (no checkpoint does both); "
                           "split it into two jobs or remove audio or edit")
        if "subjects" in info.data and not info.data["subjects"]:
            raise _problem("editing replaces the masked region with a subject: add subjects: [{word: ..., image: ...}]")
        return edit

    @field_validator("cfg_scale")
    @classmethod
    def _cfg_with_negative(cls, cfg: float, info: ValidationInfo) -> float:
        if cfg < 1.0 and (info.data.get("negative_prompt") or "").strip():
            raise _problem(f"cfg_scale {cfg} < 1 with a negative prompt steers the video towards the negative "
                           "prompt; use cfg_scale >= 1 (7.5 is the HunyuanCustom default) or remove negative_prompt")
        return cfg

    @field_validator("embedded_guidance")
    @classmethod
    def _guidance_only_t2v(cls, value: float | None, info: ValidationInfo) -> float | None:
        mode = _mode_of(info.data)
        if value is not None and mode is not Mode.T2V:
            raise _problem(f"the {mode.value}-mode checkpoint has no guidance embedding; remove embedded_guidance "
                           "(it applies to text-to-video jobs only) and use cfg_scale")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds_match_variants(cls, seeds: list[int], info: ValidationInfo) -> list[int]:
        problems = []
        variants = info.data.get("variants")
        if variants is not None and variants != len(seeds):
            problems.append(("", (f"{len(seeds)} seeds but variants is {variants}; give one seed per variant or "
                                  "drop one of the two (seeds alone set the variant count)")))
        dupes = sorted({s for s in seeds if seeds.count(s) > 1})
        if dupes:
            problems.append(("", (f"seed(s) {dupes} repeated; a repeated seed renders the same video twice, "
                                  "use distinct seeds")))
        if problems:
            raise _problems(problems)
        return seeds

    @field_validator("foley")
    @classmethod
    def _no_foley_over_speech(cls, foley: Foley, info: ValidationInfo) -> Foley:
        if foley.enabled and info.data.get("audio") is not None:
            raise _problem("foley would replace the driving audio track of an audio-driven job; set foley: off",
                           "enabled")
        return foley


# campaign ---------------------------------------------------------------------------------------------------

_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
_CRON_NAMES = {
    3: {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])},
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}


def _check_cron(expr: str) -> str:
    fields = expr.split()
    if len(fields) != 5:
        raise _problem(f"schedule {expr!r} has {len(fields)} fields; write a 5-field crontab "
                       "'minute hour day-of-month month day-of-week', e.g. '0 6 * * 1' (Mondays 06:00 UTC)")
    for index, (text, (name, lo, hi)) in enumerate(zip(fields, _CRON_FIELDS)):
        names = _CRON_NAMES.get(index, {})
        for part in text.split(","):
            match = re.fullmatch(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?", part.lower())
            ok = match is not None and (match[2] is None or int(match[2]) >= 1)
            if ok and match is not None and match[1] != "*":
                for bound in match[1].split("-"):
                    number = names.get(bound, int(bound) if bound.isdigit() else None)
                    ok = ok and number is not None and lo <= number <= hi
            if not ok:
                raise _problem(f"schedule field {name} {text!r} is invalid; use *, a number in {lo}-{hi}, a range "
                               f"a-b, a list a,b or a step */n")
    return expr


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
    min_identity_similarity: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    max_rerenders: Annotated[int, Field(ge=0, le=5)] = 2  # a failed unit is re-rendered with a new seed


@dataclass(frozen=True)
class RenderUnit:
    """One (job, variant): the unit of rendering, caching and publishing."""

    campaign_id: str
    job_id: str
    index: int
    seed: int

    @property
    def unit_id(self) -> str:
        """`<job>-v<NN>`: unique within a campaign because the suffix has a fixed length."""
        return f"{self.job_id}-v{self.index:02d}"


def derive_seed(campaign_id: str, job_id: str, index: int) -> int:
    """The seed of variant `index` of a job when the campaign gives none: stable across runs and machines."""
    digest = hashlib.sha256(f"adrender-seed/{campaign_id}/{job_id}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class Campaign(_Strict):
    """A validated campaign with every job resolved (see the module docstring)."""

    id: SafeId
    description: Annotated[str, Field(max_length=2000)] = ""
    schedule: Annotated[str, AfterValidator(_check_cron)] | None = None
    defaults: JobDefaults = JobDefaults()
    models: ModelRefs = ModelRefs()
    qc: QCProfile = QCProfile()
    output_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$")] = "renders"
    jobs: Annotated[list[Job], Field(min_length=1, max_length=500)]

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("jobs"), list):
            return data
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, Mapping):
            return data
        # a wrong default is reported once, under `defaults`, not again under every job that inherits it
        try:
            JobDefaults.model_validate(defaults)
            bad: set[Any] = set()
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
        usable = {k: v for k, v in defaults.items() if k not in bad and v is not None}
        raw_id = data.get("id")
        campaign_id = raw_id if isinstance(raw_id, str) else ""
        jobs = []
        for raw in data["jobs"]:
            if not isinstance(raw, Mapping):
                jobs.append(raw)
                continue
            job = dict(raw)
            for key, value in usable.items():
                if key == "variants" and "seeds" in job:
                    continue  # seeds alone set the variant count
                if isinstance(value, Mapping) and isinstance(job.get(key), Mapping):
                    job[key] = {**value, **job[key]}
                else:
                    job.setdefault(key, value)
            if "seeds" not in job:
                n = job.get("variants", 1)
                # with a wrong variant count (reported under `variants`) one seed keeps `seeds` quiet
                n = n if isinstance(n, int) and 1 <= n <= MAX_VARIANTS else 1
                job["seeds"] = [derive_seed(campaign_id, str(job.get("id", "")), i) for i in range(n)]
            jobs.append(job)
        return {**data, "jobs": jobs}

    @field_validator("jobs", mode="wrap")
    @classmethod
    def _unique_ids(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> list[Job]:
        # wrap, so that duplicates are reported even when one of the jobs has other problems
        first: dict[str, int] = {}
        problems = []
        for i, job in enumerate(value if isinstance(value, list) else []):
            job_id = job.get("id") if isinstance(job, Mapping) else getattr(job, "id", None)
            if not isinstance(job_id, str):
                continue
            if job_id in first:
                problems.append((f"[{i}].id", (f"duplicate job id {job_id!r} (also jobs[{first[job_id]}]); "
                                               "job ids name storage keys, make each one unique")))
            first.setdefault(job_id, i)
        jobs: list[Job] = _run_then_check(handler, value, problems)  # checked by pydantic
        return jobs

    @property
    def kfp_cron(self) -> str | None:
        """The schedule as KFP's 6-field cron (seconds first), or None without a schedule."""
        return f"0 {self.schedule}" if self.schedule else None

    def render_units(self) -> list[RenderUnit]:
        """Every (job, variant) of the campaign, in file order."""
        return [RenderUnit(self.id, job.id, i, seed) for job in self.jobs for i, seed in enumerate(job.seeds)]

    def models_for(self, job: Job) -> dict[str, str]:
        """The model references `job` needs, by role."""
        return self.models.for_mode(job.mode, foley=job.foley.enabled)


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


def _describe(error: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(path, message) lines for one pydantic error."""
    loc = [p for p in error["loc"] if not (isinstance(p, str) and "[" in p)]  # drop union/function tags
    path, kind, ctx, value = _path(loc), error["type"], error.get("ctx") or {}, error.get("input")
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    hint = _FIX_HINTS.get(field, "")
    hint = f" ({hint})" if hint else ""
    if kind == "adrender_spec":
        return [(path + sub if sub.startswith("[") or not (sub and path) else f"{path}.{sub}", msg)
                for sub, msg in ctx["problems"]]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        return [(path, f"unknown field {loc[-1]!r}; {guess}allowed here: {', '.join(allowed)}")]
    if kind == "missing":
        return [(path, f"required field is missing; add {field}: ...{hint}")]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bounds = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}",
                  "less_than": "< {lt}", "less_than_equal": "<= {le}"}[kind].format(**ctx)
        return [(path, f"got {value!r}; must be {bounds}{hint}")]
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return [(path, f"got {value!r}; must be a whole number{hint}")]
    if kind in ("float_parsing", "float_type"):
        return [(path, f"got {value!r}; must be a number{hint}")]
    if kind in ("bool_parsing", "bool_type"):
        return [(path, f"got {value!r}; must be true or false")]
    if kind in ("string_type",):
        return [(path, f"got {value!r}; must be text (quote it in YAML)")]
    if kind == "string_too_short":
        return [(path, f"must not be empty{hint}")]
    if kind == "string_too_long":
        return [(path, f"is longer than {ctx.get('max_length')} characters; shorten it")]
    if kind == "string_pattern_mismatch":
        return [(path, f"got {value!r}; does not have the expected form{hint}")]
    if kind in ("too_short", "too_long"):
        what = "at least {min_length}" if kind == "too_short" else "at most {max_length}"
        return [(path, f"must have {what.format(**ctx)} item(s){hint}")]
    if kind in ("list_type",):
        return [(path, f"must be a list (YAML '- item' lines){hint}")]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return [(path, f"must be a mapping of fields, got {type(value).__name__}")]
    return [(path, f"{error['msg']}{hint}")]


def _issues_from(exc: ValidationError, file: str) -> list[CampaignIssue]:
    return [CampaignIssue(file, path, message) for e in exc.errors() for path, message in _describe(e)]


# loading ----------------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that rejects duplicate keys (plain YAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}; each field may appear once per mapping", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_text(text: str, name: str, as_json: bool) -> Any:
    if as_json:
        def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            keys = [k for k, _ in pairs]
            for k in keys:
                if keys.count(k) > 1:
                    raise ValueError(f"duplicate key {k!r}; each field may appear once per object")
            return dict(pairs)

        try:
            return json.loads(text, object_pairs_hook=unique)
        except json.JSONDecodeError as exc:
            raise CampaignError([CampaignIssue(name, "", f"line {exc.lineno}: invalid JSON: {exc.msg}")]) from None
        except ValueError as exc:
            raise CampaignError([CampaignIssue(name, "", str(exc))]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CampaignError([CampaignIssue(name, "", f"{where}invalid YAML: {problem}")]) from None


def parse_campaign(data: Any, *, file: str = "<campaign>", base_dir: Path | None = None) -> Campaign:
    """Validate already-parsed campaign data; relative asset paths resolve against `base_dir` (default: cwd)."""
    if not isinstance(data, Mapping):
        raise CampaignError([CampaignIssue(file, "", "the file must hold a mapping with id: and jobs:, "
                                                     f"not {type(data).__name__}")])
    try:
        return Campaign.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise CampaignError(_issues_from(exc, file)) from None


def load_campaign(path: str | Path) -> Campaign:
    """Load and validate a campaign file (`.json` as JSON, anything else as YAML).

    Raises `CampaignError` listing every problem of the file. Asset URIs are checked for form only; whether
    the files exist is checked later by the `plan` step.
    """
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CampaignError([CampaignIssue(name, "", "no such file; check the path")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignError([CampaignIssue(name, "", f"cannot read the file: {exc}")]) from None
    data = _parse_text(text, name, as_json=path.suffix.lower() == ".json")
    return parse_campaign(data, file=name, base_dir=path.resolve().parent)
