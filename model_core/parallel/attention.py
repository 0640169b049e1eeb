"""Ulysses wrapping of a joint (image + text) attention callable.

The wrapped callable sees what a single rank would see for its head slice: the full image sequence (padded
to a multiple of the degree, the padding masked through `img_valid_len`) and the text tokens with this
rank's heads. Text stays replicated on every rank, so text padding keeps its own segment exactly as in the
single-rank path.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from model_core.dit.attention import JointAttention
from model_core.parallel.group import SPGroup
from model_core.parallel.ulysses import gather_heads, heads_to_seq, seq_to_heads, slice_heads

# The contract of the wrapped callable is the DiT's own: `[B, L, H, D]` image and text q/k/v, padding
# beyond `img_valid_len` / `txt_valid_len[b]` in its own segments. Kept under this name for callers of the
# parallel package.
JointAttentionFn = JointAttention


class UlyssesJointAttention:
    """Sequence-parallel version of a `JointAttention` (the DiT's attention callable) over an SP group.

    Image q/k/v arrive as this rank's sequence shard with all heads; they are exchanged (all-to-all) for the
    full sequence with H/P heads, text q/k/v are sliced to the same heads, the inner attention runs, and the
    image output goes back to a sequence shard while the text output is gathered over heads.

    `img_valid_len` counts the valid tokens of the *full* image sequence (the shards concatenated), so the
    split padding at its end is masked; None means no padding.
    """

    def __init__(self, inner: JointAttention, sp: SPGroup) -> None:
        self.inner = inner
        self.sp = sp

    def __call__(
        self,
        img_q: Tensor,
        img_k: Tensor,
        img_v: Tensor,
        txt_q: Tensor,
        txt_k: Tensor,
        txt_v: Tensor,
        txt_valid_len: Sequence[int],
        *,
        img_valid_len: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        sp = self.sp
        sp.check_heads(img_q.shape[2])
        # 1. sequence shard, all heads -> full sequence, head slice: [B, L_pad, H/P, D]
        q, k, v = (seq_to_heads(t, sp) for t in (img_q, img_k, img_v))
        tq, tk, tv = (slice_heads(t, sp) for t in (txt_q, txt_k, txt_v))
        # 2. attention for this rank's heads; split padding is masked like any padded image token
        img_out, txt_out = self.inner(q, k, v, tq, tk, tv, txt_valid_len, img_valid_len=img_valid_len)
        # 3. back: image to a sequence shard with all heads, text to all heads
        return heads_to_seq(img_out, sp), gather_heads(txt_out, sp)
