"""DAC-VAE: HunyuanVideo-Foley's continuous audio autoencoder (48 kHz mono <-> 128 latents at 50 per second).

A DAC encoder and decoder with a Gaussian bottleneck instead of residual vector quantisation: `quant_conv`
(latent -> mean, log-variance) after the encoder, `post_quant_conv` before the decoder. Every convolution is
weight-normed (`weight_g`, `weight_v`: the norm is over all dims but 0, which for a transposed convolution is its
input channels) and the activations are Snake, `x + sin(alpha x)^2 / (alpha + 1e-9)`. The decoder writes the
waveform directly (tanh, one channel): no mel spectrogram, no vocoder, and latents are decoded without a scaling
factor.

The released `vae_128d_48k.pth` holds `{"state_dict": ..., "metadata": {"kwargs": {...}}}`; `load_dac` builds the
model from those kwargs and loads it strictly. Reimplemented from the facts of Tencent-Hunyuan/HunyuanVideo-Foley
(`hunyuanvideo_foley/models/dac_vae/`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DACVAE",
    "DAC_PRESETS",
    "DACConfig",
    "Snake",
    "WNConv1d",
    "WNConvTranspose1d",
    "dac_config_from_kwargs",
    "load_dac",
    "snake",
]


@dataclass(frozen=True)
class DACConfig:
    """The DAC-VAE's constructor arguments (`DAC(**kwargs)` of the release, continuous only)."""

    encoder_dim: int = 128
    encoder_rates: tuple[int, ...] = (2, 3, 4, 5, 8)
    latent_dim: int = 128
    decoder_dim: int = 2048
    decoder_rates: tuple[int, ...] = (8, 5, 4, 3, 2)
    sample_rate: int = 48000
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if math.prod(self.encoder_rates) != math.prod(self.decoder_rates):
            raise ValueError(
                f"encoder rates {self.encoder_rates} and decoder rates {self.decoder_rates} differ"
            )
        if self.decoder_dim % 2 ** len(self.decoder_rates):
            raise ValueError(
                f"decoder_dim {self.decoder_dim} must halve {len(self.decoder_rates)} times to a whole number"
            )

    @property
    def hop_length(self) -> int:
        """Samples per latent: 960 at 48 kHz, 50 latents per second."""
        return math.prod(self.encoder_rates)


DAC_PRESETS: dict[str, DACConfig] = {
    # kwargs as the community copy gives them; `load_dac` reads the real ones from the checkpoint file
    "dac-vae-48k": DACConfig(description="HunyuanVideo-Foley DAC-VAE (vae_128d_48k.pth)"),
    "tiny-dac-vae": DACConfig(encoder_dim=2, latent_dim=8, decoder_dim=64, description="tiny DAC-VAE"),
}


def dac_config_from_kwargs(kwargs: Mapping[str, object]) -> DACConfig:
    """A `DACConfig` from the kwargs a checkpoint carries; refuses a discrete (RVQ) DAC."""
    if kwargs.get("continuous") is not True:
        raise ValueError(
            f"the checkpoint is a discrete DAC (continuous={kwargs.get('continuous')!r}); need a DAC-VAE"
        )
    known = {f.name for f in fields(DACConfig)} - {"description"}
    values: dict[str, object] = {}
    for name in known & set(kwargs):
        value = kwargs[name]
        values[name] = tuple(value) if isinstance(value, list | tuple) else value
    return DACConfig(**values)  # type: ignore[arg-type]


def snake(x: Tensor, alpha: Tensor) -> Tensor:
    """`x + sin(alpha x)^2 / (alpha + 1e-9)`, alpha `[1, C, 1]`."""
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


class Snake(nn.Module):
    """Snake activation with a learned per-channel `alpha`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return snake(x, self.alpha)


def _weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """`g * v / ||v||`, the norm over every dim but 0."""
    norm = v.pow(2).sum(dim=tuple(range(1, v.ndim)), keepdim=True).sqrt()
    return v * (g / norm)


class WNConv1d(nn.Module):
    """A weight-normed Conv1d with the old-style `weight_g` / `weight_v` parameters."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
    ) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.weight_g = nn.Parameter(torch.ones(c_out, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(c_out, c_in, kernel_size) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        weight = _weight_norm(self.weight_g, self.weight_v)
        return F.conv1d(x, weight, self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(nn.Module):
    """A weight-normed ConvTranspose1d; its weight is `[C_in, C_out, K]`, so the norm is per input channel."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, output_padding: int
    ) -> None:
        super().__init__()
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.weight_g = nn.Parameter(torch.ones(c_in, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(c_in, c_out, kernel_size) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        weight = _weight_norm(self.weight_g, self.weight_v)
        return F.conv_transpose1d(x, weight, self.bias, self.stride, self.padding, self.output_padding)


class ResidualUnit(nn.Module):
    """`x + conv1(snake(conv7_dilated(snake(x))))` (`block.0..3`)."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(dim),
            WNConv1d(dim, dim, 7, dilation=dilation, padding=3 * dilation),
            Snake(dim),
            WNConv1d(dim, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        crop = (x.shape[-1] - y.shape[-1]) // 2
        if crop > 0:
            x = x[..., crop:-crop]
        return x + y


class EncoderBlock(nn.Module):
    """Three residual units at `dim // 2`, Snake, then a strided conv (kernel 2s) to `dim`."""

    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            ResidualUnit(half, 1),
            ResidualUnit(half, 3),
            ResidualUnit(half, 9),
            Snake(half),
            WNConv1d(half, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, a transposed conv (kernel 2s, output padding s % 2), then three residual units."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(c_in),
            WNConvTranspose1d(c_in, c_out, 2 * stride, stride, math.ceil(stride / 2), stride % 2),
            ResidualUnit(c_out, 1),
            ResidualUnit(c_out, 3),
            ResidualUnit(c_out, 9),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class _Encoder(nn.Module):
    def __init__(self, config: DACConfig) -> None:
        super().__init__()
        dim = config.encoder_dim
        layers: list[nn.Module] = [WNConv1d(1, dim, 7, padding=3)]
        for stride in config.encoder_rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride))
        layers += [Snake(dim), WNConv1d(dim, config.latent_dim, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class _Decoder(nn.Module):
    def __init__(self, config: DACConfig) -> None:
        super().__init__()
        dim = config.decoder_dim
        layers: list[nn.Module] = [WNConv1d(config.latent_dim, dim, 7, padding=3)]
        for stride in config.decoder_rates:
            layers.append(DecoderBlock(dim, dim // 2, stride))
            dim //= 2
        layers += [Snake(dim), WNConv1d(dim, 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class DACVAE(nn.Module):
    """The continuous DAC: `encode` mono audio `[B, 1, T]` to latents `[B, D, ceil(T / hop)]`, `decode` back."""

    def __init__(self, config: DACConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _Encoder(config)
        self.quant_conv = nn.Conv1d(config.latent_dim, 2 * config.latent_dim, 1)
        self.post_quant_conv = nn.Conv1d(config.latent_dim, config.latent_dim, 1)
        self.decoder = _Decoder(config)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def encode(self, audio: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Latents of `[B, 1, T]` audio, right-padded to a whole number of hops.

        The posterior mean by default; with a `generator`, a sample (log-variance clamped to [-30, 20]).
        """
        pad = -audio.shape[-1] % self.hop_length
        moments = self.quant_conv(self.encoder(F.pad(audio, (0, pad))))
        mean, logvar = moments.chunk(2, dim=1)
        if generator is None:
            return mean
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=generator.device)
        return mean + std * noise.to(mean.device)

    def decode(self, latents: Tensor) -> Tensor:
        """Waveform `[B, 1, L * hop]` in [-1, 1] of latents `[B, D, L]` (no scaling factor)."""
        return self.decoder(self.post_quant_conv(latents))


def load_dac(
    path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> DACVAE:
    """Load a DAC-VAE checkpoint strictly, built from the kwargs the file carries.

    Reads `{"state_dict": ..., "metadata": {"kwargs": ...}}` (the release's format) without arbitrary unpickling;
    a bare state dict (our own exports) is built with the `dac-vae-48k` preset unless its shapes say otherwise.
    """
    from model_core.checkpoints import CheckpointFormatError, load_state_dict_into

    path = Path(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{path} holds a {type(obj).__name__}, expected a dict")
    state = obj.get("state_dict", obj)
    metadata = obj.get("metadata")
    kwargs = metadata.get("kwargs") if isinstance(metadata, Mapping) else None
    config = dac_config_from_kwargs(kwargs) if isinstance(kwargs, Mapping) else DAC_PRESETS["dac-vae-48k"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointFormatError(
            f"{path}: no state dict of tensors (under 'state_dict' or at the top level)"
        )
    with torch.device("meta"):
        model = DACVAE(config)
    tensors = {str(k): v for k, v in state.items()}
    load_state_dict_into(model, tensors, device=device, dtype=dtype, what=f"DAC-VAE {config}", presets=[])
    return model.eval()
