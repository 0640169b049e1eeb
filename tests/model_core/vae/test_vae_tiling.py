"""Tile arithmetic (the official `enable_tiling` rule), the blend, tiling switching itself off, and bad input."""

from __future__ import annotations

import pytest
import torch
from vae_testing import SMALL_TILES, TINY, random_tiny_vae

from model_core.vae import (
    VAE_PRESETS,
    TileArithmetic,
    TilingConfig,
    assign_tiles,
    plan_decode,
    plan_encode,
    tiled_decode,
)
from model_core.vae.tiling import _blend

PROD = VAE_PRESETS["hunyuan-vae"]


def test_official_arithmetic() -> None:
    a = TileArithmetic.derive(TilingConfig(), PROD)
    assert (a.latent_tile, a.latent_stride, a.pixel_blend, a.pixel_keep) == (32, 24, 64, 192)
    assert (a.latent_tile_t, a.latent_stride_t, a.frame_blend, a.frame_keep) == (16, 12, 16, 48)
    assert (a.pixel_tile, a.pixel_stride, a.latent_blend, a.latent_keep) == (256, 192, 8, 24)
    assert (a.frame_tile, a.frame_stride, a.latent_blend_t, a.latent_keep_t) == (64, 48, 4, 12)
    assert TilingConfig.from_vae_config(PROD) == TilingConfig()


def test_33_latents_decode_to_129_frames_in_three_temporal_tiles() -> None:
    plan = plan_decode(PROD, (33, 90, 160), TilingConfig())  # 720p x 129 frames
    assert plan.t_spans == ((0, 17), (12, 29), (24, 33))
    assert plan.h_spans == ((0, 32), (24, 56), (48, 80), (72, 90))
    assert [s[0] for s in plan.w_spans] == [0, 24, 48, 72, 96, 120, 144]
    assert plan.out_shape == (129, 720, 1280)
    # kept frames: 49 of the first tile's 65, then 48 of 64 (first dropped), then 32 of the last 32
    frames = [4 * (t1 - t0 - 1) + 1 for t0, t1 in plan.t_spans]
    kept = [min(plan.t_keep + 1, frames[0])] + [min(plan.t_keep, f - 1) for f in frames[1:]]
    assert kept == [49, 48, 32] and sum(kept) == 129
    assert len(plan.tiles()) == 3 * 4 * 7


def test_encode_plan_129_frames() -> None:
    plan = plan_encode(PROD, (129, 720, 1280), TilingConfig())
    assert plan.t_spans == ((0, 65), (48, 113), (96, 129))
    assert plan.h_spans[:2] == ((0, 256), (192, 448))
    assert plan.out_shape == (33, 90, 160)


def test_tiling_switches_off_for_inputs_that_fit_one_tile() -> None:
    plan = plan_decode(PROD, (16, 32, 32), TilingConfig())
    assert not plan.temporal and not plan.spatial and len(plan.tiles()) == 1
    # one axis over the limit splits only that axis
    plan = plan_decode(PROD, (17, 32, 32), TilingConfig())
    assert plan.temporal and not plan.spatial
    vae = random_tiny_vae(seed=2)
    z = torch.randn(1, 16, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(vae.decode(z, SMALL_TILES), vae.decode(z))
        x = torch.rand(1, 3, 13, 64, 64) * 2 - 1
        assert torch.equal(vae.encode(x, SMALL_TILES).moments, vae.encode(x).moments)


def test_switches_turn_axes_off() -> None:
    plan = plan_decode(PROD, (33, 90, 160), TilingConfig(temporal=False))
    assert plan.t_spans == ((0, 33),) and len(plan.h_spans) == 4
    plan = plan_decode(PROD, (33, 90, 160), TilingConfig(spatial=False))
    assert len(plan.t_spans) == 3 and plan.h_spans == ((0, 90),)


def _blend_loop(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """The official tiling formula, one slice at a time."""
    b = b.clone()
    e = min(a.shape[dim], b.shape[dim], extent)
    for y in range(e):
        b.select(dim, y).copy_(a.select(dim, a.shape[dim] - e + y) * (1 - y / e) + b.select(dim, y) * (y / e))
    return b


@pytest.mark.parametrize(("dim", "extent"), [(-1, 4), (-2, 3), (2, 5), (-1, 9)])
def test_blend_matches_the_formula(dim: int, extent: int) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 2, 6, 5, 7, generator=g), torch.randn(1, 2, 6, 5, 7, generator=g)
    expected = _blend_loop(a, b, extent, dim)
    _blend(a, b, extent, dim)
    assert torch.equal(b, expected)


def test_assign_tiles_balances_and_is_deterministic() -> None:
    tiles = plan_decode(PROD, (33, 90, 160), TilingConfig()).tiles()
    for world in (1, 2, 3, 8):
        owners = assign_tiles(tiles, world)
        assert owners == assign_tiles(reversed(tiles), world)
        assert set(owners) == set(tiles) and set(owners.values()) == set(range(world))
        load = [sum(t.cost for t in tiles if owners[t] == r) for r in range(world)]
        # greedy largest-first: no rank exceeds another by more than one tile
        assert max(load) - min(load) <= max(t.cost for t in tiles)


@pytest.mark.parametrize("channels", [4, 32])
def test_wrong_latent_channels_name_the_expected_shape(channels: int) -> None:
    vae = random_tiny_vae()
    with pytest.raises(ValueError, match=r"latents must be \[B, 16, T, h, w\]"):
        vae.decode(torch.zeros(1, channels, 2, 2, 2))
    with pytest.raises(ValueError, match="16"):
        tiled_decode(vae, torch.zeros(1, channels, 2, 2, 2), SMALL_TILES)


def test_moments_passed_as_latents_get_a_hint() -> None:
    with pytest.raises(ValueError, match=r"mode\(\) or .sample\(\)"):
        random_tiny_vae().decode(torch.zeros(1, 32, 2, 2, 2))


@pytest.mark.parametrize("frames", [2, 4, 8, 16])
def test_frames_not_4k_plus_1_are_refused_with_the_fix(frames: int) -> None:
    k = (frames - 1) // 4
    with pytest.raises(ValueError, match=rf"{frames} frames.*4k\+1.*{4 * k + 1} or {4 * k + 5} frames"):
        random_tiny_vae().encode(torch.zeros(1, 3, frames, 16, 16))


def test_pixels_with_bad_size_or_channels() -> None:
    vae = random_tiny_vae()
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 3, 5, 20, 16))
    with pytest.raises(ValueError, match=r"\[B, 3, F, H, W\]"):
        vae.encode(torch.zeros(1, 4, 5, 16, 16))


@pytest.mark.parametrize(
    ("tiling", "match"),
    [
        (
            TilingConfig(tile_sample_size=80),
            "cannot cover the input",
        ),  # 10 latents: stride 7 = 56 px, keep 60
        (TilingConfig(tile_sample_frames=20), "cannot cover the input"),  # 5 latents: stride 3 = 12, keep 15
        (TilingConfig(tile_sample_size=8), "cannot cover the input"),  # 1 latent: stride 0
        (TilingConfig(tile_sample_size=100), "multiple of the spatial compression 8"),
        (TilingConfig(tile_sample_frames=66), "multiple of the temporal compression 4"),
    ],
)
def test_tilings_that_cannot_cover_the_input_are_refused(tiling: TilingConfig, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_decode(TINY, (9, 20, 20), tiling)


def test_cover_error_names_the_axis_and_the_numbers() -> None:
    with pytest.raises(ValueError, match=r"spatial decode: stride 7 latents = 56 px, keep 60 px") as info:
        plan_decode(TINY, (9, 20, 20), TilingConfig(tile_sample_size=80))
    assert "temporal decode" not in str(info.value)  # 64-frame tiles at 0.25 are fine
    with pytest.raises(ValueError, match=r"temporal decode: stride 3 latents = 12 frames, keep 15 frames"):
        plan_encode(TINY, (9, 160, 160), TilingConfig(tile_sample_frames=20))


def test_a_switched_off_axis_is_not_checked() -> None:
    """Tile sizes of an axis that is not tiled cannot break the result, so they are not refused."""
    plan = plan_decode(TINY, (9, 20, 20), TilingConfig(tile_sample_size=80, spatial=False))
    assert not plan.spatial and plan.h_spans == ((0, 20),)
    plan = plan_decode(TINY, (9, 40, 40), TilingConfig(tile_sample_frames=20, temporal=False))
    assert not plan.temporal and plan.spatial
    plan = plan_decode(TINY, (9, 20, 20), TilingConfig(tile_sample_size=100, spatial=False))
    assert plan.t_spans == ((0, 9),)  # 9 latents fit one 16-latent temporal tile


def test_overlap_out_of_range() -> None:
    with pytest.raises(ValueError, match="overlap"):
        TilingConfig(overlap=1.0)
