"""Foley offload helpers: modules leave the device after their phase, also on error; the DAC's encoder half is
parked while its decoder stays; the modes say what moves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model_core.audio.foley import offload
from model_core.audio.foley.dac import DAC_PRESETS, DACVAE
from model_core.audio.foley.offload import FoleyOffload, decoder_only_on, on_device_while, parked


def _devices(module: nn.Module) -> set[str]:
    return {str(p.device) for p in module.parameters()}


def test_modules_are_parked_after_the_block_and_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # `meta` as the park device: leaving the compute device (cpu) is visible, and parked weights are gone for good
    monkeypatch.setattr(offload, "PARK_DEVICE", torch.device("meta"))
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    with on_device_while((a, b), "cpu"):
        y = a(torch.ones(1, 2))
        assert _devices(a) == _devices(b) == {"cpu"}
    assert _devices(a) == _devices(b) == {"meta"} and parked(a) and y.device.type == "cpu"
    c = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="boom"), on_device_while((c,), "cpu"):
        raise RuntimeError("boom")
    assert parked(c)
    d = nn.Linear(2, 2)
    with on_device_while((d,), "cpu", offload=False):
        pass
    assert _devices(d) == {"cpu"} and not parked(d)


def test_decoder_only_parks_the_dac_encoder_half(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "PARK_DEVICE", torch.device("meta"))
    dac = DACVAE(DAC_PRESETS["tiny-dac-vae"]).eval()
    z = torch.randn(1, dac.config.latent_dim, 3)
    with torch.no_grad():
        expected = dac.decode(z)
        decoder_only_on(dac, "cpu")
        assert parked(dac.encoder) and parked(dac.quant_conv)
        assert _devices(dac.decoder) == _devices(dac.post_quant_conv) == {"cpu"}
        assert torch.equal(dac.decode(z), expected)  # decoding never touches the encoder half


def test_modes() -> None:
    assert [(m.value, m.encoders, m.generator) for m in FoleyOffload] == [
        ("none", False, False),
        ("encoders", True, False),
        ("sequential", True, True),
    ]
    with pytest.raises(ValueError):
        FoleyOffload("all")
