"""Decode shared across ranks (gloo on 127.0.0.1): every rank decodes only its share of the tiles, each tile is
decoded once in the whole group, and the assembled frames equal the single-rank tiled decode bit for bit, with
every rank receiving them or only one. World size 2 runs by default; 3 (with a subgroup) is marked slow."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from vae_testing import SMALL_TILES, TINY, random_tiny_vae

from model_core.vae import assign_tiles, load_vae, plan_decode, save_vae, tiled_decode

# 7 latents x 9 x 7: 3 temporal x 2 x 2 spatial tiles of the small tiling, 12 decoder calls of unequal size
LATENT_SHAPE = (1, 16, 7, 9, 7)
TILES = plan_decode(TINY, LATENT_SHAPE[2:], SMALL_TILES).tiles()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, folder: str) -> None:
    """Decode three times: frames to every rank, frames to the last rank only, and (world >= 3) on the
    subgroup of ranks 1 and 2. Saves the frames (empty when None) and the latent shapes each call decoded."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        vae = load_vae(folder)
        z = torch.load(Path(folder) / "latents.pt", weights_only=True)
        calls: list[tuple[int, ...]] = []
        decode = vae.decode_latents

        def counting(latents: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(latents.shape[2:]))
            return decode(latents)

        vae.decode_latents = counting  # type: ignore[method-assign]
        results: dict[str, torch.Tensor] = {}
        runs: list[tuple[str, dist.ProcessGroup | None, int | None]] = [
            ("all", dist.group.WORLD, None),
            ("dst", dist.group.WORLD, world - 1),
        ]
        if world >= 3:
            sub = dist.new_group([1, 2])  # every rank takes part in creating it; only 1 and 2 decode on it
            if rank in (1, 2):
                runs.append(("sub", sub, 0))  # dst 0 is group rank 0 = global rank 1
        with torch.no_grad():
            for name, group, dst in runs:
                calls.clear()
                out = tiled_decode(vae, z, SMALL_TILES, group, dst=dst)
                results[name] = torch.empty(0) if out is None else out
                results[f"{name}_calls"] = torch.tensor(calls, dtype=torch.int64).reshape(-1, 3)
        torch.save(results, Path(folder) / f"out{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """Saved tiny weights, latents, and the single-rank tiled decode (one thread, like the ranks)."""
    folder = tmp_path_factory.mktemp("vae")
    save_vae(random_tiny_vae(seed=3), folder)
    z = torch.randn(*LATENT_SHAPE, generator=torch.Generator().manual_seed(0))
    torch.save(z, folder / "latents.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            expected = tiled_decode(load_vae(folder), z, SMALL_TILES)
    finally:
        torch.set_num_threads(threads)
    assert expected is not None and expected.shape == (1, 3, 25, 72, 56)
    return folder, expected


def _run(folder: Path, world: int) -> list[dict[str, torch.Tensor]]:
    for old in folder.glob("out*.pt"):
        old.unlink()
    mp.spawn(_rank, args=(world, _free_port(), str(folder)), nprocs=world, join=True)
    return [torch.load(folder / f"out{r}.pt", weights_only=True) for r in range(world)]


def _tile_shapes(tiles) -> Counter:
    return Counter(tuple(b - a for a, b in (t.t_span, t.h_span, t.w_span)) for t in tiles)


def _check_shares(outs: list[dict[str, torch.Tensor]], run: str, ranks: list[int]) -> None:
    """Each rank decoded exactly the tiles assign_tiles gives it; together, every tile once."""
    owners = assign_tiles(TILES, len(ranks))
    total: Counter = Counter()
    for group_rank, rank in enumerate(ranks):
        got = Counter(tuple(row) for row in outs[rank][f"{run}_calls"].tolist())
        share = [t for t in TILES if owners[t] == group_rank]
        assert 0 < len(share) < len(TILES)
        assert got == _tile_shapes(share), f"rank {rank} decoded {got}, its share is {_tile_shapes(share)}"
        total += got
    assert total == _tile_shapes(TILES)


def _check_world(outs: list[dict[str, torch.Tensor]], expected: torch.Tensor) -> None:
    world = len(outs)
    for rank, out in enumerate(outs):
        assert torch.equal(out["all"], expected), f"rank {rank}"
        if rank == world - 1:
            assert torch.equal(out["dst"], expected)
        else:
            assert out["dst"].numel() == 0
    for run in ("all", "dst"):
        _check_shares(outs, run, list(range(world)))


def test_world_size_2(setup) -> None:
    folder, expected = setup
    _check_world(_run(folder, 2), expected)


@pytest.mark.slow
def test_world_size_3_and_a_subgroup(setup) -> None:
    folder, expected = setup
    outs = _run(folder, 3)
    _check_world(outs, expected)
    # the subgroup {1, 2} sends to its group rank 0 (global 1): group and global ranks are told apart
    assert torch.equal(outs[1]["sub"], expected)
    assert outs[2]["sub"].numel() == 0
    assert "sub" not in outs[0]
    _check_shares(outs, "sub", [1, 2])


def test_assignment_gives_every_rank_a_share() -> None:
    """With 12 tiles, each of 2, 3 or 8 ranks owns some, and shares differ by at most one tile's volume."""
    assert len(TILES) == 12
    for world in (2, 3, 8):
        owners = assign_tiles(TILES, world)
        assert sorted(set(owners.values())) == list(range(world))
        load = [sum(t.cost for t in TILES if owners[t] == r) for r in range(world)]
        assert max(load) - min(load) <= max(t.cost for t in TILES)
