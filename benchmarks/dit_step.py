"""Seconds per DiT forward, achieved TFLOP/s and model FLOP utilisation against a measured matmul peak.

One forward of ``HunyuanDiT`` (a preset at a video size and frame count) with random weights: bf16 on CUDA,
fp32 on CPU by default. FLOPs come from :mod:`benchmarks.dit_flops` (exact matmul count); the peak is the best
of a few large square matmuls in the same dtype on the same device, measured here, so MFU compares against
what this machine really delivers rather than a datasheet.

Run from the repository root::

    python -m benchmarks.dit_step                                           # tiny preset, CPU
    python -m benchmarks.dit_step --device cuda --preset hunyuanvideo-t2v-720p \\
        --sizes 544x960x129,720x1280x129 --attention sdpa,flash

``--attention auto`` lets the model choose (flash-attn varlen where it can run, else SDPA).

``--sizes`` are ``HEIGHTxWIDTHxFRAMES`` in video pixels (height and width multiples of 16, frames 4k+1).
Results go to docs/BENCHMARKS.md, section "DiT step", in a subsection per device kind (CPU runs and GPU runs
do not overwrite each other).
"""

from __future__ import annotations

import argparse
import datetime
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from benchmarks._common import (
    cuda_peak_bytes,
    format_bytes,
    machine_description,
    markdown_table,
    pick_device,
    read_benchmarks_section,
    reset_cuda_peak,
    synchronize,
    time_fn,
    write_benchmarks_section,
)
from benchmarks.dit_flops import dit_forward_flops, latent_shape, token_counts

SECTION = "DiT step"
ATTENTION_ALIASES = {"flash": "flash_varlen"}  # short names for model_core.dit.AttentionBackend values
TEXT_LEN = 256  # LLaVA tokens after the template crop (HunyuanVideo); HunyuanCustom's 831 via --text-len


@dataclass(frozen=True)
class StepResult:
    """One measured forward: what ran, its time, FLOPs, MFU against the measured peak and GPU memory."""

    preset: str
    size: str
    attention: str
    dtype: str
    tokens: int
    seconds: float
    tflop: float
    achieved_tflops: float
    peak_tflops: float
    mfu: float
    attention_fraction: float
    peak_memory: int


def random_model(config, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """``HunyuanDiT(config)`` with N(0, 0.02) weights made on ``device`` in ``dtype`` (no CPU init)."""
    from model_core.dit import HunyuanDiT

    with torch.device("meta"):
        model = HunyuanDiT(config)
    gen = torch.Generator(device=device).manual_seed(0)
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            value = torch.empty(param.shape, device=device, dtype=dtype)
            value.normal_(0.0, 0.02, generator=gen)
            module._parameters[name] = nn.Parameter(value, requires_grad=False)
    return model.eval()


def random_inputs(
    config, latent: tuple[int, int, int], text_len: int, device: torch.device, dtype: torch.dtype
):
    """Positional and keyword arguments of one forward (batch 1, all text tokens valid)."""
    t, h, w = latent
    gen = torch.Generator(device=device).manual_seed(1)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype, generator=gen)

    args = (
        randn(1, config.in_channels, t, h, w),
        torch.full((1,), 500.0, device=device),
        randn(1, text_len, config.text_states_dim),
        torch.ones(1, text_len, dtype=torch.long, device=device),
        randn(1, config.text_pooled_dim),
    )
    kwargs: dict = {}
    if config.guidance_embed:
        kwargs["guidance"] = torch.full((1,), 6016.0, device=device)
    if config.identity_image:
        kwargs["ref_latents"] = randn(1, config.in_channels, 1, h, w)
    if config.video_condition:
        kwargs["video_cond"] = randn(1, 2 * config.in_channels, t, h, w)
    if config.audio is not None:
        a = config.audio
        kwargs["audio_states"] = randn(
            1, (t - 1) * a.frames_per_latent + 1, a.window, a.whisper_layers, a.whisper_dim
        )
    return args, kwargs


def matmul_peak_tflops(
    device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5
) -> float:
    """Best TFLOP/s of an ``n x n`` matmul in ``dtype`` (n = 8192 on CUDA, 1024 on CPU)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    inner = 10 if device.type == "cuda" else 2

    def run() -> None:
        for _ in range(inner):
            torch.mm(a, b)

    timing = time_fn(run, device=device, warmup=1, repeats=repeats)
    return 2.0 * n**3 * inner / timing.best / 1e12


def measure(
    preset: str,
    size: tuple[int, int, int],
    *,
    attention: str,
    device: torch.device,
    dtype: torch.dtype,
    text_len: int,
    warmup: int,
    repeats: int,
    peak_tflops: float,
) -> StepResult:
    """Time one forward of ``preset`` at a video ``size`` (height, width, frames)."""
    from model_core.configs import PRESETS

    config = PRESETS[preset]
    latent = latent_shape(*size)
    model = random_model(config, device, dtype)
    model.set_attention_backend(ATTENTION_ALIASES.get(attention, attention), device)
    if attention == "auto":  # record what auto chose
        attention = f"auto ({model.joint_attention.backend.value})"
    args, kwargs = random_inputs(config, latent, text_len, device, dtype)
    num_refs = 1 if config.identity_image else 0
    flops = dit_forward_flops(
        config,
        latent,
        text_len=text_len,
        num_refs=num_refs,
        audio=config.audio is not None,
        video_condition=config.video_condition,
    )
    reset_cuda_peak(device)
    with torch.inference_mode():
        timing = time_fn(lambda: model(*args, **kwargs), device=device, warmup=warmup, repeats=repeats)
    synchronize(device)
    seconds = timing.median
    achieved = flops.total / seconds / 1e12
    n_vid, n_ref = token_counts(config, latent, num_refs)
    return StepResult(
        preset=preset,
        size="x".join(str(s) for s in size),
        attention=attention,
        dtype=str(dtype).removeprefix("torch."),
        tokens=n_vid + n_ref + text_len,
        seconds=seconds,
        tflop=flops.total / 1e12,
        achieved_tflops=achieved,
        peak_tflops=peak_tflops,
        mfu=achieved / peak_tflops,
        attention_fraction=flops.attention_fraction,
        peak_memory=cuda_peak_bytes(device),
    )


def _parse_size(text: str) -> tuple[int, int, int]:
    try:
        height, width, frames = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size {text!r} must be HEIGHTxWIDTHxFRAMES, e.g. 720x1280x129"
        ) from None
    return height, width, frames


def _table(results: list[StepResult]) -> str:
    headers = [
        "preset",
        "video HxWxF",
        "tokens",
        "attention",
        "dtype",
        "s / step",
        "TFLOP / step",
        "TFLOP/s",
        "matmul peak TFLOP/s",
        "MFU",
        "attention share",
        "GPU peak mem",
    ]
    rows = [
        [
            r.preset,
            r.size,
            r.tokens,
            r.attention,
            r.dtype,
            f"{r.seconds:.4g}",
            f"{r.tflop:.4g}",
            f"{r.achieved_tflops:.3g}",
            f"{r.peak_tflops:.3g}",
            f"{r.mfu:.1%}",
            f"{r.attention_fraction:.0%}",
            format_bytes(r.peak_memory) if r.peak_memory else "-",
        ]
        for r in results
    ]
    return markdown_table(headers, rows)


def _cpu_note(results: list[StepResult], device: torch.device) -> str:
    if device.type != "cpu" or not all(r.preset.startswith("tiny-") for r in results):
        return ""
    return (
        "The tiny preset (hidden 64) is bound by per-op overhead on CPU, so its MFU says nothing about the\n"
        "production model; these rows show that the script and the FLOP count run end to end. The CPU is\n"
        "shared with other work, so the seconds vary between runs; one thread (`--threads 1`, the default)\n"
        "keeps OpenMP threads from contending with it.\n"
    )


def _write_docs(results: list[StepResult], device: torch.device, command: str) -> None:
    kind = "GPU" if device.type == "cuda" else "CPU"
    subsection = f"""### {kind}

Measured {datetime.date.today().isoformat()} on {machine_description(device)}: `{command}`.
Seconds are the median of the timed forwards; FLOPs are the exact matmul count of `benchmarks/dit_flops.py`;
MFU is achieved TFLOP/s over the best square-matmul TFLOP/s measured in the same run and dtype.
{_cpu_note(results, device)}
{_table(results)}"""
    existing = read_benchmarks_section(SECTION) or ""
    parts: dict[str, str] = {}
    current = None
    for line in existing.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            parts[current] = line
        elif current is not None:
            parts[current] += "\n" + line
    parts[kind] = subsection
    if "GPU" not in parts:
        from model_core.configs import PRESETS

        production = PRESETS["hunyuanvideo-t2v-720p"]
        counts = ", ".join(
            f"{h}x{w}x{f}: {dit_forward_flops(production, latent_shape(h, w, f), text_len=TEXT_LEN).total:.3g}"
            for h, w, f in ((544, 960, 129), (720, 1280, 129))
        )
        parts["GPU"] = (
            "### GPU\n\nPending a GPU: the production preset at 544x960x129 and 720x1280x129 with SDPA and with "
            "flash-attn, bf16, via\n`python -m benchmarks.dit_step --device cuda --preset hunyuanvideo-t2v-720p "
            f"--sizes 544x960x129,720x1280x129 --attention sdpa,flash`.\nFLOP per forward (exact count): {counts}."
        )
    intro = (
        "One forward of `HunyuanDiT` with random weights (`python -m benchmarks.dit_step`), batch 1, "
        f"{TEXT_LEN} text tokens unless stated."
    )
    body = intro + "\n\n" + "\n\n".join(parts[k].strip("\n") for k in ("CPU", "GPU") if k in parts)
    write_benchmarks_section(SECTION, body)


def main(argv: list[str] | None = None) -> None:
    """Command line: measure the peak, then every size x attention backend; print and record the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny-hunyuanvideo-t2v-720p")
    parser.add_argument("--sizes", default="64x64x9,128x128x33", help="comma-separated HEIGHTxWIDTHxFRAMES")
    parser.add_argument(
        "--attention",
        default="sdpa",
        help="comma-separated backends: sdpa, flash (flash_varlen), auto (flash where it runs, else sdpa)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--text-len", type=int, default=TEXT_LEN)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    # one thread: on a shared CPU, extra OpenMP threads contend and make the seconds noise
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--no-docs", action="store_true", help="print only; do not write docs/BENCHMARKS.md")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    peak = matmul_peak_tflops(device, dtype)
    print(f"matmul peak: {peak:.3g} TFLOP/s ({dtype}, {device})")
    results = []
    for size_text in args.sizes.split(","):
        for backend in args.attention.split(","):
            result = measure(
                args.preset,
                _parse_size(size_text),
                attention=backend.strip(),
                device=device,
                dtype=dtype,
                text_len=args.text_len,
                warmup=args.warmup,
                repeats=args.repeats,
                peak_tflops=peak,
            )
            print(json.dumps(asdict(result)))
            results.append(result)
    print(_table(results))
    if not args.no_docs:
        command = "python -m benchmarks.dit_step " + " ".join(
            argv if argv is not None else __import__("sys").argv[1:]
        )
        _write_docs(results, device, command.strip())


if __name__ == "__main__":
    main()
