"""Flow-matching sampling: schedule, Euler step, guidance, DeepCache, step checkpoints and the sampling loop.

`sample(model, conditioning, options, group=...)` is the entry point of the pipeline's sampling step.

The names below load their module on first use (PEP 562), so that `model_core.sampling.options`, which the
campaign spec reads, can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_core.sampling.avatar import (
        avatar_branches,
        avatar_cfg_scale,
        avatar_face_mask,
        avatar_latent_frames,
        avatar_windows,
        pad_avatar_audio,
    )
    from model_core.sampling.checkpoint import StepCheckpoint
    from model_core.sampling.conditioning import BranchInputs, Conditioning
    from model_core.sampling.deepcache import avatar_cached_steps, deepcache_cached_steps
    from model_core.sampling.denoiser import Denoiser, StepKind
    from model_core.sampling.guidance import (
        cfg_combine,
        embedded_guidance,
        identity_cfg_combine,
        identity_scale_at,
    )
    from model_core.sampling.noise import initial_noise
    from model_core.sampling.options import MODE_DEFAULTS, SamplingMode, SamplingOptions, default_options
    from model_core.sampling.sampler import euler_loop, sample, step_kinds
    from model_core.sampling.schedule import FlowMatchSchedule, euler_step, shift_sigmas

_EXPORTS: dict[str, str] = {
    "MODE_DEFAULTS": "options",
    "BranchInputs": "conditioning",
    "Conditioning": "conditioning",
    "Denoiser": "denoiser",
    "FlowMatchSchedule": "schedule",
    "SamplingMode": "options",
    "SamplingOptions": "options",
    "StepCheckpoint": "checkpoint",
    "StepKind": "denoiser",
    "avatar_branches": "avatar",
    "avatar_cached_steps": "deepcache",
    "avatar_cfg_scale": "avatar",
    "avatar_face_mask": "avatar",
    "avatar_latent_frames": "avatar",
    "avatar_windows": "avatar",
    "cfg_combine": "guidance",
    "deepcache_cached_steps": "deepcache",
    "default_options": "options",
    "embedded_guidance": "guidance",
    "euler_loop": "sampler",
    "euler_step": "schedule",
    "identity_cfg_combine": "guidance",
    "identity_scale_at": "guidance",
    "initial_noise": "noise",
    "pad_avatar_audio": "avatar",
    "sample": "sampler",
    "shift_sigmas": "schedule",
    "step_kinds": "sampler",
}

__all__ = [
    "MODE_DEFAULTS",
    "BranchInputs",
    "Conditioning",
    "Denoiser",
    "FlowMatchSchedule",
    "SamplingMode",
    "SamplingOptions",
    "StepCheckpoint",
    "StepKind",
    "avatar_branches",
    "avatar_cached_steps",
    "avatar_cfg_scale",
    "avatar_face_mask",
    "avatar_latent_frames",
    "avatar_windows",
    "cfg_combine",
    "deepcache_cached_steps",
    "default_options",
    "embedded_guidance",
    "euler_loop",
    "euler_step",
    "identity_cfg_combine",
    "identity_scale_at",
    "initial_noise",
    "pad_avatar_audio",
    "sample",
    "shift_sigmas",
    "step_kinds",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
