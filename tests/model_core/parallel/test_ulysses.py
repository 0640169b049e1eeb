"""Ulysses primitives on spawned gloo worlds against single-process results."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from model_core.dit.attention import SdpaJointAttention
from model_core.parallel import (
    SequenceShard,
    SPGroup,
    UlyssesJointAttention,
    gather_heads,
    heads_to_seq,
    seq_to_heads,
    slice_heads,
)
from model_core.parallel.launch import run_local_world


def segment_attention(
    img_q: Tensor,
    img_k: Tensor,
    img_v: Tensor,
    txt_q: Tensor,
    txt_k: Tensor,
    txt_v: Tensor,
    txt_valid_len: list[int],
    *,
    img_valid_len: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Reference: [valid image + valid text] is one segment (release semantics), padded text another,
    padded image tokens a third (so split padding never reaches padded text)."""
    li, lt = img_q.shape[1], txt_q.shape[1]
    iv = li if img_valid_len is None else img_valid_len
    q, k, v = (torch.cat(p, dim=1).transpose(1, 2) for p in ((img_q, txt_q), (img_k, txt_k), (img_v, txt_v)))
    masks = []
    for n_txt in txt_valid_len:
        segment = torch.full((li + lt,), 2)
        segment[:iv] = 0
        segment[li : li + n_txt] = 0
        segment[li + n_txt :] = 1
        masks.append(segment[:, None] == segment[None, :])
    mask = torch.stack(masks)[:, None]  # [B, 1, L, L]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    return out[:, :li], out[:, li:]


def _inputs(seed: int, img_len: int, heads: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, n, heads, 8, generator=g) for n in (img_len,) * 3 + (7,) * 3]


def _world_checks(rank: int, world: int, img_len: int, heads: int) -> dict[str, float]:
    sp = SPGroup.from_group(dist.group.WORLD)
    img_q, img_k, img_v, txt_q, txt_k, txt_v = _inputs(0, img_len, heads)
    shard = SequenceShard.for_group(img_len, sp)
    out: dict[str, float] = {}

    # all-to-all: the full padded sequence with this rank's heads, and back
    local = shard.shard(img_q)
    full = seq_to_heads(local, sp)
    h = heads // world
    expect = shard.pad(img_q)[:, :, rank * h : (rank + 1) * h]
    out["seq_to_heads"] = (full - expect).abs().max().item()
    out["roundtrip"] = (heads_to_seq(full, sp) - local).abs().max().item()
    out["heads"] = (gather_heads(slice_heads(txt_q, sp), sp) - txt_q).abs().max().item()
    out["gather"] = (shard.gather(local, sp) - img_q).abs().max().item()

    # joint attention with split padding and text padding equals the single-process result, for the
    # reference and for the model's own attention backend behind the same wrapper
    ref_img, ref_txt = segment_attention(img_q, img_k, img_v, txt_q, txt_k, txt_v, [5, 3])
    for name, inner in (("attn", segment_attention), ("sdpa", SdpaJointAttention())):
        sp_img, sp_txt = UlyssesJointAttention(inner, sp)(
            *(shard.shard(t) for t in (img_q, img_k, img_v)),
            txt_q,
            txt_k,
            txt_v,
            [5, 3],
            img_valid_len=img_len,
        )
        out[f"{name}_img"] = ((shard.gather(sp_img, sp) - ref_img).norm() / ref_img.norm()).item()
        out[f"{name}_txt"] = ((sp_txt - ref_txt).norm() / ref_txt.norm()).item()

    try:
        seq_to_heads(local[:, :, :3], sp)
        out["bad_heads_error"] = 0.0
    except ValueError as exc:
        out["bad_heads_error"] = float("does not divide the 3 attention heads" in str(exc))
    return out


def _check(results: list[dict[str, float]]) -> None:
    for r, res in enumerate(results):
        assert res["seq_to_heads"] == 0.0, (r, res)
        assert res["roundtrip"] == 0.0, (r, res)
        assert res["heads"] == 0.0, (r, res)
        assert res["gather"] == 0.0, (r, res)
        assert res["attn_img"] < 1e-6, (r, res)
        assert res["attn_txt"] < 1e-6, (r, res)
        assert res["sdpa_img"] < 1e-6, (r, res)
        assert res["sdpa_txt"] < 1e-6, (r, res)
        assert res["bad_heads_error"] == 1.0, (r, res)


def test_shard_arithmetic_pads_to_multiple_of_degree() -> None:
    shards = [SequenceShard(total_len=13, degree=4, rank=r) for r in range(4)]
    assert {s.padded_len for s in shards} == {16}
    assert [s.local_valid_len for s in shards] == [4, 4, 4, 1]
    x = torch.arange(13.0)[None, :, None]
    parts = torch.cat([s.shard(x) for s in shards], dim=1)
    assert torch.equal(parts[0, :13, 0], torch.arange(13.0))
    assert torch.equal(parts[0, 13:, 0], torch.zeros(3))


def test_reference_attention_ignores_padding_values() -> None:
    img_q, img_k, img_v, txt_q, txt_k, txt_v = _inputs(1, 9, 4)
    a_img, a_txt = segment_attention(img_q, img_k, img_v, txt_q, txt_k, txt_v, [5, 5], img_valid_len=7)
    noisy = [t.clone() for t in (img_k, img_v)]
    for t in noisy:
        t[:, 7:] = 1e3
    tk, tv = txt_k.clone(), txt_v.clone()
    tk[:, 5:], tv[:, 5:] = -1e3, 1e3
    b_img, b_txt = segment_attention(img_q, *noisy, txt_q, tk, tv, [5, 5], img_valid_len=7)
    assert torch.allclose(a_img[:, :7], b_img[:, :7], atol=1e-6)
    assert torch.allclose(a_txt[:, :5], b_txt[:, :5], atol=1e-6)


def test_degree_must_divide_heads() -> None:
    sp = SPGroup(group=None, rank=0, degree=8)
    with pytest.raises(ValueError, match=r"degree 8 does not divide the 12 attention heads; use a degree in"):
        sp.check_heads(12)


def test_world_of_2_matches_single_process_with_uneven_tokens() -> None:
    # 13 image tokens over 2 ranks: one padding token
    _check(run_local_world(_world_checks, 2, 13, 4))


@pytest.mark.slow
def test_world_of_4_matches_single_process_with_uneven_tokens() -> None:
    _check(run_local_world(_world_checks, 4, 13, 8))
