"""Joint attention: segments are exact, padding never reaches a real token, backends are checked up front."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F

from model_core.dit import (
    AttentionBackend,
    AttentionBackendUnavailable,
    check_backend_available,
    make_joint_attention,
)
from model_core.dit.attention import FLASH_ATTN_PIP, FlashVarlenJointAttention, SdpaJointAttention

HAS_FLASH = importlib.util.find_spec("flash_attn") is not None


def random_qkv(
    batch: int,
    n_img: int,
    n_txt: int,
    heads: int = 2,
    dim: int = 8,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(batch, n_img, heads, dim)] * 3 + [(batch, n_txt, heads, dim)] * 3
    return [torch.randn(s, generator=gen).to(dtype) for s in shapes]


def dense_reference(
    qkv: list[torch.Tensor], txt_valid_len: Sequence[int], img_valid_len: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One masked softmax over the whole joint sequence: token i sees j iff they share a segment id."""
    img_q, img_k, img_v, txt_q, txt_k, txt_v = (t.double() for t in qkv)
    n_img, n_txt = img_q.shape[1], txt_q.shape[1]
    q, k, v = (torch.cat(p, dim=1).transpose(1, 2) for p in ((img_q, txt_q), (img_k, txt_k), (img_v, txt_v)))
    outs = []
    for b, n_vtxt in enumerate(txt_valid_len):
        seg = torch.zeros(n_img + n_txt, dtype=torch.long)
        seg[(n_img if img_valid_len is None else img_valid_len) : n_img] = 1
        seg[n_img + n_vtxt :] = 2
        allowed = seg[:, None] == seg[None, :]
        logits = (q[b] @ k[b].transpose(-1, -2)) / q.shape[-1] ** 0.5
        outs.append(torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1) @ v[b])
    out = torch.stack(outs).transpose(1, 2)
    return out[:, :n_img].float(), out[:, n_img:].float()


@pytest.mark.parametrize(
    ("txt_valid_len", "img_valid_len"),
    [((5, 2), None), ((7, 0), None), ((3, 7), 10), ((1, 4), 12)],
)
def test_sdpa_matches_a_dense_segment_mask(txt_valid_len: tuple[int, ...], img_valid_len: int | None) -> None:
    qkv = random_qkv(2, 12, 7)
    img_out, txt_out = SdpaJointAttention()(*qkv, txt_valid_len, img_valid_len=img_valid_len)
    ref_img, ref_txt = dense_reference(qkv, txt_valid_len, img_valid_len)
    torch.testing.assert_close(img_out, ref_img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt_out, ref_txt, atol=1e-5, rtol=1e-5)


def test_padding_values_never_change_real_tokens() -> None:
    qkv = random_qkv(2, 10, 8)
    txt_valid_len, img_valid_len = (5, 3), 7
    img_out, txt_out = SdpaJointAttention()(*qkv, txt_valid_len, img_valid_len=img_valid_len)
    noisy = [t.clone() for t in qkv]
    for t in noisy[:3]:
        t[:, img_valid_len:] = 1e3 * torch.randn_like(t[:, img_valid_len:])
    for t in noisy[3:]:
        for b, n in enumerate(txt_valid_len):
            t[b, n:] = 1e3 * torch.randn_like(t[b, n:])
    img_noisy, txt_noisy = SdpaJointAttention()(*noisy, txt_valid_len, img_valid_len=img_valid_len)
    assert torch.equal(img_noisy[:, :img_valid_len], img_out[:, :img_valid_len])
    for b, n in enumerate(txt_valid_len):
        assert torch.equal(txt_noisy[b, :n], txt_out[b, :n])
    assert not torch.equal(txt_noisy[1, 3:], txt_out[1, 3:])  # padding did change: the test can see changes


def _varlen_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    max_q: int,
    max_k: int,
) -> torch.Tensor:
    """flash_attn_varlen_func's contract in plain torch: independent attention per cu_seqlens segment."""
    assert torch.equal(cu_q, cu_k) and cu_q.dtype == torch.int32
    bounds = cu_q.tolist()
    assert bounds[0] == 0 and bounds[-1] == q.shape[0] and all(a < b for a, b in itertools.pairwise(bounds))
    assert max(b - a for a, b in itertools.pairwise(bounds)) <= max_q
    out = torch.empty_like(q)
    for a, b in itertools.pairwise(bounds):
        out[a:b] = F.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1)
        ).transpose(0, 1)
    return out


@pytest.mark.parametrize(("txt_valid_len", "img_valid_len"), [((5, 7), None), ((3, 0), 9), ((7, 7), 12)])
def test_flash_packing_and_cu_seqlens_follow_the_segments(
    txt_valid_len: tuple[int, ...], img_valid_len: int | None
) -> None:
    """The packing around the varlen kernel, with the kernel's contract played by plain torch (no GPU here)."""
    flash = FlashVarlenJointAttention.__new__(FlashVarlenJointAttention)
    flash._varlen = _varlen_reference
    qkv = random_qkv(2, 12, 7, dtype=torch.bfloat16)
    img_out, txt_out = flash(*qkv, txt_valid_len, img_valid_len=img_valid_len)
    ref_img, ref_txt = dense_reference(qkv, txt_valid_len, img_valid_len)
    torch.testing.assert_close(img_out.float(), ref_img, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(txt_out.float(), ref_txt, atol=2e-2, rtol=2e-2)


def test_flash_refuses_fp32() -> None:
    flash = FlashVarlenJointAttention.__new__(FlashVarlenJointAttention)
    flash._varlen = _varlen_reference
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        flash(*random_qkv(1, 4, 3), (2,))


@pytest.mark.skipif(HAS_FLASH, reason="flash-attn is installed here")
def test_missing_flash_attn_names_the_pip_command() -> None:
    with pytest.raises(AttentionBackendUnavailable) as err:
        make_joint_attention("flash_varlen", "cuda")
    assert FLASH_ATTN_PIP in str(err.value)


@pytest.mark.skipif(not HAS_FLASH, reason="flash-attn is not installed")
def test_flash_attn_refuses_a_cpu_device() -> None:
    with pytest.raises(AttentionBackendUnavailable, match="CUDA devices only"):
        check_backend_available(AttentionBackend.FLASH_VARLEN, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(
    not (HAS_FLASH and torch.cuda.is_available()), reason="needs flash-attn and a CUDA device"
)
def test_flash_kernel_matches_sdpa_on_gpu() -> None:
    qkv = [t.cuda() for t in random_qkv(2, 64, 16, heads=4, dim=64, dtype=torch.bfloat16)]
    flash = make_joint_attention(AttentionBackend.FLASH_VARLEN, "cuda")
    for img_valid_len in (None, 60):
        got = flash(*qkv, (9, 16), img_valid_len=img_valid_len)
        expected = SdpaJointAttention()(*qkv, (9, 16), img_valid_len=img_valid_len)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g.float(), e.float(), atol=2e-2, rtol=2e-2)


def test_backend_names_and_sdpa_default() -> None:
    assert AttentionBackend("sdpa") is AttentionBackend.SDPA
    assert isinstance(make_joint_attention(), SdpaJointAttention)
    with pytest.raises(ValueError):
        AttentionBackend("flash3")


def test_bad_valid_lengths_are_rejected() -> None:
    qkv = random_qkv(2, 4, 3)
    with pytest.raises(ValueError, match="one per sample"):
        SdpaJointAttention()(*qkv, (3,))
    with pytest.raises(ValueError, match=r"txt_valid_len \[4, 1\] must lie in \[0, 3\]"):
        SdpaJointAttention()(*qkv, (4, 1))
    with pytest.raises(ValueError, match="img_valid_len 5"):
        SdpaJointAttention()(*qkv, (1, 1), img_valid_len=5)
