"""dit_sample: sample the final latents of every unit of a shard; a torchrun entry with sequence parallelism.

One DiT load per shard. Under torchrun every rank runs this module; the image tokens are split across the
ranks (Ulysses, degree = world size; gloo on CPU, NCCL on GPU) and rank 0 alone writes to the store. A world
that does not divide the attention heads (16 GPUs for 24 heads) runs CFG-parallel: two SP groups of half. Every
``checkpoint_every`` steps rank 0 stores a step checkpoint beside the unit's output; a restarted task
resumes each unfinished unit from its latest checkpoint (bit-identical to an uninterrupted run) and skips
finished units. ``python -m torch.distributed.run --nproc-per-node 8 -m components.dit_sample --shard KEY
--input text=KEY --input cond=KEY``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from components.runtime.manifest import (
    ShardManifest,
    StepManifest,
    UnitOutput,
    UnitPlan,
    content_key,
    read_manifest,
)
from components.runtime.models import load_dit
from components.runtime.step import (
    StepContext,
    artifact_ref,
    existing_artifacts,
    step_main,
    unit_failed,
    upstream_failure,
    write_step_manifest,
)
from components.runtime.step_checkpoints import delete_checkpoints, latest_checkpoint, write_checkpoint
from components.runtime.tensors import TensorMeta, dump_tensors, get_tensors

if TYPE_CHECKING:
    import torch

    from model_core.sampling import Conditioning, SamplingOptions, StepCheckpoint

__all__ = ["STEP", "main", "parallel_options", "run"]

STEP = "dit_sample"
OUTPUT = "latents.safetensors"
log = logging.getLogger("adrender.dit_sample")


def _payload(unit: UnitPlan, text: StepManifest, cond: StepManifest) -> dict[str, Any]:
    c = cond.units[unit.unit_id].artifacts.get("cond")
    return {
        "text": text.units[unit.unit_id].artifacts["text"].sha256,
        "cond": c.sha256 if c is not None else None,
        "sampling": unit.sampling,
        "latent": list(unit.latent_size),
        "audio_strength": unit.audio_strength,
        "dit": unit.models["dit"],
    }


def conditioning(ctx: StepContext, unit: UnitPlan, text: StepManifest, cond: StepManifest) -> Conditioning:
    """The sampler's input of a unit, from its text and latent-condition artifacts."""
    import torch

    from model_core.sampling import BranchInputs, Conditioning

    t, _ = get_tensors(ctx.store, text.units[unit.unit_id].artifacts["text"].key)
    ref = cond.units[unit.unit_id].artifacts.get("cond")
    c: dict[str, torch.Tensor] = get_tensors(ctx.store, ref.key)[0] if ref is not None else {}
    audio = c.get("audio_states")
    video = c.get("video_cond")
    if unit.mode == "avatar":
        return _avatar_conditioning(unit, t, c)
    positive = BranchInputs(
        t["cond_states"], t["cond_mask"], t["cond_pooled"], c.get("ref_latents"), audio, video
    )
    negative = None
    if "uncond_states" in t:
        # plain CFG: the release repeats the real identity latents and the video condition for the negative
        # branch; its audio is silence
        negative = BranchInputs(
            t["uncond_states"],
            t["uncond_mask"],
            t["uncond_pooled"],
            c.get("ref_latents"),
            torch.zeros_like(audio) if audio is not None else None,
            video,
        )
    blank = None
    if "blank_ref_latents" in c:
        blank = BranchInputs(
            t["cond_states"], t["cond_mask"], t["cond_pooled"], c["blank_ref_latents"], audio, video
        )
    return Conditioning(
        latent_size=unit.latent_size,
        cond=positive,
        uncond=negative,
        cond_blank_identity=blank,
        audio_strength=unit.audio_strength,
    )


# the motion inputs HunyuanVideo-Avatar infers with (hymm_sp/data_kits/audio_dataset.py): expression 30, head pose 25
AVATAR_MOTION_EXP = 30.0
AVATAR_MOTION_POSE = 25.0


def _avatar_conditioning(unit: UnitPlan, t: Mapping[str, Any], c: Mapping[str, Any]) -> Conditioning:
    """Avatar's branches: the prompt with the voice; the negative prompt with zero audio and the same reference
    and face mask (the sampler builds the second phase's negative branch from the positive one)."""
    import dataclasses

    import torch

    from model_core.sampling import BranchInputs, Conditioning

    missing = [k for k in ("ref_latents", "face_mask", "audio_states") if k not in c]
    if missing:
        raise ValueError(
            f"{unit.unit_id}: the vae_encode artifact lacks {', '.join(missing)}; it was not written for an "
            "Avatar unit: rerun vae_encode"
        )
    extras = {
        "ref_latents": c["ref_latents"],
        "face_mask": c["face_mask"],
        "motion_exp": torch.full((1, 4), AVATAR_MOTION_EXP),
        "motion_pose": torch.full((1, 4), AVATAR_MOTION_POSE),
        "fps": torch.full((1,), float(unit.fps)),
    }
    positive = BranchInputs(
        t["cond_states"], t["cond_mask"], t["cond_pooled"], audio_states=c["audio_states"], **extras
    )
    negative = None
    if "uncond_states" in t:
        negative = dataclasses.replace(
            positive,
            text_states=t["uncond_states"],
            text_mask=t["uncond_mask"],
            text_pooled=t["uncond_pooled"],
            audio_states=torch.zeros_like(c["audio_states"]),
        )
    return Conditioning(
        latent_size=unit.latent_size, cond=positive, uncond=negative, audio_strength=unit.audio_strength
    )


def _init_group() -> Any:
    """The default process group under torchrun (WORLD_SIZE > 1), else None."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        import torch

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.group.WORLD


def _agree(group: Any, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (store reads must lead every rank to the same decision)."""
    if group is None:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def parallel_options(options: SamplingOptions, world: int, num_heads: int) -> SamplingOptions:
    """``options`` with CFG-parallel turned on when the world is too large a Ulysses degree for the heads.

    Ulysses hands each rank ``num_heads / degree`` heads, so 24 heads allow degrees 1, 2, 3, 4, 6, 8, 12, 24;
    16 GPUs over two nodes are no such degree, but as two CFG halves they are two SP groups of 8. Raises
    ``ValueError`` naming the usable world sizes when neither layout fits.
    """
    if world <= 1 or options.cfg_parallel or num_heads % world == 0:
        return options
    half = world // 2
    if (
        world % 2 == 0
        and num_heads % half == 0
        and options.num_branches == 2
        and options.skip_uncond_from is None
    ):
        return options.with_(cfg_parallel=True)
    plain = [d for d in range(2, num_heads + 1) if num_heads % d == 0]
    doubled = [2 * d for d in plain if 2 * d not in plain]
    raise ValueError(
        f"{world} sampling ranks do not divide the model's {num_heads} attention heads; use {plain} ranks, "
        f"or {doubled} for a job with two CFG branches (cfg_scale > 1, no identity guidance, no "
        "skip_uncond_from), which then runs CFG-parallel"
    )


def run(ctx: StepContext, shard_key: str, upstream: Mapping[str, str]) -> str:
    """Sample a shard (needs ``upstream['text']`` and ``upstream['cond']``); returns the step manifest key
    (an empty string on ranks other than 0)."""
    import torch

    from model_core.parallel.group import ParallelLayout
    from model_core.sampling import SamplingOptions, sample

    for name in ("text", "cond"):
        if name not in upstream:
            raise ValueError(f"{STEP} needs --input {name}=<manifest key>")
    group = _init_group()
    rank = group.rank() if group is not None else 0
    if group is not None and ctx.device.startswith("cuda"):
        ctx.device = f"cuda:{torch.cuda.current_device()}"
    shard = read_manifest(ctx.store, shard_key, ShardManifest)
    text = read_manifest(ctx.store, upstream["text"], StepManifest)
    cond = read_manifest(ctx.store, upstream["cond"], StepManifest)
    started = time.perf_counter()
    outputs: dict[str, UnitOutput] = {}
    telemetry = ctx.telemetry(shard.campaign_id, STEP, shard.index)
    with telemetry:
        model = None
        layouts: dict[bool, ParallelLayout] = {}
        for unit in shard.units:
            failed = upstream_failure(unit.unit_id, (text, cond))
            if failed is not None:
                outputs[unit.unit_id] = failed
                telemetry.unit_done("failed")
                continue
            t0 = time.perf_counter()
            key = content_key(
                shard.prefix, shard.campaign_id, unit.unit_id, STEP, _payload(unit, text, cond), OUTPUT
            )
            folder = key.rsplit("/", 1)[0]
            found = _agree(group, existing_artifacts(ctx.store, {"latents": key}) if rank == 0 else None)
            if found is not None:
                log.info("%s %s: latents exist, skipped (%s)", STEP, unit.unit_id, key)
                outputs[unit.unit_id] = UnitOutput(unit_id=unit.unit_id, status="skipped", artifacts=found)
                telemetry.unit_done("skipped")
                continue
            try:
                if model is None:
                    with telemetry.time_checkpoint_load():
                        model = load_dit(ctx, shard.models[shard.dit])
                options = SamplingOptions(**unit.sampling)
                if group is not None:
                    options = parallel_options(options, group.size(), model.config.num_heads)
                    if options.cfg_parallel not in layouts:  # building one creates process groups: once
                        layouts[options.cfg_parallel] = ParallelLayout.create(
                            group, cfg_parallel=options.cfg_parallel
                        )
                resume, resume_key = latest_checkpoint(ctx, folder) if rank == 0 else (None, None)
                resume = _agree(group, resume)
                start_step = resume.step_index if resume is not None else 0
                if resume is not None:
                    log.info("%s %s: resuming at step %d from %s", STEP, unit.unit_id, start_step, resume_key)
                last = [time.perf_counter()]

                def progress(
                    done: int, total: int, unit_id: str = unit.unit_id, last: list[float] = last
                ) -> None:
                    now = time.perf_counter()
                    telemetry.observe_sampling_step(now - last[0])
                    last[0] = now
                    if rank == 0:
                        ctx.report(unit_id, done, total)

                def on_checkpoint(ckpt: StepCheckpoint, folder: str = folder) -> None:
                    if rank == 0:
                        write_checkpoint(ctx, folder, ckpt)

                with torch.no_grad():
                    latents = sample(
                        model,
                        conditioning(ctx, unit, text, cond),
                        options,
                        group=layouts[options.cfg_parallel] if group is not None else None,
                        checkpoint_every=shard.checkpoint_every,
                        resume_from=resume,
                        on_checkpoint=on_checkpoint,
                        progress=progress,
                    )
                if rank == 0:
                    meta = TensorMeta(
                        step=STEP,
                        meaning={"latents": "final unscaled DiT latents [1, C, T, h, w] (float32)"},
                        model_versions={"dit": unit.models["dit"]},
                        extra={"seed": unit.seed, "sampling": unit.sampling, "resumed_from": start_step},
                    )
                    ctx.store.put_bytes(
                        key,
                        dump_tensors({"latents": latents.float().cpu()}, meta),
                        metadata={"format": "safetensors"},
                    )
                    delete_checkpoints(ctx, folder)
                    ref = artifact_ref(ctx.store, key)
                    telemetry.bytes_moved("upload", ref.size)
                    outputs[unit.unit_id] = UnitOutput(
                        unit_id=unit.unit_id,
                        status="ok",
                        artifacts={"latents": ref},
                        seconds=round(time.perf_counter() - t0, 3),
                        details={
                            "resumed_from": start_step,
                            "steps_run": options.num_steps - start_step,
                            "world_size": group.size() if group is not None else 1,
                        },
                    )
                telemetry.unit_done("ok")
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                if group is not None:
                    raise  # a rank that fails alone would hang the others in the next collective
                outputs[unit.unit_id] = unit_failed(STEP, unit.unit_id, exc, t0)
                telemetry.unit_done("failed")
    if rank != 0:
        return ""
    return write_step_manifest(ctx, shard, shard_key, STEP, upstream, outputs, started, [shard.dit])


def main(argv: Sequence[str] | None = None) -> int:
    code = step_main(STEP, run, argv, description=__doc__ or "")
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
