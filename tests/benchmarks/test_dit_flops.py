"""The analytic DiT FLOP count against torch's own FLOP counter and the design note's 13B figure."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from benchmarks.dit_flops import dense_convention_flops, dit_forward_flops, latent_shape, token_counts
from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT

TINY = sorted(n for n in PRESETS if n.startswith("tiny-"))


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    # torch's counter knows the GPU SDPA kernels but not the CPU one; the formula is the same
    return sdpa_flop_count(query, key, value)


def _counted_flops(
    name: str, batch: int, latent: tuple[int, int, int], text_len: int, text_valid: int
) -> int:
    cfg = PRESETS[name]
    torch.manual_seed(0)
    model = HunyuanDiT(cfg).eval()
    t, h, w = latent
    mask = torch.zeros(batch, text_len, dtype=torch.long)
    mask[:, :text_valid] = 1
    kwargs: dict = {}
    if cfg.guidance_embed:
        kwargs["guidance"] = torch.full((batch,), 6016.0)
    if cfg.identity_image:
        kwargs["ref_latents"] = torch.randn(batch, cfg.in_channels, 1, h, w)
    if cfg.video_condition:
        kwargs["video_cond"] = torch.randn(batch, 2 * cfg.in_channels, t, h, w)
    if cfg.audio is not None:
        a = cfg.audio
        kwargs["audio_states"] = torch.randn(
            batch, (t - 1) * 4 + 1, a.window, a.whisper_layers, a.whisper_dim
        )
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        model(
            torch.randn(batch, cfg.in_channels, t, h, w),
            torch.full((batch,), 500.0),
            torch.randn(batch, text_len, cfg.text_states_dim),
            mask,
            torch.randn(batch, cfg.text_pooled_dim),
            **kwargs,
        )
    return counter.get_total_flops()


@pytest.mark.parametrize("name", TINY)
def test_analytic_count_equals_torch_flop_counter(name: str) -> None:
    cfg = PRESETS[name]
    batch, latent, text_len, text_valid = 2, (3, 4, 6), 7, 5  # padded text: its own attention segment
    counted = _counted_flops(name, batch, latent, text_len, text_valid)
    analytic = dit_forward_flops(
        cfg,
        latent,
        text_len=text_len,
        text_valid=text_valid,
        num_refs=1 if cfg.identity_image else 0,
        audio=cfg.audio is not None,
        video_condition=cfg.video_condition,
        batch=batch,
    )
    assert analytic.total == counted


def test_text_padding_is_a_separate_segment() -> None:
    cfg = PRESETS["tiny-hunyuanvideo-t2v-720p"]
    full = dit_forward_flops(cfg, (3, 4, 6), text_len=8)
    padded = dit_forward_flops(cfg, (3, 4, 6), text_len=8, text_valid=3)
    n_img = token_counts(cfg, (3, 4, 6))[0]
    blocks = cfg.depth_double + cfg.depth_single
    expected_drop = blocks * 4 * cfg.hidden_size * ((n_img + 8) ** 2 - (n_img + 3) ** 2 - 5**2)
    assert full.linear == padded.linear
    assert full.attention - padded.attention == expected_drop


def test_13b_at_720p_129_frames_matches_the_design_figure() -> None:
    cfg = PRESETS["hunyuanvideo-t2v-720p"]
    with torch.device("meta"):
        parameters = sum(p.numel() for p in HunyuanDiT(cfg).parameters())
    latent = latent_shape(720, 1280, 129)
    assert latent == (33, 90, 160) and token_counts(cfg, latent) == (118_800, 0)
    # "about 1.35e16 FLOP per forward, three quarters of it attention": 2 * params * tokens + attention
    dense = dense_convention_flops(parameters, cfg, latent, text_len=256)
    assert dense.total == pytest.approx(1.35e16, rel=0.01)
    assert 0.72 < dense.attention_fraction < 0.80
    # the exact count charges each double-block stream only for its own tokens: lower, more attention-bound
    exact = dit_forward_flops(cfg, latent, text_len=256)
    assert exact.attention == pytest.approx(dense.attention, rel=1e-6)  # + the text refiner's tiny attention
    per_token_block_params = (12 * cfg.depth_double + 12 * cfg.depth_single) * cfg.hidden_size**2
    assert exact.total == pytest.approx(
        2 * per_token_block_params * (118_800 + 256) + exact.attention, rel=0.01
    )
    assert 1.15e16 < exact.total < 1.25e16 and exact.attention_fraction > 0.85


def test_bad_video_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="4k\\+1"):
        latent_shape(720, 1280, 128)
    with pytest.raises(ValueError, match="multiples of 16"):
        latent_shape(721, 1280, 129)
