"""Joint image+text attention with text-padding segments, behind one replaceable callable.

Every attention of the MM-DiT (double and single blocks) goes through a `JointAttention`: image and text q/k/v
come in separately, `[B, L, H, D]` each, and the joint sequence is image first, then text. Per sample the tokens
fall into segments that never see each other:

* valid image tokens + the first `txt_valid_len[b]` text tokens (the real tokens),
* padded text tokens (attend only among themselves, as the release's varlen call does),
* padded image tokens when `img_valid_len` is given (sequence parallelism pads the image to a multiple of the
  degree; those tokens attend only among themselves).

So the values of padded tokens never change a real token. Only the valid-text *count* matters here, as in the
release; the token refiner is where mask positions matter.

Backends: `AttentionBackend.SDPA` (torch, any device, the CPU default) and `AttentionBackend.FLASH_VARLEN`
(flash-attn's varlen kernel, CUDA, fp16/bf16). `make_joint_attention` checks availability up front.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Sequence
from enum import Enum
from typing import Protocol

import torch
import torch.nn.functional as F
from packaging.version import Version
from torch import Tensor

__all__ = [
    "FLASH_ATTN_PIP",
    "AttentionBackend",
    "AttentionBackendUnavailable",
    "FlashVarlenJointAttention",
    "JointAttention",
    "SdpaJointAttention",
    "check_backend_available",
    "make_joint_attention",
    "sdpa",
]

FLASH_ATTN_PIP = "pip install flash-attn==2.8.3.post2 --no-build-isolation"
_FLASH_ATTN_MIN = Version(
    "2.1.0"
)  # first release whose varlen kernel takes cu_seqlens for q and k separately


class AttentionBackend(str, Enum):
    """Which kernel computes the joint attention."""

    SDPA = "sdpa"
    FLASH_VARLEN = "flash_varlen"


class AttentionBackendUnavailable(RuntimeError):
    """The requested attention backend cannot run here; the message names the fix."""


class JointAttention(Protocol):
    """The attention every DiT block calls. Sequence parallelism wraps one of these.

    Args:
        img_q, img_k, img_v: `[B, N_img, H, D]` image tokens (identity tokens included), RoPE already applied.
        txt_q, txt_k, txt_v: `[B, L_txt, H, D]` text tokens.
        txt_valid_len: per sample, how many leading text tokens are real (the rest are padding).
        img_valid_len: how many leading image tokens are real (the same for every sample); None = all.

    Returns:
        `(img_out [B, N_img, H, D], txt_out [B, L_txt, H, D])`.
    """

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
    ) -> tuple[Tensor, Tensor]: ...


def _check_inputs(
    img_q: Tensor, txt_q: Tensor, txt_valid_len: Sequence[int], img_valid_len: int | None
) -> None:
    if img_q.ndim != 4 or txt_q.ndim != 4:
        raise ValueError(
            f"joint attention takes q/k/v as [B, L, H, D]; got image {tuple(img_q.shape)}, text {tuple(txt_q.shape)}"
        )
    batch, n_img = img_q.shape[:2]
    n_txt = txt_q.shape[1]
    if len(txt_valid_len) != batch:
        raise ValueError(f"txt_valid_len has {len(txt_valid_len)} entries; expected one per sample ({batch})")
    if any(not 0 <= n <= n_txt for n in txt_valid_len):
        raise ValueError(f"txt_valid_len {list(txt_valid_len)} must lie in [0, {n_txt}] (the text length)")
    if img_valid_len is not None and not 0 <= img_valid_len <= n_img:
        raise ValueError(f"img_valid_len {img_valid_len} must lie in [0, {n_img}] (the image token count)")


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Unmasked attention, `[B, S, H, D]` in and out.

    The call is 4-D (`[B, H, S, D]` views, no copy): torch picks its fused kernels (flash / memory-efficient /
    cuDNN on CUDA, the flash kernel on CPU) only for 4-D input; 3-D input falls back to the math kernel, which
    builds the whole `[H, S, S]` score matrix.
    """
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _joined(img: Tensor, txt: Tensor, n_txt: int) -> Tensor:
    """`torch.cat([img, txt[:, :n_txt]], dim=1)`; a view, no copy, where `txt` directly follows `img` in memory
    (the single blocks pass the image and text parts of one joint tensor)."""
    follows = (
        img.stride() == txt.stride()
        and img.dtype == txt.dtype
        and img.device == txt.device
        and img.untyped_storage().data_ptr() == txt.untyped_storage().data_ptr()
        and txt.data_ptr() == img.data_ptr() + img.shape[1] * img.stride(1) * img.element_size()
    )
    if follows:
        return img.as_strided((img.shape[0], img.shape[1] + n_txt, *img.shape[2:]), img.stride())
    return torch.cat([img, txt[:, :n_txt]], dim=1)


def _same_length_groups(txt_valid_len: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Samples grouped by valid-text count, in order of first appearance: `[(n_vtxt, [b, ...]), ...]`."""
    groups: dict[int, list[int]] = {}
    for b, n in enumerate(txt_valid_len):
        groups.setdefault(n, []).append(b)
    return list(groups.items())


class SdpaJointAttention:
    """torch SDPA, one unmasked 4-D call per segment for all samples whose segments have the same lengths.

    Running each segment as its own unmasked attention is exact (a mask would only add -inf terms) and lets
    SDPA pick its fused kernels, whose memory grows linearly with the sequence; a dense segment mask would not
    (at 120k tokens it cannot be allocated, and on CUDA any mask rules out the flash kernel). Measured on CPU at
    4,352 tokens, 24 heads of 128: one masked call over the joint sequence is 1.2-1.5x slower than the
    per-segment calls.
    """

    backend = AttentionBackend.SDPA

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
        _check_inputs(img_q, txt_q, txt_valid_len, img_valid_len)
        batch, n_img = img_q.shape[:2]
        n_txt = txt_q.shape[1]
        n_vimg = n_img if img_valid_len is None else img_valid_len
        groups = _same_length_groups(txt_valid_len)
        if n_vimg == n_img and len(groups) == 1 and groups[0][0]:
            # every sample has the same segments and no image padding: the image output is a view of the
            # joint output, with no copy
            n_vtxt = groups[0][0]
            q, k, v = (
                _joined(img, txt, n_vtxt) for img, txt in ((img_q, txt_q), (img_k, txt_k), (img_v, txt_v))
            )
            out = sdpa(q, k, v)
            del q, k, v
            if n_vtxt == n_txt:
                return out[:, :n_img], out[:, n_img:]
            pad = sdpa(txt_q[:, n_vtxt:], txt_k[:, n_vtxt:], txt_v[:, n_vtxt:])
            return out[:, :n_img], torch.cat([out[:, n_img:], pad], dim=1)
        img_out = torch.empty_like(img_q)
        txt_out = torch.empty_like(txt_q)
        if n_vimg < n_img:  # padded image tokens: one segment, the same in every sample
            img_out[:, n_vimg:] = sdpa(img_q[:, n_vimg:], img_k[:, n_vimg:], img_v[:, n_vimg:])
        for n_vtxt, samples in groups:
            rows: slice | Tensor = (
                slice(None) if len(samples) == batch else torch.tensor(samples, device=img_q.device)
            )
            # real tokens: valid image + valid text, image first
            q, k, v = (
                torch.cat([img[rows, :n_vimg], txt[rows, :n_vtxt]], dim=1)
                for img, txt in ((img_q, txt_q), (img_k, txt_k), (img_v, txt_v))
            )
            if q.shape[1]:
                out = sdpa(q, k, v)
                img_out[rows, :n_vimg] = out[:, :n_vimg]
                txt_out[rows, :n_vtxt] = out[:, n_vimg:]
            if n_vtxt < n_txt:  # padded text tokens
                txt_out[rows, n_vtxt:] = sdpa(
                    txt_q[rows, n_vtxt:], txt_k[rows, n_vtxt:], txt_v[rows, n_vtxt:]
                )
        return img_out, txt_out


class FlashVarlenJointAttention:
    """flash-attn's `flash_attn_varlen_func` over the packed batch, one varlen segment per token group.

    Needs a CUDA device and fp16/bf16 q/k/v. Build it with `make_joint_attention`, which checks both.
    """

    backend = AttentionBackend.FLASH_VARLEN

    def __init__(self) -> None:
        from flash_attn import flash_attn_varlen_func

        self._varlen = flash_attn_varlen_func

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
        _check_inputs(img_q, txt_q, txt_valid_len, img_valid_len)
        if img_q.dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(
                f"flash-attn needs float16 or bfloat16 q/k/v, got {img_q.dtype}; "
                "run the model in bf16 or use AttentionBackend.SDPA"
            )
        batch, n_img, heads, dim = img_q.shape
        n_txt = txt_q.shape[1]
        n_vimg = n_img if img_valid_len is None else img_valid_len
        total = n_img + n_txt

        # per sample the packed order is [valid image | text | padded image], so the real tokens are contiguous
        def pack(img: Tensor, txt: Tensor) -> Tensor:
            parts = [img[:, :n_vimg], txt] + ([img[:, n_vimg:]] if n_vimg < n_img else [])
            return torch.cat(parts, dim=1).reshape(batch * total, heads, dim)

        q, k, v = pack(img_q, txt_q), pack(img_k, txt_k), pack(img_v, txt_v)
        bounds = [0]
        for b, n_vtxt in enumerate(txt_valid_len):
            start = b * total
            for end in (start + n_vimg + n_vtxt, start + n_vimg + n_txt, start + total):
                if end > bounds[-1]:  # skip empty segments
                    bounds.append(end)
        cu_seqlens = torch.tensor(bounds, dtype=torch.int32).to(q.device, non_blocking=True)
        out = self._varlen(q, k, v, cu_seqlens, cu_seqlens, total, total)
        out = out.reshape(batch, total, heads, dim)
        img_out = torch.cat([out[:, :n_vimg], out[:, n_vimg + n_txt :]], dim=1)
        return img_out, out[:, n_vimg : n_vimg + n_txt]


def check_backend_available(backend: AttentionBackend | str, device: torch.device | str) -> AttentionBackend:
    """Return the backend if it can run on `device`, else raise `AttentionBackendUnavailable` naming the fix."""
    backend = AttentionBackend(backend)
    device = torch.device(device)
    if backend is AttentionBackend.SDPA:
        return backend
    if importlib.util.find_spec("flash_attn") is None:
        raise AttentionBackendUnavailable(
            f"attention backend {backend.value!r} needs the flash-attn package, which is not installed: "
            f"`{FLASH_ATTN_PIP}` (or `pip install 'adrender[gpu]'`), or use backend 'sdpa'"
        )
    version = Version(importlib.metadata.version("flash-attn"))
    if version < _FLASH_ATTN_MIN:
        raise AttentionBackendUnavailable(
            f"flash-attn {version} is too old for backend {backend.value!r} (need >= {_FLASH_ATTN_MIN}): "
            f"`{FLASH_ATTN_PIP}`"
        )
    if device.type != "cuda":
        raise AttentionBackendUnavailable(
            f"attention backend {backend.value!r} runs on CUDA devices only, not {device}; use backend 'sdpa'"
        )
    return backend


def make_joint_attention(
    backend: AttentionBackend | str = AttentionBackend.SDPA, device: torch.device | str = "cpu"
) -> JointAttention:
    """The joint attention for `backend` on `device`, checked up front."""
    backend = check_backend_available(backend, device)
    if backend is AttentionBackend.FLASH_VARLEN:
        return FlashVarlenJointAttention()
    return SdpaJointAttention()
