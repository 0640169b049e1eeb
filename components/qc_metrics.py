"""qc_metrics: every unit's finished video checked and scored, with a verdict against the campaign's QC profile.

For each unit the step takes the final mp4 (the foley step's output when it ran, else the silent decode; a
soundtrack is expected when the unit's job has foley on and the foley step ran) and writes ``qc.json`` beside
the other artifacts of the unit:

1. delivery checks (``components.runtime.delivery``): loudness against the profile named by the campaign's
   ``qc.name``, black and frozen stretches with the campaign's thresholds, file conformance;
2. model metrics (``model_core.qc``), each with its recipe: CLIP-B-T and temporal consistency (CLIP ViT-B,
   registered as ``clip-vit-base-patch32``), DINO-Sim against each subject's reference image (``dinov2-base``;
   head-and-shoulders boxes for a subject with a face, the reference's foreground box for a product), Face-Sim
   (the ``face-detector`` YOLOv5-face and ``arcface-r100``: aligned largest faces, frames without a face
   counted), VBench's dynamic degree (no model: the flow of ``model_core.qc.flow``), and for a foley bed the
   speech / music rule of ``model_core.qc.soundtrack`` and, with a soundtrack (foley or a voice), DeSync:
   the audio-video offset the pinned Foley release's Synchformer predicts (``model_core.qc.desync``; a warning
   above :data:`DESYNC_WARN_SECONDS`, or fails above the campaign's ``qc.max_desync_seconds``);
3. the verdict: ``fail`` when any check fails. The thresholds are the campaign's (``qc``): loudness tolerance,
   black and freeze limits, ``min_text_video_similarity`` for CLIP-B-T, ``min_identity_similarity`` for
   DINO-Sim, ``min_face_similarity`` for Face-Sim; a metric without a threshold is reported (``info``), not
   judged. ``rerender`` says whether a new seed could fix the failure (picture content and model scores can;
   file format and loudness cannot).

The QC models are the versions ``plan`` pinned as ``<name>@production`` (unit roles ``qc_clip``, ``qc_dino``,
``qc_arcface``, ``qc_face_detector``), recorded in the unit's result; a model plan could not resolve leaves its
metrics "not run", with the fix. Each is loaded once per process. ``qc.json`` also holds first / middle / last thumbnails and the reference images as small PNGs, and the
loudness curve, for the report (``components.report``).

The re-render gate (:func:`rerender_gate`): a unit that fails QC, where every failed check is one a new seed
may fix, is rendered again with :func:`rerender_seed` (a seed derived from its first seed and the attempt
number), up to the campaign's ``qc.max_rerenders`` times; the attempts go through sampling, decode, foley and
QC as a shard of their own, and publish then gets each unit's last attempt, with every attempt's seed, verdict
and failed checks in the ``qc_metrics`` manifest (``attempts``). A unit that fails every attempt is published as
failed-QC.

``python -m components.qc_metrics --shard KEY --input video=KEY [--input foley=KEY]``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.runtime.delivery import Check, Expected, check_delivery, delivery_profile
from components.runtime.manifest import (
    ArtifactRef,
    ModelPin,
    PlanManifest,
    ShardManifest,
    StepManifest,
    UnitOutput,
    UnitPlan,
    content_key,
    read_manifest,
    short_digest,
    write_manifest,
)
from components.runtime.spec import QCProfile
from components.runtime.step import StepContext, shard_step, step_main, unit_loop
from components.runtime.store import validate_key
from components.runtime.telemetry import StepTelemetry

if TYPE_CHECKING:
    import numpy as np

    from model_core.audio.foley.synchformer_sync import SyncClassifier
    from model_core.qc import ClipScorer, DinoScorer, IResNet
    from model_core.vision.face_detect import FaceBox, FaceDetector

__all__ = [
    "DESYNC_WARN_SECONDS",
    "PAPER_AVERAGES",
    "QC_ALIAS",
    "QC_MODELS",
    "QC_RECIPE",
    "QC_ROLE_PREFIX",
    "STEP",
    "QCModels",
    "QCTelemetry",
    "evaluate",
    "main",
    "rerender_gate",
    "rerender_seed",
    "run",
]

STEP = "qc_metrics"
OUTPUT = "qc.json"
QC_RECIPE = 4  # bumped when a metric's recipe changes, so cached results are recomputed
# role -> registered model name (the presets of model_core.configs.ENCODER_PRESETS)
QC_MODELS: Mapping[str, str] = {
    "clip": "clip-vit-base-patch32",
    "dino": "dinov2-base",
    "arcface": "arcface-r100",
    "face_detector": "face-detector",
}
QC_ALIAS = "production"  # plan pins each QC model as <name>@production
QC_ROLE_PREFIX = "qc_"  # a unit's models: "qc_clip" -> the pinned CLIP ViT-B version, ...
# HunyuanCustom's own averages (paper, Table 1): what a good render of the released model scores, for the report
PAPER_AVERAGES: Mapping[str, float] = {
    "face_sim": 0.627,
    "clip_text": 0.306,
    "dino_sim": 0.593,
    "temporal_consistency": 0.958,
    "dynamic_degree": 0.71,
}
THUMB_WIDTH = 160
# DeSync above this warns. HunyuanVideo-Foley's DeSync averages 0.74 s (MovieGen-Audio-Bench) and 0.54 s
# (Kling-Audio-Eval) in its README; a clip's DeSync lies on the 0.2 s class grid, and 0.8 s is the first grid
# point at or above both averages. QCProfile has no DeSync field yet, so the check only warns.
DESYNC_WARN_SECONDS = 0.8

log = logging.getLogger("adrender.qc_metrics")


@dataclass
class QCModels:
    """The QC models of one step run: the versions ``plan`` pinned, or the reason a model is missing."""

    versions: dict[str, str]  # role -> name/version
    missing: dict[str, str]  # role -> why it is not available
    pins: dict[str, ModelPin]
    # pinned name/version -> pin of the shard's Foley releases (their Synchformer measures DeSync)
    foley: dict[str, ModelPin] = field(default_factory=dict)

    @classmethod
    def from_shard(cls, shard: ShardManifest, names: Mapping[str, str] = QC_MODELS) -> QCModels:
        """The QC models ``plan`` pinned for the shard's units (roles ``qc_clip``, ...); a model plan could not
        resolve is recorded as missing with the fix, not raised."""
        versions: dict[str, str] = {}
        missing: dict[str, str] = {}
        pins: dict[str, ModelPin] = {}
        for role, name in names.items():
            pinned = next(
                (u.models[QC_ROLE_PREFIX + role] for u in shard.units if QC_ROLE_PREFIX + role in u.models),
                None,
            )
            if pinned is None or pinned not in shard.models:
                missing[role] = (
                    f"{name}@{QC_ALIAS} was not registered when the campaign was planned; register it "
                    f"(`adrender models register {name} FOLDER --preset PRESET --alias {QC_ALIAS}`, or "
                    "`adrender models bootstrap-tiny` for the demo) and plan again"
                )
                continue
            pins[role] = shard.models[pinned]
            versions[role] = pinned
        foley = {
            u.models["foley"]: shard.models[u.models["foley"]]
            for u in shard.units
            if u.models.get("foley") in shard.models
        }
        return cls(versions, missing, pins, foley)

    def clip(self, ctx: StepContext) -> ClipScorer:
        from model_core.qc import ClipScorer

        return self._cached(ctx, "clip", lambda f: ClipScorer.from_pretrained(f, device=ctx.device))  # type: ignore[no-any-return]

    def dino(self, ctx: StepContext) -> DinoScorer:
        from model_core.qc import DinoScorer

        return self._cached(ctx, "dino", lambda f: DinoScorer.from_pretrained(f, device=ctx.device))  # type: ignore[no-any-return]

    def arcface(self, ctx: StepContext) -> IResNet:
        from model_core.qc import IResNet

        return self._cached(ctx, "arcface", lambda f: IResNet.from_pretrained(f, device=ctx.device))  # type: ignore[no-any-return]

    def face_detector(self, ctx: StepContext) -> FaceDetector:
        from components.runtime.models import load_face_detector

        return load_face_detector(ctx, self.pins["face_detector"])

    def sync_classifier(self, ctx: StepContext, pinned: str) -> SyncClassifier:
        """The whole Synchformer (video and audio branches, offset head) of a pinned Foley release."""
        key = ("qc-synchformer", pinned)
        if key not in ctx.model_cache:
            from components.runtime.models import fetch_pin
            from model_core.audio.foley.synchformer_sync import SYNC_CLASSIFIER_PRESETS, load_sync_classifier
            from model_core.configs import FOLEY_RELEASES, FOLEY_SYNCHFORMER_FILE

            pin = self.foley[pinned]
            if pin.preset not in FOLEY_RELEASES:
                raise ValueError(
                    f"{pinned} (preset {pin.preset}) is not a Foley release; it has no Synchformer"
                )
            config = SYNC_CLASSIFIER_PRESETS[FOLEY_RELEASES[pin.preset].synchformer]
            started = time.perf_counter()
            path = fetch_pin(ctx, pin) / FOLEY_SYNCHFORMER_FILE
            ctx.model_cache[key] = load_sync_classifier(path, config, device=ctx.device)
            log.info("loaded the Synchformer of %s in %.1f s", pinned, time.perf_counter() - started)
        return ctx.model_cache[key]  # type: ignore[no-any-return]

    def _cached(self, ctx: StepContext, role: str, build: Any) -> Any:
        key = (f"qc-{role}", self.versions[role])
        if key not in ctx.model_cache:
            from components.runtime.models import fetch_pin

            started = time.perf_counter()
            ctx.model_cache[key] = build(fetch_pin(ctx, self.pins[role]))
            log.info("loaded %s %s in %.1f s", role, self.versions[role], time.perf_counter() - started)
        return ctx.model_cache[key]


class QCTelemetry:
    """The QC metrics of one step run, registered in the step's own registry (pushed with the step's metrics).

    ===================================================== ========= ===========================================
    ``adrender_qc_score_distribution{metric,verdict}``     histogram every score of a unit checked in this run
    ``adrender_qc_units_total{verdict}``                   counter   units judged ``pass`` / ``fail``
    ``adrender_qc_checks_failed_total{check}``             counter   failed checks by name (``model.clip_text``)
    ===================================================== ========= ===========================================

    Every series also carries ``campaign`` and ``step``; labels are bounded (metric, verdict and check names come
    from this module, never from a render). The pass rate of a campaign is
    ``sum(adrender_qc_units_total{verdict="pass"}) / sum(adrender_qc_units_total)``. The step's
    ``adrender_qc_score{metric}`` summary gets every score too.
    """

    # scores are cosines in [-1, 1] or ratios in [0, 1]: 0.05 steps where the paper's averages lie; DeSync is
    # seconds on Synchformer's 0.2 s class grid up to 2.0
    BUCKETS = (
        -0.5,
        0.0,
        0.1,
        0.2,
        0.25,
        0.3,
        0.35,
        0.4,
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        0.95,
        0.98,
        1.0,
        1.2,
        1.4,
        1.6,
        2.0,
    )

    def __init__(self, telemetry: StepTelemetry) -> None:
        from prometheus_client import Counter, Histogram

        self.telemetry = telemetry
        base = ("campaign", "step")
        self._scores = Histogram(
            "adrender_qc_score_distribution",
            "QC scores of checked units, by metric and the unit's verdict.",
            (*base, "metric", "verdict"),
            registry=telemetry.registry,
            buckets=self.BUCKETS,
        )
        self._units = Counter(
            "adrender_qc_units",
            "Units judged by QC, by verdict.",
            (*base, "verdict"),
            registry=telemetry.registry,
        )
        self._checks = Counter(
            "adrender_qc_checks_failed",
            "Failed QC checks, by check.",
            (*base, "check"),
            registry=telemetry.registry,
        )

    def unit(self, doc: Mapping[str, Any]) -> None:
        """Record one unit's ``qc.json`` document: its scores, its verdict and its failed checks."""
        labels = {"campaign": self.telemetry.campaign, "step": self.telemetry.step}
        verdict = str(doc["verdict"])
        for name, value in doc["scores"].items():
            if value is not None:
                self._scores.labels(**labels, metric=name, verdict=verdict).observe(value)
                self.telemetry.qc_score(name, value)
        self._units.labels(**labels, verdict=verdict).inc()
        for check in doc["failed"]:
            self._checks.labels(**labels, check=check).inc()


# ---------------------------------------------------------------------------------------------------------
# one unit


def _png(frame: np.ndarray, width: int = THUMB_WIDTH) -> str:
    """A base64 PNG of a uint8 RGB frame scaled to ``width`` pixels wide."""
    import torch
    import torch.nn.functional as F

    from components.report import encode_png

    h, w = frame.shape[:2]
    if w > width:
        x = torch.as_tensor(frame.copy()).permute(2, 0, 1)[None].float()
        size = (max(1, round(h * width / w)), width)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        frame = x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    return base64.b64encode(encode_png(frame)).decode("ascii")


def _curve(report: Any) -> dict[str, list[float | None]] | None:
    """The loudness curve for JSON: -inf (a silent window) becomes None."""
    import math

    curve = report.loudness_curve
    if curve is None:
        return None
    return {
        k: [v if math.isfinite(v) else None for v in getattr(curve, k)]
        for k in ("times", "momentary_lufs", "short_term_lufs")
    }


def _model_check(name: str, value: float | None, minimum: float | None, why_not: str | None = None) -> Check:
    if value is None:
        return Check(name, "n/a", None, "not run", detail=why_not or "")
    if minimum is None:
        return Check(
            name, "info", round(value, 4), "reported (no threshold in the campaign's qc)", seed_fixable=True
        )
    return Check(
        name, "pass" if value >= minimum else "fail", round(value, 4), f">= {minimum:g}", seed_fixable=True
    )


def _dino_subject(
    dino: DinoScorer,
    ref: np.ndarray,
    frames: np.ndarray,
    ref_face: FaceBox | None,
    faces: Sequence[FaceBox | None] | None,
) -> dict[str, Any]:
    """DINO-Sim of one subject: head-and-shoulders boxes for a subject whose image has a face (in the frames with
    a face), else the reference's foreground box against whole frames."""
    import numpy as np
    import torch

    from model_core.qc import crop_box, crop_embeddings, dino_similarity, foreground_box, head_and_shoulders

    def chw(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0

    h, w = frames.shape[1:3]
    whole = [chw(f) for f in frames]
    if ref_face is not None and faces is not None:
        ref_crop = crop_box(chw(ref), head_and_shoulders(ref_face.box, *ref.shape[:2]))
        with_face = [i for i, f in enumerate(faces) if f is not None]
        if with_face:
            crops = [crop_box(whole[i], head_and_shoulders(faces[i].box, h, w)) for i in with_face]  # type: ignore[union-attr]
            region = "head-and-shoulders"
        else:
            crops, region = whole, "head-and-shoulders reference vs whole frame (no face in any frame)"
    else:
        ref_crop = crop_box(chw(ref), foreground_box(ref))
        crops, region = whole, "reference foreground vs whole frame"
    emb = crop_embeddings(dino, [ref_crop, *crops])
    return {"score": round(dino_similarity(emb[0], emb[1:]), 4), "region": region, "frames": len(crops)}


def _face_sim(
    ctx: StepContext,
    models: QCModels,
    frames: np.ndarray,
    refs: Sequence[np.ndarray],
    ref_faces: Sequence[FaceBox | None] | None,
    faces: Sequence[FaceBox | None] | None,
    qc: QCProfile,
    scores: dict[str, float | None],
    metrics: dict[str, dict[str, Any]],
) -> Check:
    """Face-Sim of a unit (its score and metrics entry filled in) and its check."""
    from model_core.qc import face_embeddings, face_similarity

    name, minimum = "model.face_sim", qc.min_face_similarity
    why: str | None = None
    if not refs:
        why = "the job has no subject image"
    elif "face_detector" in models.missing or "arcface" in models.missing:
        why = models.missing.get("face_detector") or models.missing["arcface"]
    elif ref_faces is None or faces is None or all(f is None for f in ref_faces):
        why = "no face in the subject image(s): a product subject has none"
    if why is not None:
        scores["face_sim"] = None
        metrics["face_sim"] = {"not_run": why}
        return _model_check(name, None, minimum, why)
    assert ref_faces is not None and faces is not None
    embedder = models.arcface(ctx)
    frame_emb = face_embeddings(embedder, list(frames), faces)
    per_subject = []
    for ref, face in zip(refs, ref_faces, strict=True):
        if face is not None:
            (ref_emb,) = face_embeddings(embedder, [ref], [face])
            assert ref_emb is not None
            per_subject.append(face_similarity(ref_emb, frame_emb))
    without = per_subject[0].frames_without_face
    found = [r.score for r in per_subject if r.score is not None]
    scores["face_sim"] = float(sum(found) / len(found)) if found else None
    metrics["face_sim"] = {
        "model": models.versions["arcface"],
        "detector": models.versions["face_detector"],
        "recipe": "ArcFace cosine, largest face per frame aligned to the 5-landmark template, mean over frames "
        "with a face",
        "frames": len(frames),
        "frames_without_face": without,
        "per_subject": [None if r.score is None else round(r.score, 4) for r in per_subject],
    }
    detail = f"{without} of {len(frames)} frames without a face"
    if scores["face_sim"] is None:
        # a person's reference face and no face in the video: the render lost the subject
        return Check(
            name,
            "fail" if minimum is not None else "warn",
            None,
            "a face in the frames",
            seed_fixable=True,
            detail=detail,
        )
    check = _model_check(name, scores["face_sim"], minimum)
    return Check(check.name, check.status, check.measured, check.limit, check.seed_fixable, detail)


def _desync(
    ctx: StepContext,
    models: QCModels,
    unit: UnitPlan,
    video: Path,
    frames: np.ndarray,
    *,
    has_sound: bool,
    maximum: float | None,
    scores: dict[str, float | None],
    metrics: dict[str, dict[str, Any]],
) -> Check:
    """DeSync of a unit with a soundtrack (foley or a voice) with its pinned Foley release's Synchformer; fills
    ``scores["desync"]`` and ``metrics["desync"]`` and returns the check: against the campaign's
    ``qc.max_desync_seconds`` when it sets one, else a warning above :data:`DESYNC_WARN_SECONDS`."""
    from model_core.qc.desync import CROP_SECONDS, measure_desync

    pinned = unit.models.get("foley")
    seconds = len(frames) / unit.fps
    why_not = (
        "no soundtrack (foley off and no voice)" if not has_sound or not (unit.foley or unit.audio_uri)
        else "the job pins no Foley release, whose Synchformer measures DeSync" if pinned not in models.foley
        else f"DeSync reads a {CROP_SECONDS:g} s window; the video is {seconds:.2f} s" if seconds < CROP_SECONDS
        else None
    )  # fmt: skip
    if why_not is not None or pinned is None:
        scores["desync"] = None
        metrics["desync"] = {"not_run": why_not}
        return _model_check("model.desync", None, None, why_not)
    from model_core.audio.foley.synchformer_audio import SAMPLE_RATE
    from model_core.io.ffmpeg_decode import decode_audio

    sync = models.sync_classifier(ctx, pinned)
    try:
        result = measure_desync(sync, frames, decode_audio(video, SAMPLE_RATE), fps=unit.fps)
    except ValueError as exc:  # a soundtrack shorter than the window
        scores["desync"] = None
        metrics["desync"] = {"not_run": str(exc)}
        return _model_check("model.desync", None, None, str(exc))
    scores["desync"] = result.seconds
    metrics["desync"] = {
        "model": pinned,
        "recipe": "HunyuanVideo-Foley compute_desync_score: |Synchformer offset| of the first 5 s, seconds",
        "windows": [asdict(w) for w in result.windows],
    }
    limit = DESYNC_WARN_SECONDS if maximum is None else maximum
    late = result.seconds > limit + 1e-6  # the classes lie on a 0.2 s grid: compare without float noise
    return Check(
        "model.desync", "pass" if not late else "warn" if maximum is None else "fail", round(result.seconds, 4),
        f"<= {limit:g} s" + (" (warn only)" if maximum is None else ""), seed_fixable=True,
        detail=f"audio {'ahead of' if result.windows[0].offset > 0 else 'behind'} the picture" if late else "",
    )  # fmt: skip


def evaluate(
    ctx: StepContext,
    unit: UnitPlan,
    video: Path,
    qc: QCProfile,
    models: QCModels,
    *,
    has_sound: bool,
) -> dict[str, Any]:
    """Check and score one unit's video; returns the ``qc.json`` document (verdict, checks, scores, thumbnails)."""
    import numpy as np
    import torch

    from components.runtime.assets import localize
    from components.runtime.media import read_video_frames
    from model_core.io.ffmpeg_decode import read_image
    from model_core.qc import as_batch, clip_text_score, consistency, dynamic_degree

    started = time.perf_counter()
    # 1. delivery checks
    tolerance = qc.loudness_tolerance_lu if "loudness_tolerance_lu" in qc.model_fields_set else None
    profile = delivery_profile(qc.name, tolerance_lu=tolerance)
    expected = Expected(unit.width, unit.height, unit.fps, unit.frames, audio=has_sound)
    delivery = check_delivery(
        video,
        profile,
        expected,
        black_min_seconds=qc.black_min_seconds,
        black_pixel_threshold=qc.black_pixel_threshold,
        freeze_min_seconds=qc.freeze_min_seconds,
        freeze_noise=qc.freeze_noise,
    )
    checks = list(delivery.checks)
    if unit.audio_uri is not None and not any(
        c.name == "audio.present" and c.measured is True for c in checks
    ):
        checks.append(
            Check("audio.driving_track", "warn", False, "the driving audio muxed into the deliverable",
                  detail="the audio-driven render was published without its voice track")
        )  # fmt: skip

    # the foley bed: speech or music where sound effects belong (a signal rule)
    if has_sound and unit.foley and unit.audio_uri is None:
        from model_core.io.ffmpeg_decode import decode_audio
        from model_core.qc.soundtrack import SAMPLE_RATE, bed_character

        bed = bed_character(decode_audio(video, SAMPLE_RATE), SAMPLE_RATE)
        foley_metrics: dict[str, Any] = asdict(bed)
        kind = "speech" if bed.speech else "music" if bed.music else None
        checks.append(
            Check("audio.foley_character", "warn" if kind else "pass", bed.speech_likeness,
                  "sound effects: no speech or music in the foley bed",
                  detail=f"the foley bed sounds like {kind}" if kind else "")
        )  # fmt: skip
    else:
        bed, foley_metrics = None, {"not_run": "no foley bed (foley off, or audio-driven)"}

    # 2. model metrics on the decoded frames
    frames = np.stack(list(read_video_frames(video)))
    pixels = as_batch(frames)
    scores: dict[str, float | None] = {}
    metrics: dict[str, dict[str, Any]] = {}
    refs = [read_image(localize(uri, ctx.settings, ctx.scratch("assets"))) for uri in unit.subject_images]
    # the largest face of each frame and of each subject image: Face-Sim and the DINO-Sim head-and-shoulders box
    faces: list[FaceBox | None] | None = None
    ref_faces: list[FaceBox | None] | None = None
    if refs and "face_detector" in models.versions:
        detector = models.face_detector(ctx)
        faces = [detector.largest(f) for f in frames]
        ref_faces = [detector.largest(r) for r in refs]
    with torch.no_grad():
        if "clip" in models.versions:
            clip = models.clip(ctx)
            emb = clip.image_embeddings(pixels)
            scores["clip_text"] = clip_text_score(emb, clip.text_embeddings([unit.prompt])[0])
            scores["temporal_consistency"] = consistency(emb)
            recipe = "CLIP ViT-B: mean cosine(prompt, frame) over every frame"
            metrics["clip_text"] = {"model": models.versions["clip"], "recipe": recipe, "frames": len(frames)}
            metrics["temporal_consistency"] = {
                "model": models.versions["clip"],
                "recipe": "VBench: mean of (max(0,cos(f_i,f_i-1)) + max(0,cos(f_i,f_0)))/2 on CLIP ViT-B features",
            }
        else:
            for name in ("clip_text", "temporal_consistency"):
                scores[name] = None
                metrics[name] = {"not_run": models.missing["clip"]}
        if not refs:
            scores["dino_sim"] = None
            metrics["dino_sim"] = {"not_run": "the job has no subject image"}
        elif "dino" in models.versions:
            subjects = [
                _dino_subject(
                    models.dino(ctx), ref, frames, None if ref_faces is None else ref_faces[i], faces
                )
                for i, ref in enumerate(refs)
            ]
            scores["dino_sim"] = float(sum(d["score"] for d in subjects) / len(subjects))
            metrics["dino_sim"] = {
                "model": models.versions["dino"],
                "recipe": "DINOv2 CLS cosine of the subject's region in the reference and in each frame, mean",
                "region": ", ".join(sorted({d["region"] for d in subjects})),
                "per_subject": subjects,
            }
            if faces is None:
                metrics["dino_sim"]["note"] = "no face detector: every subject measured as a product"
        else:
            scores["dino_sim"] = None
            metrics["dino_sim"] = {"not_run": models.missing["dino"]}
        dd = dynamic_degree(pixels, unit.fps)
        scores["dynamic_degree"] = 1.0 if dd.dynamic else 0.0
        metrics["dynamic_degree"] = {"recipe": f"VBench rule on {dd.flow} flow", **asdict(dd)}
        face_check = _face_sim(ctx, models, frames, refs, ref_faces, faces, qc, scores, metrics)
        desync_check = _desync(
            ctx,
            models,
            unit,
            video,
            frames,
            has_sound=has_sound,
            maximum=qc.max_desync_seconds,
            scores=scores,
            metrics=metrics,
        )
    scores["foley_speech_likeness"] = None if bed is None else bed.speech_likeness
    metrics["foley_speech_likeness"] = foley_metrics
    checks += [
        _model_check("model.clip_text", scores["clip_text"], qc.min_text_video_similarity,
                     metrics["clip_text"].get("not_run")),
        _model_check("model.dino_sim", scores["dino_sim"], qc.min_identity_similarity,
                     metrics["dino_sim"].get("not_run")),
        face_check,
        _model_check("model.temporal_consistency", scores["temporal_consistency"], None,
                     metrics["temporal_consistency"].get("not_run")),
        _model_check("model.dynamic_degree", scores["dynamic_degree"], None),
        desync_check,
    ]  # fmt: skip

    # 3. the verdict
    failed = [c for c in checks if c.failed]
    n = len(frames)
    return {
        "format": 1,
        "recipe": QC_RECIPE,
        "campaign": None,  # set by the step
        "job": unit.job_id,
        "unit": unit.unit_id,
        "seed": unit.seed,
        "prompt": unit.prompt,
        "profile": profile.name,
        "profile_source": profile.source,
        "thresholds": qc.model_dump(),
        "verdict": "fail" if failed else "pass",
        "failed": [c.name for c in failed],
        "rerender": bool(failed) and all(c.seed_fixable for c in failed),
        "checks": [asdict(c) for c in checks],
        "scores": scores,
        "metrics": metrics,
        "paper_averages": dict(PAPER_AVERAGES),
        "models": dict(models.versions),
        "loudness_curve": _curve(delivery),
        "thumbnails": {
            "first": _png(frames[0]),
            "middle": _png(frames[n // 2]),
            "last": _png(frames[-1]),
            "references": [_png(r) for r in refs],
        },
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------------------------------------------------
# the step


def campaign_qc(ctx: StepContext, shard: ShardManifest) -> QCProfile:
    """The campaign's QC profile, read from the campaign file the plan names (the default profile if unreadable)."""
    from components.runtime.assets import localize
    from components.runtime.spec import CampaignError, load_campaign

    plan = read_manifest(ctx.store, shard.plan_key, PlanManifest)
    try:
        path = localize(plan.campaign_uri, ctx.settings, ctx.scratch("campaign"))
        return load_campaign(path).qc
    except (CampaignError, OSError, ValueError) as exc:
        log.warning(
            "cannot read the QC profile of %s (%s); using the default profile", plan.campaign_uri, exc
        )
        return QCProfile()


def run(ctx: StepContext, shard_key: str, upstream: Mapping[str, str]) -> str:
    """Check and score a shard (needs ``upstream['video']``; ``upstream['foley']`` when foley ran); returns the
    step manifest key."""
    if "video" not in upstream:
        raise ValueError(f"{STEP} needs --input video=<tiled_decode manifest key>")

    def work(
        shard: ShardManifest, ups: Mapping[str, StepManifest], telemetry: StepTelemetry
    ) -> dict[str, UnitOutput]:
        qc = campaign_qc(ctx, shard)
        models = QCModels.from_shard(shard)
        qc_telemetry = QCTelemetry(telemetry)
        for role, why in models.missing.items():
            log.warning("QC %s metrics will not run: %s", role, why)
        video, foley = ups["video"], ups.get("foley")

        def source(unit: UnitPlan) -> tuple[ArtifactRef, bool]:
            muxed = foley.ok(unit.unit_id) if foley is not None else None
            if muxed is not None and "video" in muxed.artifacts:
                # the foley step muxes foley, or the driving audio of an audio-driven job, and passes the silent
                # video on for a job with neither
                return muxed.artifacts["video"], unit.foley or unit.audio_uri is not None
            return video.units[unit.unit_id].artifacts["video"], False

        def keys_for(unit: UnitPlan) -> dict[str, str]:
            ref, sound = source(unit)
            payload = {
                "video": ref.sha256,
                "sound": sound,
                "qc": qc.model_dump(),
                "models": dict(sorted(models.versions.items())),
                "prompt": unit.prompt,
                "references": [unit.assets.get(u, u) for u in unit.subject_images],
                "recipe": QC_RECIPE,
            }
            return {"qc": content_key(shard.prefix, shard.campaign_id, unit.unit_id, STEP, payload, OUTPUT)}

        def body(unit: UnitPlan, keys: Mapping[str, str]) -> dict[str, Any]:
            ref, sound = source(unit)
            path = ctx.scratch("qc") / f"{unit.unit_id}-{os.getpid()}.mp4"
            ctx.store.get_file(ref.key, path)
            try:
                doc = evaluate(ctx, unit, path, qc, models, has_sound=sound)
            finally:
                path.unlink(missing_ok=True)
            doc["campaign"] = shard.campaign_id
            doc["video"] = {"key": ref.key, "sha256": ref.sha256}
            ctx.store.put_bytes(keys["qc"], (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode())
            qc_telemetry.unit(doc)
            log.info("%s %s: QC %s %s", STEP, unit.unit_id, doc["verdict"], " ".join(doc["failed"]))
            return {"verdict": doc["verdict"], "failed": doc["failed"], "rerender": doc["rerender"]}

        ups_list = [video] if foley is None else [video, foley]
        return unit_loop(ctx, shard, STEP, keys_for, body, telemetry=telemetry, upstream=ups_list)

    return shard_step(ctx, STEP, shard_key, upstream, work)


# ---------------------------------------------------------------------------------------------------------
# the re-render gate


def rerender_seed(seed: int, attempt: int) -> int:
    """The seed of re-render ``attempt`` (1, 2, ...) of a unit first rendered with ``seed`` (attempt 0: ``seed``).

    The first 4 bytes of sha256("adrender-rerender:<seed>:<attempt>"): stable across runs and machines, so a
    resumed campaign re-renders with the same seeds, and unrelated to the seeds of the other variants."""
    if attempt == 0:
        return seed
    digest = hashlib.sha256(f"adrender-rerender:{seed}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _attempt_summary(ctx: StepContext, out: UnitOutput, seed: int) -> dict[str, Any]:
    """Seed, verdict, failed checks and whether to re-render, from a unit's QC output (read back when cached)."""
    doc = json.loads(ctx.store.get_bytes(out.artifacts["qc"].key))
    return {
        "seed": seed,
        "verdict": doc["verdict"],
        "failed": doc["failed"],
        "rerender": doc["rerender"],
        "key": out.artifacts["qc"].key,
    }


# (shard manifest key) -> {stage name: step manifest key} of every stage before publish, run on that shard
RunAttempt = Callable[[str], Mapping[str, str]]


def rerender_gate(
    ctx: StepContext, shard_key: str, keys: Mapping[str, str], run_attempt: RunAttempt
) -> tuple[str, dict[str, str]]:
    """Re-render the units of a shard that failed QC with a seed-fixable failure, up to ``qc.max_rerenders`` times.

    ``keys``: the manifests of the first attempt (every stage before publish, ``qc_metrics`` included).
    ``run_attempt(shard_key)`` runs those stages on a shard of the units to re-render. Returns the shard and the
    stage manifests publish should read: unchanged when nothing was re-rendered, else merged so that each unit
    has its last attempt (its seed in the shard, its outputs in every manifest, and every attempt in the
    ``qc_metrics`` manifest's ``attempts``).
    """
    base = read_manifest(ctx.store, shard_key, ShardManifest)
    qc = campaign_qc(ctx, base)
    first_qc = read_manifest(ctx.store, keys[STEP], StepManifest)
    attempts: dict[str, list[dict[str, Any]]] = {
        u.unit_id: [_attempt_summary(ctx, first_qc.units[u.unit_id], u.seed)]
        for u in base.units
        if first_qc.ok(u.unit_id) is not None
    }
    runs: list[Mapping[str, str]] = []
    for attempt in range(1, qc.max_rerenders + 1):
        todo = [u for u in base.units if u.unit_id in attempts and attempts[u.unit_id][-1]["rerender"]]
        if not todo:
            break
        units = []
        for u in todo:
            seed = rerender_seed(u.seed, attempt)
            units.append(u.model_copy(update={"seed": seed, "sampling": {**u.sampling, "seed": seed}}))
        retry = base.model_copy(update={"shard_id": f"{base.shard_id}-rerender{attempt}", "units": units})
        retry_key = validate_key(
            f"{base.prefix.strip('/')}/{base.campaign_id}/_shards/{retry.shard_id}/"
            f"{short_digest({'shard': shard_key, 'attempt': attempt})}/shard.json"
        )
        write_manifest(ctx.store, retry_key, retry)
        log.info(
            "re-rendering %d unit(s) of %s that failed QC (attempt %d)", len(units), base.shard_id, attempt
        )
        run_keys = run_attempt(retry_key)
        runs.append(run_keys)
        qc_out = read_manifest(ctx.store, run_keys[STEP], StepManifest)
        for u in units:
            out = qc_out.ok(u.unit_id)
            if out is None:  # the re-render itself failed: the last attempt that was checked stands
                error = qc_out.units[u.unit_id].error if u.unit_id in qc_out.units else "no output"
                attempts[u.unit_id].append(
                    {"seed": u.seed, "verdict": "error", "failed": [], "rerender": False, "error": error}
                )
                continue
            attempts[u.unit_id].append(_attempt_summary(ctx, out, u.seed))
    if not runs:
        return shard_key, dict(keys)
    return _merge(ctx, base, shard_key, keys, runs, attempts)


def _merge(
    ctx: StepContext,
    base: ShardManifest,
    shard_key: str,
    keys: Mapping[str, str],
    runs: Sequence[Mapping[str, str]],
    attempts: Mapping[str, list[dict[str, Any]]],
) -> tuple[str, dict[str, str]]:
    """Write the shard and stage manifests of each unit's last good attempt; returns their keys."""
    digest = short_digest({"shard": shard_key, "runs": [dict(sorted(r.items())) for r in runs]})
    folder = f"{base.prefix.strip('/')}/{base.campaign_id}/_shards/{base.shard_id}/rerendered/{digest}"
    # a re-rendered unit takes every output of an attempt that got through QC, never a mix of attempts
    qc_runs = [read_manifest(ctx.store, r[STEP], StepManifest) for r in runs]
    checked = [{uid for uid in m.units if m.ok(uid) is not None} for m in qc_runs]
    merged_keys: dict[str, str] = {}
    for stage, key in keys.items():
        manifest = read_manifest(ctx.store, key, StepManifest)
        units = dict(manifest.units)
        for run_keys, ok_ids in zip(runs, checked):
            if stage in run_keys:
                later = read_manifest(ctx.store, run_keys[stage], StepManifest)
                units |= {uid: out for uid, out in later.units.items() if uid in ok_ids}
        if stage == STEP:
            units = {
                uid: out.model_copy(update={"details": {**out.details, "attempts": attempts[uid]}})
                if uid in attempts
                else out
                for uid, out in units.items()
            }
        merged_keys[stage] = validate_key(f"{folder}/{stage}/manifest.json")
        write_manifest(ctx.store, merged_keys[stage], manifest.model_copy(update={"units": units}))
    # each unit's seed is that of its last attempt with outputs
    last_ok = {
        uid: next((a["seed"] for a in reversed(atts) if a["verdict"] != "error"), None)
        for uid, atts in attempts.items()
    }
    shard_units = [
        u.model_copy(update={"seed": s, "sampling": {**u.sampling, "seed": s}})
        if (s := last_ok.get(u.unit_id)) is not None and s != u.seed
        else u
        for u in base.units
    ]
    merged_shard = validate_key(f"{folder}/shard.json")
    write_manifest(ctx.store, merged_shard, base.model_copy(update={"units": shard_units}))
    return merged_shard, merged_keys


def main(argv: Sequence[str] | None = None) -> int:
    return step_main(STEP, run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
