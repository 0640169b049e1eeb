"""Synchformer's video branch: released key names, divided attention against a masked-attention reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from foley_testing import layer_norm, read_key_list, shapes

from model_core.audio.foley.synchformer import (
    SYNCHFORMER_PRESETS,
    Synchformer,
    load_synchformer,
    segment_frames,
    sync_token_count,
)
from model_core.checkpoints import CheckpointMismatchError


def test_video_branch_has_the_released_keys_and_shapes() -> None:
    with torch.device("meta"):
        model = Synchformer(SYNCHFORMER_PRESETS["synchformer"])
    released = read_key_list("synchformer.txt")
    assert shapes(model) == {k: v for k, v in released.items() if k.startswith("vfeat_extractor.")}
    assert sum(p.numel() for p in model.parameters()) == 122_440_704


def test_segments_and_token_counts() -> None:
    frames = torch.arange(40.0).reshape(1, 40, 1, 1, 1)
    seg = segment_frames(frames)
    assert seg.shape[:3] == (1, 4, 16)
    assert seg[0, 2, 0].item() == 16.0
    assert sync_token_count(250) == 8 * 30 == 240  # 10 s at 25 fps
    assert sync_token_count(201) == 8 * ((201 - 16) // 8 + 1)
    with pytest.raises(ValueError, match="16 frames"):
        segment_frames(torch.zeros(1, 15, 3, 4, 4))


def _masked_attention(
    sd: dict, name: str, x: torch.Tensor, allowed: torch.Tensor, heads: int
) -> torch.Tensor:
    q, k, v = (x @ sd[f"{name}.qkv.weight"].T + sd[f"{name}.qkv.bias"]).chunk(3, -1)
    b, n, d = q.shape
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    scores = (q * (d // heads) ** -0.5) @ k.transpose(-1, -2)
    out = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    return out.transpose(1, 2).reshape(b, n, d) @ sd[f"{name}.proj.weight"].T + sd[f"{name}.proj.bias"]


def _ln(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return layer_norm(x, 1e-6) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _reference(model: Synchformer, seg: torch.Tensor, *, space_first: bool = False, tile_time: bool = False):
    cfg = model.config
    sd = {k.removeprefix("vfeat_extractor."): v for k, v in model.state_dict().items()}
    x = torch.nn.functional.conv3d(
        seg[0].transpose(1, 2),
        sd["patch_embed_3d.proj.weight"],
        sd["patch_embed_3d.proj.bias"],
        stride=(2, 16, 16),
    )
    b, d, t, gh, gw = x.shape
    n = gh * gw
    x = x.flatten(2).transpose(1, 2)
    # token (f, p) gets spatial embedding p and temporal embedding f
    f_of = torch.arange(t * n) // n if not tile_time else torch.arange(t * n) % t
    p_of = torch.arange(t * n) % n
    x = x + sd["pos_embed"][0, 1:][p_of] + sd["temp_embed"][0][f_of]
    x = torch.cat([sd["cls_token"].expand(b, 1, d) + sd["pos_embed"][:, :1], x], 1)
    frame = torch.cat([torch.tensor([-1]), torch.arange(t * n) // n])
    patch = torch.cat([torch.tensor([-1]), torch.arange(t * n) % n])
    cls_row = frame[:, None] == -1
    cls_col = frame[None, :] == -1
    time_mask = cls_row | cls_col | (patch[:, None] == patch[None, :])
    space_mask = cls_row | cls_col | (frame[:, None] == frame[None, :])
    for i in range(cfg.depth):
        p = f"blocks.{i}"
        steps = [("timeattn", "norm3", time_mask), ("attn", "norm1", space_mask)]
        for attn, norm, mask in reversed(steps) if space_first else steps:
            x = x + _masked_attention(sd, f"{p}.{attn}", _ln(sd, f"{p}.{norm}", x), mask, cfg.num_heads)
        h = _ln(sd, f"{p}.norm2", x) @ sd[f"{p}.mlp.fc1.weight"].T + sd[f"{p}.mlp.fc1.bias"]
        x = x + torch.nn.functional.gelu(h) @ sd[f"{p}.mlp.fc2.weight"].T + sd[f"{p}.mlp.fc2.bias"]
    x = _ln(sd, "norm", x[:, 1:]).reshape(b * t, n, d)
    a = "spatial_attn_agg"
    x = torch.cat([sd[f"{a}.cls_token"].expand(b * t, 1, d), x], 1)
    y = _ln(sd, f"{a}.norm1", x)
    q, k, v = (y @ sd[f"{a}.self_attn.in_proj_weight"].T + sd[f"{a}.self_attn.in_proj_bias"]).chunk(3, -1)
    hd = d // cfg.num_heads
    q, k, v = (z.reshape(b * t, n + 1, cfg.num_heads, hd).transpose(1, 2) for z in (q, k, v))
    att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).softmax(-1) @ v
    att = att.transpose(1, 2).reshape(b * t, n + 1, d)
    x = x + att @ sd[f"{a}.self_attn.out_proj.weight"].T + sd[f"{a}.self_attn.out_proj.bias"]
    h = torch.nn.functional.gelu(
        _ln(sd, f"{a}.norm2", x) @ sd[f"{a}.linear1.weight"].T + sd[f"{a}.linear1.bias"]
    )
    x = x + h @ sd[f"{a}.linear2.weight"].T + sd[f"{a}.linear2.bias"]
    return x[:, 0].reshape(1, -1, d)


def _tiny() -> Synchformer:
    torch.manual_seed(0)
    model = Synchformer(SYNCHFORMER_PRESETS["tiny-synchformer"]).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def test_forward_matches_divided_attention_written_as_masks() -> None:
    model = _tiny()
    seg = torch.randn(1, 1, 16, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model(seg)
        expected = _reference(model, seg)
        assert out.shape == (1, 8, 32)
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
        # time attention comes first, and the spatial embedding is tiled over time (not the temporal one)
        assert (out - _reference(model, seg, space_first=True)).abs().max() > 1e-6
        assert (out - _reference(model, seg, tile_time=True)).abs().max() > 1e-6


def test_load_keeps_the_video_branch_and_lists_the_rest(tmp_path: Path) -> None:
    model = _tiny().float()
    state = {f"vfeat_extractor.{k}": v for k, v in model.vfeat_extractor.state_dict().items()}
    extra = {"afeat_extractor.cls_token": torch.zeros(1), "transformer.head.weight": torch.zeros(1)}
    path = tmp_path / "synchformer_state_dict.pth"
    torch.save({**state, **extra}, path)
    loaded, dropped = load_synchformer(path, SYNCHFORMER_PRESETS["tiny-synchformer"])
    assert dropped == sorted(extra)
    frames = torch.randn(1, 24, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.features(frames), model.features(frames), rtol=0, atol=0)
    torch.save({**state, "vfeat_extractor.extra": torch.zeros(1)}, path)
    with pytest.raises(CheckpointMismatchError, match="vfeat_extractor.extra"):
        load_synchformer(path, SYNCHFORMER_PRESETS["tiny-synchformer"])
