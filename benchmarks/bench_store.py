"""Throughput of the artifact store and tensor artifacts.

    python -m benchmarks.bench_store [--size-mib 64] [--device cpu|cuda] [--write]

Measures, for one object of ``--size-mib``: sha256 over the bytes (the floor for verified reads), put and get
through :class:`LocalStore` (temp dir) and through :class:`S3Store` against moto's S3 server on loopback
(multipart with 16 MiB parts), and ``dump_tensors`` / ``load_tensors`` of one 720p x 129-frame latent in
bf16 taken from ``--device`` (so a CUDA run includes the device-to-host copy). ``--write`` replaces the
"Object store and tensor artifacts" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from datetime import date
from pathlib import Path

import torch

from benchmarks._common import (
    machine_description,
    markdown_table,
    pick_device,
    time_fn,
    write_benchmarks_section,
)
from components.runtime.store import LocalStore, ObjectStore, S3Store
from components.runtime.tensors import TensorMeta, dump_tensors, load_tensors

SECTION = "Object store and tensor artifacts"
MiB = 1024 * 1024


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / MiB / seconds:.0f} MiB/s ({seconds:.2f} s)"


def _store_rows(
    name: str, store: ObjectStore, src: Path, dest: Path, nbytes: int, device: torch.device
) -> list:
    put = time_fn(lambda: store.put_file("bench/obj.bin", src), device=device, warmup=1, repeats=3)
    get = time_fn(lambda: store.get_file("bench/obj.bin", dest), device=device, warmup=1, repeats=3)
    return [
        [name, "put_file", _rate(nbytes, put.median)],
        [name, "get_file (verified)", _rate(nbytes, get.median)],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", action="store_true", help="write the results into docs/BENCHMARKS.md")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    nbytes = args.size_mib * MiB
    rows: list[list[object]] = []

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "src.bin"
        src.write_bytes(os.urandom(nbytes))
        data = src.read_bytes()
        digest = time_fn(lambda: hashlib.sha256(data).hexdigest(), device=device, warmup=1, repeats=3)
        rows.append(["-", "sha256", _rate(nbytes, digest.median)])

        rows += _store_rows("local folder", LocalStore(tmp / "store"), src, tmp / "out.bin", nbytes, device)

        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            s3 = S3Store.connect(f"{host}:{port}", "bench", secure=False, access_key="k", secret_key="s")
            s3.ensure_bucket()
            rows += _store_rows("S3 (moto, loopback)", s3, src, tmp / "out.bin", nbytes, device)
        finally:
            server.stop()

    # one 720p x 129-frame video latent: [B, C, T, H, W] = [1, 16, 33, 90, 160]
    latent = torch.randn(1, 16, 33, 90, 160, device=device).to(torch.bfloat16)
    size = latent.numel() * latent.element_size()
    meta = TensorMeta(step="bench", meaning={"latents": "video latents [B, C, T, H, W]"})
    blob = dump_tensors({"latents": latent}, meta)
    dump = time_fn(lambda: dump_tensors({"latents": latent}, meta), device=device, warmup=1, repeats=3)
    load = time_fn(lambda: load_tensors(blob), device=device, warmup=1, repeats=3)
    rows.append(
        [
            f"tensors ({args.device})",
            f"dump_tensors bf16 latent {size / MiB:.1f} MiB",
            _rate(size, dump.median),
        ]
    )
    rows.append(["tensors", "load_tensors (header checked)", _rate(size, load.median)])

    body = "\n".join(
        [
            f"Machine: {machine_description(device)}. Date: {date(2026, 11, 21).isoformat()}.",
            f"Object of {args.size_mib} MiB of random bytes; median of 3 runs after 1 warm-up.",
            "",
            markdown_table(["backend", "operation", "throughput (time)"], rows),
            "",
            "Reads always hash the bytes (sha256 verification), so sha256 speed caps verified reads. The S3",
            "numbers are against moto's Python server on the same 2 cores, a floor for a real MinIO/S3 endpoint;",
            "moto is CPU-bound there, so three parts in flight do not beat one.",
            "Measured with `python -m benchmarks.bench_store --write`.",
        ]
    )
    print(body)
    if args.write:
        write_benchmarks_section(SECTION, body)


if __name__ == "__main__":
    main()
