"""Shared helpers of the Foley tests: key lists and a reference forward written from the published formulas."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

KEYS = Path(__file__).resolve().parent / "keys"
F32_EPS = torch.finfo(torch.float32).eps


def read_key_list(name: str) -> dict[str, tuple[int, ...]]:
    """`name<TAB>(d0, d1, ...)` a line (a first `#` line is a header) -> {name: shape}, in file order."""
    keys: dict[str, tuple[int, ...]] = {}
    for line in (KEYS / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            keys[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return keys


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def nearest_index(n_in: int, n_out: int, *, exact: bool) -> list[int]:
    """Source index of each of n_out outputs: nearest-exact floor((i + 0.5) n_in / n_out), legacy floor(i n_in / n_out)."""
    offset = 0.5 if exact else 0.0
    return [min(math.floor((i + offset) * n_in / n_out), n_in - 1) for i in range(n_out)]


def resize(x: Tensor, n_out: int, *, exact: bool = True) -> Tensor:
    """`[B, N, ...]` -> `[B, n_out, ...]` by picking source rows."""
    if x.shape[1] == n_out:
        return x
    return x[:, nearest_index(x.shape[1], n_out, exact=exact)]


def rope(x: Tensor, positions: list[int], theta: float = 10000.0) -> Tensor:
    """Rotate `[B, L, H, D]` as complex pairs (x[2i] + j x[2i+1]) by position * theta^(-2i/D).

    The angles and their cos/sin are float32, as the release computes them; the rotation is in x's dtype.
    """
    d = x.shape[-1]
    freqs = 1.0 / (theta ** (torch.arange(0, d, 2).float() / d))
    angles = torch.tensor(positions, dtype=torch.float32)[:, None] * freqs[None]
    rot = torch.complex(angles.cos().to(x.dtype), angles.sin().to(x.dtype))[None, :, None, :]
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rot).flatten(-2)


def layer_norm(x: Tensor, eps: float) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * weight


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """`[B, L, H, D]` -> `[B, L, H*D]`: softmax(q k^T / sqrt(D)) v, key_mask `[B, M]` (True = attend)."""
    scores = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    out = torch.einsum("bhlm,bmhd->blhd", scores.softmax(-1), v)
    return out.flatten(2)


def linear(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    out = x @ sd[f"{name}.weight"].T
    bias = sd.get(f"{name}.bias")
    return out if bias is None else out + bias


def conv_tokens(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    """A 'same' Conv1d along the tokens of `[B, L, C]`, written as a sum of shifted matmuls."""
    w = sd[f"{name}.weight"]  # [out, in, k]
    k = w.shape[-1]
    pad = k // 2
    xp = torch.nn.functional.pad(x, (0, 0, pad, pad))
    out = sum(xp[:, j : j + x.shape[1]] @ w[:, :, j].T for j in range(k))
    assert isinstance(out, Tensor)
    bias = sd.get(f"{name}.bias")
    return out if bias is None else out + bias


def swiglu(sd: Mapping[str, Tensor], name: str, x: Tensor, conv: bool = False) -> Tensor:
    f = conv_tokens if conv else linear
    return f(sd, f"{name}.w2", torch.nn.functional.silu(f(sd, f"{name}.w1", x)) * f(sd, f"{name}.w3", x))


def modulation(sd: Mapping[str, Tensor], name: str, vec: Tensor, n: int) -> list[Tensor]:
    out = linear(sd, f"{name}.linear", torch.nn.functional.silu(vec))
    if out.ndim == 2:
        out = out[:, None]
    return list(out.chunk(n, -1))


def reference_forward(
    sd: Mapping[str, Tensor],
    heads: int,
    x: Tensor,
    t: Tensor,
    clip: Tensor,
    text: Tensor,
    sync: Tensor,
    *,
    exact_resize: bool = True,
    single_split: str = "HDK",
    single_ln_eps: float = 1e-5,
    single_rms_eps: float = F32_EPS,
    final_modulation: bool = False,
    cross_rope: bool = True,
    sync_every_block: bool = False,
    per_token_vec: bool = True,
    text_mask: Tensor | None = None,
) -> Tensor:
    """The Foley MMDiT from the formulas; the keyword arguments switch on the known traps one at a time."""
    silu = torch.nn.functional.silu
    b, _, length = x.shape
    half = 128  # the sinusoid is 256 wide
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    sinusoid = torch.cat([torch.cos(t.float()[:, None] * freqs), torch.sin(t.float()[:, None] * freqs)], -1)
    vec = linear(sd, "time_in.mlp.2", silu(linear(sd, "time_in.mlp.0", sinusoid.to(x.dtype))))

    per = sd["sync_pos_emb"].shape[2]
    s = sync.reshape(b, -1, per, sync.shape[-1]) + sd["sync_pos_emb"]
    s = s.reshape(b, -1, sync.shape[-1])
    s = silu(linear(sd, "sync_in.0", s))
    s = swiglu(sd, "sync_in.2", s, conv=True)
    s = resize(s, length, exact=exact_resize)

    txt = linear(sd, "cond_in.linear_2", silu(linear(sd, "cond_in.linear_1", text)))
    audio = (
        torch.einsum("bcl,oc->blo", x, sd["audio_embedder.proj.weight"][..., 0])
        + sd["audio_embedder.proj.bias"]
    )
    vis = swiglu(sd, "visual_proj", clip)
    n_vis = vis.shape[1]
    hd = audio.shape[-1] // heads

    def split(y: Tensor, k: int) -> list[Tensor]:
        return list(y.reshape(b, y.shape[1], k, heads, hd).unbind(2))

    depth_triple = len({k.split(".")[1] for k in sd if k.startswith("triple_blocks.")})
    depth_single = len({k.split(".")[1] for k in sd if k.startswith("single_blocks.")})
    up = nearest_index(n_vis, length, exact=exact_resize)
    down = nearest_index(length, n_vis, exact=exact_resize)
    for i in range(depth_triple):
        p = f"triple_blocks.{i}"
        if i == 0 or sync_every_block:
            audio = audio + s
        am = modulation(sd, f"{p}.audio_mod", vec, 9)
        vm = modulation(sd, f"{p}.v_cond_mod", vec, 9)
        a_in = layer_norm(audio, 1e-6) * (1 + am[1]) + am[0]
        v_in = layer_norm(vis, 1e-6) * (1 + vm[1]) + vm[0]
        aq, ak, av = split(linear(sd, f"{p}.audio_self_attn_qkv", a_in), 3)
        vq, vk, vv = split(linear(sd, f"{p}.v_cond_attn_qkv", v_in), 3)
        aq = rms_norm(aq, sd[f"{p}.audio_self_q_norm.weight"], 1e-6)
        ak = rms_norm(ak, sd[f"{p}.audio_self_k_norm.weight"], 1e-6)
        vq = rms_norm(vq, sd[f"{p}.v_cond_attn_q_norm.weight"], 1e-6)
        vk = rms_norm(vk, sd[f"{p}.v_cond_attn_k_norm.weight"], 1e-6)
        # audio token i sits at 2i; visual token j is the interleaved slot m = down[j], which holds
        # visual up[m] rotated to position 2m + 1
        aq, ak = rope(aq, [2 * i for i in range(length)]), rope(ak, [2 * i for i in range(length)])
        src = [up[m] for m in down]
        pos = [2 * m + 1 for m in down]
        vq, vk = rope(vq[:, src], pos), rope(vk[:, src], pos)
        out = attention(torch.cat([vq, aq], 1), torch.cat([vk, ak], 1), torch.cat([vv, av], 1))
        audio = audio + am[2] * linear(sd, f"{p}.audio_self_proj", out[:, n_vis:])
        vis = vis + vm[2] * linear(sd, f"{p}.v_cond_self_proj", out[:, :n_vis])

        a_in = layer_norm(audio, 1e-6) * (1 + am[4]) + am[3]
        v_in = layer_norm(vis, 1e-6) * (1 + vm[4]) + vm[3]
        aq = rms_norm(
            split(linear(sd, f"{p}.audio_cross_q", a_in), 1)[0], sd[f"{p}.audio_cross_q_norm.weight"], 1e-6
        )
        vq = rms_norm(
            split(linear(sd, f"{p}.v_cond_cross_q", v_in), 1)[0], sd[f"{p}.v_cond_cross_q_norm.weight"], 1e-6
        )
        tk, tv = split(linear(sd, f"{p}.text_cross_kv", txt), 2)
        tk = rms_norm(tk, sd[f"{p}.text_cross_k_norm.weight"], 1e-6)
        if cross_rope:
            aq = rope(aq, list(range(length)))
            vq = rope(vq, list(range(n_vis)))
            tk = rope(tk, list(range(tk.shape[1])))
        out = attention(torch.cat([vq, aq], 1), tk, tv, text_mask)
        audio = audio + am[5] * linear(sd, f"{p}.audio_cross_proj", out[:, n_vis:])
        vis = vis + vm[5] * linear(sd, f"{p}.v_cond_cross_proj", out[:, :n_vis])

        def mlp(name: str, y: Tensor) -> Tensor:
            h = linear(sd, f"{name}.fc1", y)
            return linear(sd, f"{name}.fc2", torch.nn.functional.gelu(h, approximate="tanh"))

        audio = audio + am[8] * mlp(f"{p}.audio_mlp", layer_norm(audio, 1e-6) * (1 + am[7]) + am[6])
        vis = vis + vm[8] * mlp(f"{p}.v_cond_mlp", layer_norm(vis, 1e-6) * (1 + vm[7]) + vm[6])

    token_vec = s + vec[:, None] if per_token_vec else vec[:, None].expand_as(audio)
    for i in range(depth_single):
        p = f"single_blocks.{i}"
        sh1, sc1, g1, sh2, sc2, g2 = modulation(sd, f"{p}.modulation", token_vec, 6)
        qkv = linear(sd, f"{p}.linear_qkv", layer_norm(audio, single_ln_eps) * (1 + sc1) + sh1)
        if single_split == "HDK":
            q, k, v = qkv.reshape(b, length, heads, hd, 3).unbind(-1)
        else:
            q, k, v = qkv.reshape(b, length, 3, heads, hd).unbind(2)
        q = rope(rms_norm(q, sd[f"{p}.q_norm.weight"], single_rms_eps), list(range(length)))
        k = rope(rms_norm(k, sd[f"{p}.k_norm.weight"], single_rms_eps), list(range(length)))
        audio = audio + g1 * conv_tokens(sd, f"{p}.linear1", attention(q, k, v))
        audio = audio + g2 * swiglu(
            sd, f"{p}.linear2", layer_norm(audio, single_ln_eps) * (1 + sc2) + sh2, conv=True
        )

    y = layer_norm(audio, 1e-6)
    if final_modulation:
        shift, scale = linear(sd, "final_layer.adaLN_modulation.1", silu(token_vec)).chunk(2, -1)
        y = y * (1 + scale) + shift
    return linear(sd, "final_layer.linear", y).transpose(1, 2)
