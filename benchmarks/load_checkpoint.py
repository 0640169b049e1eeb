"""Peak host memory and time of loading a ~1 GB DiT checkpoint: ``load_model`` against plain torch.

Methods, each measured in a fresh process (``VmHWM`` only grows):

* ``plain``: build ``HunyuanDiT`` on the CPU with its random init, ``torch.load(weights_only=True)``, then
  ``load_state_dict`` (copies the file's tensors into the model's): two full copies at the peak.
* ``ours``: ``model_core.checkpoints.load_model`` (meta-device build, memory-mapped file, ``assign=True``).

The checkpoint is a DiT preset scaled down to about ``--size-gb`` of fp32 (hidden 1024, 8 heads, the block
count chosen to fit), with random weights, saved as the official ``{"module": state_dict}`` ``.pt`` and as
safetensors. The file was just written, so it is read from the page cache for every method alike.

Run from the repository root::

    python -m benchmarks.load_checkpoint                 # ~1 GB, CPU, writes docs/BENCHMARKS.md
    python -m benchmarks.load_checkpoint --device cuda   # load onto a GPU (peak host RSS still reported)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import (
    current_rss_bytes,
    format_bytes,
    machine_description,
    markdown_table,
    peak_rss_bytes,
    pick_device,
    reset_peak_rss,
    run_in_subprocess,
    synchronize,
    write_benchmarks_section,
)

SECTION = "Checkpoint loading"
HIDDEN = 1024


def scaled_config(size_gb: float):
    """A T2V-like DiT config of about ``size_gb`` GB in fp32 (double:single blocks kept near 1:2)."""
    from model_core.configs import DiTConfig

    def build(double: int, single: int) -> DiTConfig:
        return DiTConfig(
            hidden_size=HIDDEN, num_heads=8, depth_double=double, depth_single=single, guidance_embed=True
        )

    # per block: double ~ 36 h^2, single ~ 15 h^2 parameters; the embedders add ~ 8 h^2 + text 4096*h*2
    target = size_gb * 1e9 / 4
    fixed = 10 * HIDDEN * HIDDEN + 2 * 4096 * HIDDEN
    unit = 36 * HIDDEN * HIDDEN + 2 * 15 * HIDDEN * HIDDEN  # one double + two single blocks
    n = max(1, round((target - fixed) / unit))
    return build(n, 2 * n)


def parameter_bytes(config, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of all state-dict tensors of ``HunyuanDiT(config)`` in ``dtype`` (counted on the meta device)."""
    from model_core.dit import HunyuanDiT

    with torch.device("meta"):
        model = HunyuanDiT(config)
    return sum(t.numel() for t in model.state_dict().values()) * torch.empty((), dtype=dtype).element_size()


def write_checkpoints(config, folder: Path, seed: int = 0) -> dict[str, Path]:
    """Random weights for ``config`` as the official ``.pt`` (``module`` wrapper) and as safetensors."""
    from safetensors.torch import save_file

    from model_core.dit import HunyuanDiT

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in HunyuanDiT(config).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}
    paths = {"pt": folder / "mp_rank_00_model_states.pt", "safetensors": folder / "model.safetensors"}
    torch.save({"module": state}, paths["pt"])
    save_file(state, paths["safetensors"])
    return paths


# --------------------------------------------------------------------------------------------------------
# worker: one measurement in this (fresh) process


def _worker(method: str, path: str, size_gb: float, dtype_name: str, device_name: str) -> dict:
    from model_core.checkpoints import load_model
    from model_core.dit import HunyuanDiT

    torch.set_num_threads(2)
    device = pick_device(device_name)
    dtype = getattr(torch, dtype_name)
    config = scaled_config(size_gb)
    gc.collect()
    reset_peak_rss()
    base = current_rss_bytes()
    start = time.perf_counter()
    if method == "ours":
        model = load_model(config, path, device=device, dtype=dtype)
    elif method == "plain":
        model = HunyuanDiT(config).to(dtype)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(loaded.get("module", loaded), strict=True)
        del loaded
        model.to(device)
    else:
        raise ValueError(f"unknown method {method!r}; expected ours or plain")
    synchronize(device)
    seconds = time.perf_counter() - start
    # read every weight once: memory-mapped pages are faulted in here, as they would be by the first forward
    checksum = sum(float(p.detach().float().sum()) for p in model.parameters())
    synchronize(device)
    return {
        "seconds": seconds,
        "seconds_with_read": time.perf_counter() - start,
        "peak_rss": peak_rss_bytes(),
        "base_rss": base,
        "peak_over_base": peak_rss_bytes() - base,
        "checksum": checksum,
    }


# --------------------------------------------------------------------------------------------------------
# driver


def run(size_gb: float, device: str, repeats: int, write_docs: bool, keep: Path | None) -> list[dict]:
    """Write the checkpoints, measure every (method, file, dtype) case in fresh processes, return the rows.

    Raises RuntimeError when two methods load different weights (checksums per dtype disagree).
    """
    config = scaled_config(size_gb)
    nbytes = parameter_bytes(config)
    folder = keep or Path(tempfile.mkdtemp(prefix="adrender-bench-ckpt-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"config: hidden {config.hidden_size}, {config.depth_double} double + {config.depth_single} single blocks, "
        f"{format_bytes(nbytes)} fp32; files in {folder}"
    )
    try:
        paths = write_checkpoints(config, folder)
        cases = [
            ("plain", "pt", "float32"),
            ("ours", "pt", "float32"),
            ("ours", "safetensors", "float32"),
            ("plain", "pt", "bfloat16"),
            ("ours", "pt", "bfloat16"),
        ]
        rows = []
        for method, fmt, dtype in cases:
            runs = [
                run_in_subprocess(
                    "benchmarks.load_checkpoint",
                    [
                        "--worker",
                        method,
                        "--path",
                        str(paths[fmt]),
                        "--size-gb",
                        str(size_gb),
                        "--dtype",
                        dtype,
                        "--device",
                        device,
                    ],
                )
                for _ in range(repeats)
            ]
            best = min(runs, key=lambda r: r["seconds"])
            checksums = {round(r["checksum"], 3) for r in runs}
            if len(checksums) != 1:
                raise RuntimeError(f"repeats of {method}/{fmt}/{dtype} loaded different weights: {checksums}")
            row = {
                "method": method,
                "format": fmt,
                "dtype": dtype,
                "seconds": best["seconds"],
                "seconds_with_read": best["seconds_with_read"],
                "peak_over_base": max(r["peak_over_base"] for r in runs),
                "peak_rss": max(r["peak_rss"] for r in runs),
                "checksum": checksums.pop(),
            }
            rows.append(row)
            print(json.dumps(row))
        sums = {(r["dtype"]): set() for r in rows}
        for r in rows:
            sums[r["dtype"]].add(round(r["checksum"], 1))
        if any(len(v) != 1 for v in sums.values()):
            raise RuntimeError(f"methods loaded different weights: {sums}")
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    headers = [
        "method",
        "file",
        "to dtype",
        "load s",
        "load + first read s",
        "peak RSS over start",
        "x file size",
    ]
    table = markdown_table(
        headers,
        [
            [
                r["method"],
                r["format"],
                r["dtype"],
                f"{r['seconds']:.2f}",
                f"{r['seconds_with_read']:.2f}",
                format_bytes(r["peak_over_base"]),
                f"{r['peak_over_base'] / nbytes:.2f}",
            ]
            for r in rows
        ],
    )
    print(table)
    if write_docs:
        dev = pick_device(device)
        body = f"""Measured {datetime.date.today().isoformat()} on {machine_description(dev)}, with
`python -m benchmarks.load_checkpoint --size-gb {size_gb} --device {device}`: a DiT of hidden
{config.hidden_size} with {config.depth_double} double and {config.depth_single} single blocks, random weights,
{format_bytes(nbytes)} in fp32, saved as the official `{{"module": state_dict}}` `.pt` and as safetensors.
Each row is a fresh process (best time of {repeats}); "first read" adds one pass over every weight, which is
when memory-mapped pages are actually read. Peak RSS is `VmHWM` minus the RSS before loading (torch and the code already
imported). `plain` = build the model with its random init, `torch.load(weights_only=True)`,
`load_state_dict`; `ours` = `model_core.checkpoints.load_model` (meta build, memory-mapped file,
`assign=True`, tensor-by-tensor cast that releases each source tensor's file pages).

{table}

The 2 vCPUs are shared with other work, so times vary between runs (up to ~3x); memory does not.
The file is in the page cache (just written), so times are memory-bound, not disk-bound. `ours` in fp32
keeps the mapped file pages as the weights themselves (no copy, one file size of RSS); `plain` holds the
initialised model and the loaded dict (two), and spends most of its time in the random init."""
        write_benchmarks_section(SECTION, body)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line; ``--worker`` runs one measurement and prints it as a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="approximate fp32 checkpoint size")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--repeats", type=int, default=2, help="fresh processes per method; the best time is kept"
    )
    parser.add_argument("--no-docs", action="store_true", help="print only; do not write docs/BENCHMARKS.md")
    parser.add_argument("--keep", type=Path, default=None, help="write the checkpoints here and keep them")
    parser.add_argument("--worker", choices=["ours", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.path, args.size_gb, args.dtype, args.device)))
        return
    run(args.size_gb, args.device, args.repeats, not args.no_docs, args.keep)


if __name__ == "__main__":
    main()
