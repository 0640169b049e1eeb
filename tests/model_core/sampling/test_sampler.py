"""The sampling loop on one process: against a hand-written loop over the DiT's own forward, DeepCache, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT
from model_core.parallel import SPGroup
from model_core.sampling import (
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
                s = ip + (1.0 - ip) * i / (steps - 1)
                vel = v[:1] + cfg * (v[1:2] - v[:1]) + s * (v[2:] - v[1:2])
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
    for step in range(1, 11):
        assert torch.equal(seen[step], uncached_seen[step]), step
    assert {11, 12, 14} & set(seen) == set()  # no checkpoint right before a reused step
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
        import dataclasses

        state = model.run_single_blocks(dataclasses.replace(state, vec=vec), len(model.single_blocks) - 1)
        want = model.final(state)
    assert torch.equal(got, want)


def test_resume_from_any_checkpoint_is_bit_exact(tmp_path: Path) -> None:
    model = _model("tiny-hunyuancustom-audio-720p")
    cond = random_conditioning(model.config, (2, 2, 4), seed=6)
    opts = default_options("audio")  # 30 steps with DeepCache
    ckpts: list[StepCheckpoint] = []
    full = sample(model, cond, opts, checkpoint_every=4, on_checkpoint=ckpts.append)
    # every 4 steps, moved past the reused steps: 4, 8, 13 (step 12 reuses the cache), ...
    steps = [c.step_index for c in ckpts]
    assert steps[:3] == [4, 8, 13] and all(step_kinds(opts)[s] is not StepKind.REUSE for s in steps)
    for c in (ckpts[0], ckpts[2], ckpts[-1]):
        path = c.save(tmp_path / f"step{c.step_index}.safetensors")
        loaded = StepCheckpoint.load(path)
        assert loaded.step_index == c.step_index and torch.equal(loaded.latents, c.latents)
        resumed = sample(model, cond, opts, resume_from=loaded)
        assert torch.equal(resumed, full), c.step_index


def test_resume_refuses_other_options_and_foreign_files(tmp_path: Path) -> None:
    model = _model("tiny-hunyuanvideo-t2v-720p")
    cond = random_conditioning(model.config, (1, 4, 4), seed=7)
    opts = default_options("t2v", num_steps=4)
    ckpts: list[StepCheckpoint] = []
    sample(model, cond, opts, checkpoint_every=2, on_checkpoint=ckpts.append)
    assert [c.step_index for c in ckpts] == [2]
    with pytest.raises(ValueError, match="other sampling options"):
        sample(model, cond, opts.with_(seed=5), resume_from=ckpts[0])
    from safetensors.torch import save_file

    save_file({"latents": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="is not a sampling step checkpoint"):
        StepCheckpoint.load(tmp_path / "x.safetensors")


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
