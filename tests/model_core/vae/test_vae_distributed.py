"""Decode shared across ranks (gloo on 127.0.0.1): the assembled frames equal the single-rank tiled decode
bit for bit, with every rank receiving them or only one."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from vae_testing import SMALL_TILES, random_tiny_vae

from model_core.vae import assign_tiles, load_vae, plan_decode, save_vae, tiled_decode

# 7 latents x 9 x 7: 3 temporal x 2 x 2 spatial tiles of the small tiling, 12 decoder calls of unequal size
LATENT_SHAPE = (1, 16, 7, 9, 7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, folder: str, dst: int | None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        vae = load_vae(folder)
        z = torch.load(Path(folder) / "latents.pt", weights_only=True)
        with torch.no_grad():
            out = tiled_decode(vae, z, SMALL_TILES, dist.group.WORLD, dst=dst)
        if out is None:
            torch.save(torch.empty(0), Path(folder) / f"out{rank}.pt")
        else:
            torch.save(out, Path(folder) / f"out{rank}.pt")
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


def _run(folder: Path, world: int, dst: int | None) -> list[torch.Tensor]:
    for old in folder.glob("out*.pt"):
        old.unlink()
    mp.spawn(_rank, args=(world, _free_port(), str(folder), dst), nprocs=world, join=True)
    return [torch.load(folder / f"out{r}.pt", weights_only=True) for r in range(world)]


def test_every_rank_gets_the_single_rank_frames(setup) -> None:
    folder, expected = setup
    outs = _run(folder, 2, dst=None)
    for out in outs:
        assert torch.equal(out, expected)


def test_only_dst_gets_the_frames(setup) -> None:
    folder, expected = setup
    outs = _run(folder, 2, dst=1)
    assert outs[0].numel() == 0
    assert torch.equal(outs[1], expected)


@pytest.mark.slow
@pytest.mark.parametrize("dst", [None, 0])
def test_world_size_3(setup, dst: int | None) -> None:
    folder, expected = setup
    outs = _run(folder, 3, dst=dst)
    for rank, out in enumerate(outs):
        if dst is None or rank == dst:
            assert torch.equal(out, expected)
        else:
            assert out.numel() == 0


def test_every_rank_decodes_a_share() -> None:
    """With 12 tiles, each of 2 or 3 ranks owns some; shares differ in latent volume by at most one tile."""
    from vae_testing import TINY

    tiles = plan_decode(TINY, LATENT_SHAPE[2:], SMALL_TILES).tiles()
    assert len(tiles) == 12
    for world in (2, 3):
        owners = assign_tiles(tiles, world)
        assert sorted(set(owners.values())) == list(range(world))
