"""One GPU, one command: the speed and memory numbers of the production models, in under 8 minutes.

    python -m benchmarks.gpu_suite                 # one H100 / H200: JSON + the "GPU suite" section of docs
    python -m benchmarks.gpu_suite --smoke         # the same code at tiny sizes on CPU (seconds), for CI

Cases, in this order (the most wanted first; a case that would start after ``--budget-s`` is skipped):

1. the measured bf16 matmul peak (best of square 8192 matmuls): MFU below is against this, not a datasheet;
2. one full-size DiT forward (``hunyuanvideo-t2v-720p``, 13B, random weights built on the meta device and
   materialised on the GPU), batch 1, 256 text tokens (230 real), at 544x960x129 and 720x1280x129, with every
   attention backend that runs here (flash-attn varlen; torch SDPA restricted to its flash, cuDNN or
   memory-efficient kernel), and diffusers' ``HunyuanVideoTransformer3DModel`` on the same weights (shared, not
   copied) with its default SDPA dispatch;
3. the CFG batch of 2 (real CFG, text lengths 230 and 256) at the first size;
4. DeepCache: a cached step (last single block and final layer) against a full one, and the saving of the
   release's 30-step schedule (22 full + 8 cached steps);
5. fp8 weights (``FP8Linear``, e4m3 with per-layer scales, dequantised per call) at the first size
   (with ``--compile`` first: ``HunyuanDiT.compile_blocks``, its first call and a compiled forward);
6. tiled VAE decode (``hunyuan-vae``, fp16, official 256 px / 64-frame tiles) of 720x1280x129;
7. HunyuanVideo-Foley xl and xxl (random weights in the step's dtypes): a warm 5-second clip (features, 50 steps,
   DAC decode) per offload mode, its seconds and its peak memory with the weights (``benchmarks/foley.py``).

Every row has its seconds and peak GPU memory (``max_memory_allocated`` over the case); DiT rows add TFLOP
(exact matmul count, ``benchmarks/dit_flops.py``) and MFU. ``--smoke`` runs the same cases with the tiny
presets at 64x64x9 and 64x96x9 on CPU in fp32 (peak = ``VmHWM`` over the RSS before the case).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks._common import (
    BENCHMARKS_MD,
    REPO_ROOT,
    current_rss_bytes,
    format_bytes,
    machine_description,
    markdown_table,
    peak_rss_bytes,
    pick_device,
    reset_peak_rss,
    return_freed_memory,
    synchronize,
    write_benchmarks_section,
)
from benchmarks.dit_flops import dit_forward_flops, latent_shape, token_counts

SECTION = "GPU suite"
COMMAND = "python -m benchmarks.gpu_suite"
DEFAULT_JSON = REPO_ROOT / "docs" / "gpu_suite.json"
TEXT_LEN, TEXT_VALID = 256, 230
SDPA_KERNELS = {
    "sdpa flash": SDPBackend.FLASH_ATTENTION,
    "sdpa cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa efficient": SDPBackend.EFFICIENT_ATTENTION,
}


@dataclass(frozen=True)
class Plan:
    """What the suite runs: the production models on a GPU, or their tiny twins on CPU (``--smoke``)."""

    preset: str
    sizes: tuple[tuple[int, int, int], ...]  # video height, width, frames
    dtype: torch.dtype
    vae_preset: str
    vae_size: tuple[int, int, int]
    vae_dtype: torch.dtype
    vae_tiles: tuple[int, int]  # tile pixels, tile frames
    matmul_n: int

    @staticmethod
    def for_run(smoke: bool) -> Plan:
        """The production plan, or its tiny CPU twin."""
        if smoke:
            return Plan(
                preset="tiny-hunyuanvideo-t2v-720p",
                sizes=((64, 64, 9), (64, 96, 9)),
                dtype=torch.float32,
                vae_preset="tiny-hunyuan-vae",
                vae_size=(64, 96, 9),
                vae_dtype=torch.float32,
                vae_tiles=(64, 16),
                matmul_n=256,
            )
        return Plan(
            preset="hunyuanvideo-t2v-720p",
            sizes=((544, 960, 129), (720, 1280, 129)),
            dtype=torch.bfloat16,
            vae_preset="hunyuan-vae",
            vae_size=(720, 1280, 129),
            vae_dtype=torch.float16,
            vae_tiles=(256, 64),
            matmul_n=8192,
        )


@dataclass
class Row:
    """One case: what ran, how long, how much memory, or why it did not run."""

    case: str
    size: str
    variant: str
    status: str = "ok"  # ok, unavailable: ..., skipped: ..., failed: ...
    seconds: float | None = None
    tflop: float | None = None
    mfu: float | None = None
    peak_memory: int | None = None
    note: str = ""


@dataclass
class Suite:
    """The run's state: device, plan, measured peak, rows so far and the time budget."""

    device: torch.device
    plan: Plan
    budget_s: float
    rows: list[Row] = field(default_factory=list)
    peak_tflops: float | None = None
    compile_backend: str | None = None  # run compile_case with this torch.compile backend
    start: float = field(default_factory=time.perf_counter)

    def over_budget(self) -> bool:
        """Whether the time budget is spent (later cases are skipped)."""
        return time.perf_counter() - self.start > self.budget_s

    def run(self, row: Row, fn: Callable[[], object], *, flops: float | None = None) -> Row:
        """Time one call of ``fn`` with its peak memory and record ``row``; failures become the row's status."""
        if self.over_budget():
            row.status = f"skipped: over the {self.budget_s:.0f} s budget"
            self.rows.append(row)
            return row
        try:
            with self.peak() as peak:
                start = time.perf_counter()
                fn()
                synchronize(self.device)
                row.seconds = time.perf_counter() - start
            row.peak_memory = peak[0]
        except torch.OutOfMemoryError:
            row.status = "failed: out of memory"
        except RuntimeError as err:  # e.g. no kernel for this input
            row.status = f"failed: {str(err).splitlines()[0][:120]}"
        if row.seconds is not None and flops is not None:
            row.tflop = flops / 1e12
            if self.peak_tflops:
                row.mfu = flops / row.seconds / 1e12 / self.peak_tflops
        self.rows.append(row)
        print(json.dumps(asdict(row)), flush=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return row

    @contextlib.contextmanager
    def peak(self) -> Iterator[list[int | None]]:
        """Yields a one-item list that holds the peak memory of the block when it ends."""
        out: list[int | None] = [None]
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            yield out
            out[0] = torch.cuda.max_memory_allocated(self.device) - base
        else:
            reset = reset_peak_rss()
            base = current_rss_bytes()
            yield out
            out[0] = max(0, peak_rss_bytes() - base) if reset else None


# ------------------------------------------------------------------------------------------------------------
# pieces


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best TFLOP/s of an ``n x n`` matmul in ``dtype`` (10 back-to-back per timing on CUDA)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    inner = 10 if device.type == "cuda" else 2
    best = float("inf")
    for i in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        synchronize(device)
        if i:  # the first is a warm-up
            best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 * inner / best / 1e12


def random_dit(config, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """``HunyuanDiT(config)`` built on the meta device, then N(0, 0.02) weights made directly on ``device``."""
    from benchmarks.dit_step import random_model

    return random_model(config, device, dtype)


def shared_diffusers_dit(ours: nn.Module) -> nn.Module:
    """diffusers' transformer holding ``ours``'s weights (views, no copy), built on the meta device."""
    from tests.diffusers_twins import diffusers_dit, to_diffusers_state

    with torch.device("meta"):
        theirs = diffusers_dit(ours.config, None)
    state = to_diffusers_state(ours.state_dict(), ours.config.hidden_size)
    theirs.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*theirs.named_parameters(), *theirs.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"diffusers' transformer kept meta tensors after loading: {left[:5]}")
    return theirs.eval()


def dit_inputs(config, latent, device: torch.device, dtype: torch.dtype, valid: tuple[int, ...]):
    """Positional args and guidance of one forward with ``len(valid)`` samples (text lengths ``valid``)."""
    gen = torch.Generator(device=device).manual_seed(1)
    batch = len(valid)
    mask = torch.zeros(batch, TEXT_LEN, dtype=torch.long, device=device)
    for b, n in enumerate(valid):
        mask[b, :n] = 1
    args = (
        torch.randn(batch, config.in_channels, *latent, device=device, dtype=dtype, generator=gen),
        torch.full((batch,), 500.0, device=device),
        torch.randn(batch, TEXT_LEN, config.text_states_dim, device=device, dtype=dtype, generator=gen),
        mask,
        torch.randn(batch, config.text_pooled_dim, device=device, dtype=dtype, generator=gen),
    )
    guidance = torch.full((batch,), 6016.0, device=device) if config.guidance_embed else None
    return args, guidance


def attention_variants(
    device: torch.device, dtype: torch.dtype, head_dim: int
) -> list[tuple[str, str | None]]:
    """(label, reason it cannot run or None) for flash-attn varlen and each SDPA fused kernel on ``device``."""
    from model_core.dit import AttentionBackend, AttentionBackendUnavailable, check_backend_available

    variants: list[tuple[str, str | None]] = []
    try:
        check_backend_available(AttentionBackend.FLASH_VARLEN, device)
        if dtype not in (torch.float16, torch.bfloat16):
            raise AttentionBackendUnavailable(f"flash-attn needs fp16/bf16, this run is {dtype}")
        variants.append(("flash-attn varlen", None))
    except AttentionBackendUnavailable as err:
        variants.append(("flash-attn varlen", str(err).split(":")[0]))
    q = torch.randn(1, 2, 256, head_dim, device=device, dtype=dtype)
    for label, kernel in SDPA_KERNELS.items():
        try:
            with sdpa_kernel([kernel]):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            variants.append((label, None))
        except RuntimeError as err:
            variants.append((label, f"no {kernel.name} kernel for {dtype} on {device.type}: {str(err)[:60]}"))
    return variants


def run_dit_forward(model: nn.Module, args, guidance, label: str) -> Callable[[], object]:
    """A no-grad forward of ``model`` with the attention ``label`` (flash-attn varlen or an SDPA kernel)."""
    kernel = SDPA_KERNELS.get(label)

    def call() -> object:
        ctx = sdpa_kernel([kernel]) if kernel is not None else contextlib.nullcontext()
        with ctx, torch.inference_mode():
            return model(*args, guidance=guidance)

    return call


def fp8_weights_(model: nn.Module) -> int:
    """Quantise the double/single-block Linears to e4m3 with per-layer scales, in place; returns their count."""
    from model_core.dit.fp8 import FP8Linear, convert_to_fp8_linears, fp8_linear_names, quantize_fp8

    names = fp8_linear_names(model)
    quantized = {}
    for name in names:
        linear = model.get_submodule(name)
        quantized[name] = (*quantize_fp8(linear.weight), linear.bias)
    convert_to_fp8_linears(model, {name: scale for name, (_, scale, _) in quantized.items()})
    for name, (weight, _, bias) in quantized.items():
        module = model.get_submodule(name)
        assert isinstance(module, FP8Linear)
        module.weight = nn.Parameter(weight, requires_grad=False)
        module.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
    return len(names)


# ------------------------------------------------------------------------------------------------------------
# the suite


def dit_cases(suite: Suite) -> None:
    """Forwards per size and attention backend, diffusers on the same weights, CFG batch 2, DeepCache, fp8."""
    from model_core.configs import PRESETS
    from model_core.sampling import deepcache_cached_steps

    device, plan = suite.device, suite.plan
    config = PRESETS[plan.preset]
    model = random_dit(config, device, plan.dtype)
    variants = attention_variants(device, plan.dtype, config.head_dim)
    runnable = [label for label, why in variants if why is None]
    theirs: nn.Module | None = None
    try:
        theirs = shared_diffusers_dit(model)
    except Exception as err:  # noqa: BLE001 - any failure of the reference becomes a row, not a crash
        suite.rows.append(Row("DiT forward", "-", "diffusers", status=f"failed: {err}"[:160]))

    for i, (h, w, f) in enumerate(plan.sizes):
        latent = latent_shape(h, w, f)
        size = f"{h}x{w}x{f}"
        n_vid, _ = token_counts(config, latent)
        flops = dit_forward_flops(config, latent, text_len=TEXT_LEN, text_valid=TEXT_VALID).total
        args, guidance = dit_inputs(config, latent, device, plan.dtype, (TEXT_VALID,))
        for label, why in variants:
            if why is not None:
                if i == 0:
                    suite.rows.append(Row("DiT forward", size, label, status=f"unavailable: {why}"))
                continue
            model.set_attention_backend("flash_varlen" if label.startswith("flash-attn") else "sdpa", device)
            call = run_dit_forward(model, args, guidance, label)
            if i == 0 and not suite.over_budget():
                call()  # warm-up at the first size only: kernels do not autotune per shape
            suite.run(Row("DiT forward", size, label, note=f"{n_vid:,} video tokens"), call, flops=flops)
        if theirs is not None:

            def diffusers_call(args=args, guidance=guidance) -> object:
                with torch.inference_mode():
                    return theirs(*args, guidance, return_dict=False)[0]

            if i == 0 and not suite.over_budget():
                diffusers_call()
            suite.run(Row("DiT forward", size, "diffusers (default SDPA)"), diffusers_call, flops=flops)
    theirs = None
    gc.collect()

    best = min(
        (r for r in suite.rows if r.case == "DiT forward" and r.seconds and r.variant in runnable),
        key=lambda r: r.seconds or float("inf"),
        default=None,
    )
    label = best.variant if best is not None else (runnable[0] if runnable else "sdpa flash")
    model.set_attention_backend("flash_varlen" if label.startswith("flash-attn") else "sdpa", device)
    h, w, f = plan.sizes[0]
    size = f"{h}x{w}x{f}"
    latent = latent_shape(h, w, f)

    # CFG: uncond and cond rows in one batch, text lengths differ
    args, guidance = dit_inputs(config, latent, device, plan.dtype, (TEXT_VALID, TEXT_LEN))
    flops = dit_forward_flops(config, latent, text_len=TEXT_LEN, text_valid=TEXT_VALID).total
    flops += dit_forward_flops(config, latent, text_len=TEXT_LEN).total
    suite.run(Row("CFG batch 2", size, label), run_dit_forward(model, args, guidance, label), flops=flops)

    # DeepCache: a cached step runs the last single block and the final layer on the stored state
    args, guidance = dit_inputs(config, latent, device, plan.dtype, (TEXT_VALID,))
    flops = dit_forward_flops(config, latent, text_len=TEXT_LEN, text_valid=TEXT_VALID).total
    kernel = SDPA_KERNELS.get(label)
    ctx = sdpa_kernel([kernel]) if kernel is not None else contextlib.nullcontext()
    last = config.depth_single - 1
    with ctx, torch.inference_mode():
        state = model.embed(*args, guidance=guidance)
        state = model.run_single_blocks(model.run_double_blocks(state), 0, last)

        def cached_step() -> object:
            vec = model.embed_vec(args[1], args[4], guidance)
            return model.final(model.run_single_blocks(dataclasses.replace(state, vec=vec), last, last + 1))

        full = next(
            (r for r in suite.rows if r.case == "DiT forward" and r.size == size and r.variant == label), None
        )
        row = suite.run(Row("DeepCache step", size, label), cached_step)
    if full is not None and full.seconds and row.seconds:
        cached = len(deepcache_cached_steps(30))
        total = (30 - cached) * full.seconds + cached * row.seconds
        row.note = (
            f"30 steps: {30 - cached} full x {full.seconds:.2f} s + {cached} cached x {row.seconds:.3f} s = "
            f"{total:.1f} s, {1 - total / (30 * full.seconds):.0%} saved"
        )

    # regional torch.compile (opt-in: compiling the two block graphs takes a minute or two of the budget)
    if suite.compile_backend is not None:
        compile_case(suite, model, args, guidance, label, size, flops)

    # fp8 weights (the memory lever): dequantised per call
    if not suite.over_budget():
        count = fp8_weights_(model)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        row = suite.run(
            Row("fp8 weights", size, label), run_dit_forward(model, args, guidance, label), flops=flops
        )
        row.note = f"{count} Linears in e4m3; weights {format_bytes(weights)}"
    else:
        suite.run(Row("fp8 weights", size, label), lambda: None)


def compile_case(suite: Suite, model: nn.Module, args, guidance, label: str, size: str, flops: float) -> None:
    """``compile_blocks`` with the suite's backend: the first call (tracing and compiling) and a timed one."""
    compile_row = Row("compiled blocks, first call", size, f"{label}, {suite.compile_backend}")
    model.compile_blocks(backend=suite.compile_backend)
    call = run_dit_forward(model, args, guidance, label)
    suite.run(compile_row, call)
    row = suite.run(Row("compiled blocks", size, f"{label}, {suite.compile_backend}"), call, flops=flops)
    plain = next(
        (r for r in suite.rows if r.case == "DiT forward" and r.size == size and r.variant == label), None
    )
    if plain is not None and plain.seconds and row.seconds:
        row.note = f"{plain.seconds / row.seconds:.2f}x the uncompiled forward"
    for block in [*model.double_blocks, *model.single_blocks]:
        block._compiled_call_impl = None  # the cases after this one run uncompiled


def vae_case(suite: Suite) -> None:
    """Tiled decode of the plan's video size with the official tile arithmetic."""
    from model_core.vae import VAE_PRESETS, CausalVAE3D, TilingConfig

    device, plan = suite.device, suite.plan
    h, w, f = plan.vae_size
    latent = latent_shape(h, w, f)
    if suite.over_budget():
        suite.run(Row("VAE tiled decode", f"{h}x{w}x{f}", "-"), lambda: None)
        return
    with torch.device(device):
        vae = CausalVAE3D(VAE_PRESETS[plan.vae_preset]).eval()
    vae.to(plan.vae_dtype)
    z = torch.randn(1, vae.config.latent_channels, *latent, device=device, dtype=plan.vae_dtype)
    tiling = TilingConfig(tile_sample_size=plan.vae_tiles[0], tile_sample_frames=plan.vae_tiles[1])

    def decode() -> object:
        with torch.inference_mode():
            return vae.decode(z, tiling)

    label = f"{str(plan.vae_dtype).removeprefix('torch.')}, tiles {plan.vae_tiles[0]} px / {plan.vae_tiles[1]} frames"
    suite.run(Row("VAE tiled decode", f"{h}x{w}x{f}", label), decode)


def run_suite(
    *,
    smoke: bool,
    device_name: str | None = None,
    budget_s: float = 450.0,
    compile_backend: str | None = None,
) -> Suite:
    """Run every case; returns the suite with its rows (also printed as JSON lines as they finish).

    ``compile_backend`` adds the regional ``torch.compile`` rows (``"inductor"`` on a GPU; ``"eager"`` traces
    without generating kernels, for the smoke test).
    """
    device = pick_device(device_name or ("cpu" if smoke else "cuda"))
    plan = Plan.for_run(smoke)
    if device.type == "cpu":
        return_freed_memory()
    suite = Suite(device=device, plan=plan, budget_s=budget_s, compile_backend=compile_backend)
    suite.peak_tflops = matmul_peak(device, plan.dtype, plan.matmul_n)
    suite.rows.append(
        Row(
            "matmul peak",
            f"{plan.matmul_n}^3",
            str(plan.dtype).removeprefix("torch."),
            note=f"{suite.peak_tflops:.4g} TFLOP/s",
        )
    )
    dit_cases(suite)
    vae_case(suite)
    from benchmarks.foley import gpu_cases as foley_cases

    foley_cases(suite)
    return suite


# ------------------------------------------------------------------------------------------------------------
# report


def table(rows: list[Row]) -> str:
    """Markdown table of the rows."""
    headers = ["case", "video HxWxF", "variant", "s", "TFLOP", "MFU", "peak memory", "status", "note"]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return markdown_table(
        headers,
        [
            [
                r.case,
                r.size,
                r.variant,
                num(r.seconds, ".3f"),
                num(r.tflop, ".4g"),
                "-" if r.mfu is None else f"{r.mfu:.1%}",
                "-" if r.peak_memory is None else format_bytes(r.peak_memory),
                r.status,
                r.note,
            ]
            for r in rows
        ],
    )


def context_of(suite: Suite) -> dict:
    """Machine, date, plan and total time of a run."""
    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(suite.device),
        "device": str(suite.device),
        "preset": suite.plan.preset,
        "dtype": str(suite.plan.dtype).removeprefix("torch."),
        "matmul_peak_tflops": suite.peak_tflops,
        "seconds": time.perf_counter() - suite.start,
        "torch": torch.__version__,
    }


def pending_body() -> str:
    """The docs section before anyone has run the suite on a GPU: what it measures and the command."""
    return f"""Pending a GPU. On one H100 or H200 (no case starts after 450 s, so the run stays under 8 minutes):

```
pip install -e '.[dev,gpu]'   # diffusers for the reference rows, flash-attn for the varlen backend row
{COMMAND}
```

It writes `docs/gpu_suite.json` and replaces this section with the measured table: the bf16 matmul peak; one
13B DiT forward (random weights) at 544x960x129 and 720x1280x129 per attention backend (flash-attn varlen, SDPA
flash / cuDNN / memory-efficient) and diffusers' transformer on the same weights, as seconds and MFU against
the measured peak; the CFG batch of 2; DeepCache's saving on the 30-step schedule; fp8 weights; tiled VAE
decode at 720x1280x129; a HunyuanVideo-Foley xl / xxl 5-second clip per offload mode; the peak GPU memory of each.
`{COMMAND} --compile` adds regional `torch.compile` of the
blocks (first call and compiled forward; a minute or two more). `{COMMAND} --smoke` runs the same code on CPU at
tiny sizes (`tests/benchmarks/test_gpu_suite.py`)."""


def write_docs(suite: Suite, *, path: Path = BENCHMARKS_MD) -> None:
    """Replace the "GPU suite" section of ``path`` with the run's table."""
    ctx = context_of(suite)
    body = f"""Measured {ctx["date"]} on {ctx["machine"]} with `{COMMAND}` ({ctx["seconds"]:.0f} s): preset
`{ctx["preset"]}`, {ctx["dtype"]}, random weights, batch 1, {TEXT_LEN} text tokens ({TEXT_VALID} real). MFU is
against the matmul peak measured in the same run. Peak memory is what the case allocated above what was held
before it (weights included only where the case builds them).

{table(suite.rows)}"""
    write_benchmarks_section(SECTION, body, path=path)


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny presets on CPU: the same code in seconds")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    parser.add_argument("--budget-s", type=float, default=450.0, help="start no case after this many seconds")
    parser.add_argument("--json", type=Path, default=None, help=f"default: {DEFAULT_JSON} (not with --smoke)")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/BENCHMARKS.md")
    parser.add_argument("--pending", action="store_true", help="only write the pending docs section")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        help="add regional torch.compile rows with this backend (default inductor); takes a minute or two more",
    )
    args = parser.parse_args(argv)
    if args.pending:
        write_benchmarks_section(SECTION, pending_body())
        return
    suite = run_suite(
        smoke=args.smoke, device_name=args.device, budget_s=args.budget_s, compile_backend=args.compile
    )
    print(table(suite.rows))
    json_path = args.json or (None if args.smoke else DEFAULT_JSON)
    if json_path is not None:
        json_path.write_text(
            json.dumps({"context": context_of(suite), "rows": [asdict(r) for r in suite.rows]}, indent=2)
        )
    if not args.smoke and not args.no_docs:
        write_docs(suite)


if __name__ == "__main__":
    main()
