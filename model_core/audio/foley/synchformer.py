"""Synchformer's video branch (MotionFormer, divided space-time ViT): the sync features of HunyuanVideo-Foley.

Input: frames at 25 fps, 224 x 224, normalised with mean/std 0.5, cut into 16-frame segments with stride 8
(`segment_frames`). Per segment: a Conv3d tubelet 2x16x16 gives 8 x 14 x 14 tokens and a CLS token; the spatial
position embedding (197) is tiled over the 8 time steps and the temporal embedding (8) added per step; 12 blocks
of divided attention in the order time (`timeattn`, `norm3`), space (`attn`, `norm1`), MLP (`norm2`), where the CLS
token attends to every token and every other token to its own frame (space) or position (time) plus the CLS;
then CLS dropped, `norm`, and `spatial_attn_agg` (a pre-norm transformer encoder layer with its own CLS over the
196 tokens of each time step) gives 8 x 768 per segment. The 2-D `patch_embed` is in the released file and unused.

`synchformer_state_dict.pth` also holds the audio branch and the sync head, which Foley does not use;
`load_synchformer` keeps the `vfeat_extractor.` keys, lists the others by name and loads strictly. The whole file
(for QC's DeSync) loads with `model_core.audio.foley.synchformer_sync.load_sync_classifier`. Reimplemented from the facts of
Tencent-Hunyuan/HunyuanVideo-Foley (`hunyuanvideo_foley/models/synchformer/`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "SYNCHFORMER_PRESETS",
    "UNUSED_SYNCHFORMER_PREFIXES",
    "MotionFormer",
    "Synchformer",
    "SynchformerConfig",
    "load_synchformer",
    "segment_frames",
    "sync_token_count",
]

# the audio branch (AST), the projections and the transformer of the sync classifier: Foley uses none of them
UNUSED_SYNCHFORMER_PREFIXES = ("afeat_extractor.", "aproj.", "vproj.", "transformer.")
SEGMENT = 16
STRIDE = 8


@dataclass(frozen=True)
class SynchformerConfig:
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    image_size: int = 224
    patch_size: int = 16
    segment_frames: int = SEGMENT
    tubelet: int = 2  # frames per temporal token
    mlp_ratio: int = 4
    description: str = field(default="", compare=False)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens_per_segment(self) -> int:
        """Temporal tokens of one segment (8): the features per segment Foley reads."""
        return self.segment_frames // self.tubelet


SYNCHFORMER_PRESETS: dict[str, SynchformerConfig] = {
    "synchformer": SynchformerConfig(description="Synchformer video branch (synchformer_state_dict.pth)"),
    "tiny-synchformer": SynchformerConfig(
        dim=32, depth=2, num_heads=2, image_size=32, description="tiny Synchformer"
    ),
}


def sync_token_count(n_frames: int, tokens_per_segment: int = 8) -> int:
    """Synchformer tokens of `n_frames` frames at 25 fps: 8 per 16-frame segment, stride 8."""
    return tokens_per_segment * ((n_frames - SEGMENT) // STRIDE + 1) if n_frames >= SEGMENT else 0


def segment_frames(frames: Tensor) -> Tensor:
    """`[B, T, C, H, W]` -> `[B, S, 16, C, H, W]`, S = (T - 16) // 8 + 1 segments."""
    t = frames.shape[1]
    if t < SEGMENT:
        raise ValueError(f"Synchformer needs at least {SEGMENT} frames (0.64 s at 25 fps), got {t}")
    count = (t - SEGMENT) // STRIDE + 1
    return torch.stack([frames[:, i * STRIDE : i * STRIDE + SEGMENT] for i in range(count)], dim=1)


class _Attention(nn.Module):
    """Divided attention (`qkv`, `proj`): CLS attends to everything, other tokens within their group + CLS."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, frames: int, over: str) -> Tensor:
        """x `[B, 1 + F*N, D]` (tokens frame-major); `over` is "time" or "space"."""
        b = x.shape[0]
        q, k, v = (
            rearrange(t, "b l (h d) -> b h l d", h=self.num_heads) for t in self.qkv(x).chunk(3, dim=-1)
        )
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        pattern = "b h (f n) d -> (b n) h f d" if over == "time" else "b h (f n) d -> (b f) h n d"
        qg, kg, vg = (rearrange(t[:, :, 1:], pattern, f=frames) for t in (q, k, v))
        groups = qg.shape[0] // b
        cls_k = k[:, :, :1].repeat_interleave(groups, dim=0)
        cls_v = v[:, :, :1].repeat_interleave(groups, dim=0)
        out = F.scaled_dot_product_attention(qg, torch.cat((cls_k, kg), 2), torch.cat((cls_v, vg), 2))
        back = "(b n) h f d -> b h (f n) d" if over == "time" else "(b f) h n d -> b h (f n) d"
        out = rearrange(out, back, b=b)
        return self.proj(rearrange(torch.cat((cls_out, out), 2), "b h l d -> b l (h d)"))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, config: SynchformerConfig) -> None:
        super().__init__()
        d = config.dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = _Attention(d, config.num_heads)
        self.timeattn = _Attention(d, config.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = _Mlp(d, config.mlp_ratio * d)
        self.norm3 = nn.LayerNorm(d, eps=1e-6)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        x = x + self.timeattn(self.norm3(x), frames, "time")
        x = x + self.attn(self.norm1(x), frames, "space")
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.proj = conv


class _SpatialAggregator(nn.TransformerEncoderLayer):
    """A pre-norm encoder layer over each time step's patches with its own CLS; returns the CLS output."""

    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__(
            d_model=dim,
            nhead=num_heads,
            dim_feedforward=hidden,
            dropout=0.0,
            activation=nn.GELU(),
            layer_norm_eps=1e-6,
            batch_first=True,
            norm_first=True,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def aggregate(self, x: Tensor) -> Tensor:
        """`[B, N, D]` -> `[B, D]`."""
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        return self(x)[:, 0]


class MotionFormer(nn.Module):
    """The video feature extractor (`vfeat_extractor`): `[B, C, 16, H, W]` segments -> `[B, 8, D]`."""

    def __init__(self, config: SynchformerConfig) -> None:
        super().__init__()
        self.config = config
        d, p = config.dim, config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid**2 + 1, d))
        self.temp_embed = nn.Parameter(torch.zeros(1, config.tokens_per_segment, d))
        self.patch_embed = _PatchEmbed(nn.Conv2d(3, d, p, stride=p))  # in the released file, unused
        tubelet = (config.tubelet, p, p)
        self.patch_embed_3d = _PatchEmbed(nn.Conv3d(3, d, tubelet, stride=tubelet))
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.spatial_attn_agg = _SpatialAggregator(d, config.num_heads, config.mlp_ratio * d)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        tokens = self.patch_embed_3d.proj(x)  # [B, D, t, h, w]
        t, n = tokens.shape[2], tokens.shape[3] * tokens.shape[4]
        tokens = tokens.flatten(2).transpose(1, 2)  # frame-major (t, h, w)
        pos = self.pos_embed[:, 1:].repeat(1, t, 1) + self.temp_embed.repeat_interleave(n, dim=1)
        pos = torch.cat((self.pos_embed[:, :1], pos), dim=1)
        x = torch.cat((self.cls_token.expand(b, -1, -1), tokens), dim=1) + pos
        for block in self.blocks:
            x = block(x, t)
        x = self.norm(x[:, 1:])
        per_step = rearrange(x, "b (t n) d -> (b t) n d", t=t)
        return rearrange(self.spatial_attn_agg.aggregate(per_step), "(b t) d -> b t d", b=b)


class Synchformer(nn.Module):
    """Synchformer's video branch under its released name (`vfeat_extractor`)."""

    def __init__(self, config: SynchformerConfig) -> None:
        super().__init__()
        self.config = config
        self.vfeat_extractor = MotionFormer(config)

    def forward(self, segments: Tensor) -> Tensor:
        """`[B, S, 16, C, H, W]` segments (frames, then channels) -> `[B, S * 8, D]` sync features."""
        b, s = segments.shape[:2]
        x = rearrange(segments, "b s t c h w -> (b s) c t h w")
        return rearrange(self.vfeat_extractor(x), "(b s) t d -> b (s t) d", b=b, s=s)

    def features(self, frames: Tensor) -> Tensor:
        """Sync features `[B, S * 8, D]` of preprocessed 25 fps frames `[B, T, C, H, W]`."""
        return self(segment_frames(frames))


def load_synchformer(
    path: str | Path,
    config: SynchformerConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[Synchformer, list[str]]:
    """(the video branch loaded strictly from a `synchformer_state_dict.pth`, the sorted keys left out).

    Keys under `UNUSED_SYNCHFORMER_PREFIXES` are left out by name; any other key the model lacks is an error.
    """
    from model_core.checkpoints import read_state_dict

    state = read_state_dict(path, load_key=None)
    return _load_from_state(state, config or SYNCHFORMER_PRESETS["synchformer"], device=device, dtype=dtype)


def _load_from_state(
    state: Mapping[str, Tensor],
    config: SynchformerConfig,
    *,
    device: torch.device | str,
    dtype: torch.dtype | None,
) -> tuple[Synchformer, list[str]]:
    from model_core.checkpoints import load_state_dict_into

    kept = {k: v for k, v in state.items() if not k.startswith(UNUSED_SYNCHFORMER_PREFIXES)}
    dropped = sorted(k for k in state if k.startswith(UNUSED_SYNCHFORMER_PREFIXES))
    with torch.device("meta"):
        model = Synchformer(config)
    load_state_dict_into(
        model, kept, device=device, dtype=dtype, what="the Synchformer video branch", presets=[]
    )
    return model.eval(), dropped
