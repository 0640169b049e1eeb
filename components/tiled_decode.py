"""tiled_decode: the final latents of each unit to an H.264 mp4, tile by tile, streamed to the encoder.

The VAE decodes with the release's tile arithmetic. Under torchrun the tiles are split across the ranks and
assembled on rank 0, which streams the frames to ffmpeg and stores ``video.mp4`` (silent; foley adds sound
later). Avatar samples whole windows (33 latent frames per 129 video frames), so its decoded video is cut to the
unit's frames, as the release cuts it to the voice. ``python -m components.tiled_decode --shard KEY --input
latents=KEY``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from components.runtime.manifest import (
    ShardManifest,
    StepManifest,
    UnitOutput,
    content_key,
    read_manifest,
)
from components.runtime.models import load_vae
from components.runtime.step import (
    StepContext,
    artifact_ref,
    existing_artifacts,
    step_main,
    unit_failed,
    upstream_failure,
    write_step_manifest,
)
from components.runtime.tensors import get_tensors

__all__ = ["STEP", "main", "run"]

STEP = "tiled_decode"
OUTPUT = "video.mp4"

log = logging.getLogger("adrender.tiled_decode")


def run(ctx: StepContext, shard_key: str, upstream: Mapping[str, str]) -> str:
    """Decode a shard (needs ``upstream['latents']``); returns the step manifest key ("" on ranks > 0)."""
    import torch

    from components.dit_sample import _agree, _init_group
    from components.runtime.media import VideoWriter
    from model_core.vision import official_tiling

    if "latents" not in upstream:
        raise ValueError(f"{STEP} needs --input latents=<dit_sample manifest key>")
    group = _init_group()
    rank = group.rank() if group is not None else 0
    shard = read_manifest(ctx.store, shard_key, ShardManifest)
    sampled = read_manifest(ctx.store, upstream["latents"], StepManifest)
    started = time.perf_counter()
    outputs: dict[str, UnitOutput] = {}
    with ctx.telemetry(shard.campaign_id, STEP, shard.index) as telemetry:
        for unit in shard.units:
            failed = upstream_failure(unit.unit_id, (sampled,))
            src = sampled.ok(unit.unit_id)
            if failed is not None or src is None:
                outputs[unit.unit_id] = failed or UnitOutput(unit_id=unit.unit_id, status="failed")
                telemetry.unit_done("failed")
                continue
            t0 = time.perf_counter()
            payload = {
                "latents": src.artifacts["latents"].sha256,
                "fps": unit.fps,
                "vae": unit.models["vae"],
                "frames": unit.frames,
            }
            key = content_key(shard.prefix, shard.campaign_id, unit.unit_id, STEP, payload, OUTPUT)
            found = _agree(group, existing_artifacts(ctx.store, {"video": key}) if rank == 0 else None)
            if found is not None:
                outputs[unit.unit_id] = UnitOutput(unit_id=unit.unit_id, status="skipped", artifacts=found)
                telemetry.unit_done("skipped")
                continue
            try:
                vae = load_vae(ctx, shard.pin("vae", unit))
                latents = get_tensors(ctx.store, src.artifacts["latents"].key)[0]["latents"]
                with torch.no_grad():
                    pixels = _decode(vae, latents, group, official_tiling(vae), ctx.device)
                if rank == 0:
                    assert pixels is not None
                    path = ctx.scratch("decode") / f"{unit.unit_id}-{os.getpid()}.mp4"
                    if pixels.shape[2] < unit.frames:
                        raise ValueError(
                            f"the latents decode to {pixels.shape[2]} frames, fewer than the unit's {unit.frames}"
                        )
                    pixels = pixels[:, :, : unit.frames]  # Avatar: whole windows, cut to the voice's frames
                    frames = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                    with VideoWriter(path, fps=unit.fps) as writer:
                        for f in range(frames.shape[1]):
                            writer.write(frames[:, f].permute(1, 2, 0).contiguous().cpu().numpy())
                    ctx.store.put_file(key, path, metadata={"format": "mp4"})
                    path.unlink(missing_ok=True)
                    ref = artifact_ref(ctx.store, key)
                    telemetry.bytes_moved("upload", ref.size)
                    outputs[unit.unit_id] = UnitOutput(
                        unit_id=unit.unit_id,
                        status="ok",
                        artifacts={"video": ref},
                        seconds=round(time.perf_counter() - t0, 3),
                        details={"frames": int(frames.shape[1]), "height": unit.height, "width": unit.width},
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
    vaes = sorted({u.models["vae"] for u in shard.units})
    return write_step_manifest(ctx, shard, shard_key, STEP, upstream, outputs, started, vaes)


def _decode(vae: Any, latents: Any, group: Any, tiling: Any, device: str) -> Any:
    """Pixels [1, 3, F, H, W] in [-1, 1] on rank 0 (None elsewhere)."""
    from model_core.vae import tiled_decode
    from model_core.vision import VAE_SCALING_FACTOR

    p = next(vae.parameters())
    z = (latents / VAE_SCALING_FACTOR).to(device=p.device, dtype=p.dtype)
    return tiled_decode(vae, z, tiling, group, dst=0 if group is not None else None)


def main(argv: Sequence[str] | None = None) -> int:
    code = step_main(STEP, run, argv, description=__doc__ or "")
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
