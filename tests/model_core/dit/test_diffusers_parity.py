"""Our forward against diffusers' HunyuanVideoTransformer3DModel, loaded through diffusers' own converter.

The official-layout random state dict goes through `convert_hunyuan_video_transformer_to_diffusers` (the
converter behind `from_single_file`), with the single blocks' `linear1` split at the tiny width
(`tests/diffusers_twins.py`). diffusers is a declared test dependency (the dev extra): a missing install fails
the fixture instead of skipping the one independent reference of the DiT forward.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from model_core.configs import PRESETS
from tests.diffusers_twins import diffusers_dit

PRESET = "tiny-hunyuanvideo-t2v-720p"


@pytest.fixture(scope="module")
def models(model_factory: Callable[..., torch.nn.Module]) -> tuple[torch.nn.Module, torch.nn.Module]:
    cfg = PRESETS[PRESET]
    ours = model_factory(PRESET, seed=3)
    theirs = diffusers_dit(cfg, ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize(
    ("shape", "valid"),
    [
        ((3, 4, 6), (6, 2)),  # two samples, text padded by different amounts
        ((2, 6, 4), (9, 1)),  # a sample with no padding, one with a single real token; non-square grid
        ((1, 2, 2), (4,)),  # one latent frame, batch of one
    ],
)
def test_forward_matches_diffusers(
    models: tuple[torch.nn.Module, torch.nn.Module],
    inputs_factory: Callable[..., object],
    shape: tuple[int, int, int],
    valid: tuple[int, ...],
) -> None:
    ours, theirs = models
    frames, height, width = shape
    inp = inputs_factory(
        PRESETS[PRESET], batch=len(valid), frames=frames, height=height, width=width, text_len=9, valid=valid
    )
    guidance = torch.linspace(3000.0, 6016.0, len(valid))
    with torch.no_grad():
        got = ours(*inp.args, guidance=guidance)
        expected = theirs(
            hidden_states=inp.x,
            timestep=inp.t,
            encoder_hidden_states=inp.text_states,
            encoder_attention_mask=inp.text_mask,
            pooled_projections=inp.text_pooled,
            guidance=guidance,
            return_dict=False,
        )[0]
    assert got.shape == expected.shape == inp.x.shape
    rel = ((got - expected).norm() / expected.norm()).item()
    assert rel < 1e-4, f"relative error {rel:.2e} against diffusers"


def test_comparison_is_sensitive_to_a_swapped_final_modulation(
    models: tuple[torch.nn.Module, torch.nn.Module], inputs_factory: Callable[..., object]
) -> None:
    """Guard against a comparison that cannot fail: swapping (shift, scale) in our final layer breaks parity."""
    ours, theirs = models
    inp = inputs_factory(PRESETS[PRESET], valid=(6, 2))
    guidance = torch.full((2,), 6016.0)
    weight = ours.final_layer.adaLN_modulation[1].weight
    bias = ours.final_layer.adaLN_modulation[1].bias
    original = weight.detach().clone(), bias.detach().clone()
    with torch.no_grad():
        expected = theirs(
            inp.x, inp.t, inp.text_states, inp.text_mask, inp.text_pooled, guidance, return_dict=False
        )[0]
        weight.copy_(torch.cat(original[0].chunk(2)[::-1]))
        bias.copy_(torch.cat(original[1].chunk(2)[::-1]))
        try:
            got = ours(*inp.args, guidance=guidance)
        finally:
            weight.copy_(original[0])
            bias.copy_(original[1])
    assert ((got - expected).norm() / expected.norm()).item() > 1e-2
