"""Peak memory and time of tiled against untiled VAE decode, at growing sizes and frame counts.

    python -m benchmarks.vae_tiling                       # CPU, tiny VAE, 64 px / 16-frame tiles, writes docs
    python -m benchmarks.vae_tiling --device cuda --preset hunyuan-vae --tile-px 256 --tile-frames 64 \
        --cases 9x32x32,17x48x48,33x60x104

Each (case, method) runs in a fresh process, so the CPU peak (VmHWM) of one measurement never includes
another's. "Working memory" is the peak minus the memory held just before the decode (weights and latents),
so it counts the output video plus whatever the decode needs on top; tiled decode should stay near
output + one tile's activations, untiled grows with the whole video.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

import torch

from benchmarks._common import (
    cuda_peak_bytes,
    current_rss_bytes,
    format_bytes,
    machine_description,
    markdown_table,
    peak_rss_bytes,
    pick_device,
    reset_cuda_peak,
    reset_peak_rss,
    run_in_subprocess,
    synchronize,
    write_benchmarks_section,
)
from model_core.vae import VAE_PRESETS, CausalVAE3D, TilingConfig, plan_decode, tiled_decode

DEFAULT_CASES = "5x16x16,9x16x16,9x24x24,13x32x32"  # latent T x h x w


def _parse_case(text: str) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in text.lower().split("x"))
    return t, h, w


def measure(device_name: str, preset: str, case: str, method: str, tile_px: int, tile_frames: int) -> dict:
    """One decode in this process; returns seconds, working-memory bytes and output bytes."""
    device = pick_device(device_name)
    torch.manual_seed(0)
    vae = CausalVAE3D(VAE_PRESETS[preset]).eval().to(device)
    t, h, w = _parse_case(case)
    z = torch.randn(1, vae.config.latent_channels, t, h, w, device=device)
    tiling = TilingConfig(tile_sample_size=tile_px, tile_sample_frames=tile_frames)
    with torch.no_grad():
        synchronize(device)
        base = current_rss_bytes()
        reset_peak_rss()
        reset_cuda_peak(device)
        base_cuda = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        start = _now()
        out = tiled_decode(vae, z, tiling) if method == "tiled" else vae.decode(z)
        synchronize(device)
        seconds = _now() - start
    work = cuda_peak_bytes(device) - base_cuda if device.type == "cuda" else peak_rss_bytes() - base
    tiles = len(plan_decode(vae.config, (t, h, w), tiling).tiles()) if method == "tiled" else 1
    return {
        "seconds": seconds,
        "work_bytes": work,
        "out_bytes": out.numel() * out.element_size(),
        "tiles": tiles,
        "shape": list(out.shape),
    }


def _now() -> float:
    import time

    return time.perf_counter()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="tiny-hunyuan-vae", choices=sorted(VAE_PRESETS))
    p.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated latent TxHxW")
    p.add_argument("--tile-px", type=int, default=64, help="tile_sample_size (official 256)")
    p.add_argument("--tile-frames", type=int, default=16, help="tile_sample_frames (official 64)")
    p.add_argument("--no-write", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    p.add_argument("--one", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(
            json.dumps(
                measure(args.device, args.preset, args.one[0], args.one[1], args.tile_px, args.tile_frames)
            )
        )
        return

    rows = []
    for case in args.cases.split(","):
        results = {}
        for method in ("untiled", "tiled"):
            results[method] = run_in_subprocess(
                "benchmarks.vae_tiling",
                [
                    "--device",
                    args.device,
                    "--preset",
                    args.preset,
                    "--tile-px",
                    str(args.tile_px),
                    "--tile-frames",
                    str(args.tile_frames),
                    "--one",
                    case,
                    method,
                ],
            )
        u, t = results["untiled"], results["tiled"]
        _, _, frames, height, width = t["shape"]
        rows.append(
            [
                case,
                f"{frames}x{height}x{width}",
                t["tiles"],
                format_bytes(t["out_bytes"]),
                format_bytes(u["work_bytes"]),
                format_bytes(t["work_bytes"]),
                f"{u['seconds']:.2f}",
                f"{t['seconds']:.2f}",
            ]
        )
        print(rows[-1], file=sys.stderr)
    table = markdown_table(
        [
            "latents TxHxW",
            "frames x px",
            "tiles",
            "output",
            "untiled peak",
            "tiled peak",
            "untiled s",
            "tiled s",
        ],
        rows,
    )
    device = pick_device(args.device)
    body = (
        f"`python -m benchmarks.vae_tiling --device {args.device} --preset {args.preset} --tile-px {args.tile_px} "
        f"--tile-frames {args.tile_frames}`, {date.today().isoformat()}, {machine_description(device)}.\n\n"
        "Peak = memory allocated by the decode above what was held before it (weights, latents), output "
        "included; one fresh process per cell, fp32, batch 1.\n\n" + table
    )
    print(body)
    if not args.no_write:
        write_benchmarks_section("VAE", body)


if __name__ == "__main__":
    main()
