"""Synchformer's offset classifier: the whole `synchformer_state_dict.pth` (video branch, audio branch, sync head).

From Tencent-Hunyuan/HunyuanVideo-Foley@df7b005b (`hunyuanvideo_foley/models/synchformer/synchformer.py`,
`compute_desync_score.py`, `data_transforms.py`):

- 14 segments of 16 frames (stride 8) and of 10240 samples (stride 5120): 4.8 s of a 5 s crop;
- video features `[B, 14, 8, 768]` (MotionFormer, `model_core.audio.foley.synchformer`) -> `vproj`; audio
  features `[B, 14, 6, 768]` (AST, `model_core.audio.foley.synchformer_audio`) -> `aproj`;
- the global transformer: each stream through its own LayerNorm (eps 1e-5), the sequence
  `[OFF_tok, 112 video tokens, MOD_tok, 84 audio tokens]` (198) plus a learned position embedding, 3 pre-norm
  blocks (8 heads, GELU MLP 4x), `ln_f`, and `off_head` on the OFF token: 21 logits;
- class i is the offset `-2 + 0.2 i` seconds (`make_class_grid(-2, 2, 21)`); a positive offset means the audio
  runs ahead of the picture (the test crop takes the audio from `v_start + offset`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from model_core.audio.foley.synchformer import SYNCHFORMER_PRESETS, MotionFormer, SynchformerConfig
from model_core.audio.foley.synchformer_audio import ASTFeatures, AudioBranchConfig

__all__ = [
    "SYNC_CLASSIFIER_PRESETS",
    "SyncClassifier",
    "SyncClassifierConfig",
    "load_sync_classifier",
    "offset_grid",
    "offset_seconds",
]


@dataclass(frozen=True)
class SyncClassifierConfig:
    video: SynchformerConfig
    audio: AudioBranchConfig
    dim: int = 768  # the global transformer's width (= both branches' width)
    depth: int = 3
    num_heads: int = 8
    segments: int = 14  # the position embedding fixes the count: 1 + 14 * 8 + 1 + 14 * 6 = 198
    classes: int = 21
    max_offset: float = 2.0  # seconds; the class grid is linspace(-max_offset, max_offset, classes)
    description: str = field(default="", compare=False)

    @property
    def sequence(self) -> int:
        return 2 + self.segments * (self.video.tokens_per_segment + self.audio.grid[1])


SYNC_CLASSIFIER_PRESETS: dict[str, SyncClassifierConfig] = {
    "synchformer": SyncClassifierConfig(
        SYNCHFORMER_PRESETS["synchformer"], AudioBranchConfig(), description="Synchformer offset classifier"
    ),
    "tiny-synchformer": SyncClassifierConfig(
        SYNCHFORMER_PRESETS["tiny-synchformer"],
        AudioBranchConfig(dim=32, depth=2, num_heads=2, mlp_dim=128),
        dim=32,
        depth=1,
        num_heads=2,
        description="tiny Synchformer offset classifier",
    ),
}


def offset_grid(config: SyncClassifierConfig) -> Tensor:
    """The offset in seconds of each class: `[-2.0, -1.8, ..., 2.0]` released."""
    return torch.linspace(-config.max_offset, config.max_offset, config.classes)


def offset_seconds(logits: Tensor, config: SyncClassifierConfig) -> Tensor:
    """`[B, classes]` logits -> `[B]` the offset of the most probable class, in seconds."""
    return offset_grid(config).to(logits.device)[logits.argmax(-1)]


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (
            rearrange(lin(x), "b l (h d) -> b h l d", h=self.num_heads)
            for lin in (self.query, self.key, self.value)
        )
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h l d -> b l (h d)"))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, num_heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _PositionEmbedding(nn.Module):
    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.randn(1, length, dim))


class GlobalTransformer(nn.Module):
    """`transformer`: (video tokens `[B, Sv, D]`, audio tokens `[B, Sa, D]`) -> offset logits `[B, classes]`."""

    def __init__(self, config: SyncClassifierConfig) -> None:
        super().__init__()
        d = config.dim
        self.OFF_tok = nn.Parameter(torch.randn(1, 1, d))  # the release initialises both with randn
        self.MOD_tok = nn.Parameter(torch.randn(1, 1, d))
        self.vis_in_lnorm = nn.LayerNorm(d)
        self.aud_in_lnorm = nn.LayerNorm(d)
        self.pos_emb_cfg = _PositionEmbedding(config.sequence, d)
        self.blocks = nn.Sequential(*(_Block(d, config.num_heads) for _ in range(config.depth)))
        self.ln_f = nn.LayerNorm(d)
        self.off_head = nn.Linear(d, config.classes)

    def forward(self, video: Tensor, audio: Tensor) -> Tensor:
        b = video.shape[0]
        x = torch.cat(
            (
                self.OFF_tok.expand(b, -1, -1),
                self.vis_in_lnorm(video),
                self.MOD_tok.expand(b, -1, -1),
                self.aud_in_lnorm(audio),
            ),
            dim=1,
        )
        if x.shape[1] != self.pos_emb_cfg.pos_emb.shape[1]:
            raise ValueError(
                f"the sync head takes {self.pos_emb_cfg.pos_emb.shape[1]} tokens (14 segments of 4.8 s), "
                f"got {x.shape[1]}"
            )
        x = self.ln_f(self.blocks(x + self.pos_emb_cfg.pos_emb))
        return self.off_head(x[:, 0])


class SyncClassifier(nn.Module):
    """Synchformer under its released names: (video segments, audio spectrograms) -> offset logits."""

    def __init__(self, config: SyncClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.vfeat_extractor = MotionFormer(config.video)
        self.afeat_extractor = ASTFeatures(config.audio)
        self.vproj = nn.Linear(config.video.dim, config.dim)
        self.aproj = nn.Linear(config.audio.dim, config.dim)
        self.transformer = GlobalTransformer(config)

    def forward(self, video: Tensor, spec: Tensor) -> Tensor:
        """video `[B, S, 16, C, H, W]` (normalised frames), spec `[B, S, 66, 128]` -> `[B, classes]` logits."""
        b, s = video.shape[:2]
        if spec.shape[:2] != (b, s):
            raise ValueError(
                f"video has {tuple(video.shape[:2])} (batch, segments), audio {tuple(spec.shape[:2])}"
            )
        v = self.vfeat_extractor(rearrange(video, "b s t c h w -> (b s) c t h w"))  # [BS, 8, D]
        a = self.afeat_extractor(spec.flatten(0, 1))  # [BS, 6, D]
        v = rearrange(self.vproj(v), "(b s) t d -> b (s t) d", b=b)
        a = rearrange(self.aproj(a), "(b s) t d -> b (s t) d", b=b)
        return self.transformer(v, a)


def load_sync_classifier(
    path: str | Path,
    config: SyncClassifierConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> SyncClassifier:
    """The whole Synchformer, loaded strictly from a `synchformer_state_dict.pth` (every key used)."""
    from model_core.checkpoints import read_state_dict

    state = read_state_dict(path, load_key=None)
    return _load_from_state(
        state, config or SYNC_CLASSIFIER_PRESETS["synchformer"], device=device, dtype=dtype
    )


def _load_from_state(
    state: Mapping[str, Tensor],
    config: SyncClassifierConfig,
    *,
    device: torch.device | str,
    dtype: torch.dtype | None,
) -> SyncClassifier:
    from model_core.checkpoints import load_state_dict_into

    with torch.device("meta"):
        model = SyncClassifier(config)
    load_state_dict_into(
        model, dict(state), device=device, dtype=dtype, what="the Synchformer offset classifier", presets=[]
    )
    return model.eval()
