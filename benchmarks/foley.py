"""HunyuanVideo-Foley: seconds per 5-second clip and peak memory, measured on CPU (tiny), computed for xl / xxl.

    python -m benchmarks.foley                      # CPU: the tiny clip, interleaved with its reference; docs
    python -m benchmarks.foley --repeats 7 --no-docs
    python -m benchmarks.foley --gpu                # one GPU: xl / xxl per offload mode, "Foley (GPU)" in docs

- clip (CPU, tiny models): one 5-second clip (125 frames at 25 fps, 64 x 64) through
  `model_core.audio.foley.pipeline.foley_audio` as the `v2a_foley` step runs it (features, 50 Euler steps with CFG
  4.5 and a step checkpoint written every 5 steps, DAC decode), against the reference: the same networks called in
  a bare loop written here (features, then `x += (s[i+1] - s[i]) * v` with the CFG formula, no hooks, no
  checkpoints, then the decode). The two alternate in one process, so a burst of other work hits both; their
  ratio is what the shared sampler, the checkpoints and the offload bookkeeping cost. The outputs are compared.
- peak (CPU, tiny): `VmHWM` over the RSS before one clip, models loaded and warm, in a fresh process.
- footprint (xl, xxl, computed): the device bytes of every network in the dtype the step loads it in (MMDiT and
  SigLIP2 in bf16; CLAP, the Synchformer and the DAC decoder in float32; the DAC encoder half stays on the CPU),
  counted from the models built on the meta device, plus an estimate of the largest live activations of each
  phase (the formulas are in `activation_bytes`), per offload mode. GPU measurements of the same clip per preset
  and mode are rows of `python -m benchmarks.gpu_suite` (`gpu_cases`).

Every timed call records the CPU other processes used meanwhile (`CpuMeter`) and `/proc/loadavg` before and after
the run; contended calls are left out of min / median when quiet ones exist.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from benchmarks._common import (
    CpuMeter,
    CpuUse,
    current_rss_bytes,
    format_bytes,
    machine_description,
    markdown_table,
    peak_rss_bytes,
    reset_peak_rss,
    return_freed_memory,
    run_in_subprocess,
    write_benchmarks_section,
)

if TYPE_CHECKING:
    from benchmarks.gpu_suite import Suite
    from model_core.audio.foley.dac import DACConfig
    from model_core.audio.foley.offload import FoleyOffload
    from model_core.audio.foley.pipeline import FoleyEncoders
    from model_core.audio.foley.release import FoleyModels
    from model_core.audio.foley.sampling import FoleyConditioning

SECTION = "Foley"
COMMAND = "python -m benchmarks.foley"
CLIP_SECONDS = 5
FPS = 25
STEPS = 50
GUIDANCE = 4.5
PROMPT = "water splashes, a bottle cap clicks"
CHECKPOINT_EVERY = 5
GIB = 1024**3


# ------------------------------------------------------------------------------------------------------------
# networks


@dataclass(frozen=True)
class Kind:
    """The networks of one Foley size: the MMDiT preset, its DAC and Synchformer, and the encoder shapes."""

    dit: str
    dac: str
    synchformer: str
    # SiglipVisionConfig / ClapTextConfig overrides; google/siglip2-base-patch16-512's vision tower is the default
    # config at 512 px, laion/larger_clap_general's text tower the default ClapTextConfig
    siglip: dict[str, Any]
    clap: dict[str, Any]


KINDS = {
    "xxl": Kind("hunyuanvideo-foley-xxl", "dac-vae-48k", "synchformer", {"image_size": 512}, {}),
    "xl": Kind("hunyuanvideo-foley-xl", "dac-vae-48k", "synchformer", {"image_size": 512}, {}),
    "tiny": Kind(
        "tiny-hunyuanvideo-foley",
        "tiny-dac-vae",
        "tiny-synchformer",
        {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
        },
        {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "projection_dim": 16,
        },
    ),
}


def _modules(kind: Kind) -> dict[str, nn.Module]:
    """The networks of `kind` with default initialisation on the current default device (meta for counting)."""
    from transformers import (
        ClapTextConfig,
        ClapTextModelWithProjection,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from model_core.audio.foley.config import FOLEY_PRESETS
    from model_core.audio.foley.dac import DAC_PRESETS, DACVAE
    from model_core.audio.foley.model import FoleyDiT
    from model_core.audio.foley.synchformer import SYNCHFORMER_PRESETS, Synchformer

    return {
        "dit": FoleyDiT(FOLEY_PRESETS[kind.dit]),
        "dac": DACVAE(DAC_PRESETS[kind.dac]),
        "synchformer": Synchformer(SYNCHFORMER_PRESETS[kind.synchformer]),
        "siglip": SiglipVisionModel(SiglipVisionConfig(patch_size=16, **kind.siglip)),
        "clap": ClapTextModelWithProjection(ClapTextConfig(**kind.clap)),
    }


# the dtype each network runs in on a GPU (components.runtime.models): bf16 MMDiT and SigLIP2, the rest float32
GPU_DTYPES = {
    "dit": torch.bfloat16,
    "siglip": torch.bfloat16,
    "clap": torch.float32,
    "synchformer": torch.float32,
    "dac": torch.float32,
}


def random_networks(
    kind_name: str, *, build_on: torch.device | str = "cpu", gpu_dtypes: bool = False, seed: int = 0
) -> tuple[FoleyModels, FoleyEncoders]:
    """Random-weight networks of a Foley size, left on the CPU (N(0, 0.02) weights, LayerNorms at 1 / 0).

    `build_on` fills the weights there first (a GPU fills 5B parameters in a second); `gpu_dtypes` casts each
    network to the dtype the step runs it in on a GPU (`GPU_DTYPES`), else everything stays float32.
    """
    from model_core.audio.foley.encoders import ClapTextEncoder, SiglipImageEncoder
    from model_core.audio.foley.pipeline import FoleyEncoders
    from model_core.audio.foley.release import FoleyModels
    from model_core.tiny_models import clip_byte_tokenizer

    kind = KINDS[kind_name]
    with torch.device("meta"):
        nets = _modules(kind)
    gen = torch.Generator(device=build_on).manual_seed(seed)
    for name, module in nets.items():
        dtype = GPU_DTYPES[name] if gpu_dtypes else torch.float32
        module.to_empty(device=build_on)
        with torch.no_grad():
            for pname, param in module.named_parameters():
                if param.ndim == 1 and pname.endswith("weight"):
                    param.fill_(1.0)  # norm scales
                elif param.ndim == 1 and pname.endswith("bias"):
                    param.zero_()
                else:
                    param.normal_(0.0, 0.02, generator=gen)
            for bname, buf in module.named_buffers():
                if bname.endswith("position_ids"):
                    buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand_as(buf))
                else:
                    buf.zero_()
        module.to(device="cpu", dtype=dtype).eval().requires_grad_(False)
    models = FoleyModels(dit=nets["dit"], dac=nets["dac"], synchformer=nets["synchformer"], dropped=[])  # type: ignore[arg-type]
    encoders = FoleyEncoders(
        siglip=SiglipImageEncoder(nets["siglip"]),
        image_size=int(kind.siglip["image_size"]),
        clap=ClapTextEncoder(nets["clap"], clip_byte_tokenizer()),
    )
    return models, encoders


def clip_frames(seconds: int = CLIP_SECONDS, size: int = 64, seed: int = 0) -> Tensor:
    """uint8 frames `[seconds * 25, size, size, 3]`: a moving gradient with noise (not constant, not random)."""
    n = seconds * FPS
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    frames = torch.empty(n, size, size, 3)
    for i in range(n):
        phase = i / n
        frames[i, ..., 0] = (ramp[None, :] + phase) % 1
        frames[i, ..., 1] = (ramp[:, None] + 2 * phase) % 1
        frames[i, ..., 2] = 0.5
    frames += 0.05 * torch.randn(frames.shape, generator=gen)
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


# ------------------------------------------------------------------------------------------------------------
# the clip, ours and the bare reference


def ours(
    models: FoleyModels,
    encoders: FoleyEncoders,
    frames: Tensor,
    device: torch.device,
    offload: FoleyOffload,
    scratch: Path | None = None,
    steps: int = STEPS,
) -> Tensor:
    """The clip as the step runs it: `foley_audio`, a step checkpoint saved every 5 steps (when `scratch`)."""
    from model_core.audio.foley.pipeline import foley_audio

    def save(ckpt: object) -> None:
        assert scratch is not None
        ckpt.save(scratch / f"ckpt-{ckpt.step_index:04d}.safetensors")  # type: ignore[attr-defined]

    return foley_audio(
        models,
        encoders,
        frames,
        FPS,
        PROMPT,
        device=device,
        seed=0,
        num_steps=steps,
        guidance_scale=GUIDANCE,
        offload=offload,
        checkpoint_every=CHECKPOINT_EVERY if scratch is not None else None,
        on_checkpoint=save if scratch is not None else None,
    )


def bare_sample(models: FoleyModels, cond: FoleyConditioning, steps: int = STEPS) -> Tensor:
    """The reference loop: Euler over the release's schedule with CFG (uncond row first), nothing else."""
    from model_core.sampling.noise import initial_noise
    from model_core.sampling.schedule import FlowMatchSchedule

    dit = models.dit
    schedule = FlowMatchSchedule.create(steps, 1.0, reverse=True)
    x = initial_noise((1, dit.config.latent_dim, cond.length), 0)
    empty_clip, empty_sync = dit.empty_visual(1, cond.clip.shape[1], cond.sync.shape[1])
    clip = torch.cat([empty_clip.to(cond.clip.dtype), cond.clip])
    sync = torch.cat([empty_sync.to(cond.sync.dtype), cond.sync])
    text = torch.cat([cond.negative_text, cond.text])
    with torch.no_grad():
        for i in range(steps):
            v = dit(torch.cat([x, x]), schedule.timesteps[i].expand(2), clip, text, sync).float()
            uncond, conditional = v.chunk(2)
            x = x + (schedule.sigmas[i + 1] - schedule.sigmas[i]) * (
                uncond + GUIDANCE * (conditional - uncond)
            )
    return x


def reference(
    models: FoleyModels, encoders: FoleyEncoders, frames: Tensor, device: torch.device, steps: int = STEPS
) -> Tensor:
    """The same clip through the bare loop (features and decode as in `foley_audio`, no offload, no hooks)."""
    from model_core.audio.foley.offload import FoleyOffload
    from model_core.audio.foley.pipeline import foley_features

    cond = foley_features(models, encoders, frames, FPS, PROMPT, device=device, offload=FoleyOffload.NONE)
    latents = bare_sample(models, cond, steps)
    with torch.no_grad():
        audio = models.dac.decode(latents)[0, 0].float()
    return audio[: frames.shape[0] * models.dac.sample_rate // FPS]


# ------------------------------------------------------------------------------------------------------------
# CPU runs


@dataclass
class Calls:
    seconds: list[float]
    use: list[CpuUse]

    def quiet(self) -> list[float]:
        q = [s for s, u in zip(self.seconds, self.use, strict=True) if not u.contended]
        return q if len(q) >= 2 else self.seconds

    @property
    def contended(self) -> int:
        return sum(u.contended for u in self.use)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


@dataclass
class Interleaved:
    ours: Calls
    reference: Calls
    max_abs_diff: float
    samples: int
    loadavg_before: str
    loadavg_after: str
    wall: float
    threads: int


def interleaved(repeats: int) -> Interleaved:
    """Ours and the reference on the tiny networks, alternating, `repeats` calls each; CPU, float32."""
    from model_core.audio.foley.offload import FoleyOffload

    device = torch.device("cpu")
    models, encoders = random_networks("tiny")
    frames = clip_frames()
    runs = {"ours": Calls([], []), "reference": Calls([], [])}
    load_before = _loadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        a = ours(models, encoders, frames, device, FoleyOffload.ENCODERS, scratch)  # warm-up, and the outputs
        b = reference(models, encoders, frames, device)
        for r in range(repeats):
            order = ("ours", "reference") if r % 2 == 0 else ("reference", "ours")
            for name in order:
                fn: Callable[[], object] = (
                    (lambda: ours(models, encoders, frames, device, FoleyOffload.ENCODERS, scratch))
                    if name == "ours"
                    else (lambda: reference(models, encoders, frames, device))
                )
                with CpuMeter() as meter:
                    t0 = time.perf_counter()
                    fn()
                    runs[name].seconds.append(time.perf_counter() - t0)
                runs[name].use.append(meter.use)
    return Interleaved(
        ours=runs["ours"],
        reference=runs["reference"],
        max_abs_diff=float((a - b).abs().max()),
        samples=int(a.numel()),
        loadavg_before=load_before,
        loadavg_after=_loadavg(),
        wall=time.perf_counter() - started,
        threads=torch.get_num_threads(),
    )


def peak_child() -> dict[str, int]:
    """In a fresh process: the tiny networks' bytes and the RSS peak of one warm clip over the RSS before it."""
    from model_core.audio.foley.offload import FoleyOffload

    return_freed_memory()
    models, encoders = random_networks("tiny")
    frames = clip_frames()
    device = torch.device("cpu")
    ours(models, encoders, frames, device, FoleyOffload.ENCODERS)  # warm: lazy inits and caches
    weights = sum(
        t.numel() * t.element_size()
        for m in (models.dit, models.dac, models.synchformer, encoders.siglip, encoders.clap)
        for t in m.state_dict().values()
    )
    reset_peak_rss()
    base = current_rss_bytes()
    ours(models, encoders, frames, device, FoleyOffload.ENCODERS)
    return {"weights": weights, "peak_over_base": max(0, peak_rss_bytes() - base)}


# ------------------------------------------------------------------------------------------------------------
# footprint of the production sizes


def network_bytes(kind_name: str) -> dict[str, int]:
    """Device bytes of each network in its GPU dtype; the DAC counts its decoder path only (its encoder half
    stays on the CPU), and `dac_encoder` is listed apart."""
    with torch.device("meta"):
        nets = _modules(KINDS[kind_name])

    def size(module: nn.Module, dtype: torch.dtype) -> int:
        return sum(p.numel() for p in module.parameters()) * dtype.itemsize

    dac = nets["dac"]
    assert isinstance(dac, nn.Module)
    out = {name: size(m, GPU_DTYPES[name]) for name, m in nets.items() if name != "dac"}
    out["dac"] = size(dac.post_quant_conv, torch.float32) + size(dac.decoder, torch.float32)  # type: ignore[arg-type]
    out["dac_encoder"] = size(dac.encoder, torch.float32) + size(dac.quant_conv, torch.float32)  # type: ignore[arg-type]
    return out


def activation_bytes(kind_name: str, seconds: float) -> dict[str, int]:
    """Estimates of the largest live activations of each phase of a clip of `seconds` (batch 2 for CFG).

    features: SigLIP2 on a chunk of up to 64 frames of 1024 patches (two residual-width and two MLP-width
    tensors, bf16) or the Synchformer on every segment at once (1569 tokens each; residual float32, MLP fp16
    under autocast), whichever is larger; attention through SDPA's fused kernels (no score matrix).
    sampling: the larger block kind of the MMDiT (bf16): a triple block holds about 14 hidden-width tensors per
    audio + visual token (streams, qkv, attention output, a 4x MLP hidden and its activation); a single block
    the per-token modulation (6 widths), sync features, streams and qkv (6), and 3 ConvMLP-width tensors.
    decode: `dac_decode_bytes`.
    """
    from model_core.audio.foley.config import FOLEY_PRESETS
    from model_core.audio.foley.dac import DAC_PRESETS

    kind = KINDS[kind_name]
    cfg = FOLEY_PRESETS[kind.dit]
    frames = int(seconds * FPS)
    latents = int(frames / FPS * cfg.latent_rate)
    visual = int(seconds * 8)
    segments = max(1, (frames - 16) // 8 + 1)
    width, mlp = 768, 3072
    patches = (kind.siglip["image_size"] // 16) ** 2
    siglip = min(64, visual) * patches * (2 * width + 2 * mlp) * 2
    sync = segments * 1569 * (2 * width * 4 + 2 * mlp * 2)
    h = cfg.hidden_size
    triple = 2 * (latents + visual) * h * 14 * 2
    single = 2 * latents * (13 * h + 3 * cfg.conv_mlp_hidden) * 2
    decode = dac_decode_bytes(DAC_PRESETS[kind.dac], latents)
    return {"features": max(siglip, sync), "sampling": max(triple, single), "decode": decode}


def dac_decode_bytes(config: DACConfig, latents: int) -> int:
    """Estimated peak float32 bytes of one DAC decode of `latents` frames, batch 1: four tensors of the largest
    stage (channels x samples: input, Snake and its temporaries, conv output) plus twice the largest conv
    weight (the weight norm materialises each normalised weight in the forward; its norm takes another)."""
    channels, length, stage, weight = config.decoder_dim, latents, 0, 0
    for rate in config.decoder_rates:
        weight = max(weight, channels * (channels // 2) * 2 * rate)  # ConvTranspose1d, kernel 2 * stride
        channels, length = channels // 2, length * rate
        stage = max(stage, channels * length)
    return (4 * stage + 2 * weight) * 4


def peaks(kind_name: str, seconds: float) -> dict[str, dict[str, int]]:
    """Estimated peak device bytes of the first clip (models loaded by the step) per offload mode, by phase."""
    w = network_bytes(kind_name)
    a = activation_bytes(kind_name, seconds)
    encoders = w["siglip"] + w["clap"] + w["synchformer"]
    generator = w["dit"] + w["dac"]
    none = {
        "load": generator + encoders,
        "features": generator + encoders + a["features"],
        "sampling": generator + encoders + a["sampling"],
        "decode": generator + encoders + a["decode"],
    }
    # load_foley leaves on the CPU what the mode moves later; SigLIP2 and CLAP load onto the device
    parked_encoders = {
        "load": generator + w["siglip"] + w["clap"],
        "features": generator + encoders + a["features"],
        "sampling": generator + a["sampling"],
        "decode": generator + a["decode"],
    }
    sequential = {
        "load": w["siglip"] + w["clap"],
        "features": encoders + a["features"],
        "sampling": w["dit"] + a["sampling"],
        "decode": w["dac"] + a["decode"],
    }
    return {"none": none, "encoders": parked_encoders, "sequential": sequential}


def footprint_table(seconds: float = 10.0) -> str:
    rows = []
    for kind_name in ("xl", "xxl"):
        w = network_bytes(kind_name)
        a = activation_bytes(kind_name, seconds)
        for mode, by_phase in peaks(kind_name, seconds).items():
            top = max(by_phase, key=lambda k: by_phase[k])
            rows.append(
                [
                    kind_name,
                    mode,
                    f"{by_phase[top] / GIB:.2f} GiB ({top})",
                    " / ".join(
                        f"{by_phase[p] / GIB:.2f}" for p in ("load", "features", "sampling", "decode")
                    ),
                    f"{w['dit'] / GIB:.2f}",
                    f"{(w['siglip'] + w['clap'] + w['synchformer']) / GIB:.2f}",
                    f"{w['dac'] / GIB:.2f}",
                    " / ".join(f"{a[p] / GIB:.2f}" for p in ("features", "sampling", "decode")),
                ]
            )
    return markdown_table(
        [
            "size",
            "offload",
            "peak (phase)",
            "load / features / sampling / decode GiB",
            "MMDiT GiB",
            "encoders GiB",
            "DAC decoder GiB",
            "activations GiB",
        ],
        rows,
    )


# ------------------------------------------------------------------------------------------------------------
# GPU rows (called by benchmarks.gpu_suite)


def gpu_cases(suite: Suite) -> None:
    """Seconds per warm 5-second clip and peak device memory per Foley size and offload mode.

    The networks start on the CPU; a mode places them as the step does (none: all on the device; encoders: the
    MMDiT and DAC decoder; sequential: nothing) and runs two clips; the peak covers both (weights included), the
    seconds are the second clip's. The smoke plan runs the tiny size on CPU.
    """
    from benchmarks.gpu_suite import Row
    from model_core.audio.foley.offload import FoleyOffload, decoder_modules

    device = suite.device
    smoke = suite.plan.preset.startswith("tiny-")
    sizes = ("tiny",) if smoke else ("xl", "xxl")
    seconds, steps = (1, 2) if smoke else (CLIP_SECONDS, STEPS)  # the smoke run only proves the code runs
    frames = clip_frames(seconds, size=64 if smoke else 256)
    for kind_name in sizes:
        label = f"{kind_name}, {seconds} s, {steps} steps"
        if suite.over_budget():
            suite.run(Row("Foley clip", label, "-"), lambda: None)
            continue
        models, encoders = random_networks(
            kind_name, build_on=device if device.type == "cuda" else "cpu", gpu_dtypes=not smoke
        )
        for mode in FoleyOffload:
            row = Row("Foley clip", label, f"offload {mode.value}")
            if suite.over_budget():
                row.status = f"skipped: over the {suite.budget_s:.0f} s budget"
                suite.rows.append(row)
                continue
            try:
                for m in (models.dit, *decoder_modules(models.dac), encoders.siglip, encoders.clap):
                    m.to("cpu")
                models.synchformer.to("cpu")
                with suite.peak() as peak:
                    resident: list[nn.Module] = []
                    if mode is FoleyOffload.NONE:
                        resident = [encoders.siglip, encoders.clap, models.synchformer]
                    if mode is not FoleyOffload.SEQUENTIAL:
                        resident += [models.dit, *decoder_modules(models.dac)]
                    for m in resident:
                        m.to(device)
                    ours(models, encoders, frames, device, mode, steps=steps)
                    start = time.perf_counter()
                    ours(models, encoders, frames, device, mode, steps=steps)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    row.seconds = time.perf_counter() - start
                row.peak_memory = peak[0]
                computed = peaks(kind_name, seconds)[mode.value]
                steady = max(computed[p] for p in ("features", "sampling", "decode"))
                row.note = "" if smoke else f"computed {steady / GIB:.2f} GiB (no load phase)"
            except torch.OutOfMemoryError:
                row.status = "failed: out of memory"
            suite.rows.append(row)
            print(json.dumps(asdict(row)), flush=True)
        del models, encoders
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------------
# report


def cpu_body(result: Interleaved, peak: dict[str, int], repeats: int) -> str:
    ours_calls, ref_calls = result.ours, result.reference
    qo, qr = ours_calls.quiet(), ref_calls.quiet()
    ratio_min, ratio_med = min(qo) / min(qr), statistics.median(qo) / statistics.median(qr)
    others = max(u.others_cores for u in ours_calls.use + ref_calls.use)
    table = markdown_table(
        ["what", "min s", "median s", "calls (contended)", "others, max cores"],
        [
            ["ours: foley_audio, checkpoint every 5 steps", f"{min(qo):.3f}", f"{statistics.median(qo):.3f}",
             f"{repeats} ({ours_calls.contended})", f"{others:.2f}"],
            ["reference: bare Euler + CFG loop", f"{min(qr):.3f}", f"{statistics.median(qr):.3f}",
             f"{repeats} ({ref_calls.contended})", f"{others:.2f}"],
        ],
    )  # fmt: skip
    return f"""### CPU, tiny models

Measured {datetime.date.today().isoformat()} on {machine_description(torch.device("cpu"))}, {result.threads} threads:
`{COMMAND} --repeats {repeats}` ({result.wall:.0f} s). `/proc/loadavg` before / after:
{result.loadavg_before} / {result.loadavg_after}. One {CLIP_SECONDS}-second clip ({CLIP_SECONDS * FPS} frames,
64 x 64, {STEPS} steps, CFG {GUIDANCE}) on random tiny networks, float32; ours and the reference alternate.

{table}

Ours / reference: {ratio_min:.2f}x by min, {ratio_med:.2f}x by median; outputs differ by at most
{result.max_abs_diff:.1e} over {result.samples} samples (0 = the same bits). Peak of one warm clip in a
fresh process: {format_bytes(peak["peak_over_base"])} over the RSS before it ({format_bytes(peak["weights"])} of
tiny weights)."""


def footprint_body(seconds: float = 10.0) -> str:
    xxl = {mode: max(phases.values()) for mode, phases in peaks("xxl", seconds).items()}
    w = network_bytes("xxl")
    encoders_xxl = w["siglip"] + w["clap"] + w["synchformer"]
    xxl_sampling = peaks("xxl", seconds)["sequential"]["sampling"]

    def gb(n: int) -> str:
        return f"{n / GIB:.2f} GiB ({n / 1e9:.1f} GB)"

    return f"""### Footprint of xl and xxl (computed)

Device bytes per phase of the first {seconds:.0f}-second clip: the networks' weights as the step loads them on a
GPU (the MMDiT and SigLIP2's vision tower in bf16; CLAP's text tower, the Synchformer's video branch and the DAC
decoder in float32; the DAC encoder half on the CPU), counted from the models built on the meta device, plus the
activation estimates of `benchmarks/foley.py::activation_bytes` (largest live tensors; fused attention). Not
included: the CUDA context (about 0.5 GiB) and allocator fragmentation. The release states 20 GB for xxl and
12 GB with `--enable_offload` (16 / 8 GB for xl).

{footprint_table(seconds)}

`offload` is the `v2a_foley` step's option (`model_core.audio.foley.offload.FoleyOffload`): `encoders` is the
default; `sequential` also keeps the MMDiT and the DAC decoder off the device outside their phase, at the cost of
moving the MMDiT to the device and back for every clip.

Reading: xxl peaks at {gb(xxl["none"])} without offload (the release: 20 GB). Offloading the encoders does not
lower the peak, which is the feature extraction running beside the resident MMDiT; it frees
{gb(encoders_xxl)} for the sampling and the decode. `sequential` peaks at {gb(xxl["sequential"])} (the release
with offload: 12 GB); its peak is then the load, where `components/runtime/models.py` places the MMDiT, the DAC
decoder and the Synchformer on the device together: loading them to the CPU first would leave the sampling phase,
{gb(xxl_sampling)}, as the peak. GB here are 10^9 bytes, GiB 2^30.

GPU, when one is lent (one H100 or H200; under 10 minutes): `{COMMAND} --gpu` measures a warm 5-second clip of
xl and xxl per offload mode (seconds, `max_memory_allocated` with the weights) into the "{GPU_SECTION}" section
and `docs/foley_gpu.json`; the same rows run last in `python -m benchmarks.gpu_suite`."""


GPU_SECTION = "Foley (GPU)"
GPU_JSON = Path(__file__).resolve().parent.parent / "docs" / "foley_gpu.json"


def gpu_run(device_name: str, smoke: bool, budget_s: float, write: bool) -> None:
    """The Foley rows of the GPU suite alone (minutes instead of the suite's eight): table, JSON, docs."""
    from benchmarks._common import pick_device
    from benchmarks.gpu_suite import Plan, Suite, table

    suite = Suite(device=pick_device(device_name), plan=Plan.for_run(smoke), budget_s=budget_s)
    gpu_cases(suite)
    print(table(suite.rows))
    if smoke or not write:
        return
    context = {
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(suite.device),
        "seconds": time.perf_counter() - suite.start,
    }
    GPU_JSON.write_text(json.dumps({"context": context, "rows": [asdict(r) for r in suite.rows]}, indent=2))
    body = f"""Measured {context["date"]} on {context["machine"]} with `{COMMAND} --gpu` ({context["seconds"]:.0f} s):
random weights in the step's dtypes, a warm {CLIP_SECONDS}-second clip ({STEPS} steps, CFG {GUIDANCE}, 256 px frames)
per offload mode. Peak memory is `max_memory_allocated` over the mode's placement and two clips, weights included;
"computed" is the footprint model of the "Foley" section for the same clip (without the load phase).

{table(suite.rows)}"""
    write_benchmarks_section(GPU_SECTION, body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="xl / xxl clips per offload mode on --device")
    parser.add_argument("--device", default="cuda", help="with --gpu (default cuda)")
    parser.add_argument("--smoke", action="store_true", help="with --gpu: the tiny size at 2 steps, no docs")
    parser.add_argument("--budget-s", type=float, default=540.0, help="with --gpu: start no case after this")
    parser.add_argument("--peak-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_child:
        print(json.dumps(peak_child()))
        return
    if args.gpu:
        gpu_run(args.device, args.smoke, args.budget_s, write=not args.no_docs)
        return
    result = interleaved(args.repeats)
    peak = run_in_subprocess("benchmarks.foley", ["--peak-child"])
    body = cpu_body(result, peak, args.repeats) + "\n\n" + footprint_body()
    print(body)
    if not args.no_docs:
        write_benchmarks_section(SECTION, body)


if __name__ == "__main__":
    main()
