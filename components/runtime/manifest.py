"""The manifests steps hand each other, and the layout of the keys they name.

KFP passes only these small JSON documents between tasks; tensors and videos move through the store once.

- :class:`PlanManifest`: what ``plan`` decided for a campaign: the pinned model versions, the shards, the units
  already published (skipped).
- :class:`ShardManifest`: one shard: units that share a DiT checkpoint and a latent size, so that one pod loads
  the weights once. Every step of the render DAG takes a shard manifest.
- :class:`StepManifest`: what one step produced for a shard: a :class:`UnitOutput` per unit, naming the
  content-keyed artifacts and their sha256.

Key layout (``prefix`` is the run's artifact prefix, e.g. ``adrender``)::

    <prefix>/<campaign>/<unit>/<step>/<content-hash>/<name>       artifacts of one unit (content_key)
    <prefix>/<campaign>/_plan/<content-hash>/plan.json             the plan manifest
    <prefix>/<campaign>/_shards/<shard>/shard.json                 a shard manifest (under the plan's hash)
    <prefix>/<campaign>/_shards/<shard>/<step>/<hash>/manifest.json  a step's manifest of one shard
    <output_prefix>/<campaign>/<job>/<unit>.mp4 (+ .json)          a published deliverable and its provenance
    <output_prefix>/<campaign>/index.json                          the campaign index

The content hash covers a step's inputs (their keys and sha256), its parameters and the resolved model versions,
so equal inputs give equal keys: a step whose output key exists skips its work, and a rerun resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from components.runtime.store import (
    CONTENT_HASH_CHARS,
    InvalidKey,
    ObjectStore,
    _validate_segment,
    canonical_json,
    payload_digest,
    validate_key,
)

__all__ = [
    "MANIFEST_FORMAT",
    "ArtifactRef",
    "ModelPin",
    "PlanManifest",
    "ShardManifest",
    "ShardRef",
    "SkippedUnit",
    "StepManifest",
    "UnitOutput",
    "UnitPlan",
    "content_key",
    "deliverable_key",
    "read_manifest",
    "write_manifest",
]

MANIFEST_FORMAT = 1

M = TypeVar("M", bound=BaseModel)


def content_key(
    prefix: str, campaign: str, unit: str, step: str, payload: Mapping[str, Any], name: str
) -> str:
    """Build ``<prefix>/<campaign>/<unit>/<step>/<hash>/<name>``.

    ``hash`` is the first 16 hex characters of the sha256 of the canonical JSON of ``payload``: the step's
    inputs (their keys or digests), parameters and resolved model versions. Equal payloads give equal keys in
    any process and Python version; any change in a value changes the key. ``prefix`` may hold several
    segments; every part is checked with the store's key rules (raises :class:`InvalidKey`).
    """
    for label, part in (("campaign", campaign), ("unit", unit), ("step", step), ("name", name)):
        if not isinstance(part, str) or "/" in part:
            raise InvalidKey(f"{label} {part!r} must be a single key segment (no '/')")
        _validate_segment(part, f"{label}={part}")
    digest = payload_digest(payload)[:CONTENT_HASH_CHARS]
    head = [prefix.strip("/")] if prefix and prefix.strip("/") else []
    return validate_key("/".join([*head, campaign, unit, step, digest, name]))


def short_digest(payload: Mapping[str, Any]) -> str:
    """The content hash of ``payload`` as used in keys."""
    return payload_digest(payload)[:CONTENT_HASH_CHARS]


def deliverable_key(output_prefix: str, campaign: str, job: str, unit: str, suffix: str) -> str:
    """The stable, human-readable key of a published file: ``<output_prefix>/<campaign>/<job>/<unit><suffix>``."""
    return validate_key(f"{output_prefix.strip('/')}/{campaign}/{job}/{unit}{suffix}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPin(_Model):
    """One registered model version, pinned by ``plan`` for the whole run (an alias moving later changes nothing)."""

    ref: str  # as the campaign wrote it: name@alias or name/version
    name: str
    version: int
    preset: str
    files: dict[str, str]  # relative path -> sha256
    sizes: dict[str, int] = {}
    total_bytes: int
    source: str = ""
    excluded_territories: tuple[str, ...] = ()

    @property
    def pinned(self) -> str:
        """``name/version``: the form recorded in cache keys and provenance."""
        return f"{self.name}/{self.version}"


class UnitPlan(_Model):
    """Everything the steps need to render one unit (one job x size x variant), resolved by ``plan``."""

    unit_id: str
    job_id: str
    variant: int
    seed: int
    mode: Literal["image", "audio", "editing", "t2v", "avatar"]
    height: int
    width: int
    frames: int
    fps: int
    prompt: str
    negative_prompt: str
    subject_words: list[str] = []
    subject_images: list[str] = []  # URIs, one per word
    audio_uri: str | None = None
    audio_strength: float = 1.0
    edit_video: str | None = None
    edit_mask: str | None = None
    edit_mask_expand: int = 5
    sampling: dict[str, Any]  # SamplingOptions fields
    models: dict[str, str]  # role -> pinned name/version
    foley: bool = False
    foley_prompt: str = ""  # what the foley bed should sound like (the job's foley prompt, else its prompt)
    foley_negative_prompt: str = "noisy, harsh"
    # the job's foley offload mode (`FoleyOffload` value): where weights wait between phases, not what is heard,
    # so it is left out of render_digest and the foley step's content keys
    foley_offload: str = "encoders"
    loudness_lufs: float = -23.0  # the delivery profile: integrated loudness target of the soundtrack
    true_peak_dbtp: float = -1.0  # and its true-peak ceiling
    assets: dict[str, str] = {}  # URI -> sha256 of every referenced file (s3 URIs: hashed when fetched)
    render_digest: str  # hash of every input, parameter and model version of the unit

    @property
    def latent_size(self) -> tuple[int, int, int]:
        """(T, H, W) of the DiT latents: (frames-1)/4+1, height/8, width/8. Avatar samples what the release
        samples for a voice of `frames` frames (33 latent frames up to 129, then windows of 33; the decoded
        video is cut to `frames`)."""
        if self.mode == "avatar":
            from model_core.sampling.windows import avatar_latent_frames

            return (avatar_latent_frames(self.frames), self.height // 8, self.width // 8)
        return ((self.frames - 1) // 4 + 1, self.height // 8, self.width // 8)


class ShardManifest(_Model):
    """Units that share a DiT checkpoint and a latent size: one model load renders them all."""

    format: int = MANIFEST_FORMAT
    kind: Literal["shard"] = "shard"
    campaign_id: str
    shard_id: str
    index: int  # position in the plan's shard list (a bounded metric grouping label)
    prefix: str  # artifact prefix of the run
    output_prefix: str  # where deliverables are published
    dit: str  # pinned DiT name/version
    latent_size: tuple[int, int, int]
    models: dict[str, ModelPin]  # pinned name/version -> pin, every model any unit of the shard needs
    units: list[UnitPlan]
    plan_key: str
    checkpoint_every: int = 5

    def pin(self, role: str, unit: UnitPlan) -> ModelPin:
        """The pinned model of ``role`` for ``unit``."""
        return self.models[unit.models[role]]


class ShardRef(_Model):
    """A shard as the plan lists it: where its manifest is and what it holds."""

    shard_id: str
    key: str
    units: int
    dit: str
    latent_size: tuple[int, int, int]


class SkippedUnit(_Model):
    """A unit whose deliverable is already published with the same render digest."""

    unit_id: str
    deliverable: str  # the key of the already published mp4


class PlanManifest(_Model):
    """What ``plan`` decided. Steps never re-resolve an alias: they read the pins from here (via the shard)."""

    format: int = MANIFEST_FORMAT
    kind: Literal["plan"] = "plan"
    campaign_id: str
    campaign_uri: str
    campaign_sha256: str
    prefix: str
    output_prefix: str
    created_at: str
    models: dict[str, ModelPin]  # the reference as written -> pin
    shards: list[ShardRef]
    skipped: list[SkippedUnit] = []
    units_total: int
    estimated_gpu_seconds: float
    warnings: list[str] = []


class ArtifactRef(_Model):
    """One stored object: its key, sha256 and size."""

    key: str
    sha256: str
    size: int


class UnitOutput(_Model):
    """What one step produced for one unit."""

    unit_id: str
    status: Literal["ok", "skipped", "failed"]  # skipped: the content-keyed output already existed
    artifacts: dict[str, ArtifactRef] = {}
    seconds: float = 0.0
    error: str | None = None
    details: dict[str, Any] = {}


class StepManifest(_Model):
    """A step's result for one shard; the next step reads its artifact keys from here."""

    format: int = MANIFEST_FORMAT
    kind: Literal["step"] = "step"
    step: str
    campaign_id: str
    shard_id: str
    units: dict[str, UnitOutput]
    seconds: float = 0.0
    model_versions: dict[str, str] = {}
    notes: list[str] = Field(default_factory=list)

    def ok(self, unit_id: str) -> UnitOutput | None:
        """The unit's output if the step produced it (ok or found cached), else None."""
        out = self.units.get(unit_id)
        return out if out is not None and out.status != "failed" else None


def write_manifest(store: ObjectStore, key: str, manifest: BaseModel) -> ArtifactRef:
    """Store ``manifest`` as JSON under ``key`` (atomic, with its sha256)."""
    data = (manifest.model_dump_json(indent=2) + "\n").encode()
    info = store.put_bytes(key, data, metadata={"format": "adrender-manifest"})
    return ArtifactRef(key=key, sha256=info.sha256 or "", size=info.size)


def read_manifest(store: ObjectStore, key: str, kind: type[M]) -> M:
    """Read and validate a manifest; a wrong kind or a damaged file raises ValueError naming the key."""
    from pydantic import ValidationError

    raw = store.get_bytes(key)
    try:
        return kind.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"{store.uri(key)} is not a valid {kind.__name__}: {exc}") from None


def canonical(payload: Mapping[str, Any]) -> str:
    """Canonical JSON, re-exported for digests of manifests and provenance."""
    return canonical_json(payload)
