"""The project against its references on CPU, interleaved in one process, with the contention of every call.

Pairs, each on the same weights and inputs:

* ``dit``: one ``HunyuanDiT`` forward against diffusers' ``HunyuanVideoTransformer3DModel`` (the state dict
  converted with diffusers' own converter), at 1,280, 2,304 and 4,352 image tokens plus 256 text tokens
  (230 real), fp32, batch 1. The model is the production block at reduced width and depth: heads of 128
  (RoPE split 16/56/56), hidden 768, 1 double + 2 single blocks, the 2-block token refiner on 4096-wide text.
* ``vae``: ``CausalVAE3D`` decode and encode against diffusers' ``AutoencoderKLHunyuanVideo`` (identical
  keys), untiled, with the causal mid-block attention, at channels (32, 64, 128, 128).
* ``load``: ``model_core.checkpoints.load_model`` against building the model, ``torch.load(weights_only=True)``
  and ``load_state_dict``, both followed by one read of every weight (when memory-mapped pages load).

How the numbers hold on a shared machine: every repetition runs both sides of a pair back to back, in
alternating order, so a burst of other work hits both; each call records the CPU other processes used
meanwhile (``/proc/stat`` minus this process's own CPU time); calls where others used more than
``CONTENDED_CORES`` cores are set aside, and the min and median come from the quiet calls when at least two
are quiet (else from all calls, and the row says "contended"). Peak memory is one more call of each side after
the timings: ``VmHWM`` reset (``/proc/self/clear_refs``), with glibc set to return freed memory at once.

Run from the repository root::

    python -m benchmarks.side_by_side                      # all pairs, writes docs/BENCHMARKS.md
    python -m benchmarks.side_by_side --pairs dit --repeats 5 --json results.json --no-docs
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks._common import (
    CONTENDED_CORES,
    CpuMeter,
    CpuUse,
    current_rss_bytes,
    format_bytes,
    machine_description,
    markdown_table,
    peak_rss_bytes,
    reset_peak_rss,
    return_freed_memory,
    write_benchmarks_section,
)

SECTION = "Side by side (CPU)"
PAIRS = ("dit", "vae", "load")
DIT_LATENTS = ((5, 32, 32), (9, 32, 32), (17, 32, 32))  # 1,280 / 2,304 / 4,352 image tokens
TEXT_LEN, TEXT_VALID = 256, 230
VAE_CHANNELS = (32, 64, 128, 128)
VAE_LATENT = (9, 16, 16)  # 33 frames of 128 x 128


@dataclass(frozen=True)
class Call:
    """One timed call: wall seconds and the CPU use around it."""

    seconds: float
    others_cores: float
    contended: bool


@dataclass
class Side:
    """One side of a pair: a name, the call to time, what it is."""

    name: str
    fn: Callable[[], object]
    calls: list[Call]
    peak_memory: int | None = None


@dataclass(frozen=True)
class SideResult:
    """Summary of one side: min / median over the quiet calls (or over all, see :func:`summarize`)."""

    name: str
    min_s: float
    median_s: float
    quiet: int
    total: int
    max_others_cores: float
    peak_memory: int | None
    from_quiet: bool  # min / median come from the quiet calls only
    calls: tuple[Call, ...] = ()

    @property
    def contended(self) -> bool:
        """The numbers come from all calls, contended ones included."""
        return not self.from_quiet


@dataclass(frozen=True)
class PairResult:
    """A case (what was compared, at what size) with our side, the reference and a check they agree."""

    pair: str
    case: str
    ours: SideResult
    reference: SideResult
    agreement: str  # e.g. "max rel. error 3e-7"

    @property
    def ratio_min(self) -> float:
        """ours / reference, fastest calls."""
        return self.ours.min_s / self.reference.min_s

    @property
    def ratio_median(self) -> float:
        """ours / reference, median calls."""
        return self.ours.median_s / self.reference.median_s


def summarize(side: Side, *, quiet_only: bool | None = None) -> SideResult:
    """Min and median of the quiet calls (``quiet_only``; default: when at least two are quiet), else of all."""
    quiet = [c.seconds for c in side.calls if not c.contended]
    if quiet_only is None:
        quiet_only = len(quiet) >= 2
    used = quiet if quiet_only else [c.seconds for c in side.calls]
    return SideResult(
        name=side.name,
        min_s=min(used),
        median_s=statistics.median(used),
        quiet=len(quiet),
        total=len(side.calls),
        max_others_cores=max(c.others_cores for c in side.calls),
        peak_memory=side.peak_memory,
        from_quiet=quiet_only,
        calls=tuple(side.calls),
    )


def summarize_pair(pair: str, case: str, ours: Side, reference: Side, agreement: str) -> PairResult:
    """Both sides on the same basis: quiet calls when each side has at least two, else all calls of both."""
    quiet_only = all(sum(not c.contended for c in s.calls) >= 2 for s in (ours, reference))
    return PairResult(
        pair,
        case,
        summarize(ours, quiet_only=quiet_only),
        summarize(reference, quiet_only=quiet_only),
        agreement,
    )


def measure_peak(fn: Callable[[], object]) -> int | None:
    """Peak resident bytes of one call over the RSS just before it; None where the peak cannot be reset."""
    gc.collect()
    if not reset_peak_rss():
        return None
    base = current_rss_bytes()
    fn()
    return max(0, peak_rss_bytes() - base)


def interleave(sides: Sequence[Side], *, repeats: int, warmup: int, memory: bool = True) -> None:
    """Warm every side, then ``repeats`` rounds of one call per side (order reversed every other round)."""
    for _ in range(warmup):
        for side in sides:
            side.fn()
    for r in range(repeats):
        for side in sides if r % 2 == 0 else list(reversed(sides)):
            gc.collect()
            with CpuMeter() as meter:
                side.fn()
            use: CpuUse = meter.use
            side.calls.append(Call(seconds=use.wall, others_cores=use.others_cores, contended=use.contended))
            mark = " (contended)" if use.contended else ""
            print(f"  {side.name}: {use.wall:.3f} s, others {use.others_cores:.2f} cores{mark}", flush=True)
    if memory:
        for side in sides:
            side.peak_memory = measure_peak(side.fn)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------------------------------------------
# DiT


def dit_config():
    """The production block at reduced width and depth (heads of 128, RoPE 16/56/56, 4096-wide text)."""
    from model_core.configs import DiTConfig

    return DiTConfig(hidden_size=768, num_heads=6, depth_double=1, depth_single=2, guidance_embed=True)


def dit_pair(latents: Sequence[tuple[int, int, int]], repeats: int, warmup: int) -> list[PairResult]:
    """Ours against diffusers' transformer, one case per latent size."""
    from model_core.dit import HunyuanDiT
    from tests.diffusers_twins import diffusers_dit

    config = dit_config()
    torch.manual_seed(0)
    ours = HunyuanDiT(config).eval()
    with torch.no_grad():
        for p in ours.parameters():  # random everywhere: no zero-initialised weight hides a path
            p.normal_(0.0, 0.02)
    theirs = diffusers_dit(config, ours.state_dict())
    results = []
    for latent in latents:
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(1, config.in_channels, *latent, generator=gen)
        t = torch.full((1,), 500.0)
        text = torch.randn(1, TEXT_LEN, config.text_states_dim, generator=gen)
        mask = torch.zeros(1, TEXT_LEN, dtype=torch.long)
        mask[:, :TEXT_VALID] = 1
        pooled = torch.randn(1, config.text_pooled_dim, generator=gen)
        guidance = torch.full((1,), 6016.0)

        args = (x, t, text, mask, pooled)

        def run_ours(args: tuple = args, guidance: torch.Tensor = guidance) -> torch.Tensor:
            with torch.inference_mode():
                return ours(*args, guidance=guidance)

        def run_theirs(args: tuple = args, guidance: torch.Tensor = guidance) -> torch.Tensor:
            with torch.inference_mode():
                return theirs(*args, guidance, return_dict=False)[0]

        agreement = f"max rel. error {_rel_err(run_ours(), run_theirs()):.1e}"
        tokens = latent[0] * (latent[1] // 2) * (latent[2] // 2)
        case = f"{tokens:,} image + {TEXT_LEN} text tokens"
        print(f"dit: {case}", flush=True)
        sides = [Side("ours", run_ours, []), Side("diffusers", run_theirs, [])]
        interleave(sides, repeats=repeats, warmup=warmup)
        results.append(summarize_pair("dit forward", case, sides[0], sides[1], agreement))
    return results


# ------------------------------------------------------------------------------------------------------------
# VAE


def vae_pair(latent: tuple[int, int, int], repeats: int, warmup: int) -> list[PairResult]:
    """Ours against diffusers' VAE: untiled decode of ``latent`` and encode of the decoded video."""
    from model_core.vae import CausalVAE3D, VAEConfig
    from tests.diffusers_twins import diffusers_vae

    cfg = VAEConfig(block_out_channels=VAE_CHANNELS)
    torch.manual_seed(0)
    ours = CausalVAE3D(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))  # norms away from 1 and 0
    theirs = diffusers_vae(ours)
    z = torch.randn(1, cfg.latent_channels, *latent, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        video = ours.decode(z).clamp(-1, 1)
    results = []
    frames = (latent[0] - 1) * 4 + 1
    size = f"{frames}x{latent[1] * 8}x{latent[2] * 8}"
    for what, run_ours, run_theirs in (
        ("decode", lambda: ours.decode(z), lambda: theirs.decode(z).sample),
        ("encode", lambda: ours.encode(video).mode(), lambda: theirs.encode(video).latent_dist.mode()),
    ):

        def timed(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
            def call() -> torch.Tensor:
                with torch.inference_mode():
                    return fn()

            return call

        agreement = f"max rel. error {_rel_err(timed(run_ours)(), timed(run_theirs)()):.1e}"
        case = f"{what} {size} (frames x px), channels {'/'.join(map(str, VAE_CHANNELS))}"
        print(f"vae: {case}", flush=True)
        sides = [Side("ours", timed(run_ours), []), Side("diffusers", timed(run_theirs), [])]
        interleave(sides, repeats=repeats, warmup=warmup)
        results.append(summarize_pair(f"VAE {what}", case, sides[0], sides[1], agreement))
    return results


# ------------------------------------------------------------------------------------------------------------
# checkpoint load


def load_pair(size_gb: float, repeats: int) -> list[PairResult]:
    """``load_model`` against build + ``torch.load`` + ``load_state_dict``, fp32 and bf16, plus one full read."""
    from benchmarks.load_checkpoint import parameter_bytes, scaled_config, write_checkpoints
    from model_core.checkpoints import load_model
    from model_core.dit import HunyuanDiT

    config = scaled_config(size_gb)
    folder = Path(tempfile.mkdtemp(prefix="adrender-bench-load-"))
    results = []
    try:
        path = write_checkpoints(config, folder)["pt"]
        for dtype in (torch.float32, torch.bfloat16):

            def read_all(model: nn.Module) -> float:
                return sum(float(p.detach().float().sum()) for p in model.parameters())

            def run_ours(dtype: torch.dtype = dtype) -> float:
                return read_all(load_model(config, path, dtype=dtype))

            def run_plain(dtype: torch.dtype = dtype) -> float:
                model = HunyuanDiT(config).to(dtype)
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state["module"], strict=True)
                del state
                return read_all(model)

            a, b = run_ours(), run_plain()
            agreement = "same weights" if abs(a - b) <= 1e-3 * max(1.0, abs(b)) else f"sums {a} != {b}"
            name = str(dtype).removeprefix("torch.")
            case = (
                f"{format_bytes(parameter_bytes(config))} fp32 .pt to {name}, then one read of every weight"
            )
            print(f"load: {case}", flush=True)
            sides = [Side("ours", run_ours, []), Side("torch.load", run_plain, [])]
            interleave(sides, repeats=repeats, warmup=0)
            results.append(summarize_pair("checkpoint load", case, sides[0], sides[1], agreement))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


# ------------------------------------------------------------------------------------------------------------
# report


def table(results: Sequence[PairResult]) -> str:
    """Markdown table of the results, one row per case."""
    headers = [
        "what",
        "case",
        "ours min / median s",
        "reference",
        "reference min / median s",
        "ratio (min / median)",
        "ours peak",
        "reference peak",
        "quiet calls",
        "others, max cores",
        "outputs",
    ]

    def mem(n: int | None) -> str:
        return "-" if n is None else format_bytes(n)

    rows = []
    for r in results:
        flag = " (contended)" if r.ours.contended else ""
        rows.append(
            [
                r.pair,
                r.case,
                f"{r.ours.min_s:.3f} / {r.ours.median_s:.3f}",
                r.reference.name,
                f"{r.reference.min_s:.3f} / {r.reference.median_s:.3f}",
                f"{r.ratio_min:.2f}x / {r.ratio_median:.2f}x{flag}",
                mem(r.ours.peak_memory),
                mem(r.reference.peak_memory),
                f"{r.ours.quiet}/{r.ours.total}, {r.reference.quiet}/{r.reference.total}",
                f"{max(r.ours.max_others_cores, r.reference.max_others_cores):.2f}",
                r.agreement,
            ]
        )
    return markdown_table(headers, rows)


def run(
    pairs: Sequence[str], *, repeats: int, warmup: int, threads: int, load_gb: float, quick: bool = False
) -> tuple[list[PairResult], dict]:
    """Measure the chosen pairs; returns the results and the run's context (machine, date, whole-run CPU use).

    ``quick`` shrinks every case (16 image tokens, a 2x4x4 VAE latent, the smallest checkpoint, ~0.5 GB):
    the same code in seconds, for tests.
    """
    unknown = sorted(set(pairs) - set(PAIRS))
    if unknown:
        raise ValueError(f"unknown pairs {unknown}; choose from {list(PAIRS)}")
    torch.set_num_threads(threads)
    return_freed_memory()
    results: list[PairResult] = []
    with CpuMeter() as meter:
        if "dit" in pairs:
            results += dit_pair([(1, 8, 8)] if quick else DIT_LATENTS, repeats, warmup)
        if "vae" in pairs:
            results += vae_pair((2, 4, 4) if quick else VAE_LATENT, repeats, warmup)
        if "load" in pairs:
            results += load_pair(0.05 if quick else load_gb, repeats)
    use = meter.use
    context = {
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(torch.device("cpu")),
        "threads": threads,
        "repeats": repeats,
        "wall_s": use.wall,
        "own_cpu_s": use.own,
        "others_cores": use.others_cores,
        "contended_threshold_cores": CONTENDED_CORES,
    }
    return results, context


def write_docs(results: Sequence[PairResult], context: dict, command: str) -> None:
    """Replace the "Side by side (CPU)" section of docs/BENCHMARKS.md."""
    contended = [r for r in results if r.ours.contended]
    verdict = (
        f"{len(contended)} of {len(results)} rows come from contended calls (marked): a side had fewer than two "
        "quiet calls, so min / median of both sides are over all calls and the ratios are less certain."
        if contended
        else "Every row comes from at least two quiet calls per side."
    )
    body = f"""Measured {context["date"]} on {context["machine"]}, {context["threads"]} threads:
`{command}` (`benchmarks/side_by_side.py`). Each case runs ours and the reference back to back,
{context["repeats"]} rounds in alternating order, in one process, on the same weights and inputs ("outputs"
compares them). A call is quiet when other processes used at most {CONTENDED_CORES:.2f} cores meanwhile
(`/proc/stat` minus this process's CPU time); min / median are over the quiet calls when each side has at least two,
else over all calls of both sides.
Peak = `VmHWM` of one more call over the RSS before it, glibc returning freed memory at once.
DiT: the production block at reduced size (heads of 128, hidden 768, 1 double + 2 single blocks, the 2-block
token refiner on 4096-wide text), fp32, batch 1, 230 of 256 text tokens real. VAE: the release's layout at
channels 32/64/128/128, untiled, causal mid-block attention.

During the whole run ({context["wall_s"]:.0f} s) other processes used {context["others_cores"]:.2f} cores on average.
{verdict}

{table(results)}"""
    write_benchmarks_section(SECTION, body)


def main(argv: list[str] | None = None) -> None:
    """Command line: measure, print the table, optionally write a JSON file and docs/BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated: {', '.join(PAIRS)}")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of interleaved calls per case")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--load-gb", type=float, default=0.5, help="fp32 size of the checkpoint to load")
    parser.add_argument("--quick", action="store_true", help="tiny cases: the same code in seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--no-docs", action="store_true", help="print only; do not write docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    start = time.perf_counter()
    results, context = run(
        pairs,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        load_gb=args.load_gb,
        quick=args.quick,
    )
    print(table(results))
    print(f"{time.perf_counter() - start:.0f} s; others used {context['others_cores']:.2f} cores on average")
    if args.json:
        payload = {
            "context": context,
            "results": [
                {**asdict(r), "ratio_min": r.ratio_min, "ratio_median": r.ratio_median} for r in results
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    if not args.no_docs:
        shown = list(argv if argv is not None else sys.argv[1:])
        if "--json" in shown:  # where this run kept its raw numbers is no part of the recipe
            i = shown.index("--json")
            del shown[i : i + 2]
        command = "python -m benchmarks.side_by_side " + " ".join(shown)
        write_docs(results, context, command.strip())


if __name__ == "__main__":
    main()
