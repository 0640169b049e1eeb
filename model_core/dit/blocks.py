"""The MM-DiT blocks: double-stream (separate image/text weights, joint attention), single-stream, final layer.

Blocks take the joint attention as an argument, so whoever owns the model (sequence parallelism included) decides
how attention runs without touching the blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from model_core.dit.attention import JointAttention
from model_core.dit.fp8 import FP8Linear
from model_core.dit.layers import MLP, Modulation, ModulationOut, RMSNorm, layer_norm, modulate
from model_core.dit.rope import apply_rope

__all__ = ["DoubleStreamBlock", "FinalLayer", "SingleStreamBlock"]


class DoubleStreamBlock(nn.Module):
    """Image and text streams with their own modulation, qkv, q/k RMS norms, projection and MLP.

    RoPE rotates image q/k only; the attention runs over the joint sequence (image first).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = hidden_size // num_heads
        self.img_mod = Modulation(hidden_size, factor=6)
        self.img_attn_qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.img_attn_q_norm = RMSNorm(head_dim)
        self.img_attn_k_norm = RMSNorm(head_dim)
        self.img_attn_proj = nn.Linear(hidden_size, hidden_size)
        self.img_mlp = MLP(hidden_size, mlp_hidden, nn.GELU(approximate="tanh"))
        self.txt_mod = Modulation(hidden_size, factor=6)
        self.txt_attn_qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.txt_attn_q_norm = RMSNorm(head_dim)
        self.txt_attn_k_norm = RMSNorm(head_dim)
        self.txt_attn_proj = nn.Linear(hidden_size, hidden_size)
        self.txt_mlp = MLP(hidden_size, mlp_hidden, nn.GELU(approximate="tanh"))

    def _qkv(
        self, x: Tensor, linear: nn.Module, q_norm: RMSNorm, k_norm: RMSNorm
    ) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = rearrange(linear(x), "B L (K H D) -> K B L H D", K=3, H=self.num_heads)
        return q_norm(q).to(v.dtype), k_norm(k).to(v.dtype), v

    def forward(
        self,
        img: Tensor,
        txt: Tensor,
        vec: Tensor,
        rope_cos: Tensor,
        rope_sin: Tensor,
        attention: JointAttention,
        txt_valid_len: Sequence[int],
        img_valid_len: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        img_mod1, img_mod2 = self.img_mod(vec)
        txt_mod1, txt_mod2 = self.txt_mod(vec)
        img_attn, txt_attn = self._attention(
            img, txt, img_mod1, txt_mod1, rope_cos, rope_sin, attention, txt_valid_len, img_valid_len
        )

        # residuals
        img = img + img_mod1.gate * self.img_attn_proj(img_attn.flatten(2))
        txt = txt + txt_mod1.gate * self.txt_attn_proj(txt_attn.flatten(2))
        del img_attn, txt_attn  # peak memory: the MLPs below need room, not these
        img = img + img_mod2.gate * self.img_mlp(modulate(layer_norm(img), img_mod2.shift, img_mod2.scale))
        txt = txt + txt_mod2.gate * self.txt_mlp(modulate(layer_norm(txt), txt_mod2.shift, txt_mod2.scale))
        return img, txt

    def _attention(
        self,
        img: Tensor,
        txt: Tensor,
        img_mod: ModulationOut,
        txt_mod: ModulationOut,
        rope_cos: Tensor,
        rope_sin: Tensor,
        attention: JointAttention,
        txt_valid_len: Sequence[int],
        img_valid_len: int | None,
    ) -> tuple[Tensor, Tensor]:
        """Joint attention of the modulated streams. Its own function, so q/k/v die when it returns."""
        img_x = modulate(layer_norm(img), img_mod.shift, img_mod.scale)
        img_q, img_k, img_v = self._qkv(img_x, self.img_attn_qkv, self.img_attn_q_norm, self.img_attn_k_norm)
        del img_x
        img_q, img_k = apply_rope(img_q, rope_cos, rope_sin), apply_rope(img_k, rope_cos, rope_sin)
        txt_x = modulate(layer_norm(txt), txt_mod.shift, txt_mod.scale)
        txt_q, txt_k, txt_v = self._qkv(txt_x, self.txt_attn_qkv, self.txt_attn_q_norm, self.txt_attn_k_norm)
        del txt_x
        return attention(img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_valid_len, img_valid_len=img_valid_len)


class SingleStreamBlock(nn.Module):
    """One shared stream over the joint sequence: `linear1` gives q|k|v|mlp_in, `linear2` maps attn|gelu(mlp) back."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.mlp_hidden = mlp_hidden
        head_dim = hidden_size // num_heads
        self.linear1 = nn.Linear(hidden_size, 3 * hidden_size + mlp_hidden)
        self.linear2 = nn.Linear(hidden_size + mlp_hidden, hidden_size)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden_size, factor=3)

    def forward(
        self,
        x: Tensor,
        vec: Tensor,
        num_img: int,
        rope_cos: Tensor,
        rope_sin: Tensor,
        attention: JointAttention,
        txt_valid_len: Sequence[int],
        img_valid_len: int | None = None,
    ) -> Tensor:
        """`x [B, num_img + L_txt, C]`: image tokens first, then text."""
        (mod,) = self.modulation(vec)
        x_mod = modulate(layer_norm(x), mod.shift, mod.scale)
        # linear1 as two matmuls over its weight rows, mlp_in first: it is activated before q|k|v exist, so the
        # halves never sit together in one [L, 3C + M] buffer next to the activation (peak memory)
        rows = [3 * self.hidden_size, self.mlp_hidden]
        mlp = self.mlp_act(_linear_rows(self.linear1, x_mod, rows, 1))
        qkv = _linear_rows(self.linear1, x_mod, rows, 0)
        del x_mod
        attn = self._attention(qkv, num_img, rope_cos, rope_sin, attention, txt_valid_len, img_valid_len)
        del qkv
        attn_mlp = torch.cat([attn, mlp], dim=-1)
        del attn, mlp
        out = self.linear2(attn_mlp)
        del attn_mlp
        return x + mod.gate * out

    def _attention(
        self,
        qkv: Tensor,
        num_img: int,
        rope_cos: Tensor,
        rope_sin: Tensor,
        attention: JointAttention,
        txt_valid_len: Sequence[int],
        img_valid_len: int | None,
    ) -> Tensor:
        """`[B, L, 3C]` q|k|v -> `[B, L, C]` joint attention. Its own function, so q/k/v die when it returns."""
        q, k, v = rearrange(qkv, "B L (K H D) -> K B L H D", K=3, H=self.num_heads)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        # RoPE on the image part only, written over the normed q/k (fresh tensors owned here)
        q[:, :num_img] = apply_rope(q[:, :num_img], rope_cos, rope_sin)
        k[:, :num_img] = apply_rope(k[:, :num_img], rope_cos, rope_sin)
        img_attn, txt_attn = attention(
            q[:, :num_img],
            k[:, :num_img],
            v[:, :num_img],
            q[:, num_img:],
            k[:, num_img:],
            v[:, num_img:],
            txt_valid_len,
            img_valid_len=img_valid_len,
        )
        return torch.cat([img_attn, txt_attn], dim=1).flatten(2)


def _linear_rows(linear: nn.Module, x: Tensor, sizes: Sequence[int], index: int) -> Tensor:
    """`torch.split(linear(x), sizes, dim=-1)[index]`, computed from that block of weight rows only (the same
    sums per output). Takes an `nn.Linear` or an `FP8Linear` (rows dequantised as its forward does); any other
    module runs whole and is split.
    """
    start = sum(sizes[:index])
    rows = slice(start, start + sizes[index])
    if isinstance(linear, nn.Linear):
        return F.linear(x, linear.weight[rows], None if linear.bias is None else linear.bias[rows])
    if isinstance(linear, FP8Linear):
        scale = linear.fp8_scale.to(x.dtype)
        weight = linear.weight[rows].to(x.dtype) * (scale[rows] if scale.ndim else scale)
        return F.linear(x, weight, None if linear.bias is None else linear.bias[rows].to(x.dtype))
    return torch.split(linear(x), list(sizes), dim=-1)[index]


class FinalLayer(nn.Module):
    """`linear(modulate(LN(x), shift, scale))`; `adaLN_modulation.1` chunks as (shift, scale), in that order."""

    def __init__(self, hidden_size: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, out_features)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
        return self.linear(modulate(layer_norm(x), shift, scale))
