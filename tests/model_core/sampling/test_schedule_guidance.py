"""Schedule, Euler step, noise, guidance, per-mode defaults and the DeepCache rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_core.sampling import (
    FlowMatchSchedule,
    SamplingMode,
    cfg_combine,
    deepcache_cached_steps,
    default_options,
    embedded_guidance,
    euler_step,
    identity_cfg_combine,
    identity_scale_at,
    initial_noise,
)


@pytest.mark.parametrize(("steps", "shift"), [(50, 7.0), (30, 13.0), (50, 5.0), (50, 1.0)])
def test_schedule_matches_diffusers_flow_match_euler(steps: int, shift: float) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    ref = FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
    ours = FlowMatchSchedule.create(steps, shift)
    assert ours.sigmas.dtype == torch.float32 and ours.timesteps.dtype == torch.float32
    assert ours.sigmas.shape == (steps + 1,) and ours.timesteps.shape == (steps,)
    # diffusers works in float64 before casting: at most one float32 step apart near t=1000
    assert torch.allclose(ours.sigmas, ref.sigmas.float(), atol=2e-7, rtol=0)
    assert torch.allclose(ours.timesteps, ref.timesteps.float(), atol=1.3e-4, rtol=0)
    assert ours.sigmas[0] == 1.0 and ours.sigmas[-1] == 0.0
    assert bool((ours.sigmas[1:] < ours.sigmas[:-1]).all())


def test_shift_moves_sigmas_towards_noise() -> None:
    plain = FlowMatchSchedule.create(10, 1.0)
    shifted = FlowMatchSchedule.create(10, 7.0)
    assert torch.allclose(plain.sigmas, torch.linspace(1, 0, 11))
    mid = 0.5
    assert shifted.sigmas[5].item() == pytest.approx(7 * mid / (1 + 6 * mid), rel=1e-6)
    assert FlowMatchSchedule.from_state(shifted.state()).sigmas.equal(shifted.sigmas)


def test_not_reversed_runs_zero_to_one() -> None:
    s = FlowMatchSchedule.create(4, 3.0, reverse=False)
    assert s.sigmas[0] == 0.0 and s.sigmas[-1] == 1.0


def test_euler_integrates_the_straight_flow_exactly() -> None:
    """With the exact velocity noise - x0, Euler from sigma 1 to 0 lands on x0 (reverse direction, dt < 0)."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    sched = FlowMatchSchedule.create(7, 5.0)
    x = noise.clone()
    for i in range(7):
        x = euler_step(x, (noise - x0).to(torch.bfloat16), sched.sigmas[i], sched.sigmas[i + 1])
        assert x.dtype == torch.float32
    assert torch.allclose(x, x0, atol=0.05)  # bf16 velocity
    x = noise.clone()
    for i in range(7):
        x = euler_step(x, noise - x0, sched.sigmas[i], sched.sigmas[i + 1])
    assert torch.allclose(x, x0, atol=1e-5)


def test_noise_per_sample_seed_and_device_independent() -> None:
    a = initial_noise((2, 4, 3, 4, 4), seed=1024)
    b0 = initial_noise((1, 4, 3, 4, 4), seed=1024)
    b1 = initial_noise((1, 4, 3, 4, 4), seed=1025)
    assert torch.equal(a, torch.cat([b0, b1]))
    assert a.std().item() == pytest.approx(1.0, abs=0.15)
    assert not torch.equal(a[0], a[1])
    half = initial_noise((2, 4, 3, 4, 4), seed=1024, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.equal(half, a.to(torch.bfloat16))


def test_embedded_guidance_release_rounding() -> None:
    assert embedded_guidance(6.0, 2).tolist() == [6016.0, 6016.0]
    assert embedded_guidance(6.0, 1, release_rounding=False).tolist() == [6000.0]
    assert embedded_guidance(1.0, 1).tolist() == [1000.0]  # representable in bf16
    assert embedded_guidance(6.0, 1).dtype == torch.float32


def test_cfg_and_identity_guidance_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    u, t, i = (torch.randn(3, 5, generator=g) for _ in range(3))
    assert torch.allclose(cfg_combine(u, t, 1.0), t, atol=1e-6)
    assert torch.allclose(cfg_combine(u, t, 7.5), u + 7.5 * (t - u))
    # identity branch equal to the text branch: plain CFG
    assert torch.allclose(identity_cfg_combine(u, t, t, 7.5, 3.0), cfg_combine(u, t, 7.5))
    assert torch.allclose(identity_cfg_combine(u, t, i, 7.5, 2.0), u + 7.5 * (t - u) + 2.0 * (i - t))


def test_identity_scale_follows_the_release_decrement() -> None:
    """HunyuanCustom: start_scale -= (ip - 1) / (N - 1 + 1e-3) after every step, from ip at step 0."""
    for ip, n in ((3.0, 30), (4.0, 50), (2.5, 3)):
        release, start = [], ip
        step_scale = (start - 1.0) / (n - 1 + 1e-3)
        for _ in range(n):
            release.append(start)
            start -= step_scale
        assert [identity_scale_at(i, n, ip) for i in range(n)] == release  # bit for bit
    assert identity_scale_at(0, 30, 4.0) == 4.0
    assert identity_scale_at(29, 30, 3.0) == pytest.approx(1.0 + 2.0 * 1e-3 / (29 + 1e-3), rel=1e-12)
    assert identity_scale_at(29, 30, 3.0) > 1.0  # the release never quite reaches 1.0
    assert identity_scale_at(0, 1, 3.0) == 3.0
    with pytest.raises(ValueError, match="step 30 is outside 0..29"):
        identity_scale_at(30, 30, 3.0)


def test_mode_defaults_follow_the_releases() -> None:
    t2v = default_options("t2v")
    assert (t2v.num_steps, t2v.shift, t2v.cfg_scale, t2v.embedded_guidance) == (50, 7.0, 1.0, 6.0)
    assert t2v.num_branches == 1
    for mode in (SamplingMode.IMAGE, SamplingMode.AUDIO):
        o = default_options(mode)
        assert (o.num_steps, o.shift, o.cfg_scale, o.embedded_guidance, o.deepcache) == (
            30,
            13.0,
            7.5,
            None,
            True,
        )
        assert o.num_branches == 2
    edit = default_options("editing")
    assert (edit.num_steps, edit.shift, edit.cfg_scale) == (50, 5.0, 7.5)
    assert default_options("image", ip_cfg_scale=2.0).num_branches == 3
    with pytest.raises(
        ValueError, match="unknown sampling mode 'i2v'; expected one of: t2v, image, audio, editing"
    ):
        default_options("i2v")
    with pytest.raises(ValueError, match="ip_cfg_scale > 0 needs real CFG"):
        default_options("t2v", ip_cfg_scale=2.0)
    with pytest.raises(
        ValueError, match=r"unknown sampling option\(s\) steps; valid options: num_steps, shift"
    ):
        default_options("image", steps=4)


def test_options_digest_ignores_cfg_parallel_only() -> None:
    o = default_options("image")
    assert o.digest() == o.with_(cfg_parallel=True).digest()
    assert o.digest() != o.with_(seed=7).digest()
    assert o.digest() != o.with_(deepcache=False).digest()


def test_deepcache_rule_at_30_steps() -> None:
    assert deepcache_cached_steps(30) == {11, 12, 14, 15, 17, 18, 20, 21}
    assert deepcache_cached_steps(50) == frozenset()
    assert deepcache_cached_steps(29) == frozenset()
    assert deepcache_cached_steps(30, enabled=False) == frozenset()
