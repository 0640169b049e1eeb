"""Offload: each Foley network on the compute device only for its phase of a clip.

A clip runs three phases: feature extraction (SigLIP2, CLAP, Synchformer), 50 MMDiT steps, the DAC decode.
`FoleyOffload` says what leaves the device between them (parked on the CPU, the device's cached blocks released):

- `encoders` (the default): the encoders visit the device for the extraction only, so the MMDiT and the DAC run
  without them beside. Costs two host transfers of the encoders (~0.8 GB) per clip.
- `sequential`: the MMDiT and the DAC decoder too visit the device for their phase only, so the peak is the
  largest single phase (the MMDiT's). Costs two host transfers of the MMDiT (10.3 GB at xxl in bf16) per clip.
- `none`: everything stays on the device.

The DAC-VAE's encoder half (296M of its 372M parameters in the release) is never run by inference; `load_release`
keeps it on the CPU in every mode. docs/BENCHMARKS.md ("Foley") has each preset's footprint per mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum

import torch
from torch import nn

from model_core.audio.foley.dac import DACVAE

__all__ = [
    "PARK_DEVICE",
    "FoleyOffload",
    "decoder_modules",
    "decoder_only_on",
    "on_device_while",
    "park",
    "parked",
]

PARK_DEVICE = torch.device("cpu")


class FoleyOffload(str, Enum):
    """What leaves the compute device between the phases of a clip (see the module docstring)."""

    NONE = "none"
    ENCODERS = "encoders"
    SEQUENTIAL = "sequential"

    @property
    def encoders(self) -> bool:
        return self is not FoleyOffload.NONE

    @property
    def generator(self) -> bool:
        """Whether the MMDiT and the DAC decoder are parked outside their phase."""
        return self is FoleyOffload.SEQUENTIAL


def _release_cached(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()  # give the parked weights' blocks back, so the peak counts only what is live


def park(modules: Sequence[nn.Module], device: torch.device | str) -> None:
    """Move `modules` to the park device and release `device`'s cached blocks."""
    for module in modules:
        module.to(PARK_DEVICE)
    _release_cached(torch.device(device))


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
            park(modules, device)


def decoder_modules(dac: DACVAE) -> tuple[nn.Module, nn.Module]:
    """The modules `dac.decode` runs."""
    return dac.post_quant_conv, dac.decoder


def decoder_only_on(dac: DACVAE, device: torch.device | str) -> None:
    """Keep the DAC-VAE's decoder path on `device` and park its encoder path (`encoder`, `quant_conv`) on the
    CPU: inference only decodes. `dac.encode` still works, on CPU inputs."""
    device = torch.device(device)
    dac.encoder.to(PARK_DEVICE)
    dac.quant_conv.to(PARK_DEVICE)
    for module in decoder_modules(dac):
        module.to(device)
    _release_cached(device)


def parked(module: nn.Module) -> bool:
    """Whether every parameter and buffer of `module` is on the park device (the CPU)."""
    tensors = [*module.parameters(), *module.buffers()]
    return all(t.device == PARK_DEVICE for t in tensors)
