"""Time of one sampling step with and without DeepCache (random weights; speed does not depend on them).

    python -m benchmarks.sampling_step                      # tiny presets on the CPU
    python -m benchmarks.sampling_step --write              # and replace the "Sampling" section of docs/BENCHMARKS.md
    python -m benchmarks.sampling_step --device cuda --dtype bf16 --preset hunyuancustom-720p \\
        --size 720x1280x129 --size 544x960x129 --size 512x896x129    # production sizes on a GPU

A step is one DiT evaluation of the CFG batch [uncond, cond] plus the Euler update. A full step runs every block;
a DeepCache step runs only the last single block and the final layer. At 30 steps the release runs 22 full
and 8 DeepCache steps, which gives the per-run figures.
"""

from __future__ import annotations

import argparse
import datetime

import torch

from benchmarks._common import (
    CONTENDED_CORES,
    CpuMeter,
    machine_description,
    markdown_table,
    pick_device,
    time_fn,
    write_benchmarks_section,
)
from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT
from model_core.parallel import SPGroup
from model_core.sampling import BranchInputs, Denoiser, StepKind, default_options, step_kinds
from model_core.sampling.random_inputs import random_conditioning

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_size(text: str) -> tuple[int, int, int]:
    """'720x1280x129' (height x width x frames) -> latent (T, H, W) of the 4x8x8 VAE."""
    try:
        h, w, f = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxWxF like 720x1280x129, got {text!r}") from None
    if h % 16 or w % 16 or (f - 1) % 4:
        raise argparse.ArgumentTypeError(
            f"size {text}: height and width must be multiples of 16, frames 4k+1"
        )
    return (f - 1) // 4 + 1, h // 8, w // 8


def time_steps(
    preset: str, size: str, device: torch.device, dtype: torch.dtype, repeats: int
) -> dict[str, float]:
    """Best-of-`repeats` seconds of a full step and of a DeepCache step at `size` (robust to a shared machine)."""
    config = PRESETS[preset]
    latent = parse_size(size)
    with torch.device(device):
        torch.manual_seed(0)
        model = HunyuanDiT(config).to(dtype).eval()
    # production text lengths (HunyuanCustom 831, T2V 256); tiny presets get a tiny prompt
    text_len = 16 if preset.startswith("tiny-") else (831 if config.identity_image else 256)
    cond = random_conditioning(config, latent, seed=0, text_len=text_len)
    inputs = BranchInputs.concat([cond.uncond, cond.cond]).to(device)  # type: ignore[list-item]
    x = torch.randn(2, config.in_channels, *latent, device=device)
    t = torch.full((2,), 900.0, device=device)
    guidance = torch.full((2,), 6016.0, device=device) if config.guidance_embed else None
    den = Denoiser(model, SPGroup.single())

    def step(kind: StepKind) -> None:
        v = den(x, t, inputs, guidance=guidance, audio_strength=0.8, kind=kind)
        x.add_(v.float()[:1] * 0)  # the Euler update's cost is negligible; keep the output alive

    full = time_fn(lambda: step(StepKind.STORE), device=device, repeats=repeats)
    reuse = time_fn(lambda: step(StepKind.REUSE), device=device, repeats=repeats)
    return {"full": full.best, "reuse": reuse.best}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument(
        "--preset", action="append", help="DiT preset (repeatable); default: the tiny presets"
    )
    parser.add_argument("--size", action="append", help="HxWxF video size (repeatable); default: tiny sizes")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="write the section into docs/BENCHMARKS.md")
    # one thread: on a shared CPU, OpenMP threads that wait for each other turn others' load into stalls
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    presets = args.preset or ["tiny-hunyuancustom-720p", "tiny-hunyuancustom-audio-720p"]
    sizes = args.size or ["64x64x9", "128x128x17"]
    kinds = step_kinds(default_options("image"))
    n_reuse = sum(k is StepKind.REUSE for k in kinds)
    n_full = len(kinds) - n_reuse
    rows = []
    contended = 0
    for preset in presets:
        for size in sizes:
            with CpuMeter() as meter:
                r = time_steps(preset, size, device, DTYPES[args.dtype], args.repeats)
            plain = len(kinds) * r["full"]
            cached = n_full * r["full"] + n_reuse * r["reuse"]
            others = f"{meter.use.others_cores:.2f}" + (" (contended)" if meter.use.contended else "")
            contended += meter.use.contended
            rows.append([preset, size, f"{r['full'] * 1e3:.1f} ms", f"{r['reuse'] * 1e3:.1f} ms",
                         f"{plain:.2f} s", f"{cached:.2f} s", f"{plain / cached:.2f}x", others])  # fmt: skip
            print(rows[-1], flush=True)
    table = markdown_table(
        [
            "preset",
            "video HxWxF",
            "full step",
            "DeepCache step",
            "30 steps",
            "30 steps + DeepCache",
            "speed-up",
            "others, cores",
        ],
        rows,
    )
    verdict = (
        f"{contended} of {len(rows)} rows were taken while other processes used more than {CONTENDED_CORES:.2f} "
        "cores (contended): their times are not comparable with a quiet run."
        if contended
        else "No row was contended."
    )
    body = f"""Machine: {machine_description(device)}; torch threads: {torch.get_num_threads()}.
Date: {datetime.date.today().isoformat()}. dtype {args.dtype}, CFG batch 2, 16 text tokens at tiny size, one process,
best of {args.repeats} after 1 warm-up (`python -m benchmarks.sampling_step --write`). "others" is the CPU other
processes used while the row ran (`/proc/stat` minus this process's CPU time). {verdict}

{table}

At tiny sizes the model is a few MB and a step is dominated by per-op overhead, so these rows only show
that a DeepCache step skips the work (all double blocks and all but one single block). The production
speed-up follows the block count: with 20 double and 40 single blocks a DeepCache step does about 1/60 of
the block work, so 22 full + 8 cached steps cost about 22.1/30 = 0.74 of an uncached 30-step run (1.36x).
The machine had no GPU, so the single-GPU step time at 720x1280, 544x960 and 512x896 is not measured here;
the command in the script's docstring measures it on a GPU node.
"""
    print(body)
    if args.write:
        write_benchmarks_section("Sampling", body)


if __name__ == "__main__":
    main()
