"""Flow-matching sampling: schedule, Euler step, guidance, DeepCache, step checkpoints and the sampling loop.

`sample(model, conditioning, options, group=...)` is the entry point of the pipeline's sampling step.
"""

from model_core.sampling.checkpoint import StepCheckpoint
from model_core.sampling.conditioning import BranchInputs, Conditioning
from model_core.sampling.deepcache import deepcache_cached_steps
from model_core.sampling.denoiser import Denoiser, StepKind
from model_core.sampling.guidance import (
    cfg_combine,
    embedded_guidance,
    identity_cfg_combine,
    identity_scale_at,
)
from model_core.sampling.noise import initial_noise
from model_core.sampling.options import MODE_DEFAULTS, SamplingMode, SamplingOptions, default_options
from model_core.sampling.sampler import sample, step_kinds
from model_core.sampling.schedule import FlowMatchSchedule, euler_step, shift_sigmas

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
    "cfg_combine",
    "deepcache_cached_steps",
    "default_options",
    "embedded_guidance",
    "euler_step",
    "identity_cfg_combine",
    "identity_scale_at",
    "initial_noise",
    "sample",
    "shift_sigmas",
    "step_kinds",
]
