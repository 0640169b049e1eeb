"""Encoder offload: Foley's conditioning encoders sit on the compute device only while they extract features.

SigLIP2, CLAP and the Synchformer run once per clip, before the 50 MMDiT steps and the DAC decode. With offload
they are moved to the device for the extraction and parked on the CPU after it, and the device's cached blocks are
released, so the MMDiT and the DAC-VAE run without them beside. The DAC-VAE's encoder half (296M of its 372M
parameters in the release) is never run by inference and is parked for good. docs/BENCHMARKS.md ("Foley") has
the footprint of each preset with and without offload.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from model_core.audio.foley.dac import DACVAE

__all__ = ["PARK_DEVICE", "decoder_only_on", "on_device_while", "parked"]

PARK_DEVICE = torch.device("cpu")


def _release_cached(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()  # give the parked weights' blocks back, so the peak counts only what is live


@contextmanager
def on_device_while(
    modules: Sequence[nn.Module], device: torch.device | str, *, offload: bool = True
) -> Iterator[None]:
    """Move `modules` to `device` for the block; with `offload`, park them on the CPU after it (also on error)."""
    device = torch.device(device)
    for module in modules:
        module.to(device)
    try:
        yield
    finally:
        if offload:
            for module in modules:
                module.to(PARK_DEVICE)
            _release_cached(device)


def decoder_only_on(dac: DACVAE, device: torch.device | str) -> None:
    """Keep the DAC-VAE's decoder path on `device` and park its encoder path (`encoder`, `quant_conv`) on the
    CPU: inference only decodes. `dac.encode` still works, on CPU inputs."""
    device = torch.device(device)
    dac.encoder.to(PARK_DEVICE)
    dac.quant_conv.to(PARK_DEVICE)
    dac.post_quant_conv.to(device)
    dac.decoder.to(device)
    _release_cached(device)


def parked(module: nn.Module) -> bool:
    """Whether every parameter and buffer of `module` is on the park device (the CPU)."""
    tensors = [*module.parameters(), *module.buffers()]
    return all(t.device == PARK_DEVICE for t in tensors)
