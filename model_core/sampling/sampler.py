"""The sampling loop: the one entry point the pipeline's sampling step calls, on one rank or many.

`euler_loop` is the flow-matching Euler loop shared by every model: it takes a velocity function
`(step, latents) -> guided velocity`, as flux's `denoise` does, and hooks around each step (DeepCache bookkeeping,
progress, step checkpoints). `sample` runs the HunyuanVideo / HunyuanCustom / HunyuanVideo-Avatar DiT through it (Avatar's sliding
window and CFG phases live in the velocity function);
`model_core.audio.foley.sample_foley` runs HunyuanVideo-Foley through it, with the same `StepCheckpoint`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ProcessGroup

from model_core.dit.transformer import HunyuanDiT
from model_core.parallel.group import ParallelLayout
from model_core.sampling.avatar import (
    avatar_branches,
    avatar_cfg_scale,
    avatar_phase,
    avatar_windows,
    window_audio_indices,
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
from model_core.sampling.options import SamplingOptions
from model_core.sampling.schedule import FlowMatchSchedule, euler_step

CheckpointCallback = Callable[[StepCheckpoint], None]
ProgressCallback = Callable[[int, int], None]
VelocityFn = Callable[[int, Tensor], Tensor]  # (step index, latents) -> the guided velocity of that step
StepHook = Callable[[int, Tensor], None]


def euler_loop(
    velocity: VelocityFn,
    latents: Tensor,
    schedule: FlowMatchSchedule,
    *,
    start: int = 0,
    before_step: StepHook | None = None,
    after_step: StepHook | None = None,
) -> Tensor:
    """Euler steps `start .. N-1` of `schedule` from `latents` (float32): `x <- x + (s[i+1] - s[i]) v(i, x)`.

    `before_step(i, x)` sees each step's input latents; `after_step(i + 1, x)` the latents after it (progress,
    checkpoints). The loop itself draws no random numbers.
    """
    for i in range(start, len(schedule.timesteps)):
        if before_step is not None:
            before_step(i, latents)
        latents = euler_step(latents, velocity(i, latents), schedule.sigmas[i], schedule.sigmas[i + 1])
        if after_step is not None:
            after_step(i + 1, latents)
    return latents


def step_kinds(options: SamplingOptions) -> list[StepKind]:
    """Per step: FULL, STORE (full, and the next step reuses its cache) or REUSE (a DeepCache step)."""
    if options.avatar:
        cached = avatar_cached_steps(options.num_steps, enabled=options.deepcache)
    else:
        cached = deepcache_cached_steps(options.num_steps, enabled=options.deepcache)
    kinds = []
    for i in range(options.num_steps):
        if i in cached:
            kinds.append(StepKind.REUSE)
        else:
            kinds.append(StepKind.STORE if (i + 1) in cached else StepKind.FULL)
    return kinds


def _check_resume(
    ckpt: StepCheckpoint,
    options: SamplingOptions,
    schedule: FlowMatchSchedule,
    shape: tuple[int, ...],
    kinds: list[StepKind],
) -> None:
    if ckpt.options_digest != options.digest():
        raise ValueError(
            f"checkpoint was written with other sampling options (digest {ckpt.options_digest}, "
            f"now {options.digest()}); resume with the options of the interrupted run or start over"
        )
    if ckpt.schedule != schedule.state():
        raise ValueError(f"checkpoint schedule {ckpt.schedule} differs from {schedule.state()}")
    if tuple(ckpt.latents.shape) != shape:
        raise ValueError(f"checkpoint latents are {tuple(ckpt.latents.shape)}, this unit needs {shape}")
    if not 0 <= ckpt.step_index <= options.num_steps:
        raise ValueError(f"checkpoint step_index {ckpt.step_index} is outside 0..{options.num_steps}")
    if ckpt.step_index < options.num_steps and kinds[ckpt.step_index] is StepKind.REUSE:
        store = _store_step_before(kinds, ckpt.step_index)
        if ckpt.cache_latents is None or ckpt.cache_step != store:
            raise ValueError(
                f"checkpoint at step {ckpt.step_index} precedes a DeepCache step and needs the latents of "
                f"step {store} to rebuild the cache (got cache_step {ckpt.cache_step}); it was not written "
                "by this sampler: start over"
            )
        if tuple(ckpt.cache_latents.shape) != shape:
            raise ValueError(
                f"checkpoint cache_latents are {tuple(ckpt.cache_latents.shape)}, this unit needs {shape}"
            )


def _store_step_before(kinds: list[StepKind], step: int) -> int:
    """The STORE step whose cache the REUSE step `step` uses."""
    i = step
    while kinds[i] is not StepKind.STORE:
        i -= 1
    return i


def _restore_rng(rng: torch.Generator, state: Tensor) -> None:
    try:
        rng.set_state(state)
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint rng_state ({state.numel()} bytes, {state.dtype}) is not a CPU generator state; "
            "the file is damaged or not from this sampler: start over"
        ) from exc


def sample(
    model: HunyuanDiT,
    conditioning: Conditioning,
    options: SamplingOptions,
    *,
    group: ProcessGroup | ParallelLayout | None = None,
    checkpoint_every: int | None = None,
    resume_from: StepCheckpoint | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    progress: ProgressCallback | None = None,
) -> Tensor:
    """Sample the final latents `[B, C, T, H, W]` (float32, on the model's device) of one render unit.

    Every rank of `group` (None: one process) calls this with the same arguments and gets the same latents.
    The image tokens are split across the ranks (Ulysses); with `options.cfg_parallel` the CFG branches run
    on the two halves of the ranks instead. `group` may be a `ParallelLayout` built once per job: building
    one for CFG-parallel creates process groups, which is collective and costly on NCCL.

    Every `checkpoint_every` steps `on_checkpoint` gets a `StepCheckpoint` (on every rank, all identical;
    write it from one), so a preempted unit loses at most that many steps. Resuming from any of them gives
    bit-identical final latents: a checkpoint in front of a DeepCache step also carries the latents of the
    full step that filled the cache, and the resumed run recomputes the cache with one forward.
    `progress(steps_done, num_steps)` is called after every step.

    Avatar models (`options.avatar`) take their branches from `model_core.sampling.avatar` (two CFG phases) and,
    past 33 latent frames, are sampled as sliding windows whose guided velocities are averaged per frame; the
    checkpoints hold the whole video. `options.skip_uncond_from` evaluates only the conditional branch from
    that step on.
    """
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 (or None), got {checkpoint_every}")
    avatar = model.config.avatar is not None
    if avatar != options.avatar:
        raise ValueError(
            f"options.avatar is {options.avatar} but the model is {'an' if avatar else 'not an'} Avatar preset; "
            "sample Avatar checkpoints with default_options('avatar') and others without avatar"
        )
    if options.cfg_parallel and options.num_branches != 2:
        raise ValueError(
            f"cfg_parallel runs exactly two branches ([uncond, cond]); this run has {options.num_branches}: "
            "turn cfg_parallel off (identity guidance, or cfg_scale 1)"
        )
    if isinstance(group, ParallelLayout):
        layout = group
        if layout.cfg_parallel != options.cfg_parallel:
            raise ValueError(
                f"options.cfg_parallel is {options.cfg_parallel} but the ParallelLayout was built with "
                f"cfg_parallel={layout.cfg_parallel}; build the layout with the same setting"
            )
    else:
        layout = ParallelLayout.create(group, cfg_parallel=options.cfg_parallel)
    device = next(model.parameters()).device
    schedule = FlowMatchSchedule.create(options.num_steps, options.shift, reverse=options.reverse)
    batch = conditioning.cond.batch
    shape = (batch, model.config.in_channels, *conditioning.latent_size)
    total_frames = conditioning.latent_size[0]
    kinds = step_kinds(options)

    # the sampler's own generator: the Euler solver draws nothing after the initial noise, but a resumed
    # run restores it so that any random draw would continue exactly where it stopped
    rng = torch.Generator(device="cpu").manual_seed(options.seed)
    # the input latents of the last STORE step, for a checkpoint in front of a REUSE step
    cache_latents: Tensor | None = None
    cache_step: int | None = None
    if resume_from is None:
        latents = initial_noise(shape, options.seed, device=device)
        start = 0
    else:
        _check_resume(resume_from, options, schedule, shape, kinds)
        latents = resume_from.latents.to(device=device, dtype=torch.float32)
        start = resume_from.step_index
        _restore_rng(rng, resume_from.rng_state)
        if resume_from.cache_latents is not None and resume_from.cache_step is not None:
            cache_latents = resume_from.cache_latents.to(device=device, dtype=torch.float32)
            cache_step = resume_from.cache_step

    # this rank's model batch of each step: all branches, or its own one under CFG-parallel; the branches
    # change with Avatar's CFG phase and when the unconditional branch is skipped
    batches: dict[tuple[int, int], BranchInputs] = {}

    def step_inputs(step: int) -> BranchInputs:
        key = (avatar_phase(step) if avatar else 0, options.branches_at(step))
        if key not in batches:
            branches = (
                avatar_branches(conditioning, options, step) if avatar else conditioning.branches(options)
            )
            branches = branches[-key[1] :]  # the conditional branch is last
            mine = [branches[layout.cfg_index]] if layout.cfg_parallel else branches
            batches[key] = BranchInputs.concat(mine).to(device)
        return batches[key]

    def guidance_for(model_batch: int) -> Tensor | None:
        if options.embedded_guidance is None:
            return None
        return embedded_guidance(
            options.embedded_guidance,
            model_batch,
            release_rounding=options.embedded_guidance_release_rounding,
        ).to(device)

    denoiser = Denoiser(model, layout.sp)
    last_ckpt = start

    def guided_window(
        step: int, window_latents: Tensor, inputs: BranchInputs, frames: list[int] | None
    ) -> Tensor:
        n = options.branches_at(step)
        mine = 1 if layout.cfg_parallel else n
        x = window_latents.repeat(mine, *([1] * (window_latents.ndim - 1)))
        t = schedule.timesteps[step].expand(inputs.batch).to(device)
        v = denoiser(
            x, t, inputs, guidance=guidance_for(inputs.batch), audio_strength=conditioning.audio_strength,
            kind=kinds[step], frames=frames, total_frames=total_frames,
        )  # fmt: skip
        if layout.cfg_parallel:
            parts = [torch.empty_like(v) for _ in range(2)]
            dist.all_gather(parts, v.contiguous(), group=layout.cfg_pair)
            v = torch.cat(parts)
        outs = v.chunk(n)
        if n == 1:
            return outs[0]
        if n == 2:
            scale = (
                avatar_cfg_scale(step, options.num_steps, options.cfg_scale) if avatar else options.cfg_scale
            )
            return cfg_combine(outs[0], outs[1], scale)
        ip = identity_scale_at(step, options.num_steps, options.ip_cfg_scale)
        return identity_cfg_combine(outs[0], outs[1], outs[2], options.cfg_scale, ip)

    def guided(step: int, step_latents: Tensor) -> Tensor:
        inputs = step_inputs(step)
        windows = avatar_windows(total_frames, step) if avatar else [list(range(total_frames))]
        if len(windows) == 1:
            return guided_window(step, step_latents, inputs, None)
        # Avatar's sliding window: the mean of the windows' guided velocities on the frames they cover (the
        # release averages the windows' stepped latents, which is the same Euler step)
        total = torch.zeros_like(step_latents)
        count = torch.zeros(total_frames, device=device)
        audio = inputs.audio_states
        for frames in windows:
            index = torch.tensor(frames, device=device)
            window_inputs = inputs
            if audio is not None:
                audio_index = torch.tensor(window_audio_indices(frames, total_frames), device=device)
                window_inputs = dataclasses.replace(inputs, audio_states=audio.index_select(1, audio_index))
            v = guided_window(step, step_latents.index_select(2, index), window_inputs, frames)
            total.index_add_(2, index, v.float())
            count.index_add_(0, index, torch.ones(len(frames), device=device))
        return total / count.view(1, 1, -1, 1, 1)

    if start < options.num_steps and kinds[start] is StepKind.REUSE:
        # resumed in front of a DeepCache step: refill the cache exactly as the STORE step did
        assert cache_latents is not None and cache_step is not None
        guided(cache_step, cache_latents)

    def remember_cache_input(i: int, step_latents: Tensor) -> None:
        nonlocal cache_latents, cache_step
        if kinds[i] is StepKind.STORE:
            cache_latents, cache_step = step_latents, i

    def report(done: int, step_latents: Tensor) -> None:
        nonlocal last_ckpt
        if progress is not None:
            progress(done, options.num_steps)
        due = checkpoint_every is not None and done - last_ckpt >= checkpoint_every
        if due and done < options.num_steps and on_checkpoint is not None:
            before_reuse = kinds[done] is StepKind.REUSE
            on_checkpoint(
                StepCheckpoint(
                    latents=step_latents.detach().cpu().clone(),
                    step_index=done,
                    schedule=schedule.state(),
                    rng_state=rng.get_state(),
                    options_digest=options.digest(),
                    cache_latents=cache_latents.detach().cpu().clone()
                    if before_reuse and cache_latents is not None
                    else None,
                    cache_step=cache_step if before_reuse else None,
                )
            )
            last_ckpt = done

    return euler_loop(
        guided, latents, schedule, start=start, before_step=remember_cache_input, after_step=report
    )
