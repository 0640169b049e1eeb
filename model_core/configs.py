"""Model presets: frozen, typed configs, one registry.

`PRESETS[name]` gives the `DiTConfig` of a released checkpoint (`hunyuanvideo-t2v-720p`, `hunyuancustom-720p`,
`hunyuancustom-audio-720p`, `hunyuancustom-editing-720p`) or of its `tiny-` twin: the same code paths at a few MB,
for tests and the local demo. `VAE_PRESETS` (from `model_core.vae.config`) holds the 3D VAE's; `MODEL_PRESETS` and
`model_preset(name)` look a name up across families, as the registry's `adrender.preset` tag does; they include the
encoders (`ENCODER_PRESETS`) and the HunyuanVideo-Foley releases (`FOLEY_RELEASES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from model_core.vae.config import VAE_PRESETS, VAEConfig

__all__ = [
    "AVATAR_PRESETS",
    "ENCODER_PRESETS",
    "FOLEY_RELEASES",
    "MODEL_PRESETS",
    "PRESETS",
    "VAE_PRESETS",
    "AudioConditionConfig",
    "AvatarConfig",
    "DiTConfig",
    "EncoderPreset",
    "FoleyRelease",
    "VAEConfig",
    "dit_preset",
    "model_preset",
]


@dataclass(frozen=True)
class AudioConditionConfig:
    """The HunyuanCustom audio branch: AudioProjNet2 (Whisper features -> tokens) and per-frame cross-attention."""

    window: int = 10  # Whisper frames per video frame (feats[2f : 2f+10])
    whisper_layers: int = 5  # whisper-tiny hidden states: embeddings + 4 encoder layers
    whisper_dim: int = 384  # whisper-tiny width
    proj_hidden: int = 1024  # AudioProjNet2 intermediate_dim
    tokens_per_frame: int = 4  # AudioProjNet2 context_tokens: audio tokens per video frame
    cross_dim: int = 1024  # PerceiverAttentionCA: a single head of this width
    insert_after: tuple[int, ...] = (1, 3, 5, 7, 9, 11)  # double blocks followed by audio_models[k]
    frames_per_latent: int = 4  # VAE time compression: video frames per latent frame
    norm_eps: float = 1e-5  # the audio LayerNorms keep torch's default eps (1e-6 elsewhere)

    @property
    def in_features(self) -> int:
        """Width of one flattened video frame of Whisper features (window * layers * dim)."""
        return self.window * self.whisper_layers * self.whisper_dim


@dataclass(frozen=True)
class AvatarConfig:
    """HunyuanVideo-Avatar's extras: reference injection (`ref_in`, `before_proj`), motion and fps embedders in vec.

    The audio adapters (`audio_adapter_blocks`) are the `audio` branch of the config; with `avatar` set their
    output is multiplied by the face mask.
    """

    # each motion input (expression, head pose) is this many values, each embedded to hidden / motion_values;
    # the embeddings are concatenated back to the hidden size
    motion_values: int = 4


@dataclass(frozen=True)
class DiTConfig:
    """The HunyuanVideo MM-DiT (HYVideo-T/2) and its HunyuanCustom extras."""

    hidden_size: int
    num_heads: int
    depth_double: int  # mm_double_blocks_depth
    depth_single: int  # mm_single_blocks_depth
    in_channels: int = 16  # latent channels of the 3D VAE
    out_channels: int = 16
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w)
    # (t, h, w) split of the head dim: a short time axis needs fewer frequencies than the two spatial axes.
    rope_axes_dim: tuple[int, int, int] = (16, 56, 56)
    rope_theta: float = 256.0  # not 10000: the released checkpoints were trained with 256
    text_states_dim: int = 4096  # LLaVA-Llama-3-8B hidden size
    text_pooled_dim: int = 768  # CLIP-L pooled output
    refiner_depth: int = 2  # blocks of the text token refiner
    guidance_embed: bool = False  # guidance_in: the guidance-distilled T2V checkpoint only
    identity_image: bool = False  # HunyuanCustom: identity-image tokens first in the sequence
    audio: AudioConditionConfig | None = None  # HunyuanCustom audio: audio_proj + audio_models
    video_condition: bool = False  # HunyuanCustom editing: bg_in + bg_proj on 2x latent channels
    avatar: AvatarConfig | None = None  # HunyuanVideo-Avatar: ref_in, before_proj, motion and fps in vec
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
            )
        if sum(self.rope_axes_dim) != self.head_dim:
            raise ValueError(
                f"rope_axes_dim {self.rope_axes_dim} must sum to the head dim {self.head_dim} "
                f"(hidden_size {self.hidden_size} / num_heads {self.num_heads})"
            )
        if any(d % 2 for d in self.rope_axes_dim):
            raise ValueError(
                f"every rope_axes_dim entry must be even (rotated pairs), got {self.rope_axes_dim}"
            )
        if self.avatar is not None:
            if self.audio is None or self.identity_image or self.video_condition or self.guidance_embed:
                raise ValueError(
                    "an avatar config needs the audio branch and no identity_image, video_condition or "
                    f"guidance_embed; got audio={self.audio}, identity_image={self.identity_image}, "
                    f"video_condition={self.video_condition}, guidance_embed={self.guidance_embed}"
                )
            if self.hidden_size % self.avatar.motion_values:
                raise ValueError(
                    f"hidden_size {self.hidden_size} must be divisible by avatar.motion_values "
                    f"{self.avatar.motion_values}"
                )
        if self.audio is not None:
            bad = [i for i in self.audio.insert_after if not 0 <= i < self.depth_double]
            if bad:
                raise ValueError(
                    f"audio.insert_after {self.audio.insert_after} names double blocks {bad} outside "
                    f"0..{self.depth_double - 1}"
                )

    @property
    def head_dim(self) -> int:
        """Width of one attention head: hidden_size / num_heads (128 for the released models)."""
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the block MLPs: hidden_size * mlp_ratio (12288 for the released models)."""
        return int(self.hidden_size * self.mlp_ratio)


_PRODUCTION = DiTConfig(hidden_size=3072, num_heads=24, depth_double=20, depth_single=40)
# Tiny: 4 heads of 16 so Ulysses degrees 2 and 4 divide the heads; RoPE split 4/6/6 sums to 16.
_TINY = DiTConfig(
    hidden_size=64,
    num_heads=4,
    depth_double=2,
    depth_single=2,
    rope_axes_dim=(4, 6, 6),
    text_states_dim=32,
    text_pooled_dim=16,
)
# The Whisper window and layer count are the feature format the encoders produce, so the tiny preset keeps them;
# only the widths shrink.
_TINY_AUDIO = AudioConditionConfig(
    window=10,
    whisper_layers=5,
    whisper_dim=16,
    proj_hidden=32,
    tokens_per_frame=4,
    cross_dim=32,
    insert_after=(0, 1),
)

PRESETS: dict[str, DiTConfig] = {
    "hunyuanvideo-t2v-720p": replace(
        _PRODUCTION, guidance_embed=True, description="HunyuanVideo T2V (HYVideo-T/2-cfgdistill)"
    ),
    "hunyuancustom-720p": replace(
        _PRODUCTION, identity_image=True, description="HunyuanCustom single subject"
    ),
    "hunyuancustom-audio-720p": replace(
        _PRODUCTION, identity_image=True, audio=AudioConditionConfig(), description="HunyuanCustom audio"
    ),
    "hunyuancustom-editing-720p": replace(
        _PRODUCTION, identity_image=True, video_condition=True, description="HunyuanCustom video editing"
    ),
    "tiny-hunyuanvideo-t2v-720p": replace(_TINY, guidance_embed=True, description="tiny T2V"),
    "tiny-hunyuancustom-720p": replace(_TINY, identity_image=True, description="tiny HunyuanCustom"),
    "tiny-hunyuancustom-audio-720p": replace(
        _TINY, identity_image=True, audio=_TINY_AUDIO, description="tiny HunyuanCustom audio"
    ),
    "tiny-hunyuancustom-editing-720p": replace(
        _TINY, identity_image=True, video_condition=True, description="tiny HunyuanCustom editing"
    ),
}


# HunyuanVideo-Avatar (Tencent-Hunyuan/HunyuanVideo-Avatar, hymm_sp/modules/models_audio.py): HYVideo-T/2 without
# guidance, the audio adapters after double blocks 1, 3, ..., 19, reference injection, motion and fps in vec. Kept
# beside `PRESETS` (whose users feed HunyuanCustom's inputs); `MODEL_PRESETS`, `dit_preset` and `load_model` take
# these names, so the registry and the pipeline's Avatar jobs use them.
_AVATAR_AUDIO = AudioConditionConfig(insert_after=tuple(range(1, 20, 2)))
AVATAR_PRESETS: dict[str, DiTConfig] = {
    "hunyuanvideo-avatar-704p": replace(
        _PRODUCTION, audio=_AVATAR_AUDIO, avatar=AvatarConfig(), description="HunyuanVideo-Avatar"
    ),
    "tiny-hunyuanvideo-avatar-704p": replace(
        _TINY,
        depth_double=4,
        audio=replace(_TINY_AUDIO, insert_after=(1, 3)),
        avatar=AvatarConfig(),
        description="tiny HunyuanVideo-Avatar",
    ),
}


def dit_preset(name: str) -> DiTConfig:
    """`PRESETS[name]` or `AVATAR_PRESETS[name]`, with an error that lists the known names."""
    found = PRESETS.get(name) or AVATAR_PRESETS.get(name)
    if found is None:
        known = ", ".join(sorted([*PRESETS, *AVATAR_PRESETS]))
        raise KeyError(f"unknown DiT preset {name!r}; known presets: {known}")
    return found


@dataclass(frozen=True)
class EncoderPreset:
    """A conditioning encoder kept as a transformers folder (config.json, weights, tokenizer or feature extractor).

    family: which loader reads it: "llava" (`LlavaTextEncoder`), "clip-text" (`ClipPooledEncoder`),
        "whisper" (`WhisperAudioEncoder`), "siglip2" and "clap" (Foley's `SiglipImageEncoder` and
        `ClapTextEncoder`), or a QC model of `model_core.qc`: "qc-clip" (`ClipScorer`, the full CLIP with both
        towers), "qc-dinov2" (`DinoScorer`), "qc-arcface" (`IResNet`), "qc-face-detector" (`vision.FaceDetector`,
        a TorchScript ``detface.pt``).
    model_types: the `model_type` values its config.json may carry; anything else is the wrong folder.
    """

    family: str
    model_types: tuple[str, ...]
    description: str = field(default="", compare=False)


ENCODER_PRESETS: dict[str, EncoderPreset] = {
    # HunyuanCustom's llava-llama-3-8b-v1_1 (full LLaVA) or HunyuanVideo's text encoder (the Llama part only)
    "llava-llama-3-8b": EncoderPreset("llava", ("llava", "llama"), "LLaVA-Llama-3-8B text(-image) encoder"),
    # openai/clip-vit-large-patch14: the full CLIP folder or the text tower alone
    "clip-vit-large": EncoderPreset("clip-text", ("clip", "clip_text_model"), "CLIP ViT-L/14 text tower"),
    "whisper-tiny": EncoderPreset("whisper", ("whisper",), "openai/whisper-tiny (encoder used)"),
    "tiny-llava": EncoderPreset("llava", ("llava", "llama"), "tiny random LLaVA"),
    "tiny-clip": EncoderPreset("clip-text", ("clip", "clip_text_model"), "tiny random CLIP text tower"),
    "tiny-whisper": EncoderPreset("whisper", ("whisper",), "tiny random Whisper"),
    # QC models (model_core.qc): openai/clip-vit-base-patch32 (CLIP-B-T, temporal consistency),
    # facebook/dinov2-base (DINO-Sim), InsightFace's ArcFace IResNet-100 (Face-Sim; backbone.pth + config.json)
    "clip-vit-base-patch32": EncoderPreset("qc-clip", ("clip",), "CLIP ViT-B/32, both towers (QC)"),
    "dinov2-base": EncoderPreset("qc-dinov2", ("dinov2",), "DINOv2 ViT-B/14 (QC)"),
    "arcface-r100": EncoderPreset("qc-arcface", ("arcface-iresnet",), "ArcFace IResNet-100 (QC)"),
    "tiny-clip-vit-base": EncoderPreset("qc-clip", ("clip",), "tiny random CLIP, both towers"),
    "tiny-dinov2": EncoderPreset("qc-dinov2", ("dinov2",), "tiny random DINOv2"),
    "tiny-arcface": EncoderPreset("qc-arcface", ("arcface-iresnet",), "tiny random ArcFace IResNet"),
    # HunyuanVideo-Avatar's YOLOv5-face TorchScript file (det_align/detface.pt) beside a config.json that says
    # {"model_type": "yolov5-face"} (model_core.vision.face_detect; Face-Sim and the Avatar face crop)
    "yolov5-face": EncoderPreset("qc-face-detector", ("yolov5-face",), "YOLOv5-face detector, TorchScript"),
    "tiny-face-detector": EncoderPreset("qc-face-detector", ("yolov5-face",), "tiny random face detector"),
    # HunyuanVideo-Foley's conditioning encoders: google/siglip2-base-patch16-512 (pooled image features; its
    # config.json says "siglip") and laion/larger_clap_general (the text tower's last_hidden_state)
    # (a NaFlex SigLIP2 folder, model_type "siglip2", is refused: `encoder_refusal`)
    "siglip2-base-patch16-512": EncoderPreset("siglip2", ("siglip",), "SigLIP2 base, 512 px (Foley)"),
    "larger-clap-general": EncoderPreset("clap", ("clap", "clap_text_model"), "CLAP text tower (Foley)"),
    "tiny-siglip2": EncoderPreset("siglip2", ("siglip",), "tiny random SigLIP2"),
    "tiny-clap": EncoderPreset("clap", ("clap", "clap_text_model"), "tiny random CLAP text tower"),
}


def naflex_siglip2_refusal(model_type: str) -> str | None:
    """Why a SigLIP2 folder (or model) whose config says `model_type` cannot be Foley's image encoder, or None.

    google/siglip2-base-patch16-512, the released encoder, is a fixed-resolution checkpoint whose config.json says
    "siglip"; the NaFlex SigLIP2 models ("siglip2", "siglip2_vision_model": variable resolution with patch masks)
    are another architecture. The registry refuses them at registration and `SiglipImageEncoder` at load, with
    this message."""
    if not model_type.startswith("siglip2"):
        return None
    return (
        f"the image encoder is a NaFlex SigLIP2 model (config.json model_type {model_type!r}); "
        "HunyuanVideo-Foley takes google/siglip2-base-patch16-512, whose config.json says "
        "model_type 'siglip' (fixed 512 px): register that folder as the foley_image_encoder"
    )


def encoder_refusal(preset: EncoderPreset, model_type: str | None) -> str | None:
    """Why a folder of `model_type` is refused for `preset` beyond not being one of its model types, or None."""
    if preset.family == "siglip2" and model_type is not None:
        return naflex_siglip2_refusal(model_type)
    return None


# HunyuanVideo-Foley: the file names of the release (Tencent-Hunyuan/HunyuanVideo-Foley, README "Download
# Pretrained Models")
FOLEY_FILE = "hunyuanvideo_foley.pth"  # xxl
FOLEY_XL_FILE = "hunyuanvideo_foley_xl.pth"
FOLEY_DAC_FILE = "vae_128d_48k.pth"
FOLEY_SYNCHFORMER_FILE = "synchformer_state_dict.pth"


@dataclass(frozen=True)
class FoleyRelease:
    """One registered folder of HunyuanVideo-Foley as the release ships it: the MMDiT, the DAC-VAE and the
    Synchformer files side by side (SigLIP2 and CLAP are registered as models of their own).

    dit: a `model_core.audio.foley.FOLEY_PRESETS` name; dac: a `foley.dac.DAC_PRESETS` name (the released file
    carries its own kwargs, which win); synchformer: a `foley.synchformer.SYNCHFORMER_PRESETS` name; dit_file: the
    MMDiT's file in the folder.
    """

    dit: str
    dac: str
    synchformer: str
    dit_file: str
    description: str = field(default="", compare=False)

    @property
    def files(self) -> tuple[str, str, str]:
        """The three files the folder holds."""
        return (self.dit_file, FOLEY_DAC_FILE, FOLEY_SYNCHFORMER_FILE)


FOLEY_RELEASES: dict[str, FoleyRelease] = {
    "hunyuanvideo-foley-xxl": FoleyRelease(
        "hunyuanvideo-foley-xxl", "dac-vae-48k", "synchformer", FOLEY_FILE, "HunyuanVideo-Foley XXL (5.1B)"
    ),
    "hunyuanvideo-foley-xl": FoleyRelease(
        "hunyuanvideo-foley-xl", "dac-vae-48k", "synchformer", FOLEY_XL_FILE, "HunyuanVideo-Foley XL (2.9B)"
    ),
    "tiny-hunyuanvideo-foley": FoleyRelease(
        "tiny-hunyuanvideo-foley", "tiny-dac-vae", "tiny-synchformer", FOLEY_FILE, "tiny HunyuanVideo-Foley"
    ),
}


# Every preset name a registered model version may carry in its `adrender.preset` tag. Names are unique across
# families, so one lookup serves the registry and the pipeline steps.
# HunyuanVideo-Foley releases (`FOLEY_RELEASES`): one folder with the MMDiT, the DAC-VAE and the Synchformer.
MODEL_PRESETS: Mapping[str, DiTConfig | VAEConfig | EncoderPreset | FoleyRelease] = {
    **PRESETS,
    **AVATAR_PRESETS,
    **VAE_PRESETS,
    **ENCODER_PRESETS,
    **FOLEY_RELEASES,
}


def model_preset(name: str) -> DiTConfig | VAEConfig | EncoderPreset | FoleyRelease:
    """Any model family's preset by name, with an error that lists the known names."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise KeyError(
            f"unknown model preset {name!r}; known presets: {', '.join(sorted(MODEL_PRESETS))}"
        ) from None
