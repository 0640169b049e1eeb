"""HunyuanVideo-Avatar sampling: the release's rules written out as a loop over the model's forward (two-phase CFG,
sliding window with wrap-around), the DeepCache list, resume, skipping the unconditional branch, and SP."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed as dist

from model_core.dit import HunyuanDiT
from model_core.parallel import ParallelLayout
from model_core.parallel.launch import run_local_world
from model_core.sampling import (
    Conditioning,
    StepCheckpoint,
    StepKind,
    avatar_branches,
    avatar_cfg_scale,
    avatar_face_mask,
    avatar_latent_frames,
    avatar_windows,
    default_options,
    pad_avatar_audio,
    sample,
    step_kinds,
)
from model_core.sampling.random_inputs import random_conditioning
from tests.model_core.avatar.test_avatar_dit import tiny_model

TWO_WINDOWS = (65, 2, 4)  # 65 latent frames: two windows of 33, 2 tokens per frame


def _release_loop(model: HunyuanDiT, cond: Conditioning, steps: int, shift: float, cfg: float, seed: int) -> torch.Tensor:  # fmt: skip
    """The release's loop: per window, [uncond, cond] through model.forward, guided, Euler-stepped; the stepped
    windows summed into the frames they cover and divided by the count; the start moves back by 10 a step."""
    frames, height, width = cond.latent_size
    sigmas = torch.linspace(1, 0, steps + 1, dtype=torch.float32)
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    latents_all = torch.randn(16, frames, height, width, generator=torch.Generator().manual_seed(seed))[None]
    per_batch = min(33, frames)  # a shorter video is one window
    offset = 10 if frames > 33 else 0
    pos, neg = cond.cond, cond.uncond
    assert neg is not None and pos.audio_states is not None and pos.face_mask is not None
    audio_all = pos.audio_states
    shift_frames = 0
    with torch.no_grad():
        for i in range(steps):
            t = (sigmas[i] * 1000).expand(2)
            pred = torch.zeros_like(latents_all)
            counter = torch.zeros(frames)
            for index_start in range(0, frames, per_batch):
                index_start -= shift_frames
                idx = [ii % frames for ii in range(index_start, index_start + per_batch)]
                lat = latents_all[:, :, idx]
                audio_idx = [ii % audio_all.shape[1] for ii in range(index_start * 4, (index_start + per_batch) * 4 - 3)]  # fmt: skip
                audio = audio_all[:, audio_idx]
                if i < 10:
                    w = (1 - i / steps) * (cfg - 2) + 2
                    text = [neg, pos]
                    mask = pos.face_mask * 0.6
                else:
                    w = (1 - i / steps) * (6.5 - 3.5) + 3.5
                    text = [pos, pos]
                    mask = pos.face_mask
                v = model(
                    torch.cat([lat, lat]), t,
                    torch.cat([b.text_states for b in text]), torch.cat([b.text_mask for b in text]),
                    torch.cat([b.text_pooled for b in text]),
                    ref_latents=torch.cat([pos.ref_latents, pos.ref_latents]),  # type: ignore[list-item]
                    audio_states=torch.cat([torch.zeros_like(audio), audio]),
                    face_mask=torch.cat([mask, mask]),
                    motion_exp=torch.cat([pos.motion_exp, pos.motion_exp]),  # type: ignore[list-item]
                    motion_pose=torch.cat([pos.motion_pose, pos.motion_pose]),  # type: ignore[list-item]
                    fps=torch.cat([pos.fps, pos.fps]),  # type: ignore[list-item]
                )  # fmt: skip
                guided = v[:1] + w * (v[1:] - v[:1])
                stepped = lat + guided * (sigmas[i + 1] - sigmas[i])
                for k in range(per_batch):
                    p = (index_start + k) % frames
                    pred[:, :, p] += stepped[:, :, k]
                    counter[p] += 1
            shift_frames = (shift_frames + offset) % per_batch
            latents_all = pred / counter.view(1, 1, -1, 1, 1)
    return latents_all


def test_avatar_release_defaults() -> None:
    opts = default_options("avatar")
    assert (opts.num_steps, opts.cfg_scale, opts.shift, opts.deepcache, opts.avatar) == (
        50,
        7.5,
        5.0,
        True,
        True,
    )
    assert opts.embedded_guidance is None and opts.skip_uncond_from is None
    with pytest.raises(ValueError, match="identity guidance"):
        opts.with_(ip_cfg_scale=2.0)
    # options without the later fields keep their checkpoints' digest
    assert default_options("image").digest() == default_options("image", avatar=False).digest()
    assert default_options("image").digest() != default_options("image", skip_uncond_from=20).digest()


def test_cfg_schedule_values_and_branches() -> None:
    assert avatar_cfg_scale(0, 50, 7.5) == 7.5
    assert avatar_cfg_scale(9, 50, 7.5) == pytest.approx((1 - 9 / 50) * 5.5 + 2)  # 6.51
    assert avatar_cfg_scale(10, 50, 7.5) == pytest.approx(0.8 * 3.0 + 3.5)  # 5.9: the second phase
    assert avatar_cfg_scale(49, 50, 7.5) == pytest.approx(3.56)
    assert avatar_cfg_scale(10, 50, 12.0) == avatar_cfg_scale(10, 50, 7.5)  # cfg sets the first phase only

    model = tiny_model()
    cond = random_conditioning(model.config, (3, 2, 4), seed=1)
    opts = default_options("avatar")
    assert cond.uncond is not None and cond.cond.face_mask is not None
    early = avatar_branches(cond, opts, 9)
    assert torch.equal(early[0].text_states, cond.uncond.text_states)
    assert torch.equal(early[0].audio_states, torch.zeros_like(cond.cond.audio_states))  # type: ignore[arg-type]
    for branch in early:
        assert torch.equal(branch.face_mask, cond.cond.face_mask * 0.6)  # type: ignore[operator]
    late = avatar_branches(cond, opts, 10)
    assert torch.equal(late[0].text_states, cond.cond.text_states)  # the positive prompt, audio dropped
    assert torch.equal(late[0].text_pooled, cond.cond.text_pooled)
    assert late[0].audio_states is not None and not late[0].audio_states.any()
    assert late[1] is cond.cond and torch.equal(late[0].face_mask, cond.cond.face_mask)  # type: ignore[arg-type]
    assert avatar_branches(cond, opts.with_(cfg_scale=1.0), 3) == [cond.cond]


def test_one_window_run_equals_the_release_loop() -> None:
    """12 steps over the phase change at step 10 on a 3-latent-frame video (one window)."""
    model = tiny_model()
    cond = random_conditioning(model.config, (3, 2, 4), seed=2)
    opts = default_options("avatar", num_steps=12, deepcache=False)
    ours = sample(model, cond, opts)
    ref = _release_loop(model, cond, 12, opts.shift, opts.cfg_scale, opts.seed)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # the audio drives the result
    silent = dataclasses.replace(cond, cond=dataclasses.replace(cond.cond, audio_states=torch.zeros_like(cond.cond.audio_states)))  # type: ignore[arg-type]  # fmt: skip
    assert (sample(model, silent, opts) - ours).abs().max() > 1e-4


def test_windows_wrap_as_the_release() -> None:
    assert avatar_windows(33, 7) == [list(range(33))]  # up to 129 frames: one window, never shifted
    assert avatar_windows(65, 0) == [list(range(33)), [*range(33, 65), 0]]
    # step 1: the starts move back by 10 and wrap around the end; frame 55 is covered twice
    assert avatar_windows(65, 1) == [[*range(55, 65), *range(23)], list(range(23, 56))]
    assert avatar_windows(65, 4) == [[*range(58, 65), *range(26)], list(range(26, 59))]  # shift 40 mod 33 = 7
    assert len(avatar_windows(97, 2)) == 3
    # latent frames for a voice of n frames at 25 fps: (n' // 128 + 1) * 32 + 1, n' = n + 5 past 129
    assert [avatar_latent_frames(n) for n in (25, 129, 130, 250, 251, 375, 750)] == [
        33,
        33,
        65,
        65,
        97,
        97,
        193,
    ]
    audio = torch.ones(1, 130, 2)
    padded = pad_avatar_audio(audio, avatar_latent_frames(130))
    assert padded.shape == (1, 260, 2) and padded[:, 130:].abs().sum() == 0
    with pytest.raises(ValueError, match="longer than"):
        pad_avatar_audio(torch.ones(1, 300, 2), 65)


def test_two_window_run_equals_the_release_loop() -> None:
    """65 latent frames (a 6-10 s voice): two windows that wrap, 12 steps (shifts 0, 10, 20, 30, 7, ...)."""
    model = tiny_model()
    cond = random_conditioning(model.config, TWO_WINDOWS, seed=3)
    assert cond.cond.audio_states is not None and cond.cond.audio_states.shape[1] == 4 * 65
    opts = default_options("avatar", num_steps=12, deepcache=False)
    ours = sample(model, cond, opts)
    ref = _release_loop(model, cond, 12, opts.shift, opts.cfg_scale, opts.seed)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_face_mask_box_enlarged_three_times() -> None:
    # a 10 x 20 px face centred at (40, 30) in an 80 x 64 px (W x H) image -> a 30 x 60 box, clipped at the top
    mask = avatar_face_mask((35.0, 20.0, 45.0, 40.0), (64, 80), (64, 80))
    want = torch.zeros(64, 80)
    want[0:60, 25:55] = 1.0
    assert mask.shape == (1, 1, 1, 64, 80) and torch.equal(mask[0, 0, 0], want)
    small = avatar_face_mask((35.0, 20.0, 45.0, 40.0), (64, 80), (8, 10))
    assert small.shape == (1, 1, 1, 8, 10) and 0 < float(small.mean()) < 1
    assert torch.equal(avatar_face_mask(None, (64, 80), (8, 10)), torch.ones(1, 1, 1, 8, 10))


def test_deepcache_list_and_windowed_cache_resume() -> None:
    kinds = step_kinds(default_options("avatar"))
    reuse = [i for i, k in enumerate(kinds) if k is StepKind.REUSE]
    assert reuse == [*range(16, 20), *range(21, 25), *range(26, 30), *range(31, 35), *range(36, 40)]
    assert [i for i, k in enumerate(kinds) if k is StepKind.STORE] == [15, 20, 25, 30, 35]

    model = tiny_model()
    cond = random_conditioning(model.config, TWO_WINDOWS, seed=4)
    opts = default_options("avatar", num_steps=18)  # cached steps 16 and 17 on shifting windows
    ran: list[int] = [0]
    hook = model.double_blocks[0].register_forward_hook(lambda *_: ran.__setitem__(-1, ran[-1] + 1))
    seen: dict[int, StepCheckpoint] = {}
    try:
        cached = sample(model, cond, opts, checkpoint_every=1, progress=lambda d, n: ran.append(0),
                        on_checkpoint=lambda c: seen.__setitem__(c.step_index, c))  # fmt: skip
    finally:
        hook.remove()
    assert [i for i in range(18) if ran[i] == 0] == [16, 17]  # no double block on cached steps
    assert all(ran[i] == 2 for i in range(16))  # two windows a step
    uncached_seen: dict[int, torch.Tensor] = {}
    sample(model, cond, opts.with_(deepcache=False), checkpoint_every=1,
           on_checkpoint=lambda c: uncached_seen.__setitem__(c.step_index, c.latents))  # fmt: skip
    assert all(torch.equal(seen[s].latents, uncached_seen[s]) for s in range(1, 17))
    assert not torch.equal(seen[17].latents, uncached_seen[17])
    assert (seen[17].latents - uncached_seen[17]).norm() / uncached_seen[17].norm() < 0.1
    # resuming in front of a cached step rebuilds the per-frame cache from step 15 (windows shifted by 150 mod 33)
    assert seen[17].cache_step == 15
    assert torch.equal(sample(model, cond, opts, resume_from=seen[17]), cached)


def test_resume_is_bit_exact_through_the_windows() -> None:
    model = tiny_model()
    cond = random_conditioning(model.config, TWO_WINDOWS, seed=5)
    opts = default_options("avatar", num_steps=13, deepcache=False)
    ckpts: list[StepCheckpoint] = []
    full = sample(model, cond, opts, checkpoint_every=4, on_checkpoint=ckpts.append)
    assert [c.step_index for c in ckpts] == [4, 8, 12]
    for ckpt in ckpts[1:]:  # 8: shift 80 mod 33 = 14; 12: the second CFG phase
        assert torch.equal(sample(model, cond, opts, resume_from=ckpt), full)


@pytest.mark.parametrize("preset_mode", ["avatar", "image"])
def test_skip_uncond_changes_only_the_steps_after_it(preset_mode: str) -> None:
    if preset_mode == "avatar":
        model = tiny_model()
        latent = (3, 2, 4)
    else:
        from model_core.configs import PRESETS

        torch.manual_seed(0)
        model = HunyuanDiT(PRESETS["tiny-hunyuancustom-720p"]).eval()
        latent = (2, 4, 4)
    cond = random_conditioning(model.config, latent, seed=6)
    opts = default_options(preset_mode, num_steps=12, deepcache=False)
    skip = opts.with_(skip_uncond_from=8)
    batches: list[int] = []
    hook = model.double_blocks[0].register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    full_seen: dict[int, torch.Tensor] = {}
    skip_seen: dict[int, torch.Tensor] = {}
    try:
        full = sample(model, cond, opts, checkpoint_every=1,
                      on_checkpoint=lambda c: full_seen.__setitem__(c.step_index, c.latents))  # fmt: skip
        batches.clear()
        skipped = sample(model, cond, skip, checkpoint_every=1,
                         on_checkpoint=lambda c: skip_seen.__setitem__(c.step_index, c.latents))  # fmt: skip
    finally:
        hook.remove()
    assert batches == [2] * 8 + [1] * 4  # only the conditional branch after the skip point
    assert all(torch.equal(full_seen[s], skip_seen[s]) for s in range(1, 9))
    assert not torch.equal(full_seen[9], skip_seen[9]) and not torch.equal(full, skipped)
    # after the skip point the step is the conditional prediction alone
    sigmas = torch.linspace(1, 0, 13)
    sigmas = skip.shift * sigmas / (1 + (skip.shift - 1) * sigmas)
    x = skip_seen[8]
    # the step's conditional branch as CFG has it (Avatar's first phase scales its face mask by 0.6)
    b = avatar_branches(cond, skip, 8)[-1] if preset_mode == "avatar" else cond.cond
    with torch.no_grad():
        v = model(x, (sigmas[8] * 1000).expand(1), b.text_states, b.text_mask, b.text_pooled,
                  ref_latents=b.ref_latents, audio_states=b.audio_states, audio_strength=cond.audio_strength,
                  face_mask=b.face_mask, motion_exp=b.motion_exp, motion_pose=b.motion_pose, fps=b.fps)  # fmt: skip
    torch.testing.assert_close(skip_seen[9], x + v * (sigmas[9] - sigmas[8]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="skip_uncond_from"):
        opts.with_(skip_uncond_from=13)
    with pytest.raises(ValueError, match="cfg_parallel"):
        opts.with_(skip_uncond_from=3, cfg_parallel=True)


def _sp_world(rank: int, world: int) -> dict[str, float]:
    model = tiny_model()
    cond = random_conditioning(model.config, (65, 2, 6), seed=7)  # 102 tokens a window: frames cut by shards
    opts = default_options("avatar", num_steps=18)  # cached steps 16 and 17
    group = dist.group.WORLD
    single = sample(model, cond, opts)
    ckpts: list[StepCheckpoint] = []
    parallel = sample(model, cond, opts, group=group, checkpoint_every=8, on_checkpoint=ckpts.append)
    resumed = sample(model, cond, opts, group=group, resume_from=ckpts[-1])
    # the two CFG branches on the two ranks: each phase's branch pair, per-frame caches of one branch each
    layout = ParallelLayout.create(group, cfg_parallel=True)
    halves = sample(model, cond, opts.with_(cfg_parallel=True), group=layout)
    return {
        "sp": float((parallel - single).abs().max()),
        "cfg_parallel": float((halves - single).abs().max()),
        "resume_step": float(ckpts[-1].step_index),
        "resume_cache_step": float(ckpts[-1].cache_step or -1),
        "resume_exact": float(torch.equal(resumed, parallel)),
    }


def test_sequence_parallel_world_of_2_equals_one_process() -> None:
    for res in run_local_world(_sp_world, 2):
        assert res["sp"] < 1e-5 and res["cfg_parallel"] < 1e-5
        assert (res["resume_step"], res["resume_cache_step"], res["resume_exact"]) == (16.0, 15.0, 1.0)
