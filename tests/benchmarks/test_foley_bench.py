"""benchmarks/foley.py: the reference loop gives the step's bits, the footprint counts the released sizes, and the
decode activation estimate holds against a measured peak."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import foley
from benchmarks._common import current_rss_bytes, peak_rss_bytes, reset_peak_rss, return_freed_memory
from model_core.audio.foley.offload import FoleyOffload


def test_the_bare_reference_loop_gives_the_pipelines_bits_and_ours_writes_checkpoints(tmp_path: Path) -> None:
    models, encoders = foley.random_networks("tiny")
    frames = foley.clip_frames(1)
    cpu = torch.device("cpu")
    ours = foley.ours(models, encoders, frames, cpu, FoleyOffload.ENCODERS, tmp_path, steps=6)
    reference = foley.reference(models, encoders, frames, cpu, steps=6)
    assert ours.shape == reference.shape == (46080,)  # 24 frames at 25 fps: 0.96 s at 48 kHz
    assert torch.equal(ours, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0005.safetensors"]
    # a different number of steps is a different clip: the comparison can fail
    assert not torch.equal(reference, foley.reference(models, encoders, frames, cpu, steps=5))


def test_network_bytes_count_the_released_sizes() -> None:
    xxl, xl = foley.network_bytes("xxl"), foley.network_bytes("xl")
    # bf16 MMDiTs of 5.134B and 2.913B parameters (the release's meta counts)
    assert round(xxl["dit"] / 2 / 1e9, 3) == 5.134 and round(xl["dit"] / 2 / 1e9, 3) == 2.913
    # float32 DAC-VAE of 371,589,058 parameters, its encoder half (296M) apart
    assert (xxl["dac"] + xxl["dac_encoder"]) == 371_589_058 * 4
    assert round(xxl["dac_encoder"] / 4 / 1e6) == 296
    # the Synchformer's video branch: 122.44M in float32
    assert round(xxl["synchformer"] / 4 / 1e6, 2) == 122.44


def test_offload_modes_order_the_peaks() -> None:
    for size in ("xl", "xxl"):
        p = foley.peaks(size, 10.0)
        top = {mode: max(phases.values()) for mode, phases in p.items()}
        assert top["sequential"] < top["encoders"] <= top["none"]
        w = foley.network_bytes(size)
        encoders = w["siglip"] + w["clap"] + w["synchformer"]
        assert p["none"]["sampling"] - p["encoders"]["sampling"] == encoders
        assert p["sequential"]["sampling"] == w["dit"] + foley.activation_bytes(size, 10.0)["sampling"]
        # the release loads on the CPU: sequential's peak is its largest phase, the MMDiT's sampling, not the load
        assert max(p["sequential"], key=lambda phase: p["sequential"][phase]) == "sampling"
        assert p["sequential"]["load"] == w["siglip"] + w["clap"]


@pytest.mark.parametrize("latents", [100, 250])
def test_decode_estimate_holds_against_a_measured_peak(latents: int) -> None:
    """A DAC decoder of width 512 (a quarter of the release's, where per-call overheads no longer dominate)."""
    from model_core.audio.foley.dac import DACVAE, DACConfig

    if not return_freed_memory():
        pytest.skip("needs glibc's malloc_trim / mallopt to follow live tensors through the RSS")
    config = DACConfig(encoder_dim=2, latent_dim=8, decoder_dim=512)
    dac = DACVAE(config).eval()
    z = torch.randn(1, config.latent_dim, latents)
    with torch.no_grad():
        dac.decode(z)  # warm
        assert reset_peak_rss()
        base = current_rss_bytes()
        dac.decode(z)
        measured = peak_rss_bytes() - base
    estimate = foley.dac_decode_bytes(config, latents)
    assert 0.6 * estimate <= measured <= 1.5 * estimate, (measured, estimate)
