"""v2a_foley: sound for each decoded video (HunyuanVideo-Foley), loudness-normalised and muxed into the mp4.

For every unit with foley on: the decoded frames go to SigLIP2 (8 fps, the encoder's square size: 512 px
released) and to the Synchformer (25 fps, 224 px, 16-frame segments), the foley prompt (the job's foley prompt,
else its prompt) and its negative to CLAP; the MMDiT samples DAC-VAE latents (flow matching, Euler, 50 steps, CFG
4.5 as released) and the DAC decodes them to 48 kHz. The bed is brought to the job's delivery loudness (integrated
loudness within ±1 LU of the target, true peak under the ceiling; ``components.runtime.soundtrack``, measured with
the project's EBU R128 meter) and muxed into the mp4 as AAC 48 kHz stereo. An audio-mode job that asks for foley
gets the bed mixed under its driving voice, ducked while the voice speaks (voice at least 10 LU above the bed);
with foley off (the audio-mode default) the voice alone is the soundtrack, normalised the same way.

Foley sampling writes a step checkpoint every ``checkpoint_every`` steps (the shard's setting, as for the DiT)
beside the unit's outputs; a rerun after a kill resumes from the newest one and delivers the same bytes. The
encoders are on the device only while they extract features (the job's ``foley.offload``, carried on the unit as
``foley_offload``: ``encoders`` by default; ``sequential`` also parks the MMDiT and the DAC decoder outside their
phases; ``none`` keeps everything on the device).

Outputs per unit: ``video`` (the muxed mp4) and, with foley, ``foley`` (``foley.wav``: the bed as it sits in the
soundtrack). The manifest details record the bed's integrated loudness (HunyuanVideo-Foley can produce gibberish
speech or music; QC reads it), the soundtrack's loudness and true peak as measured in the final mp4, and, with a
voice, the smallest voice-over-bed margin. A unit with neither foley nor a voice passes its decoded video on
unchanged (the same artifact).

``python -m components.v2a_foley --shard KEY --input video=KEY``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.runtime.manifest import ShardManifest, StepManifest, UnitOutput, UnitPlan, content_key
from components.runtime.models import load_clap, load_foley, load_siglip
from components.runtime.step import StepContext, shard_step, step_main, unit_loop, upstream_failure
from components.runtime.step_checkpoints import delete_checkpoints, latest_checkpoint, write_checkpoint
from components.runtime.telemetry import StepTelemetry

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from model_core.audio.foley.offload import FoleyOffload
    from model_core.sampling import StepCheckpoint

__all__ = ["FOLEY_GUIDANCE", "FOLEY_STEPS", "STEP", "main", "run"]

STEP = "v2a_foley"
FOLEY_STEPS = 50  # the release's defaults (infer.py)
FOLEY_GUIDANCE = 4.5
TOLERANCE_LU = 1.0  # the delivery rule: integrated loudness within ±1 LU of the target
MODEL_ROLES = ("foley", "foley_image_encoder", "foley_text_encoder")

log = logging.getLogger("adrender.v2a_foley")


def run(
    ctx: StepContext,
    shard_key: str,
    upstream: Mapping[str, str],
    *,
    offload: FoleyOffload | str | None = None,
) -> str:
    """Add sound to a shard's decoded videos (needs ``upstream['video']``); returns the step manifest key.

    ``offload``: what leaves the device between a clip's phases (``model_core.audio.foley.offload.FoleyOffload``);
    unset, each unit's own (the job's ``foley.offload``); given, it overrides every unit's. ``encoders`` (the
    default: the encoders are off the device while the MMDiT and the DAC run; the peak stays the extraction's,
    beside the MMDiT), ``sequential`` (also the MMDiT and the DAC decoder: the lowest peak, at two host transfers
    of the MMDiT per unit) or ``none``. docs/BENCHMARKS.md ("Foley") has the footprints."""
    override = None if offload is None else _offload_mode(offload, "offload")
    if "video" not in upstream:
        raise ValueError(f"{STEP} needs --input video=<tiled_decode manifest key>")

    def work(
        shard: ShardManifest, ups: Mapping[str, StepManifest], telemetry: StepTelemetry
    ) -> dict[str, UnitOutput]:
        decoded = ups["video"]
        outputs: dict[str, UnitOutput] = {}
        for unit in shard.units:
            if _has_sound(unit):
                continue
            # no sound: the decoded video is the output, the same object (publish always reads this step)
            failed = upstream_failure(unit.unit_id, (decoded,))
            src = decoded.ok(unit.unit_id)
            if failed is not None or src is None:
                outputs[unit.unit_id] = failed or UnitOutput(unit_id=unit.unit_id, status="failed")
                telemetry.unit_done("failed")
                continue
            video = src.artifacts["video"]
            outputs[unit.unit_id] = UnitOutput(
                unit_id=unit.unit_id, status="ok", artifacts={"video": video}, details={"foley": "off"}
            )
            telemetry.unit_done("ok")

        def keys_for(unit: UnitPlan) -> dict[str, str]:
            foley = {
                "models": {role: unit.models.get(role) for role in MODEL_ROLES},
                "prompt": unit.foley_prompt,
                "negative_prompt": unit.foley_negative_prompt,
                "seed": unit.seed,
                "steps": FOLEY_STEPS,
                "guidance": FOLEY_GUIDANCE,
            }
            payload = {
                "video": decoded.units[unit.unit_id].artifacts["video"].sha256,
                "foley": foley if unit.foley else None,
                "loudness_lufs": unit.loudness_lufs,
                "true_peak_dbtp": unit.true_peak_dbtp,
                "voice": unit.assets.get(unit.audio_uri) if unit.audio_uri else None,
            }
            files = (
                (("video", "video.mp4"), ("foley", "foley.wav")) if unit.foley else (("video", "video.mp4"),)
            )
            return {
                name: content_key(shard.prefix, shard.campaign_id, unit.unit_id, STEP, payload, file)
                for name, file in files
            }

        def body(unit: UnitPlan, keys: Mapping[str, str]) -> dict[str, Any]:
            video_key = decoded.units[unit.unit_id].artifacts["video"].key
            mode = override or _offload_mode(unit.foley_offload, f"unit {unit.unit_id}'s foley_offload")
            return _render(ctx, shard, unit, video_key, keys, mode)

        sound_units = shard.model_copy(update={"units": [u for u in shard.units if _has_sound(u)]})
        outputs |= unit_loop(ctx, sound_units, STEP, keys_for, body, telemetry=telemetry, upstream=[decoded])
        return {u.unit_id: outputs[u.unit_id] for u in shard.units}

    return shard_step(ctx, STEP, shard_key, upstream, work, model_roles=MODEL_ROLES)


def _offload_mode(value: FoleyOffload | str, what: str) -> FoleyOffload:
    from model_core.audio.foley.offload import FoleyOffload

    try:
        return FoleyOffload(value)
    except ValueError:
        known = ", ".join(m.value for m in FoleyOffload)
        raise ValueError(f"{STEP}: {what}={value!r} is not one of {known}") from None


def _has_sound(unit: UnitPlan) -> bool:
    """Foley on, or a driving voice (audio mode): the voice alone is the soundtrack when foley is off."""
    return unit.foley or unit.audio_uri is not None


def _render(
    ctx: StepContext,
    shard: ShardManifest,
    unit: UnitPlan,
    video_key: str,
    keys: Mapping[str, str],
    offload: FoleyOffload,
) -> dict[str, Any]:
    """One unit: features, sampling, decode, soundtrack, mux; stores both outputs and returns the details."""
    import numpy as np

    from components.runtime import media, soundtrack

    scratch = ctx.scratch(STEP, f"{unit.unit_id}-{os.getpid()}")
    silent = scratch / "decoded.mp4"
    ctx.store.get_file(video_key, silent)
    info = media.probe(silent)
    fps = info.fps or float(unit.fps)
    frames = np.stack(list(media.read_video_frames(silent)))  # [T, H, W, 3] uint8
    seconds = frames.shape[0] / fps
    n = round(seconds * soundtrack.RATE)

    details: dict[str, Any] = {"foley": "on" if unit.foley else "off", "audio_seconds": round(seconds, 3)}
    folder = keys["video"].rsplit("/", 1)[0]  # the unit's output folder, named by the content hash
    if unit.foley:
        bed, resumed_from = _foley_bed(ctx, shard, unit, frames, fps, folder, offload)
        bed = bed[:n]
        bed = np.pad(bed - bed.mean(), (0, n - bed.shape[0]))  # no DC offset: it only eats true-peak headroom
        details["foley_steps"] = FOLEY_STEPS
        details["foley_resumed_from"] = resumed_from
    else:
        bed = np.zeros(n)

    voice = None
    if unit.audio_uri is not None:
        from components.runtime.assets import localize

        voice_file = localize(unit.audio_uri, ctx.settings, ctx.scratch("assets"))
        voice = soundtrack.read_audio(voice_file)[:n]
        voice = np.pad(voice, (0, n - voice.shape[0]))
        if unit.foley:
            bed, cut = soundtrack.duck_under(bed, voice)
            details["duck_max_cut_db"] = round(cut, 2)
    mix = bed if voice is None else voice + bed
    stereo = np.stack([mix, mix])  # the delivery format is stereo; the bed is mono

    target, ceiling = unit.loudness_lufs, unit.true_peak_dbtp
    result = soundtrack.normalise(stereo, target, ceiling, scratch)
    gain, headroom = result.gain, soundtrack.AAC_HEADROOM_DB
    muxed = scratch / "video.mp4"
    final = _mux(silent, result.samples, scratch, muxed)
    # second pass on the delivered file: the AAC encoder moves loudness and peaks a little
    for _ in range(2):
        if result.silent or seconds < soundtrack.BLOCK_SECONDS:
            break  # nothing to correct, or too short for an integrated loudness
        error = target - final.integrated_lufs
        over = final.true_peak_dbtp - ceiling
        if abs(error) <= TOLERANCE_LU / 2 and over <= 0:
            break
        headroom += max(0.0, over + 0.2)
        scale = 10 ** (error / 20)
        limiter = soundtrack.limiter_gain(stereo * gain * scale, ceiling - headroom)
        gain = gain * scale * limiter
        final = _mux(silent, stereo * gain, scratch, muxed)

    bed_out = bed * gain
    if unit.foley:
        bed_file = soundtrack.write_wav(scratch / "foley.wav", bed_out)
        ctx.store.put_file(keys["foley"], bed_file, metadata={"format": "wav"})
        bed_level = soundtrack.measure(np.stack([bed_out, bed_out]), scratch)  # as it plays: both channels
        details["bed_lufs"] = _finite(bed_level.integrated_lufs)
        details["bed_true_peak_dbtp"] = _finite(bed_level.true_peak_dbtp)
    details |= {
        "soundtrack": " + ".join(n for n, on in (("voice", voice is not None), ("foley", unit.foley)) if on),
        "soundtrack_lufs": _finite(final.integrated_lufs),
        "soundtrack_true_peak_dbtp": _finite(final.true_peak_dbtp),
        "target_lufs": target,
        "ceiling_dbtp": ceiling,
        "gain_db": round(result.gain_db, 2),
        "silent": result.silent,
    }
    if seconds < soundtrack.BLOCK_SECONDS:
        details["loudness_note"] = (
            f"{seconds:.2f} s is shorter than one 400 ms gating block: normalised on the clip looped to 3 s"
        )
    if voice is not None and unit.foley:
        margin = soundtrack.voice_over_bed_lu(voice * gain, bed_out, scratch)
        details["voice_over_bed_lu"] = None if margin is None else round(margin, 2)
    ctx.store.put_file(keys["video"], muxed, metadata={"format": "mp4"})
    delete_checkpoints(ctx, folder)  # the unit is done: its sampling checkpoints are spent
    for path in scratch.iterdir():
        path.unlink(missing_ok=True)
    scratch.rmdir()
    return details


def _finite(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def _mux(video: Path, samples: NDArray[np.float64], scratch: Path, out: Path) -> Any:
    """Mux the soundtrack into the video as AAC; the project meter's reading of the muxed file."""
    from components.runtime import media, soundtrack

    wav = soundtrack.write_wav(scratch / "soundtrack.wav", samples)
    media.mux_audio(video, wav, out)
    duration = samples.shape[-1] / soundtrack.RATE
    if duration < soundtrack.BLOCK_SECONDS:
        return soundtrack.measure(samples, scratch)  # the file itself is too short to measure
    return media.loudness(out)


def _foley_bed(
    ctx: StepContext,
    shard: ShardManifest,
    unit: UnitPlan,
    frames: NDArray[np.uint8],
    fps: float,
    folder: str,
    offload: FoleyOffload,
) -> tuple[NDArray[np.float64], int]:
    """(the mono 48 kHz foley bed of the decoded frames, float64, as long as the 25 fps frames last; the sampling
    step it resumed from).

    Every ``shard.checkpoint_every`` sampling steps a ``StepCheckpoint`` goes to ``folder/ckpt-NNNN.safetensors``
    (as ``dit_sample`` writes them); a rerun after a kill resumes from the newest one, bit for bit. ``offload``
    says which networks are parked on the CPU outside their phase (``model_core.audio.foley.offload``).
    """
    import numpy as np
    import torch

    from model_core.audio.foley.offload import decoder_modules, park
    from model_core.audio.foley.pipeline import FoleyEncoders, foley_audio

    foley = load_foley(ctx, shard.pin("foley", unit), offload)  # on the CPU what `offload` moves later
    if offload.generator:
        # a copy cached by a unit of another mode may still be on the device: off it before the encoders load
        park((foley.dit, *decoder_modules(foley.dac)), ctx.device)
    siglip, image_size = load_siglip(ctx, shard.pin("foley_image_encoder", unit))
    clap = load_clap(ctx, shard.pin("foley_text_encoder", unit))
    resume, resume_key = latest_checkpoint(ctx, folder)
    if resume is not None:
        log.info(
            "%s %s: resuming foley sampling at step %d from %s",
            STEP,
            unit.unit_id,
            resume.step_index,
            resume_key,
        )

    def on_checkpoint(ckpt: StepCheckpoint) -> None:
        write_checkpoint(ctx, folder, ckpt)

    audio = foley_audio(
        foley,
        FoleyEncoders(siglip, image_size, clap),
        torch.from_numpy(frames),
        fps,
        unit.foley_prompt,
        unit.foley_negative_prompt,
        device=ctx.device,
        seed=unit.seed,
        num_steps=FOLEY_STEPS,
        guidance_scale=FOLEY_GUIDANCE,
        offload=offload,
        checkpoint_every=shard.checkpoint_every,
        on_checkpoint=on_checkpoint,
        resume_from=resume,
    )  # no progress hook: the runner's bars count one sampling loop per unit, the DiT's
    resumed_from = resume.step_index if resume is not None else 0
    return np.asarray(audio.numpy(), dtype=np.float64), resumed_from


def main(argv: Sequence[str] | None = None) -> int:
    return step_main(STEP, run, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
