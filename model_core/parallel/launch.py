"""Run a function on a local world of processes joined by a gloo (or NCCL) group on 127.0.0.1.

Used by the one-machine runner (world size <= cores) and by the multi-rank tests.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    threads: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    results: Any,
) -> None:
    torch.set_num_threads(threads)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
        )
        try:
            out = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        results.put((rank, True, out))
    except BaseException:  # noqa: BLE001 - report every failure; the parent re-raises it
        results.put((rank, False, traceback.format_exc()))


def run_local_world(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    threads_per_rank: int = 1,
    timeout_s: float = 300.0,
) -> list[Any]:
    """Call `fn(rank, world_size, *args)` in `world_size` spawned processes with the default group set up.

    `fn` must be importable (a module-level function) and its return value picklable. Returns the values
    in rank order; raises RuntimeError with the rank's traceback if any rank fails.
    """
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, world_size, port, backend, threads_per_rank, fn, args, results),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    outputs: dict[int, Any] = {}
    failures: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(outputs) + len(failures) < world_size:
        if not results.empty():
            rank, ok, value = results.get()
            if ok:
                outputs[rank] = value
            else:
                failures.append(f"rank {rank}:\n{value}")
                break  # the other ranks may now hang in a collective
            continue
        if time.monotonic() > deadline:
            failures.append(f"timed out after {timeout_s:.0f} s with {len(outputs)}/{world_size} ranks done")
            break
        if any(p.exitcode not in (None, 0) for p in procs):
            codes = [p.exitcode for p in procs]
            failures.append(f"a rank process died without a result (exit codes {codes})")
            break
        time.sleep(0.01)
    for p in procs:
        if failures:
            p.kill()
        p.join(timeout=30)
    if failures:
        raise RuntimeError("local world failed:\n" + "\n".join(failures))
    return [outputs[r] for r in range(world_size)]
