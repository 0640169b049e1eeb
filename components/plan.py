"""plan: pin model versions, expand render units, content keys and shards; skip what is already published.

Before any GPU time: the campaign is validated (spec and media), every ``name@alias`` is resolved once and
pinned for the whole run, the territory is checked against the models' licences, and units are grouped into
shards that share a DiT checkpoint and a latent size, so that a sampling pod loads the weights once and
renders many units. A unit whose deliverable is already published with the same render digest is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from components.runtime.manifest import (
    ModelPin,
    PlanManifest,
    ShardManifest,
    ShardRef,
    SkippedUnit,
    UnitPlan,
    deliverable_key,
    read_manifest,
    short_digest,
    write_manifest,
)
from components.runtime.registry import RegistryError, ResolvedModel
from components.runtime.spec import (
    Campaign,
    CampaignError,
    CampaignIssue,
    Job,
    load_campaign,
    size_supported,
    sizes_hint,
)
from components.runtime.step import StepContext
from components.runtime.store import ObjectNotFound, payload_digest, validate_key

__all__ = ["PlanError", "PlanInputs", "estimate_gpu_seconds", "main", "plan_key_of", "run"]

log = logging.getLogger("adrender.plan")

STEP = "plan"
DEFAULT_PREFIX = "adrender"
DEFAULT_UNITS_PER_SHARD = 16

# The published reference: HunyuanVideo 720p x 129 frames, 50 steps, no CFG, one H100: 1904 s, i.e. about
# 38 s per forward over 118,800 video tokens; 87% of its FLOPs are attention (quadratic in tokens).
_REF_FORWARD_S = 1904.0 / 50
_REF_TOKENS = 118_800
_ATTN_SHARE = 0.87
# the model roles the steps of this version load
RENDER_ROLES = (
    "dit",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "audio_encoder",
    "face_detector",
    "foley",
    "foley_image_encoder",
    "foley_text_encoder",
)


class PlanError(ValueError):
    """The campaign cannot be planned: the message lists every problem with its field and fix."""


@dataclass(frozen=True)
class PlanInputs:
    """campaign: path, file URI or s3:// URI of the campaign file. prefix: artifact key prefix of the run.
    only: job ids to render (empty: all). units_per_shard: the most units one sampling pod renders.
    checkpoint_every: sampling steps between step checkpoints. check_media: open every referenced file."""

    campaign: str
    prefix: str = DEFAULT_PREFIX
    only: tuple[str, ...] = ()
    units_per_shard: int = DEFAULT_UNITS_PER_SHARD
    checkpoint_every: int = 5
    check_media: bool = True


def estimate_gpu_seconds(unit: UnitPlan) -> float:
    """H100-seconds of sampling for the production 13B DiT, scaled from the published reference."""
    t, h, w = unit.latent_size
    windows = 1
    if unit.mode == "avatar":  # windows of 33 latent frames, each with the reference frame in front
        windows, t = -(-t // 33), 33 + 1
    tokens = t * (h // 2) * (w // 2)
    ratio = tokens / _REF_TOKENS
    forward = windows * _REF_FORWARD_S * (_ATTN_SHARE * ratio * ratio + (1 - _ATTN_SHARE) * ratio)
    steps = int(unit.sampling["num_steps"])
    branches = 1 if float(unit.sampling["cfg_scale"]) <= 1.0 else 2
    if float(unit.sampling.get("ip_cfg_scale") or 0.0) > 0:
        branches = 3
    return forward * steps * branches


def _local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(unquote(urlsplit(uri).path))
    if "://" not in uri:
        return Path(uri)
    return None


def _campaign_file(ctx: StepContext, uri: str) -> tuple[Path, str | None]:
    """The local path of the campaign file and, for an ``s3://`` campaign (downloaded into the step's scratch
    folder), its URI: relative asset paths in it name objects beside it."""
    path = _local_path(uri)
    if path is not None:
        return path, None
    if not uri.startswith("s3://"):
        raise PlanError(
            f"{uri}: campaigns are read from a local path, a file:// URI or an s3://bucket/key URI"
        )
    from components.runtime.assets import AssetError, localize

    try:
        return localize(uri, ctx.settings, ctx.scratch("campaigns")), uri
    except AssetError as exc:
        raise PlanError(str(exc)) from exc


def _asset_digest(uri: str) -> str:
    """sha256 of a referenced file, so that replacing an asset changes the render digest."""
    path = _local_path(uri)
    if path is None:
        return uri  # an s3 URI: its content is checked and hashed when a step downloads it
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pin_models(ctx: StepContext, campaign: Campaign, jobs: Sequence[Job], file: str) -> dict[str, ModelPin]:
    refs = sorted({ref for job in jobs for ref in _roles(campaign, job).values()})
    print(f"plan: resolving {len(refs)} model reference(s) in {ctx.registry.tracking_uri}", file=sys.stderr)
    pins: dict[str, ModelPin] = {}
    max_subjects: dict[str, int] = {}
    problems: list[CampaignIssue] = []
    for ref in refs:
        try:
            r = ctx.registry.resolve(ref)
        except RegistryError as exc:
            problems.append(CampaignIssue(file, "models", f"{ref}: {exc}"))
            continue
        max_subjects[ref] = r.max_subjects
        pins[ref] = _pin(ref, r)
    if problems:
        raise PlanError(str(CampaignError(problems)))
    _check_subjects(campaign, jobs, pins, max_subjects, file)
    return pins


def _pin(ref: str, r: ResolvedModel) -> ModelPin:
    """The pin of a resolved registry version, as the run's manifests record it."""
    return ModelPin(
        ref=ref,
        name=r.name,
        version=r.version,
        preset=r.preset,
        files=dict(r.files),
        sizes=dict(r.sizes),
        total_bytes=r.total_bytes,
        source=r.source,
        excluded_territories=tuple(r.excluded_territories),
    )


def _pin_qc_models(ctx: StepContext) -> tuple[dict[str, ModelPin], dict[str, str], list[str]]:
    """The QC models (``components.qc_metrics.QC_MODELS``, as ``name@production``), pinned like the render models.

    Returns the pins by reference, the unit roles (``qc_clip`` -> reference, ...) and a warning per model that is
    not registered: QC then reports that model's metrics as not run, with the fix, instead of failing the plan.
    """
    from components.qc_metrics import QC_ALIAS, QC_MODELS, QC_ROLE_PREFIX

    pins: dict[str, ModelPin] = {}
    roles: dict[str, str] = {}
    warnings: list[str] = []
    for role, name in QC_MODELS.items():
        ref = f"{name}@{QC_ALIAS}"
        try:
            r = ctx.registry.resolve(ref)
        except RegistryError as exc:
            warnings.append(
                f"QC model {ref} is not available ({type(exc).__name__}): its metrics will be reported as not "
                f"run; register it (`adrender models register {name} FOLDER --preset PRESET --alias {QC_ALIAS}`) "
                "and plan again"
            )
            continue
        pins[ref] = _pin(ref, r)
        roles[QC_ROLE_PREFIX + role] = ref
    return pins, roles, warnings


def _check_subjects(
    campaign: Campaign,
    jobs: Sequence[Job],
    pins: dict[str, ModelPin],
    max_subjects: dict[str, int],
    file: str,
) -> None:
    """A job may name more subjects than one, but only a DiT version registered for that many renders it.

    The released HunyuanCustom checkpoints condition on one identity image; a version registered with the
    registry's `adrender.max_subjects` tag takes up to that many (`Registry.register(..., max_subjects=k)`).
    """
    problems = []
    chosen = {j.id for j in jobs}  # ids: comparing pydantic jobs is quadratic on large campaigns
    for i, job in enumerate(campaign.jobs):
        if job.id not in chosen:
            continue
        ref = campaign.models_for(job)["dit"]
        limit = max_subjects[ref]
        if len(job.subjects) > limit:
            problems.append(
                CampaignIssue(
                    file,
                    f"jobs[{i}].subjects",
                    f"{len(job.subjects)} subjects, but {pins[ref].pinned} ({ref}) was registered for "
                    f"{limit}: the released HunyuanCustom checkpoints take one identity image. Keep "
                    f"{limit} subject(s), or use a DiT version registered with max_subjects >= "
                    f"{len(job.subjects)}",
                )
            )
    if problems:
        raise PlanError(str(CampaignError(problems)))


def _roles(campaign: Campaign, job: Job) -> dict[str, str]:
    return {role: ref for role, ref in campaign.models_for(job).items() if role in RENDER_ROLES}


def _unit_plan(
    campaign: Campaign, job: Job, unit: Any, pins: dict[str, ModelPin], qc_roles: dict[str, str]
) -> UnitPlan:
    roles = {**_roles(campaign, job), **qc_roles}
    models = {role: pins[ref].pinned for role, ref in roles.items()}
    options = job.sampling_options(unit.seed)
    from dataclasses import asdict

    sampling = asdict(options)
    assets: dict[str, str] = {}
    for s in job.subjects:
        assets[s.image] = _asset_digest(s.image)
    if job.audio is not None:
        assets[job.audio.uri] = _asset_digest(job.audio.uri)
    if job.edit is not None:
        assets[job.edit.video] = _asset_digest(job.edit.video)
        assets[job.edit.mask] = _asset_digest(job.edit.mask)
    fields: dict[str, Any] = {
        "unit_id": unit.unit_id,
        "job_id": job.id,
        "variant": unit.index,
        "seed": unit.seed,
        "mode": job.mode.value,
        "height": unit.height,
        "width": unit.width,
        "frames": job.frames,
        "fps": job.delivery.fps,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "subject_words": [s.word for s in job.subjects],
        "subject_images": [s.image for s in job.subjects],
        "audio_uri": job.audio.uri if job.audio else None,
        # Avatar's adapters have no strength: the release adds their output whole
        "audio_strength": job.audio.strength if job.audio and job.mode.value != "avatar" else 1.0,
        "edit_video": job.edit.video if job.edit else None,
        "edit_mask": job.edit.mask if job.edit else None,
        "edit_mask_expand": job.edit.mask_expand if job.edit else 5,
        "sampling": sampling,
        "models": models,
        "foley": job.foley.enabled,
        "foley_prompt": job.foley.prompt or job.prompt,
        "foley_negative_prompt": job.foley.negative_prompt,
        "loudness_lufs": job.delivery.loudness_lufs,
        "true_peak_dbtp": job.delivery.true_peak_dbtp,
        "assets": assets,
    }
    digest = payload_digest({**fields, "delivery": job.delivery.model_dump()})
    return UnitPlan(**fields, foley_offload=job.foley.offload, render_digest=digest)


def _published_digest(ctx: StepContext, key: str) -> str | None:
    import json

    try:
        data = json.loads(ctx.store.get_bytes(key))
    except (ObjectNotFound, ValueError):
        return None
    value = data.get("render_digest") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def plan_key_of(prefix: str, campaign_id: str, payload: dict[str, Any]) -> str:
    """Where the plan manifest of a run lives."""
    return validate_key(f"{prefix.strip('/')}/{campaign_id}/_plan/{short_digest(payload)}/plan.json")


def run(ctx: StepContext, inputs: PlanInputs) -> tuple[str, PlanManifest]:
    """Plan a campaign; returns the key of the plan manifest and the manifest."""
    started = time.perf_counter()
    path, source_uri = _campaign_file(ctx, inputs.campaign)
    file = source_uri or str(path)
    campaign = load_campaign(path, source_uri=source_uri)
    jobs = [j for j in campaign.jobs if not inputs.only or j.id in inputs.only]
    unknown = sorted(set(inputs.only) - {j.id for j in campaign.jobs})
    if unknown:
        known = ", ".join(j.id for j in campaign.jobs)
        raise PlanError(
            f"{file}: --only names job(s) {', '.join(unknown)} that the campaign lacks; jobs: {known}"
        )
    with ctx.telemetry(campaign.id, STEP) as telemetry:
        if inputs.check_media:
            from components.runtime.assets import check_assets

            issues = check_assets(campaign, ctx.settings, ctx.scratch("assets"), only={j.id for j in jobs})
            errors = [i for i in issues if i.severity == "error"]
            if errors:
                raise PlanError(str(CampaignError(errors)))
            media_warnings = [str(i) for i in issues if i.severity != "error"]
        else:
            media_warnings = []
        pins = _pin_models(ctx, campaign, jobs, file)
        _check_territory(campaign, pins, file)
        _check_sizes(campaign, jobs, pins, file)
        # the QC models are pinned too, so that a rerun checks with the same versions (licences: render models only)
        qc_pins, qc_roles, qc_warnings = _pin_qc_models(ctx)
        pins = {**pins, **qc_pins}

        by_id = {j.id: j for j in jobs}
        units = [
            _unit_plan(campaign, by_id[u.job_id], u, pins, qc_roles)
            for u in campaign.render_units()
            if u.job_id in by_id
        ]
        todo: list[UnitPlan] = []
        skipped: list[SkippedUnit] = []
        for unit in units:
            key = deliverable_key(campaign.output_prefix, campaign.id, unit.job_id, unit.unit_id, ".json")
            if _published_digest(ctx, key) == unit.render_digest:
                skipped.append(SkippedUnit(unit_id=unit.unit_id, deliverable=key[: -len(".json")] + ".mp4"))
                telemetry.unit_done("skipped")
            else:
                todo.append(unit)

        campaign_sha = hashlib.sha256(path.read_bytes()).hexdigest()
        plan_payload = {
            "campaign": campaign_sha,
            "units": [u.render_digest for u in todo],
            "prefix": inputs.prefix,
            "checkpoint_every": inputs.checkpoint_every,
            "units_per_shard": inputs.units_per_shard,
        }
        plan_key = plan_key_of(inputs.prefix, campaign.id, plan_payload)

        groups: dict[tuple[str, tuple[int, int, int]], list[UnitPlan]] = {}
        for unit in todo:
            groups.setdefault((unit.models["dit"], unit.latent_size), []).append(unit)
        shard_refs: list[ShardRef] = []
        used = {p.pinned: p for p in pins.values()}
        for (dit, latent), members in sorted(groups.items()):
            for start in range(0, len(members), inputs.units_per_shard):
                chunk = members[start : start + inputs.units_per_shard]
                shard_id = (
                    f"{dit.split('/')[0]}-{'x'.join(map(str, latent))}-"
                    + short_digest({"units": [u.render_digest for u in chunk]})[:8]
                )
                needed = {v for u in chunk for v in u.models.values()}
                shard = ShardManifest(
                    campaign_id=campaign.id,
                    shard_id=shard_id,
                    index=len(shard_refs),
                    prefix=inputs.prefix,
                    output_prefix=campaign.output_prefix,
                    dit=dit,
                    latent_size=latent,
                    models={k: used[k] for k in sorted(needed)},
                    units=chunk,
                    plan_key=plan_key,
                    checkpoint_every=inputs.checkpoint_every,
                )
                key = validate_key(f"{inputs.prefix.strip('/')}/{campaign.id}/_shards/{shard_id}/shard.json")
                write_manifest(ctx.store, key, shard)
                shard_refs.append(
                    ShardRef(shard_id=shard_id, key=key, units=len(chunk), dit=dit, latent_size=latent)
                )

        manifest = PlanManifest(
            campaign_id=campaign.id,
            campaign_uri=source_uri or path.resolve().as_uri(),
            campaign_sha256=campaign_sha,
            prefix=inputs.prefix,
            output_prefix=campaign.output_prefix,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            models=pins,
            shards=shard_refs,
            skipped=skipped,
            units_total=len(units),
            estimated_gpu_seconds=round(sum(estimate_gpu_seconds(u) for u in todo), 1),
            warnings=[str(w) for w in campaign.warnings] + media_warnings + qc_warnings,
        )
        write_manifest(ctx.store, plan_key, manifest)
        log.info(
            "planned %s: %d units (%d already published), %d shard(s) in %.2f s",
            campaign.id,
            len(units),
            len(skipped),
            len(shard_refs),
            time.perf_counter() - started,
        )
    return plan_key, manifest


def _check_sizes(campaign: Campaign, jobs: Sequence[Job], pins: dict[str, ModelPin], file: str) -> None:
    """A released DiT renders only the sizes it was trained at; the tiny test models render any."""
    problems = []
    chosen = {j.id for j in jobs}  # ids: comparing pydantic jobs is quadratic on large campaigns
    for i, job in enumerate(campaign.jobs):
        if job.id not in chosen:
            continue
        pin = pins[campaign.models_for(job)["dit"]]
        if pin.preset.startswith("tiny-"):
            continue
        for size in job.sizes:
            if not size_supported(job.mode, size.height, size.width):
                problems.append(
                    CampaignIssue(
                        file,
                        f"jobs[{i}].sizes",
                        f"{size} is not a size {pin.pinned} ({pin.preset}) renders; {sizes_hint(job.mode)}",
                    )
                )
    if problems:
        raise PlanError(str(CampaignError(problems)))


def _check_territory(campaign: Campaign, pins: dict[str, ModelPin], file: str) -> None:
    """Reject a campaign whose markets a model's licence excludes (HunyuanCustom's: the EU, the UK, South Korea)."""
    if not campaign.territory:
        restricted = sorted(p.pinned for p in pins.values() if p.excluded_territories)
        if restricted:
            log.warning(
                "%s sets no territory, and the licences of %s exclude some markets; set territory: [...] so "
                "that plan can check them",
                file,
                ", ".join(restricted),
            )
        return
    from components.runtime.territory import overlap

    problems = []
    for ref, pin in sorted(pins.items()):
        if not pin.excluded_territories:
            continue
        hit = overlap(campaign.territory, pin.excluded_territories)
        if hit:
            problems.append(
                CampaignIssue(
                    file,
                    "territory",
                    f"{', '.join(hit)} excluded by the licence of {pin.pinned} ({ref}); remove them from "
                    "territory or use a model licensed there",
                )
            )
    if problems:
        raise PlanError(str(CampaignError(problems)))


def read_plan(ctx: StepContext, key: str) -> PlanManifest:
    """The plan manifest under ``key``."""
    return read_manifest(ctx.store, key, PlanManifest)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m components.plan CAMPAIGN [--prefix P] [--only JOB] [--output-file PATH]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m components.plan", description=__doc__)
    parser.add_argument("campaign", help="campaign file (path, file:// or s3://bucket/key URI)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    parser.add_argument("--only", action="append", default=[], metavar="JOB")
    parser.add_argument("--units-per-shard", type=int, default=DEFAULT_UNITS_PER_SHARD)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--no-media-check", action="store_true")
    parser.add_argument("--output-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = StepContext.from_env()
    try:
        key, _ = run(
            ctx,
            PlanInputs(
                args.campaign,
                args.prefix,
                tuple(args.only),
                args.units_per_shard,
                args.checkpoint_every,
                not args.no_media_check,
            ),
        )
    except (PlanError, CampaignError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(key)
    if args.output_file is not None:
        args.output_file.write_text(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
