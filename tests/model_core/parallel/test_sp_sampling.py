"""Sampling on spawned gloo worlds equals sampling on one process (Ulysses split, CFG-parallel, DeepCache,
resume).

One world per test: every check runs inside it, so the interpreter start-up is paid once.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT
from model_core.parallel import ParallelLayout, SPGroup
from model_core.parallel.launch import run_local_world
from model_core.parallel.volume import forward_volume
from model_core.sampling import BranchInputs, Denoiser, StepCheckpoint, StepKind, default_options, sample
from model_core.sampling.random_inputs import random_conditioning

# (preset, mode, latent T, H, W): every image-token count is odd, so the split pads
CASES = [
    ("tiny-hunyuanvideo-t2v-720p", "t2v", (3, 6, 6)),  # 27 video tokens
    ("tiny-hunyuancustom-720p", "image", (2, 6, 6)),  # 9 identity + 18 video tokens
    ("tiny-hunyuancustom-audio-720p", "audio", (2, 6, 6)),
    ("tiny-hunyuancustom-editing-720p", "editing", (2, 6, 6)),
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _model(preset: str) -> HunyuanDiT:
    torch.manual_seed(0)  # the same weights on every rank
    return HunyuanDiT(PRESETS[preset]).eval()


def _count_forward_bytes(
    model: HunyuanDiT, cond_inputs: BranchInputs, latent: tuple[int, int, int]
) -> dict[str, int]:
    """Bytes this rank sends in one forward, counted at the collectives (which still run)."""
    sent = {"all_to_all": 0, "all_gather": 0}
    real_a2a, real_gather = dist.all_to_all_single, dist.all_gather
    world = dist.get_world_size()

    def a2a(out, inp, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent["all_to_all"] += inp.numel() * inp.element_size() * (world - 1) // world
        return real_a2a(out, inp, *args, **kwargs)

    def gather(outs, inp, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent["all_gather"] += inp.numel() * inp.element_size() * (world - 1)
        return real_gather(outs, inp, *args, **kwargs)

    dist.all_to_all_single, dist.all_gather = a2a, gather
    try:
        x = torch.zeros(cond_inputs.batch, 16, *latent)
        Denoiser(model, SPGroup.from_group(dist.group.WORLD))(
            x, torch.full((cond_inputs.batch,), 500.0), cond_inputs
        )
    finally:
        dist.all_to_all_single, dist.all_gather = real_a2a, real_gather
    return sent


def _world(rank: int, world: int, steps: int) -> dict[str, float]:
    group = dist.group.WORLD
    cfg_layout = ParallelLayout.create(group, cfg_parallel=True)  # once per job, as the sampling step does
    out: dict[str, float] = {}
    for preset, mode, latent in CASES:
        model = _model(preset)
        cond = random_conditioning(model.config, latent, seed=11)
        opts = default_options(mode, num_steps=steps, deepcache=False)
        single = sample(model, cond, opts)
        # the blocks really see a shard: ceil(27 / world) image tokens
        seen: list[int] = []
        hook = model.double_blocks[0].register_forward_pre_hook(
            lambda _m, args, seen=seen: seen.append(args[0].shape[1])
        )
        parallel = sample(model, cond, opts, group=group)
        hook.remove()
        out[f"local_tokens/{mode}"] = float(max(seen))
        out[f"sp/{mode}"] = _rel(parallel, single)
        if mode in ("image", "audio"):
            # CFG branches on the two halves of the ranks equal the batched [uncond, cond]
            out[f"cfg_parallel/{mode}"] = _rel(
                sample(model, cond, opts.with_(cfg_parallel=True), group=cfg_layout), single
            )

        if mode == "editing":
            # the communication volume formula of the benchmark equals what the collectives carry
            inputs = BranchInputs.concat([cond.uncond, cond.cond])  # type: ignore[list-item]
            sent = _count_forward_bytes(model, inputs, latent)
            want = forward_volume(model.config, image_tokens=27, text_tokens=inputs.text_states.shape[1], batch=2,
                                  degree=world, bytes_per_element=4)  # fmt: skip
            out["volume_a2a_match"] = float(sent["all_to_all"] == want.all_to_all > 0)
            out["volume_gather_match"] = float(sent["all_gather"] == want.all_gather > 0)

        if mode == "audio":
            # DeepCache store/reuse on shards equals the single-process denoiser
            x = torch.randn(2, 16, *latent, generator=torch.Generator().manual_seed(3))
            t1, t2 = torch.tensor([950.0, 950.0]), torch.tensor([800.0, 800.0])
            inputs = BranchInputs.concat([cond.uncond, cond.cond])  # type: ignore[list-item]
            results = []
            for sp in (SPGroup.single(), SPGroup.from_group(group)):
                den = Denoiser(model, sp)
                den(x, t1, inputs, audio_strength=0.8, kind=StepKind.STORE)
                results.append(den(x, t2, inputs, audio_strength=0.8, kind=StepKind.REUSE))
            out["deepcache_reuse/audio"] = _rel(results[1], results[0])

        if mode == "image":
            # resume under parallelism: bit-exact against the uninterrupted parallel run
            ckpts: list[StepCheckpoint] = []
            sample(model, cond, opts, group=group, checkpoint_every=2, on_checkpoint=ckpts.append)
            resumed = sample(model, cond, opts, group=group, resume_from=ckpts[0])
            out["resume_exact/image"] = float(torch.equal(resumed, parallel))
            out["resume_ckpts"] = float(len(ckpts))
            # DeepCache at 30 steps on shards equals one process; resuming in front of a cached step
            # (step 12, the cache rebuilt on the shards from step 10's latents) is bit-exact
            dc_opts = default_options(mode, deepcache=True)
            dc_ckpts: list[StepCheckpoint] = []
            dc_parallel = sample(model, cond, dc_opts, group=group, checkpoint_every=12,
                                 on_checkpoint=dc_ckpts.append)  # fmt: skip
            out["deepcache/image"] = _rel(dc_parallel, sample(model, cond, dc_opts))
            out["deepcache_resume_cache_step"] = float(dc_ckpts[0].cache_step or -1)
            dc_resumed = sample(model, cond, dc_opts, group=group, resume_from=dc_ckpts[0])
            out["deepcache_resume_exact/image"] = float(torch.equal(dc_resumed, dc_parallel))
    return out


def _check(results: list[dict[str, float]], steps: int) -> None:
    first = results[0]
    for res in results:
        assert res.keys() == first.keys()
        for key, value in res.items():
            if key.startswith(("sp/", "cfg_parallel/", "deepcache_reuse/", "deepcache/")):
                assert value < 1e-5, (key, value)
        for mode in ("t2v", "image", "audio", "editing"):
            assert res[f"local_tokens/{mode}"] == -(-27 // len(results))
        assert res["volume_a2a_match"] == 1.0 and res["volume_gather_match"] == 1.0
        assert res["resume_exact/image"] == 1.0
        assert res["resume_ckpts"] == (steps - 1) // 2
        assert res["deepcache_resume_cache_step"] == 10.0
        assert res["deepcache_resume_exact/image"] == 1.0
    assert {k.split("/")[1] for k in first if k.startswith("sp/")} == {"t2v", "image", "audio", "editing"}


def test_world_of_2_equals_one_process() -> None:
    _check(run_local_world(_world, 2, 3), 3)


@pytest.mark.slow
def test_world_of_4_equals_one_process() -> None:
    _check(run_local_world(_world, 4, 5), 5)
