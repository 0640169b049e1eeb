"""DAC-VAE: released key layout, weight norm and Snake against independent computations, kwargs from the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from foley_testing import read_key_list, shapes
from torch import nn

from model_core.audio.foley.dac import (
    DAC_PRESETS,
    DACVAE,
    WNConv1d,
    WNConvTranspose1d,
    dac_config_from_kwargs,
    load_dac,
    snake,
)
from model_core.checkpoints import CheckpointMismatchError

TINY_KWARGS = {
    "encoder_dim": 2,
    "encoder_rates": [2, 3, 4, 5, 8],
    "latent_dim": 8,
    "decoder_dim": 64,
    "decoder_rates": [8, 5, 4, 3, 2],
    "sample_rate": 48000,
    "continuous": True,
    "n_codebooks": 9,  # unused by the continuous model, present in the release's kwargs
}


def test_released_dac_has_the_checkpoint_keys_and_shapes() -> None:
    with torch.device("meta"):
        model = DACVAE(DAC_PRESETS["dac-vae-48k"])
    assert shapes(model) == read_key_list("dac_vae_48k.txt")
    assert sum(p.numel() for p in model.parameters()) == 371_589_058
    assert model.hop_length == 960 and model.sample_rate // model.hop_length == 50


def test_weight_norm_is_per_output_channel_for_convs_and_per_input_channel_for_transposed() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 30)
    conv = WNConv1d(6, 5, 7, padding=3)
    with torch.no_grad():
        conv.weight_g.uniform_(0.5, 2.0)
    v, g = conv.weight_v.detach(), conv.weight_g.detach()
    w = torch.stack([g[o, 0, 0] * v[o] / v[o].flatten().norm() for o in range(5)])
    torch.testing.assert_close(conv(x), nn.functional.conv1d(x, w, conv.bias, padding=3))

    up = WNConvTranspose1d(6, 4, 2 * 5, 5, 3, 1)
    with torch.no_grad():
        up.weight_g.uniform_(0.5, 2.0)
    reference = nn.utils.parametrizations.weight_norm(nn.ConvTranspose1d(6, 4, 10, 5, 3, 1), dim=0)
    with torch.no_grad():
        reference.parametrizations.weight.original0.copy_(up.weight_g)
        reference.parametrizations.weight.original1.copy_(up.weight_v)
        reference.bias.copy_(up.bias)
    out = up(x)
    torch.testing.assert_close(out, reference(x))
    assert out.shape[-1] == 30 * 5
    # a norm over the output channels (dim 1) would be another function
    v, g = up.weight_v.detach(), up.weight_g.detach()
    wrong = v * g.view(1, -1, 1)[:, :4] / v.pow(2).sum((0, 2), keepdim=True).sqrt()
    assert not torch.allclose(out, nn.functional.conv_transpose1d(x, wrong, up.bias, 5, 3, 1))


def test_snake_formula() -> None:
    x = torch.linspace(-3, 3, 13).reshape(1, 1, 13).repeat(1, 3, 1)
    alpha = torch.tensor([1.0, 0.3, 1e-4]).reshape(1, 3, 1)
    expected = x + torch.sin(alpha * x) ** 2 / (alpha + 1e-9)
    torch.testing.assert_close(snake(x, alpha), expected)


def test_encode_pads_to_whole_hops_and_decode_writes_the_waveform() -> None:
    torch.manual_seed(0)
    model = DACVAE(DAC_PRESETS["tiny-dac-vae"]).eval()
    with torch.no_grad():
        z = model.encode(torch.randn(2, 1, 960 * 3 + 1))
        audio = model.decode(z)
        sampled = model.encode(torch.randn(2, 1, 960), generator=torch.Generator().manual_seed(3))
    assert z.shape == (2, 8, 4) and sampled.shape == (2, 8, 1)
    assert audio.shape == (2, 1, 4 * 960)
    assert audio.abs().max() <= 1.0


def test_load_reads_the_kwargs_from_the_file_and_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = DACVAE(dac_config_from_kwargs(TINY_KWARGS))
    path = tmp_path / "vae_128d_48k.pth"
    torch.save({"state_dict": source.state_dict(), "metadata": {"kwargs": TINY_KWARGS}}, path)
    loaded = load_dac(path)
    assert loaded.config == DAC_PRESETS["tiny-dac-vae"]
    z = torch.randn(1, 8, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(z), source.decode(z), rtol=0, atol=0)

    broken = dict(source.state_dict())
    broken["decoder.model.0.extra"] = torch.zeros(1)
    torch.save({"state_dict": broken, "metadata": {"kwargs": TINY_KWARGS}}, path)
    with pytest.raises(CheckpointMismatchError, match="decoder.model.0.extra"):
        load_dac(path)
    with pytest.raises(ValueError, match="discrete"):
        dac_config_from_kwargs({**TINY_KWARGS, "continuous": False})
