"""Step checkpoints for resumable sampling: tensors in safetensors, everything else as JSON metadata (no pickle)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT = "adrender.sampling.step_checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StepCheckpoint:
    """The sampler state after `step_index` steps: resuming from it gives bit-identical final latents.

    latents: float32 [B, C, T, H, W], the full latents (identical on every rank).
    schedule: the parameters that rebuild the schedule (`FlowMatchSchedule.state()`).
    rng_state: the state of the sampler's CPU generator (seeded with the unit's seed) at `step_index`; a
        resumed run continues from it. The Euler solver draws nothing after the initial noise, so today it
        only changes for stochastic additions to the loop.
    options_digest: `SamplingOptions.digest()` of the run; resuming with other options is refused.
    cache_latents, cache_step: set when step `step_index` reuses the DeepCache. The cache itself (hidden
        states of every token) is not saved; a resumed run recomputes it with one forward at `cache_step`
        from these latents (the input of that step), which gives the identical cache.
    """

    latents: Tensor
    step_index: int
    schedule: dict[str, float | int | bool]
    rng_state: Tensor
    options_digest: str
    extra: dict[str, str] = field(default_factory=dict)
    cache_latents: Tensor | None = None
    cache_step: int | None = None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to `path` (a .safetensors file) atomically: a temporary file, then a rename."""
        path = Path(path)
        meta = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "step_index": str(self.step_index),
            "schedule": json.dumps(self.schedule, sort_keys=True),
            "options_digest": self.options_digest,
            "extra": json.dumps(self.extra, sort_keys=True),
        }
        tensors = {
            "latents": self.latents.detach().cpu().contiguous(),
            "rng_state": self.rng_state.cpu().contiguous(),
        }
        if (self.cache_latents is None) != (self.cache_step is None):
            raise ValueError("cache_latents and cache_step are set together or not at all")
        if self.cache_latents is not None:
            tensors["cache_latents"] = self.cache_latents.detach().cpu().contiguous()
            meta["cache_step"] = str(self.cache_step)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StepCheckpoint:
        """Read a file written by `save`; raises ValueError if it is not a step checkpoint of this format."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a sampling step checkpoint (metadata format={meta.get('format')!r})"
            )
        if meta.get("format_version") != str(FORMAT_VERSION):
            raise ValueError(
                f"{path} has checkpoint format_version {meta.get('format_version')}, this code reads {FORMAT_VERSION}"
            )
        tensors = load_file(str(path))
        return cls(
            latents=tensors["latents"],
            step_index=int(meta["step_index"]),
            schedule=json.loads(meta["schedule"]),
            rng_state=tensors["rng_state"].to(torch.uint8),
            options_digest=meta["options_digest"],
            extra=json.loads(meta.get("extra", "{}")),
            cache_latents=tensors.get("cache_latents"),
            cache_step=int(meta["cache_step"]) if "cache_step" in meta else None,
        )
