"""vae_encode: the latent-space conditions of each unit: identity latents, edit-video latents, audio features.

Per unit one tensor artifact ``cond.safetensors``:

- ``ref_latents`` [1, C, K, h, w]: a VAE sample of each identity image (white-padded to the unit's size), the
  K subjects along time (one subject is the release's input);
- ``blank_ref_latents``: the same encode of a white image, for identity guidance (``ip_cfg_scale > 0``);
- ``video_cond`` [1, 2C, T, h, w]: editing mode, the masked source video and the mask, conformed to the
  unit's size and frame count;
- ``audio_states`` [1, F, 10, L, D]: audio mode, Whisper features per video frame.

Avatar units (mode ``avatar``) get the release's inputs instead: ``ref_latents`` [1, C, 33, h, w] (the presenter
image, scaled to cover the unit's size and centre-cropped, repeated over 129 frames and encoded), ``face_mask``
[1, 1, 1, h, w] (the largest face the registered face detector finds, its box enlarged 3x; a presenter image
without a detectable face fails the unit with a message naming the file) and ``audio_states`` zero-padded to the
frames the sliding window reads (`model_core.sampling.avatar`).

The VAE samples its distribution with a generator seeded by the unit's seed, so a variant's conditions are
reproducible and differ between variants as the release's do.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from components.runtime.manifest import StepManifest, UnitOutput, UnitPlan, content_key
from components.runtime.models import load_face_detector, load_vae, load_whisper
from components.runtime.step import StepContext, shard_step, step_main, unit_loop
from components.runtime.tensors import TensorMeta, dump_tensors

__all__ = ["STEP", "main", "run"]

STEP = "vae_encode"
OUTPUT = "cond.safetensors"


def _needs(unit: UnitPlan) -> bool:
    return bool(unit.subject_images) or unit.audio_uri is not None or unit.edit_video is not None


def run(ctx: StepContext, shard_key: str, upstream: Mapping[str, str] | None = None) -> str:
    """Encode the conditions of a shard; returns the step manifest key. Text-to-video units need none: their
    output has no artifacts."""

    def work(shard: Any, ups: Mapping[str, StepManifest], telemetry: Any) -> dict[str, UnitOutput]:
        def keys_for(unit: UnitPlan) -> dict[str, str]:
            if not _needs(unit):
                return {}
            payload = {
                "assets": {u: unit.assets.get(u, u) for u in _uris(unit)},
                "size": [unit.height, unit.width, unit.frames],
                "seed": unit.seed,
                "identity_guidance": float(unit.sampling.get("ip_cfg_scale") or 0.0) > 0,
                "expand": unit.edit_mask_expand,
                "models": [unit.models.get(r) for r in ("vae", "audio_encoder", "face_detector")],
            }
            return {"cond": content_key(shard.prefix, shard.campaign_id, unit.unit_id, STEP, payload, OUTPUT)}

        def body(unit: UnitPlan, keys: Mapping[str, str]) -> dict[str, Any]:
            data, notes = _encode(ctx, shard, unit)
            ctx.store.put_bytes(keys["cond"], data, metadata={"format": "safetensors"})
            return {"notes": notes} if notes else {}

        return unit_loop(ctx, shard, STEP, keys_for, body, telemetry=telemetry)

    roles = ("vae", "audio_encoder", "face_detector")
    return shard_step(ctx, STEP, shard_key, upstream or {}, work, model_roles=roles)


def _uris(unit: UnitPlan) -> list[str]:
    extra = [u for u in (unit.audio_uri, unit.edit_video, unit.edit_mask) if u is not None]
    return [*unit.subject_images, *extra]


def _encode(ctx: StepContext, shard: Any, unit: UnitPlan) -> tuple[bytes, list[str]]:
    import torch

    from components.runtime.assets import localize
    from model_core.io.ffmpeg_decode import read_image
    from model_core.vision import identity_latents, white_identity_latents

    tensors: dict[str, torch.Tensor] = {}
    meaning: dict[str, str] = {}
    notes: list[str] = []
    cache = ctx.scratch("assets")
    generator = torch.Generator().manual_seed(unit.seed)
    if unit.mode == "avatar":
        tensors, meaning, notes = _avatar_conditions(ctx, shard, unit, generator)
        return _dump(unit, tensors, meaning, notes), notes
    with torch.no_grad():
        if _needs(unit):
            vae = load_vae(ctx, shard.pin("vae", unit))
        if unit.subject_images:
            refs = [
                identity_latents(
                    vae, read_image(localize(uri, ctx.settings, cache)), unit.height, unit.width, generator
                )
                for uri in unit.subject_images
            ]
            tensors["ref_latents"] = torch.cat(refs, dim=2)
            meaning["ref_latents"] = "scaled VAE samples of the identity images [1, C, K, h, w]"
            if float(unit.sampling.get("ip_cfg_scale") or 0.0) > 0:
                blank = white_identity_latents(vae, unit.height, unit.width, generator)
                tensors["blank_ref_latents"] = blank.expand_as(tensors["ref_latents"]).contiguous()
                meaning["blank_ref_latents"] = "the same encode of a white image (identity guidance)"
        if unit.edit_video is not None and unit.edit_mask is not None:
            from model_core.vision import edit_video_condition, load_edit_video

            edit = load_edit_video(
                localize(unit.edit_video, ctx.settings, cache),
                localize(unit.edit_mask, ctx.settings, cache),
                unit.edit_mask_expand,
                expected_frames=unit.frames,
                expected_size=(unit.height, unit.width),
                conform=True,
            )
            tensors["video_cond"] = edit_video_condition(vae, edit, generator)
            meaning["video_cond"] = "masked video and mask latents [1, 2C, T, h, w]"
        if unit.audio_uri is not None:
            whisper = load_whisper(ctx, shard.pin("audio_encoder", unit))
            audio = whisper.encode_file(localize(unit.audio_uri, ctx.settings, cache), unit.frames)
            tensors["audio_states"] = audio.features
            meaning["audio_states"] = "Whisper hidden states per video frame [1, F, 10, L, D]"
            notes += list(audio.notes)
    return _dump(unit, tensors, meaning, notes), notes


def _dump(unit: UnitPlan, tensors: Mapping[str, Any], meaning: dict[str, str], notes: list[str]) -> bytes:
    meta = TensorMeta(
        step=STEP,
        meaning=meaning,
        model_versions={
            r: unit.models[r] for r in ("vae", "audio_encoder", "face_detector") if r in unit.models
        },
        extra={"seed": unit.seed, "size": [unit.height, unit.width], "frames": unit.frames, "notes": notes},
    )
    return dump_tensors({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, meta)


class NoFaceError(ValueError):
    """An Avatar presenter image in which the face detector finds no face."""


def _avatar_conditions(
    ctx: StepContext, shard: Any, unit: UnitPlan, generator: Any
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Avatar's reference latents, face mask and padded voice features of one unit."""
    import torch

    from components.runtime.assets import localize
    from model_core.io.ffmpeg_decode import read_image
    from model_core.sampling.avatar import (
        avatar_face_mask,
        avatar_reference_pixels,
        cover_crop,
        pad_avatar_audio,
    )
    from model_core.vision.latents import encode_sample

    if len(unit.subject_images) != 1 or unit.audio_uri is None:
        raise ValueError(
            f"an Avatar unit needs one presenter image and a voice track, got {len(unit.subject_images)} "
            f"image(s) and audio {unit.audio_uri!r}"
        )
    cache = ctx.scratch("assets")
    uri = unit.subject_images[0]
    image = cover_crop(read_image(localize(uri, ctx.settings, cache)), unit.height, unit.width)
    latent_frames, h, w = unit.latent_size
    face = load_face_detector(ctx, shard.pin("face_detector", unit)).largest(image)
    if face is None:
        raise NoFaceError(
            f"presenter image {uri}: {unit.models['face_detector']} finds no face in it (at "
            f"{unit.height}x{unit.width}); Avatar drives the face with the voice, so use a photo that shows the "
            "presenter's face clearly, front-facing and not cut by the frame"
        )
    with torch.no_grad():
        vae = load_vae(ctx, shard.pin("vae", unit))
        ref = encode_sample(vae, avatar_reference_pixels(image), generator)
        whisper = load_whisper(ctx, shard.pin("audio_encoder", unit))
        audio = whisper.encode_file(localize(unit.audio_uri, ctx.settings, cache), unit.frames)
    tensors = {
        "ref_latents": ref,
        "face_mask": avatar_face_mask(face.box, (unit.height, unit.width), (h, w)),
        "audio_states": pad_avatar_audio(audio.features, latent_frames),
    }
    meaning = {
        "ref_latents": "scaled VAE sample of the presenter image over 129 frames [1, C, 33, h, w]",
        "face_mask": "the presenter's face box enlarged 3x, at the latent size [1, 1, 1, h, w]",
        "audio_states": "Whisper hidden states per video frame, zero-padded for the sliding window [1, A, 10, L, D]",
    }
    notes = [*audio.notes, f"face box {tuple(round(v, 1) for v in face.box)} score {face.score:.2f}"]
    return tensors, meaning, notes


def main(argv: Sequence[str] | None = None) -> int:
    return step_main(STEP, lambda ctx, shard, ups: run(ctx, shard, ups), argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
