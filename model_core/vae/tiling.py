"""Tiled encode and decode with the official tile arithmetic (Tencent/HunyuanVideo, hyvideo/vae/autoencoder_kl_causal_3d.py), and decode shared across ranks.

A decode splits the latents into temporal tiles (17 latents at stride 12 with the defaults), and each of those
into spatial tiles (32x32 latents at stride 24). Every tile is decoded alone; neighbours are blended linearly
over their overlap (64 px in h and w, 16 frames in t) and only the first 192 px / 48 frames (49 for the first
temporal tile) of each tile are kept; temporal tiles after the first drop their first decoded frame, which
the causal decoder produced from a single latent frame. Encode mirrors this in pixel space.

The blends run in the same order and in place, as the official code does (a tile is blended with neighbours
that were themselves already blended), so the result matches it exactly, not just approximately.

Shared decode: with a process group, the tiles are split across ranks (largest first, to the least-loaded
rank), every rank decodes its share, the decoded tiles are exchanged, and the blend runs on each receiving
rank. Decoding is the cost, blending is cheap, so W ranks finish about W times sooner; the assembled frames
equal the single-rank tiled decode bit for bit, because every tile is the same computation on the same input.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup

from model_core.vae.config import TilingConfig, VAEConfig

if TYPE_CHECKING:
    from model_core.vae.model import CausalVAE3D

__all__ = [
    "DecodePlan",
    "EncodePlan",
    "Tile",
    "TileArithmetic",
    "assign_tiles",
    "plan_decode",
    "plan_encode",
    "tiled_decode",
    "tiled_encode",
]

Span = tuple[int, int]  # [start, stop) along one axis


@dataclass(frozen=True)
class TileArithmetic:
    """Every size the official tiling derives from (tile px, tile frames, overlap) and the compression."""

    # decode, in latents / pixels / frames
    latent_tile: int  # 32: spatial tile in latents
    latent_stride: int  # 24
    pixel_blend: int  # 64
    pixel_keep: int  # 192
    latent_tile_t: int  # 16: a temporal tile holds one more (17), the causal first frame
    latent_stride_t: int  # 12
    frame_blend: int  # 16
    frame_keep: int  # 48 (49 for the first tile)
    # encode
    pixel_tile: int  # 256
    pixel_stride: int  # 192
    latent_blend: int  # 8
    latent_keep: int  # 24
    frame_tile: int  # 64: a temporal tile holds one more (65)
    frame_stride: int  # 48
    latent_blend_t: int  # 4
    latent_keep_t: int  # 12 (13 for the first tile)

    @classmethod
    def derive(cls, tiling: TilingConfig, config: VAEConfig) -> TileArithmetic:
        """Apply the official formulas; raise ValueError if the tiles would not cover the input exactly."""
        rs, rt, o = config.spatial_compression_ratio, config.temporal_compression_ratio, tiling.overlap
        size, frames = tiling.tile_sample_size, tiling.tile_sample_frames
        hint = "e.g. TilingConfig(tile_sample_size=256, tile_sample_frames=64, overlap=0.25), the official tiling"
        if tiling.spatial and size % rs:
            raise ValueError(
                f"tile_sample_size {size} must be a multiple of the spatial compression {rs}, e.g. "
                f"{max(size // rs, 1) * rs}; {hint}"
            )
        if tiling.temporal and frames % rt:
            raise ValueError(
                f"tile_sample_frames {frames} must be a multiple of the temporal compression {rt}, e.g. "
                f"{max(frames // rt, 1) * rt}; {hint}"
            )
        lt, ltt = size // rs, frames // rt
        a = cls(
            latent_tile=lt,
            latent_stride=int(lt * (1 - o)),
            pixel_blend=int(size * o),
            pixel_keep=size - int(size * o),
            latent_tile_t=ltt,
            latent_stride_t=int(ltt * (1 - o)),
            frame_blend=int(frames * o),
            frame_keep=frames - int(frames * o),
            pixel_tile=size,
            pixel_stride=int(size * (1 - o)),
            latent_blend=int(lt * o),
            latent_keep=lt - int(lt * o),
            frame_tile=frames,
            frame_stride=int(frames * (1 - o)),
            latent_blend_t=int(ltt * o),
            latent_keep_t=ltt - int(ltt * o),
        )
        # each tile keeps exactly one stride of output; otherwise tiles overlap or leave gaps in the result.
        # Only the axes the tiling splits are checked: a temporal-only tiling may have any tile size, and so on.
        ls, lst, ps, fs = a.latent_stride, a.latent_stride_t, a.pixel_stride, a.frame_stride
        checks = []
        if tiling.spatial:
            checks.append(
                (
                    ls >= 1 and ls * rs == a.pixel_keep,
                    f"spatial decode: stride {ls} latents = {ls * rs} px, keep {a.pixel_keep} px",
                )
            )
            checks.append(
                (
                    ps % rs == 0 and ps // rs == a.latent_keep >= 1,
                    f"spatial encode: stride {ps} px = {ps / rs:g} latents, keep {a.latent_keep} latents",
                )
            )
        if tiling.temporal:
            checks.append(
                (
                    lst >= 1 and lst * rt == a.frame_keep,
                    f"temporal decode: stride {lst} latents = {lst * rt} frames, keep {a.frame_keep} frames",
                )
            )
            checks.append(
                (
                    fs % rt == 0 and fs // rt == a.latent_keep_t >= 1,
                    f"temporal encode: stride {fs} frames = {fs / rt:g} latents, keep {a.latent_keep_t} latents",
                )
            )
        bad = [detail for ok, detail in checks if not ok]
        if bad:
            raise ValueError(
                f"tiling {tiling} cannot cover the input: the kept part of a tile must be exactly one stride "
                f"and the stride at least one latent ({'; '.join(bad)}). Choose tile sizes whose latent size "
                f"times (1 - overlap) is a whole number, {hint}"
            )
        return a


def _spans(length: int, stride: int, tile: int) -> tuple[Span, ...]:
    return tuple((i, min(i + tile, length)) for i in range(0, length, stride))


@dataclass(frozen=True)
class Tile:
    """One decoder call: latents `[t0:t1, h0:h1, w0:w1]`, at position (t, row, col) of the plan."""

    t: int
    row: int
    col: int
    t_span: Span
    h_span: Span
    w_span: Span

    @property
    def cost(self) -> int:
        """Latent volume, proportional to the decoder's work."""
        return (
            (self.t_span[1] - self.t_span[0])
            * (self.h_span[1] - self.h_span[0])
            * (self.w_span[1] - self.w_span[0])
        )


@dataclass(frozen=True)
class _Axes:
    """Tile spans along (t, h, w) and the blend/keep rules, in input units (spans) and output units (rest)."""

    t_spans: tuple[Span, ...]
    h_spans: tuple[Span, ...]
    w_spans: tuple[Span, ...]
    temporal: bool  # temporal tiles: drop the first output frame of tiles after the first, blend, keep
    spatial: bool
    t_blend: int
    t_keep: int
    s_blend: int
    s_keep: int
    out_shape: tuple[int, int, int]  # (T, H, W) of the result


@dataclass(frozen=True)
class DecodePlan(_Axes):
    """Where the tiles of a decode lie; see :func:`plan_decode`."""

    def tiles(self) -> tuple[Tile, ...]:
        """All tiles, in the order they are blended: temporal tile, then row, then column."""
        return tuple(
            Tile(k, i, j, ts, hs, ws)
            for k, ts in enumerate(self.t_spans)
            for i, hs in enumerate(self.h_spans)
            for j, ws in enumerate(self.w_spans)
        )


@dataclass(frozen=True)
class EncodePlan(_Axes):
    """Where the tiles of an encode lie (spans in frames and pixels); see :func:`plan_encode`."""


def plan_decode(config: VAEConfig, latent_shape: tuple[int, int, int], tiling: TilingConfig) -> DecodePlan:
    """The tiles of a decode of latents `(T, h, w)`.

    Tiling switches itself off along an axis the input fits in: temporal tiles only when T > 16 latents,
    spatial tiles only when h or w > 32 latents (then both h and w are split, as the official code does).
    """
    a = TileArithmetic.derive(tiling, config)
    t, h, w = latent_shape
    temporal = tiling.temporal and t > a.latent_tile_t
    spatial = tiling.spatial and (h > a.latent_tile or w > a.latent_tile)
    return DecodePlan(
        t_spans=_spans(t, a.latent_stride_t, a.latent_tile_t + 1) if temporal else ((0, t),),
        h_spans=_spans(h, a.latent_stride, a.latent_tile) if spatial else ((0, h),),
        w_spans=_spans(w, a.latent_stride, a.latent_tile) if spatial else ((0, w),),
        temporal=temporal,
        spatial=spatial,
        t_blend=a.frame_blend,
        t_keep=a.frame_keep,
        s_blend=a.pixel_blend,
        s_keep=a.pixel_keep,
        out_shape=config.sample_shape(t, h, w),
    )


def plan_encode(config: VAEConfig, pixel_shape: tuple[int, int, int], tiling: TilingConfig) -> EncodePlan:
    """The tiles of an encode of a `(F, H, W)` video: temporal tiles of 65 frames at stride 48 when F > 64,
    spatial tiles of 256 px at stride 192 when H or W > 256 (with the defaults)."""
    a = TileArithmetic.derive(tiling, config)
    f, h, w = pixel_shape
    temporal = tiling.temporal and f > a.frame_tile
    spatial = tiling.spatial and (h > a.pixel_tile or w > a.pixel_tile)
    return EncodePlan(
        t_spans=_spans(f, a.frame_stride, a.frame_tile + 1) if temporal else ((0, f),),
        h_spans=_spans(h, a.pixel_stride, a.pixel_tile) if spatial else ((0, h),),
        w_spans=_spans(w, a.pixel_stride, a.pixel_tile) if spatial else ((0, w),),
        temporal=temporal,
        spatial=spatial,
        t_blend=a.latent_blend_t,
        t_keep=a.latent_keep_t,
        s_blend=a.latent_blend,
        s_keep=a.latent_keep,
        out_shape=config.latent_shape(f, h, w),
    )


# blending


def _blend(a: Tensor, b: Tensor, extent: int, dim: int) -> None:
    """In place: the first `extent` slices of `b` along `dim` fade from the last ones of `a` into `b`.

    b[y] = a[-E + y] * (1 - y/E) + b[y] * (y/E) for y < E = min(extent, len(a), len(b)).
    """
    extent = min(a.shape[dim], b.shape[dim], extent)
    if extent <= 0:
        return
    shape = [1] * b.ndim
    shape[dim] = extent
    # weights are formed in float64 and rounded once, as the reference's Python-float scalars are
    y = torch.arange(extent, dtype=torch.float64) / extent
    wdtype = b.dtype if b.dtype in (torch.float32, torch.float64) else torch.float32
    w_b = y.to(device=b.device, dtype=wdtype).view(shape)
    w_a = (1 - y).to(device=b.device, dtype=wdtype).view(shape)
    head = b.narrow(dim, 0, extent)
    head.copy_(a.narrow(dim, a.shape[dim] - extent, extent) * w_a + head * w_b)


def _mosaic(rows: Iterable[list[Tensor]], blend: int, keep: int, spatial: bool) -> Tensor:
    """Blend a grid of tiles `[B, C, T, h, w]` row-major in place and concatenate the kept part of each.

    Rows are consumed lazily and only the previous row is held, so at most two rows of tiles are alive.
    """
    prev: list[Tensor] = []
    strips: list[Tensor] = []
    for i, row in enumerate(rows):
        if not spatial:
            return row[0]
        for j, tile in enumerate(row):
            if i > 0:
                _blend(prev[j], tile, blend, dim=-2)
            if j > 0:
                _blend(row[j - 1], tile, blend, dim=-1)
        strips.append(torch.cat([tile[..., :keep, :keep] for tile in row], dim=-1))
        prev = row
    return torch.cat(strips, dim=-2)


def _join_time(chunks: Iterable[Tensor], blend: int, keep: int, temporal: bool, out_frames: int) -> Tensor:
    """Blend consecutive temporal tiles `[B, C, T, H, W]` in place and concatenate their kept frames.

    Tiles after the first lose their first frame (computed from one latent / frame alone, causally); the
    first tile keeps `keep + 1` frames, the others `keep`.
    """
    out: Tensor | None = None
    prev: Tensor | None = None
    offset = 0
    for k, chunk in enumerate(chunks):
        if not temporal:
            return chunk
        if prev is not None:  # every tile after the first
            chunk = chunk[:, :, 1:]
            _blend(prev, chunk, blend, dim=2)
        part = chunk[:, :, : keep + 1 if k == 0 else keep]
        if out is None:
            b, c, _, h, w = chunk.shape
            out = chunk.new_empty((b, c, out_frames, h, w))
        out[:, :, offset : offset + part.shape[2]] = part
        offset += part.shape[2]
        prev = chunk
    if out is None or offset != out_frames:
        raise AssertionError(
            f"temporal tiles covered {offset} of {out_frames} frames; the tile plan is broken"
        )
    return out


def _assemble(plan: _Axes, fetch: Callable[[int, int, int], Tensor]) -> Tensor:
    """Run the whole blend: fetch(k, i, j) returns the processed tile; called in (k, i, j) order."""

    def rows(k: int) -> Iterator[list[Tensor]]:
        for i in range(len(plan.h_spans)):
            yield [fetch(k, i, j) for j in range(len(plan.w_spans))]

    chunks = (_mosaic(rows(k), plan.s_blend, plan.s_keep, plan.spatial) for k in range(len(plan.t_spans)))
    out = _join_time(chunks, plan.t_blend, plan.t_keep, plan.temporal, plan.out_shape[0])
    return out[..., : plan.out_shape[1], : plan.out_shape[2]]


# encode


def tiled_encode(vae: CausalVAE3D, x: Tensor, tiling: TilingConfig) -> Tensor:
    """Moments `[B, 2C, T, h, w]` of pixels `[B, 3, 4k+1, H, W]`, encoded tile by tile (official arithmetic)."""
    vae.check_pixels(x)
    plan = plan_encode(vae.config, (x.shape[2], x.shape[3], x.shape[4]), tiling)

    def fetch(k: int, i: int, j: int) -> Tensor:
        (t0, t1), (h0, h1), (w0, w1) = plan.t_spans[k], plan.h_spans[i], plan.w_spans[j]
        return vae.encode_moments(x[:, :, t0:t1, h0:h1, w0:w1])

    return _assemble(plan, fetch)


# decode, on one rank or shared across a group


def assign_tiles(tiles: Iterable[Tile], world_size: int) -> dict[Tile, int]:
    """Owner rank of every tile: largest first, each to the least-loaded rank (ties: lower rank).

    Deterministic, so every rank computes the same assignment without communicating.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    load = [(0, r) for r in range(world_size)]
    owners: dict[Tile, int] = {}
    order = sorted(tiles, key=lambda t: (-t.cost, t.t, t.row, t.col))
    for tile in order:
        cost, rank = heapq.heappop(load)
        owners[tile] = rank
        heapq.heappush(load, (cost + tile.cost, rank))
    return owners


def _decode_tile(vae: CausalVAE3D, z: Tensor, tile: Tile) -> Tensor:
    (t0, t1), (h0, h1), (w0, w1) = tile.t_span, tile.h_span, tile.w_span
    return vae.decode_latents(z[:, :, t0:t1, h0:h1, w0:w1])


def tiled_decode(
    vae: CausalVAE3D,
    latents: Tensor,
    tiling: TilingConfig,
    group: ProcessGroup | None = None,
    *,
    dst: int | None = None,
) -> Tensor | None:
    """Decode unscaled latents `[B, 16, T, h, w]` to pixels `[B, 3, 4(T-1)+1, 8h, 8w]` with tiling.

    Args:
        vae: the model, on the device to decode on (CUDA with NCCL, CPU with gloo).
        latents: the same tensor on every rank of `group`.
        tiling: tile sizes; :class:`TilingConfig()` is the official arithmetic.
        group: None decodes on this rank alone; a process group (e.g. `dist.group.WORLD`) splits the tiles
            across its ranks, and the result equals the single-rank decode exactly.
        dst: None gives every rank the full frames; a group rank gives them to that rank only (the others
            send their tiles and return None), which saves memory and traffic when one rank writes the video.

    Raises:
        ValueError: latents with the wrong shape or channel count, or a tiling that cannot cover the input.
    """
    vae.check_latents(latents)
    plan = plan_decode(vae.config, (latents.shape[2], latents.shape[3], latents.shape[4]), tiling)
    tiles = {(t.t, t.row, t.col): t for t in plan.tiles()}
    world = dist.get_world_size(group) if group is not None else 1
    if group is None or world == 1:
        return _assemble(plan, lambda k, i, j: _decode_tile(vae, latents, tiles[k, i, j]))

    rank = dist.get_rank(group)
    if dst is not None and not 0 <= dst < world:
        raise ValueError(f"dst {dst} is not a rank of the group (size {world}); pass 0..{world - 1} or None")
    owners = assign_tiles(tiles.values(), world)
    # decode the whole share first: the exchange below then never waits on a rank that is still decoding
    # a tile someone else needs later
    mine = {t: _decode_tile(vae, latents, t).to(latents.dtype) for t in owners if owners[t] == rank}
    rs, cfg = vae.config.spatial_compression_ratio, vae.config

    def fetch(k: int, i: int, j: int) -> Tensor:
        tile = tiles[k, i, j]
        owner = owners[tile]
        if rank == owner:
            data = mine.pop(tile)
        else:
            frames, _, _ = cfg.sample_shape(tile.t_span[1] - tile.t_span[0], 0, 0)
            shape = (
                latents.shape[0],
                cfg.out_channels,
                frames,
                (tile.h_span[1] - tile.h_span[0]) * rs,
                (tile.w_span[1] - tile.w_span[0]) * rs,
            )
            data = latents.new_empty(shape)
        if dst is None:
            dist.broadcast(data, src=dist.get_global_rank(group, owner), group=group)
        elif owner != dst:
            if rank == owner:
                dist.send(data, dst=dist.get_global_rank(group, dst), group=group)
            elif rank == dst:
                dist.recv(data, src=dist.get_global_rank(group, owner), group=group)
        return data

    if dst is None or rank == dst:
        return _assemble(plan, fetch)
    for key in tiles:  # take part in every transfer, in the same order as the assembling rank
        fetch(*key)
    return None
