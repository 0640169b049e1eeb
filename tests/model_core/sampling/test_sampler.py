"""The sampling loop on one process: against a hand-written loop over the DiT's own forward, DeepCache, resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import model_core.sampling.sampler as sampler_module
from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT
from model_core.parallel import ParallelLayout, SPGroup
from model_core.sampling import (
    BranchInputs,
    Conditioning,
    Denoiser,
    StepCheckpoint,
    StepKind,
    default_options,
    sample,
    step_kinds,
)
from model_core.sampling.random_inputs import random_conditioning

CASES = [
    ("tiny-hunyuanvideo-t2v-720p", "t2v"),
    ("tiny-hunyuancustom-720p", "image"),
    ("tiny-hunyuancustom-audio-720p", "audio"),
    ("tiny-hunyuancustom-editing-720p", "editing"),
]
LATENT = (3, 6, 6)


def _model(preset: str) -> HunyuanDiT:
    torch.manual_seed(0)
    return HunyuanDiT(PRESETS[preset]).eval()


def _reference_sample(model: HunyuanDiT, cond: Conditioning, steps: int, shift: float, cfg: float,
                      embedded: float | None, seed: int, ip: float = 0.0) -> torch.Tensor:  # fmt: skip
    """The release's loop written out: model.forward on the [uncond, (text,) cond] batch, fp32 Euler."""
    sigmas = torch.linspace(1, 0, steps + 1, dtype=torch.float32)
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    x = torch.randn(1, 16, *LATENT, generator=torch.Generator().manual_seed(seed))
    branches = [cond.cond] if cfg <= 1 else [cond.uncond, cond.cond]
    if ip > 0:
        branches = [cond.uncond, cond.cond_blank_identity, cond.cond]
    n = len(branches)

    def cat(name: str) -> torch.Tensor | None:
        vals = [getattr(b, name) for b in branches]
        return None if vals[0] is None else torch.cat(vals)

    guidance = None if embedded is None else (torch.tensor([embedded] * n).to(torch.bfloat16) * 1000).float()
    start_scale, step_scale = ip, (ip - 1.0) / (steps - 1 + 1e-3)
    with torch.no_grad():
        for i in range(steps):
            t = (sigmas[i] * 1000).expand(n)
            v = model(x.repeat(n, 1, 1, 1, 1), t, cat("text_states"), cat("text_mask"), cat("text_pooled"),
                      guidance=guidance, ref_latents=cat("ref_latents"), audio_states=cat("audio_states"),
                      audio_strength=cond.audio_strength, video_cond=cat("video_cond"))  # fmt: skip
            if n == 1:
                vel = v
            elif n == 2:
                vel = v[:1] + cfg * (v[1:] - v[:1])
            else:
                vel = v[:1] + cfg * (v[1:2] - v[:1]) + start_scale * (v[2:] - v[1:2])
                start_scale -= step_scale
            x = x + vel.float() * (sigmas[i + 1] - sigmas[i])
    return x


@pytest.mark.parametrize(("preset", "mode"), CASES)
def test_sample_equals_the_release_loop_over_model_forward(preset: str, mode: str) -> None:
    model = _model(preset)
    cond = random_conditioning(model.config, LATENT, seed=1)
    opts = default_options(mode, num_steps=3, deepcache=False)
    ours = sample(model, cond, opts)
    ref = _reference_sample(model, cond, 3, opts.shift, opts.cfg_scale, opts.embedded_guidance, opts.seed)
    assert ours.dtype == torch.float32 and ours.shape == (1, 16, *LATENT)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-5), (ours - ref).abs().max()
    # the conditioning matters: another prompt gives other latents
    other = random_conditioning(model.config, LATENT, seed=2)
    assert (sample(model, other, opts) - ours).abs().max() > 1e-3


def test_identity_guidance_three_branches() -> None:
    model = _model("tiny-hunyuancustom-720p")
    cond = random_conditioning(model.config, LATENT, seed=3)
    opts = default_options("image", num_steps=3, deepcache=False, ip_cfg_scale=2.5)
    ours = sample(model, cond, opts)
    ref = _reference_sample(model, cond, 3, opts.shift, opts.cfg_scale, None, opts.seed, ip=2.5)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-5)
    plain = sample(model, cond, opts.with_(ip_cfg_scale=0.0))
    assert (plain - ours).abs().max() > 1e-3


def test_deepcache_rule_and_full_steps_equal_uncached() -> None:
    model = _model("tiny-hunyuancustom-720p")
    cond = random_conditioning(model.config, (1, 4, 4), seed=4)
    opts = default_options("image")  # 30 steps, DeepCache on
    kinds = step_kinds(opts)
    assert [i for i, k in enumerate(kinds) if k is StepKind.REUSE] == [11, 12, 14, 15, 17, 18, 20, 21]
    assert [i for i, k in enumerate(kinds) if k is StepKind.STORE] == [10, 13, 16, 19]
    assert all(k is StepKind.FULL for k in step_kinds(opts.with_(num_steps=50)))

    # which blocks run at each step, seen through forward hooks
    ran: list[set[str]] = [set()]
    hooks = [
        model.double_blocks[0].register_forward_hook(lambda *_: ran[-1].add("double")),
        model.single_blocks[0].register_forward_hook(lambda *_: ran[-1].add("single0")),
        model.single_blocks[-1].register_forward_hook(lambda *_: ran[-1].add("last")),
    ]
    seen: dict[int, torch.Tensor] = {}
    try:
        cached = sample(model, cond, opts, checkpoint_every=1, progress=lambda done, n: ran.append(set()),
                        on_checkpoint=lambda c: seen.__setitem__(c.step_index, c.latents))  # fmt: skip
    finally:
        for h in hooks:
            h.remove()
    full_steps = [i for i in range(30) if ran[i] == {"double", "single0", "last"}]
    reuse_steps = [i for i in range(30) if ran[i] == {"last"}]
    assert full_steps == [*range(11), 13, 16, 19, *range(22, 30)]
    assert reuse_steps == [11, 12, 14, 15, 17, 18, 20, 21]

    uncached_seen: dict[int, torch.Tensor] = {}
    uncached = sample(model, cond, opts.with_(deepcache=False), checkpoint_every=1,
                      on_checkpoint=lambda c: uncached_seen.__setitem__(c.step_index, c.latents))  # fmt: skip
    # identical up to the first reused step; the cached run then departs (but stays close)
    for step in range(1, 12):
        assert torch.equal(seen[step], uncached_seen[step]), step
    assert not torch.equal(seen[12], uncached_seen[12])
    assert not torch.equal(cached, uncached)
    assert (cached - uncached).norm() / uncached.norm() < 0.5


def test_reuse_step_is_last_single_block_on_cached_input() -> None:
    model = _model("tiny-hunyuancustom-720p")
    cond = random_conditioning(model.config, (1, 4, 4), seed=5)
    inputs = cond.cond
    x = torch.randn(1, 16, 1, 4, 4)
    t1, t2 = torch.tensor([900.0]), torch.tensor([700.0])
    den = Denoiser(model, SPGroup.single())
    with pytest.raises(RuntimeError, match="needs a preceding STORE step"):
        den(x, t2, inputs, kind=StepKind.REUSE)
    den(x, t1, inputs, kind=StepKind.STORE)
    got = den(x * 3, t2, inputs, kind=StepKind.REUSE)  # x is ignored on a reused step
    with torch.no_grad():
        state = model.embed(x, t1, inputs.text_states, inputs.text_mask, inputs.text_pooled,
                            ref_latents=inputs.ref_latents)  # fmt: skip
        state = model.run_double_blocks(state)
        state = model.run_single_blocks(state, 0, len(model.single_blocks) - 1)
        vec = model.embed_vec(t2, inputs.text_pooled)
        state = model.run_single_blocks(dataclasses.replace(state, vec=vec), len(model.single_blocks) - 1)
        want = model.final(state)
    assert torch.equal(got, want)


def test_deepcache_every_step_against_the_uncached_forward_and_the_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Within a 30-step DeepCache run: every full step's velocity is the plain model forward on that step's
    latents; every cached step's is the last single block (new vec) on the previous full step's stored input."""
    model = _model("tiny-hunyuancustom-720p")
    cond = random_conditioning(model.config, (1, 4, 4), seed=9)
    calls: list[tuple[torch.Tensor, torch.Tensor, StepKind, torch.Tensor]] = []

    class Recording(Denoiser):
        def __call__(self, x, t, inputs, **kw):  # type: ignore[no-untyped-def]
            v = super().__call__(x, t, inputs, **kw)
            calls.append((x.clone(), t.clone(), kw["kind"], v.clone()))
            return v

    monkeypatch.setattr(sampler_module, "Denoiser", Recording)
    sample(model, cond, default_options("image"))
    assert len(calls) == 30
    inputs = BranchInputs.concat([cond.uncond, cond.cond])  # type: ignore[list-item]
    args = (inputs.text_states, inputs.text_mask, inputs.text_pooled)
    last = len(model.single_blocks) - 1
    stored: tuple[torch.Tensor, torch.Tensor] | None = None
    with torch.no_grad():
        for i, (x, t, kind, v) in enumerate(calls):
            uncached = model(x, t, *args, ref_latents=inputs.ref_latents)
            if kind is StepKind.REUSE:
                assert stored is not None
                state = model.embed(stored[0], stored[1], *args, ref_latents=inputs.ref_latents)
                state = model.run_single_blocks(model.run_double_blocks(state), 0, last)
                state = dataclasses.replace(state, vec=model.embed_vec(t, inputs.text_pooled))
                want = model.final(model.run_single_blocks(state, last))
                assert torch.allclose(v, want, rtol=0, atol=1e-6), i
                assert (v - uncached).abs().max() > 1e-4, i  # really the cache, not a full forward
            else:
                assert torch.allclose(v, uncached, rtol=0, atol=1e-6), i
                stored = (x, t)
    assert [i for i, c in enumerate(calls) if c[2] is StepKind.REUSE] == [11, 12, 14, 15, 17, 18, 20, 21]


def test_resume_from_any_checkpoint_is_bit_exact(tmp_path: Path) -> None:
    model = _model("tiny-hunyuancustom-audio-720p")
    cond = random_conditioning(model.config, (2, 2, 4), seed=6)
    opts = default_options("audio")  # 30 steps with DeepCache
    ckpts: list[StepCheckpoint] = []
    full = sample(model, cond, opts, checkpoint_every=4, on_checkpoint=ckpts.append)
    # every 4 steps exactly, also in front of reused steps (12 and 20), which carry the cache's input
    assert [c.step_index for c in ckpts] == [4, 8, 12, 16, 20, 24, 28]
    by_step = {c.step_index: c for c in ckpts}
    assert by_step[12].cache_step == 10 and by_step[20].cache_step == 19
    assert by_step[8].cache_latents is None and by_step[8].cache_step is None
    for step in (8, 12, 28):
        c = by_step[step]
        path = c.save(tmp_path / f"step{c.step_index}.safetensors")
        loaded = StepCheckpoint.load(path)
        assert loaded.step_index == c.step_index and torch.equal(loaded.latents, c.latents)
        assert loaded.cache_step == c.cache_step and torch.equal(loaded.rng_state, c.rng_state)
        resumed = sample(model, cond, opts, resume_from=loaded)
        assert torch.equal(resumed, full), c.step_index
    # a checkpoint in front of a reused step without its cache input cannot resume exactly: refused
    with pytest.raises(ValueError, match="precedes a DeepCache step and needs the latents of step 10"):
        sample(
            model,
            cond,
            opts,
            resume_from=dataclasses.replace(by_step[12], cache_latents=None, cache_step=None),
        )


def test_resume_restores_the_generator_state() -> None:
    model = _model("tiny-hunyuanvideo-t2v-720p")
    cond = random_conditioning(model.config, (1, 2, 2), seed=10)
    opts = default_options("t2v", num_steps=4)
    ckpts: list[StepCheckpoint] = []
    sample(model, cond, opts, checkpoint_every=1, on_checkpoint=ckpts.append)
    fresh = torch.Generator().manual_seed(opts.seed).get_state()
    assert all(torch.equal(c.rng_state, fresh) for c in ckpts)  # Euler draws nothing after the noise
    # a resumed run continues from the checkpoint's generator, not from a reseeded one
    moved = torch.Generator().manual_seed(99)
    torch.randn(5, generator=moved)
    later: list[StepCheckpoint] = []
    sample(model, cond, opts, resume_from=dataclasses.replace(ckpts[0], rng_state=moved.get_state()),
           checkpoint_every=1, on_checkpoint=later.append)  # fmt: skip
    assert [c.step_index for c in later] == [2, 3]
    assert all(torch.equal(c.rng_state, moved.get_state()) for c in later)
    with pytest.raises(ValueError, match="rng_state .* is not a CPU generator state"):
        sample(
            model,
            cond,
            opts,
            resume_from=dataclasses.replace(ckpts[0], rng_state=torch.zeros(3, dtype=torch.uint8)),
        )


def test_resume_refuses_other_options_and_foreign_files(tmp_path: Path) -> None:
    model = _model("tiny-hunyuanvideo-t2v-720p")
    cond = random_conditioning(model.config, (1, 4, 4), seed=7)
    opts = default_options("t2v", num_steps=4)
    ckpts: list[StepCheckpoint] = []
    sample(model, cond, opts, checkpoint_every=2, on_checkpoint=ckpts.append)
    assert [c.step_index for c in ckpts] == [2]
    ckpt = ckpts[0]
    with pytest.raises(ValueError, match="other sampling options"):
        sample(model, cond, opts.with_(seed=5), resume_from=ckpt)
    with pytest.raises(ValueError, match="checkpoint schedule .* differs"):
        sample(
            model, cond, opts, resume_from=dataclasses.replace(ckpt, schedule={**ckpt.schedule, "shift": 1.0})
        )
    with pytest.raises(ValueError, match=r"checkpoint latents are \(1, 16, 1, 2, 2\), this unit needs"):
        sample(model, cond, opts, resume_from=dataclasses.replace(ckpt, latents=torch.zeros(1, 16, 1, 2, 2)))
    with pytest.raises(ValueError, match="step_index 9 is outside 0..4"):
        sample(model, cond, opts, resume_from=dataclasses.replace(ckpt, step_index=9))
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        sample(model, cond, opts, checkpoint_every=0)
    with pytest.raises(ValueError, match="cache_latents and cache_step are set together"):
        dataclasses.replace(ckpt, cache_step=3).save(tmp_path / "half.safetensors")
    from safetensors.torch import save_file

    save_file({"latents": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="is not a sampling step checkpoint"):
        StepCheckpoint.load(tmp_path / "x.safetensors")
    path = ckpt.save(tmp_path / "ok.safetensors")
    meta_v2 = {"format": "adrender.sampling.step_checkpoint", "format_version": "2"}
    save_file({"latents": torch.zeros(1)}, str(tmp_path / "v2.safetensors"), metadata=meta_v2)
    with pytest.raises(ValueError, match="format_version 2, this code reads 1"):
        StepCheckpoint.load(tmp_path / "v2.safetensors")
    # an uninterrupted final answer from the saved file
    assert torch.equal(
        sample(model, cond, opts, resume_from=StepCheckpoint.load(path)), sample(model, cond, opts)
    )


def test_parallel_options_are_checked() -> None:
    model = _model("tiny-hunyuancustom-720p")
    with pytest.raises(ValueError, match="degree 3 does not divide the 4 attention heads"):
        Denoiser(model, SPGroup(group=None, rank=0, degree=3))
    cond = random_conditioning(model.config, (1, 4, 4), seed=8)
    with pytest.raises(ValueError, match="cfg_parallel needs a process group"):
        sample(model, cond, default_options("image", num_steps=2, cfg_parallel=True))
    with pytest.raises(ValueError, match="needs Conditioning.uncond"):
        sample(
            model, Conditioning(latent_size=(1, 4, 4), cond=cond.cond), default_options("image", num_steps=2)
        )
    with pytest.raises(ValueError, match="needs Conditioning.cond_blank_identity"):
        sample(model, dataclasses.replace(cond, cond_blank_identity=None),
               default_options("image", num_steps=2, ip_cfg_scale=2.0))  # fmt: skip
    with pytest.raises(ValueError, match="cfg_parallel runs exactly two branches"):
        sample(model, cond, default_options("image", num_steps=2, ip_cfg_scale=2.0, cfg_parallel=True))
    with pytest.raises(ValueError, match="ParallelLayout was built with cfg_parallel=False"):
        sample(
            model,
            cond,
            default_options("image", num_steps=2, cfg_parallel=True),
            group=ParallelLayout.create(None),
        )
