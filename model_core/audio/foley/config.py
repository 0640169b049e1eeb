"""Configs of HunyuanVideo-Foley's MMDiT and its named presets (torch-free).

`FOLEY_PRESETS["hunyuanvideo-foley-xxl"]` is the released `hunyuanvideo_foley.pth` (18 triple / 36 single blocks,
hidden 1536, 12 heads), `"hunyuanvideo-foley-xl"` the released `hunyuanvideo_foley_xl.pth` (12 / 24, 1408, 11
heads); both from Tencent-Hunyuan/HunyuanVideo-Foley `configs/hunyuanvideo-foley-{xxl,xl}.yaml`.
`"tiny-hunyuanvideo-foley"` runs the same code paths at a few MB of random weights for tests and the local demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FOLEY_PRESETS", "FoleyConfig", "foley_preset", "swiglu_hidden"]


def swiglu_hidden(hidden: int, multiple_of: int) -> int:
    """Hidden width of a SwiGLU ConvMLP asked for `hidden`: two thirds of it, rounded up to `multiple_of`."""
    two_thirds = int(2 * hidden / 3)
    return multiple_of * ((two_thirds + multiple_of - 1) // multiple_of)


@dataclass(frozen=True)
class FoleyConfig:
    """The HunyuanVideo-Foley MMDiT: triple (audio, visual, text) blocks, then audio-only single blocks."""

    hidden_size: int
    num_heads: int
    depth_triple: int
    depth_single: int
    mlp_ratio: int = 4  # the triple-block MLPs and (through two thirds) the ConvMLPs
    latent_dim: int = 128  # DAC-VAE latent channels (audio_vae_latent_dim)
    clip_dim: int = 768  # SigLIP2 image features per frame
    text_dim: int = 768  # CLAP last_hidden_state width
    sync_dim: int = 768  # Synchformer features
    sync_tokens_per_segment: int = 8  # Synchformer tokens of one 16-frame segment (sync_pos_emb length)
    conv_multiple_of: int = 256  # ConvMLP hidden widths are rounded up to this
    freq_dim: int = 256  # timestep sinusoid width
    rope_theta: float = 10000.0
    text_length: int = 77  # CLAP tokens kept
    latent_rate: int = 50  # DAC latents per second (48 kHz / hop 960)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"the head dim {self.head_dim} must be even (RoPE rotates pairs)")

    @property
    def head_dim(self) -> int:
        """hidden_size / num_heads (128 for the released models)."""
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the triple blocks' GELU MLPs."""
        return self.hidden_size * self.mlp_ratio

    @property
    def conv_mlp_hidden(self) -> int:
        """Hidden width of the SwiGLU ConvMLPs (`sync_in.2`, single blocks' `linear2`): 4096 for xxl, 3840 for xl."""
        return swiglu_hidden(self.hidden_size * self.mlp_ratio, self.conv_multiple_of)


FOLEY_PRESETS: dict[str, FoleyConfig] = {
    "hunyuanvideo-foley-xxl": FoleyConfig(
        hidden_size=1536,
        num_heads=12,
        depth_triple=18,
        depth_single=36,
        description="HunyuanVideo-Foley XXL (hunyuanvideo_foley.pth, 5.1B)",
    ),
    "hunyuanvideo-foley-xl": FoleyConfig(
        hidden_size=1408,
        num_heads=11,
        depth_triple=12,
        depth_single=24,
        description="HunyuanVideo-Foley XL (hunyuanvideo_foley_xl.pth, 2.9B)",
    ),
    # 4 heads of 16; encoder widths shrink with the tiny SigLIP2 / CLAP / Synchformer / DAC-VAE twins
    "tiny-hunyuanvideo-foley": FoleyConfig(
        hidden_size=64,
        num_heads=4,
        depth_triple=2,
        depth_single=2,
        latent_dim=8,
        clip_dim=32,
        text_dim=32,
        sync_dim=32,
        conv_multiple_of=32,
        description="tiny HunyuanVideo-Foley",
    ),
}


def foley_preset(name: str) -> FoleyConfig:
    """`FOLEY_PRESETS[name]`, with an error that lists the known names."""
    try:
        return FOLEY_PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(FOLEY_PRESETS))
        raise KeyError(f"unknown Foley preset {name!r}; known presets: {known}") from None
