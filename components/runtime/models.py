"""Loading pinned registry versions into model_core objects: one function per model family, one cache.

A step asks for a model by the pin ``plan`` wrote into its shard (``name/version`` + preset); the registry
downloads and verifies the files once per node, and the loaded object is kept in the step context for the
rest of the process (the local runner renders every shard in one process and loads each model once).
The preset tag decides the loader: a DiT or VAE preset from ``model_core.configs``, an encoder preset
(LLaVA, CLIP text tower, Whisper, SigLIP2, CLAP) read as a transformers folder, a HunyuanVideo-Foley release
(the MMDiT, DAC-VAE and Synchformer files of one folder), or the YOLOv5-face TorchScript face detector.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.runtime.manifest import ModelPin
from components.runtime.registry import ResolvedModel
from components.runtime.step import StepContext

if TYPE_CHECKING:
    import torch

    from model_core.audio import WhisperAudioEncoder
    from model_core.audio.foley.encoders import ClapTextEncoder, SiglipImageEncoder
    from model_core.audio.foley.offload import FoleyOffload
    from model_core.audio.foley.release import FoleyModels
    from model_core.dit import HunyuanDiT
    from model_core.text import ClipPooledEncoder, LlavaTextEncoder
    from model_core.vae import CausalVAE3D
    from model_core.vision.face_detect import FaceDetector

__all__ = [
    "fetch_pin",
    "load_clap",
    "load_clip",
    "load_dit",
    "load_face_detector",
    "load_foley",
    "load_llava",
    "load_siglip",
    "load_vae",
    "load_whisper",
    "model_dtype",
]

log = logging.getLogger(__name__)


def model_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU (as the releases run), fp32 on CPU (where bf16 matmuls are slow and inexact)."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def fetch_pin(ctx: StepContext, pin: ModelPin) -> Path:
    """The verified local folder of a pinned version (downloaded once per node)."""
    resolved = ResolvedModel(
        name=pin.name,
        version=pin.version,
        preset=pin.preset,
        files=pin.files,
        total_bytes=pin.total_bytes,
        source=pin.source,
        sizes=pin.sizes,
    )
    return ctx.registry.fetch(resolved)


def _cached(ctx: StepContext, role: str, pin: ModelPin, build: Any) -> Any:
    key = (role, pin.pinned)
    if key not in ctx.model_cache:
        started = time.perf_counter()
        folder = fetch_pin(ctx, pin)
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # one line per loaded model (below) instead of a bar per tensor group
        try:
            ctx.model_cache[key] = build(folder)
        finally:
            if bars:
                hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        log.info("loaded %s %s (%s) in %.1f s", role, pin.pinned, pin.preset, time.perf_counter() - started)
    return ctx.model_cache[key]


def _family(pin: ModelPin) -> str:
    from model_core.configs import AVATAR_PRESETS, ENCODER_PRESETS, FOLEY_RELEASES, PRESETS, VAE_PRESETS

    if pin.preset in PRESETS or pin.preset in AVATAR_PRESETS:
        return "dit"
    if pin.preset in FOLEY_RELEASES:
        return "foley"
    if pin.preset in VAE_PRESETS:
        return "vae"
    if pin.preset in ENCODER_PRESETS:
        return ENCODER_PRESETS[pin.preset].family
    raise ValueError(
        f"{pin.pinned} carries preset {pin.preset!r}, which this version of adrender does not know"
    )


def _expect(pin: ModelPin, family: str, role: str) -> None:
    found = _family(pin)
    if found != family:
        raise ValueError(
            f"{pin.pinned} (preset {pin.preset}) is a {found} model but is used as the {role}; point the "
            f"campaign's models.{role} at a {family} model"
        )


def load_dit(ctx: StepContext, pin: ModelPin) -> HunyuanDiT:
    """The DiT of a pinned version, on the context's device (bf16 on GPU, fp32 on CPU)."""
    _expect(pin, "dit", "dit")

    def build(folder: Path) -> HunyuanDiT:
        from model_core.checkpoints import load_model

        model = load_model(pin.preset, folder, device=ctx.device, dtype=model_dtype(ctx.device))
        return model  # type: ignore[return-value]

    result: HunyuanDiT = _cached(ctx, "dit", pin, build)
    return result


def load_vae(ctx: StepContext, pin: ModelPin) -> CausalVAE3D:
    """The 3D VAE of a pinned version (fp32 on CPU; bf16 on GPU as the release decodes)."""
    _expect(pin, "vae", "vae")

    def build(folder: Path) -> CausalVAE3D:
        from model_core.vae import load_vae as _load

        return _load(folder, device=ctx.device, dtype=model_dtype(ctx.device))

    result: CausalVAE3D = _cached(ctx, "vae", pin, build)
    return result


def load_llava(ctx: StepContext, pin: ModelPin, *, video: bool = True) -> LlavaTextEncoder:
    """The LLaVA text(-image) encoder with the video template (HunyuanVideo / HunyuanCustom).

    Released tokenizers give the template's published crop start (95); a tiny preset's tokenizer gets the
    crop it measures, since its token count differs.
    """
    _expect(pin, "llava", "text_encoder")

    def build(folder: Path) -> LlavaTextEncoder:
        from transformers import AutoConfig

        from model_core.text import IMAGE_TEMPLATE, VIDEO_TEMPLATE, LlavaTextEncoder, measure_crop_start

        template = VIDEO_TEMPLATE if video else IMAGE_TEMPLATE
        with_vision = AutoConfig.from_pretrained(folder, local_files_only=True).model_type == "llava"
        dtype = model_dtype(ctx.device)
        if pin.preset.startswith("tiny-"):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, padding_side="right")
            template = template.with_crop_start(measure_crop_start(tokenizer, template))
        return LlavaTextEncoder.from_pretrained(
            folder, with_vision=with_vision, dtype=dtype, device=ctx.device, template=template
        )

    result: LlavaTextEncoder = _cached(ctx, "text_encoder", pin, build)
    return result


def load_clip(ctx: StepContext, pin: ModelPin) -> ClipPooledEncoder:
    """The CLIP-L text tower (pooled output)."""
    _expect(pin, "clip-text", "text_encoder_2")

    def build(folder: Path) -> ClipPooledEncoder:
        from model_core.text import ClipPooledEncoder

        return ClipPooledEncoder.from_pretrained(folder, dtype=model_dtype(ctx.device), device=ctx.device)

    result: ClipPooledEncoder = _cached(ctx, "text_encoder_2", pin, build)
    return result


def load_whisper(ctx: StepContext, pin: ModelPin) -> WhisperAudioEncoder:
    """The Whisper encoder of the audio mode (fp32, as the release)."""
    _expect(pin, "whisper", "audio_encoder")

    def build(folder: Path) -> WhisperAudioEncoder:
        from model_core.audio import WhisperAudioEncoder

        return WhisperAudioEncoder.from_pretrained(folder, device=ctx.device)

    result: WhisperAudioEncoder = _cached(ctx, "audio_encoder", pin, build)
    return result


def load_foley(ctx: StepContext, pin: ModelPin, offload: FoleyOffload | str = "encoders") -> FoleyModels:
    """The HunyuanVideo-Foley release of a pinned version: the MMDiT (bf16 on GPU, as released; fp32 on CPU),
    the DAC-VAE and the Synchformer (fp32; the step runs the Synchformer under fp16 autocast on GPU).

    Loaded on the CPU; only the networks `offload` keeps on the device between phases go there (``encoders``:
    the MMDiT and the DAC decoder; ``sequential``: none; ``none``: all three), the others visit it for their
    phase. Loading all three onto the device would make the load the peak of ``sequential`` (docs/BENCHMARKS.md,
    "Foley"). The DAC's encoder half stays on the CPU in every mode. A cached copy is where its last clip left
    it: each phase moves what it runs onto the device first."""
    import torch

    from model_core.audio.foley.offload import FoleyOffload, decoder_modules

    _expect(pin, "foley", "foley")
    mode = FoleyOffload(offload)

    def build(folder: Path) -> FoleyModels:
        from model_core.audio.foley.release import load_release
        from model_core.configs import FOLEY_RELEASES

        host = torch.device("cpu")
        models = load_release(folder, FOLEY_RELEASES[pin.preset], device=host, dtype=model_dtype(ctx.device))
        resident: list[torch.nn.Module] = []
        if not mode.generator:
            resident += [models.dit, *decoder_modules(models.dac)]
        if not mode.encoders:
            resident.append(models.synchformer)
        for module in resident:
            module.to(ctx.device)
        if models.dropped:
            log.info("%s: %d training-only or unused keys left out by name", pin.pinned, len(models.dropped))
        return models

    result: FoleyModels = _cached(ctx, "foley", pin, build)
    return result


def load_siglip(ctx: StepContext, pin: ModelPin) -> tuple[SiglipImageEncoder, int]:
    """Foley's SigLIP2 image encoder (pooled features) and the square image size it takes (512 released)."""
    _expect(pin, "siglip2", "foley_image_encoder")

    def build(folder: Path) -> tuple[SiglipImageEncoder, int]:
        from transformers import AutoModel

        from model_core.audio.foley.encoders import SiglipImageEncoder

        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=model_dtype(ctx.device))
        vision = getattr(model, "vision_model", model)
        config = getattr(model.config, "vision_config", model.config)
        return SiglipImageEncoder(vision.to(ctx.device).eval()), int(config.image_size)

    result: tuple[SiglipImageEncoder, int] = _cached(ctx, "foley_image_encoder", pin, build)
    return result


def load_clap(ctx: StepContext, pin: ModelPin) -> ClapTextEncoder:
    """Foley's CLAP text encoder (the text tower's last_hidden_state, fp32 as released)."""
    _expect(pin, "clap", "foley_text_encoder")

    def build(folder: Path) -> ClapTextEncoder:
        from transformers import AutoTokenizer, ClapTextModelWithProjection

        from model_core.audio.foley.encoders import ClapTextEncoder

        model = ClapTextModelWithProjection.from_pretrained(folder, local_files_only=True)
        model = model.to(ctx.device)  # type: ignore[arg-type]  # transformers types .to for dtypes only
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return ClapTextEncoder(model.eval(), tokenizer)

    result: ClapTextEncoder = _cached(ctx, "foley_text_encoder", pin, build)
    return result


def load_face_detector(ctx: StepContext, pin: ModelPin) -> FaceDetector:
    """The YOLOv5-face TorchScript detector (``detface.pt``) of a pinned version, on the context's device."""
    _expect(pin, "qc-face-detector", "face_detector")

    def build(folder: Path) -> FaceDetector:
        from model_core.vision.face_detect import load_face_detector as _load

        return _load(folder, device=ctx.device)

    result: FaceDetector = _cached(ctx, "face_detector", pin, build)
    return result
