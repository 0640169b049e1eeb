"""Small building blocks of the MM-DiT. Module and parameter names follow the released checkpoints."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

__all__ = [
    "MLP",
    "MLPEmbedder",
    "Modulation",
    "ModulationOut",
    "PatchEmbed",
    "RMSNorm",
    "TextProjection",
    "TimestepEmbedder",
    "layer_norm",
    "modulate",
    "timestep_embedding",
]


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding `[B, dim]` of float timesteps `[B]`, cos half first (the release's order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoid then Linear-SiLU-Linear (`mlp.0`, `mlp.2`); also the guidance embedder."""

    def __init__(self, hidden_size: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: Tensor) -> Tensor:
        first = cast(nn.Linear, self.mlp[0])  # Sequential indexing is typed as a plain Module
        return self.mlp(timestep_embedding(t, self.freq_dim).to(first.weight.dtype))


class MLPEmbedder(nn.Module):
    """`in_layer` - SiLU - `out_layer`: the CLIP pooled vector into vec."""

    def __init__(self, in_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_size)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(self.silu(self.in_layer(x)))


class TextProjection(nn.Module):
    """`linear_1` - SiLU - `linear_2`: the refiner's context vector from the masked mean of the text states."""

    def __init__(self, in_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden_size)
        self.act_1 = nn.SiLU()
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act_1(self.linear_1(x)))


class PatchEmbed(nn.Module):
    """Conv3d with kernel = stride = patch: `[B, C, T, H, W]` -> `[B, T*H/ph*W/pw, hidden]`, tokens in (t, h, w) order."""

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in fp32, with an affine weight (the q/k norms)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return out * self.weight


class MLP(nn.Module):
    """`fc1` - activation - `fc2`."""

    def __init__(self, hidden_size: int, mlp_hidden: int, act: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = act
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


@dataclass(frozen=True)
class ModulationOut:
    """One (shift, scale, gate) triple of adaLN modulation, each `[B, 1, C]`."""

    shift: Tensor
    scale: Tensor
    gate: Tensor


class Modulation(nn.Module):
    """`linear(SiLU(vec))` chunked into `factor / 3` (shift, scale, gate) triples, in that order."""

    def __init__(self, hidden_size: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.act = nn.SiLU()
        self.linear = nn.Linear(hidden_size, factor * hidden_size)

    def forward(self, vec: Tensor) -> list[ModulationOut]:
        chunks = self.linear(self.act(vec))[:, None, :].chunk(self.factor, dim=-1)
        return [ModulationOut(*chunks[i : i + 3]) for i in range(0, self.factor, 3)]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: `x * (1 + scale) + shift`."""
    return x * (1 + scale) + shift


def layer_norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """LayerNorm without affine parameters (the blocks' norms have no checkpoint keys)."""
    return nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
