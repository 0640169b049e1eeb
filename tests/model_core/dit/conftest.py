"""Tiny DiT models and inputs shared by the DiT tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import torch

from model_core.configs import PRESETS, DiTConfig
from model_core.dit import HunyuanDiT


@dataclass
class DiTInputs:
    """Positional and keyword arguments of `HunyuanDiT.forward` for one batch."""

    x: torch.Tensor
    t: torch.Tensor
    text_states: torch.Tensor
    text_mask: torch.Tensor
    text_pooled: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def args(self) -> tuple[torch.Tensor, ...]:
        return (self.x, self.t, self.text_states, self.text_mask, self.text_pooled)


def randomize_(model: HunyuanDiT, seed: int = 0) -> HunyuanDiT:
    """Give every parameter random values (norm weights near 1), so no zero-initialised weight hides a path."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * r)
            elif p.ndim == 1:
                p.copy_(0.1 * r)
            else:
                fan_in = p[0].numel()
                p.copy_(r / fan_in**0.5)
    return model.eval()


def make_model(preset: str, seed: int = 0) -> HunyuanDiT:
    return randomize_(HunyuanDiT(PRESETS[preset]), seed)


def make_inputs(
    config: DiTConfig,
    *,
    batch: int = 2,
    frames: int = 3,
    height: int = 4,
    width: int = 6,
    text_len: int = 9,
    valid: tuple[int, ...] | None = None,
    num_refs: int = 1,
    seed: int = 1,
) -> DiTInputs:
    """Random inputs for `config`; text mask with `valid[b]` leading real tokens (default: padded differently)."""
    gen = torch.Generator().manual_seed(seed)
    valid = valid if valid is not None else tuple(max(1, text_len - 3 * (b + 1)) for b in range(batch))
    mask = torch.zeros(batch, text_len, dtype=torch.long)
    for b, n in enumerate(valid):
        mask[b, :n] = 1
    inputs = DiTInputs(
        x=torch.randn(batch, config.in_channels, frames, height, width, generator=gen),
        t=torch.rand(batch, generator=gen) * 1000,
        text_states=torch.randn(batch, text_len, config.text_states_dim, generator=gen),
        text_mask=mask,
        text_pooled=torch.randn(batch, config.text_pooled_dim, generator=gen),
    )
    if config.guidance_embed:
        inputs.extras["guidance"] = torch.full((batch,), 6016.0)
    if config.identity_image:
        inputs.extras["ref_latents"] = torch.randn(
            batch, config.in_channels, num_refs, height, width, generator=gen
        )
    if config.audio is not None:
        a = config.audio
        n_audio = (frames - 1) * a.frames_per_latent + 1
        inputs.extras["audio_states"] = torch.randn(
            batch, n_audio, a.window, a.whisper_layers, a.whisper_dim, generator=gen
        )
    if config.video_condition:
        inputs.extras["video_cond"] = torch.randn(
            batch, 2 * config.in_channels, frames, height, width, generator=gen
        )
    return inputs


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; on shared CPUs extra threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_factory() -> Callable[..., HunyuanDiT]:
    return make_model


@pytest.fixture(scope="session")
def inputs_factory() -> Callable[..., DiTInputs]:
    return make_inputs


@pytest.fixture(scope="session")
def randomize() -> Callable[..., HunyuanDiT]:
    return randomize_
