"""Foley sampling: CFG with the unconditional row first, the release's schedule, strict loading without REPA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_core.audio.foley.config import FOLEY_PRESETS
from model_core.audio.foley.model import FoleyDiT
from model_core.audio.foley.sampling import FoleyConditioning, load_foley, sample_foley
from model_core.checkpoints import CheckpointMismatchError
from model_core.sampling.checkpoint import StepCheckpoint

TINY = FOLEY_PRESETS["tiny-hunyuanvideo-foley"]


def _model() -> FoleyDiT:
    torch.manual_seed(0)
    model = FoleyDiT(TINY).eval()
    with torch.no_grad():
        model.empty_clip_feat.normal_()
        model.empty_sync_feat.normal_()
    return model


def _cond(length: int = 21) -> FoleyConditioning:
    g = torch.Generator().manual_seed(2)
    return FoleyConditioning(
        clip=torch.randn(1, 4, TINY.clip_dim, generator=g),
        sync=torch.randn(1, 16, TINY.sync_dim, generator=g),
        text=torch.randn(1, 6, TINY.text_dim, generator=g),
        negative_text=torch.randn(1, 6, TINY.text_dim, generator=g),
        length=length,
    )


def test_cfg_combines_an_unconditional_first_row_with_empty_visual_features() -> None:
    model, cond = _model(), _cond()
    steps: list[tuple[int, int]] = []
    out = sample_foley(
        model, cond, num_steps=3, guidance_scale=4.5, seed=5, progress=lambda d, n: steps.append((d, n))
    )
    assert out.shape == (1, TINY.latent_dim, 21) and out.dtype == torch.float32
    assert steps == [(1, 3), (2, 3), (3, 3)]

    # the same loop written out: sigmas 1, 2/3, 1/3, 0 (shift 1), timesteps 1000 sigma
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, TINY.latent_dim, 21, generator=gen)
    empty_clip = model.empty_clip_feat.detach().expand(1, 4, -1)
    empty_sync = model.empty_sync_feat.detach().expand(1, 16, -1)
    sigmas = torch.linspace(1, 0, 4)
    with torch.no_grad():
        for i in range(3):
            t = (sigmas[i] * 1000).expand(1)
            v_u = model(x, t, empty_clip, cond.negative_text, empty_sync)
            v_c = model(x, t, cond.clip, cond.text, cond.sync)
            x = x + (v_u + 4.5 * (v_c - v_u)) * (sigmas[i + 1] - sigmas[i])
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


def test_guidance_one_runs_the_conditional_branch_alone() -> None:
    model, cond = _model(), _cond()
    out = sample_foley(model, cond, num_steps=2, guidance_scale=1.0, seed=1)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="tokenize them together"):
        sample_foley(
            model, FoleyConditioning(cond.clip, cond.sync, cond.text, cond.text[:, :3], 21), num_steps=1
        )


def test_load_drops_repa_keys_and_is_strict(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "hunyuanvideo_foley.pth"
    torch.save({**model.state_dict(), "repa_proj.weight": torch.zeros(3)}, path)
    loaded, dropped = load_foley(path, TINY)
    assert dropped == ["repa_proj.weight"]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    broken = dict(model.state_dict())
    broken.pop("final_layer.adaLN_modulation.1.bias")
    torch.save(broken, path)
    with pytest.raises(CheckpointMismatchError, match="adaLN_modulation"):
        load_foley(path, TINY)


def test_checkpoints_resume_to_the_same_latents_bit_for_bit(tmp_path: Path) -> None:
    model, cond = _model(), _cond()
    saved: list[StepCheckpoint] = []
    full = sample_foley(model, cond, num_steps=5, seed=3, checkpoint_every=2, on_checkpoint=saved.append)
    assert [c.step_index for c in saved] == [2, 4]
    for ckpt in saved:
        reread = StepCheckpoint.load(ckpt.save(tmp_path / f"step{ckpt.step_index}.safetensors"))
        steps: list[int] = []
        resumed = sample_foley(
            model, cond, num_steps=5, seed=3, resume_from=reread, progress=lambda d, n, s=steps: s.append(d)
        )
        assert torch.equal(resumed, full) and steps == list(range(ckpt.step_index + 1, 6))
    with pytest.raises(ValueError, match="other Foley settings"):
        sample_foley(model, cond, num_steps=5, seed=4, resume_from=saved[0])
    with pytest.raises(ValueError, match="this clip needs"):
        sample_foley(model, _cond(length=22), num_steps=5, seed=3, resume_from=saved[0])


def test_a_release_loads_the_mmdit_in_bf16_and_keeps_the_dac_encoder_half_parked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the step loads a release on a GPU: bf16 MMDiT (the production dtype), float32 DAC-VAE and Synchformer,
    the DAC's unused encoder half on the park device (`meta` here: visibly off the compute device), and the
    training-only keys left out by name and listed."""
    from model_core.audio.foley import offload
    from model_core.audio.foley.release import load_release
    from model_core.audio.foley.tiny import write_tiny_foley
    from model_core.configs import FOLEY_RELEASES

    preset = next(name for name, r in FOLEY_RELEASES.items() if r.dit == "tiny-hunyuanvideo-foley")
    release = FOLEY_RELEASES[preset]
    folder = write_tiny_foley(preset, tmp_path)
    state = torch.load(folder / release.dit_file, weights_only=True)
    torch.save({**state, "repa_head.0.weight": torch.zeros(2)}, folder / release.dit_file)
    monkeypatch.setattr(offload, "PARK_DEVICE", torch.device("meta"))
    models = load_release(folder, release, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in models.dit.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in models.synchformer.parameters()} == {torch.float32}
    assert {(p.dtype, p.device.type) for p in models.dac.decoder.parameters()} == {(torch.float32, "cpu")}
    assert {
        p.device.type for p in [*models.dac.encoder.parameters(), *models.dac.quant_conv.parameters()]
    } == {"meta"}
    assert "repa_head.0.weight" in models.dropped
