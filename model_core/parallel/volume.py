"""Bytes each rank sends for one DiT forward under Ulysses: the arithmetic behind docs/BENCHMARKS.md.

Counted as the implementation in this package communicates (see `HunyuanDiT.split` and `HunyuanDiT.final`):
* per attention layer (double and single blocks), four all-to-alls of the local image shard: q, k, v on the
  way in, the output on the way back; a rank keeps 1/P of each and sends the rest;
* per attention layer, an all-gather of the text output's head slices (text stays replicated);
* once, an all-gather of the final layer's patch features (out_channels * patch volume per token).
Audio insertion and RoPE need no communication (each rank handles its own tokens). `release_audio_gather_volume`
counts what the releases send instead: an all-gather of the hidden image tokens before every audio adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_core.configs import DiTConfig


@dataclass(frozen=True)
class CommVolume:
    """Bytes sent by one rank, by collective."""

    all_to_all: int
    all_gather: int

    @property
    def total(self) -> int:
        """All bytes sent, both collectives."""
        return self.all_to_all + self.all_gather

    def __add__(self, other: CommVolume) -> CommVolume:
        return CommVolume(self.all_to_all + other.all_to_all, self.all_gather + other.all_gather)

    def __mul__(self, k: int) -> CommVolume:
        return CommVolume(self.all_to_all * k, self.all_gather * k)


def forward_volume(
    config: DiTConfig,
    *,
    image_tokens: int,
    text_tokens: int,
    batch: int,
    degree: int,
    bytes_per_element: int = 2,
    attention_layers: int | None = None,
) -> CommVolume:
    """What one rank sends in one forward over `image_tokens` (identity + video) split `degree` ways.

    `attention_layers` defaults to all blocks (double + single); a DeepCache reuse step runs one.
    """
    if degree == 1:
        return CommVolume(0, 0)
    layers = config.depth_double + config.depth_single if attention_layers is None else attention_layers
    local = -(-image_tokens // degree)  # padded shard
    width = config.num_heads * config.head_dim
    shard_bytes = batch * local * width * bytes_per_element
    a2a = 4 * shard_bytes * (degree - 1) // degree
    text_gather = (degree - 1) * batch * text_tokens * (width // degree) * bytes_per_element
    pt, ph, pw = config.patch_size
    final_gather = (degree - 1) * batch * local * pt * ph * pw * config.out_channels * bytes_per_element
    return CommVolume(all_to_all=layers * a2a, all_gather=layers * text_gather + final_gather)


def release_audio_gather_volume(
    config: DiTConfig, *, image_tokens: int, batch: int, degree: int, bytes_per_element: int = 2
) -> CommVolume:
    """What one rank of the releases (HunyuanCustom audio, Avatar) sends per forward to gather the image tokens
    for their audio adapters: one all-gather of its hidden-width shard per adapter. Running the adapters on the
    frame-split shard, as `HunyuanDiT` does, saves all of it.
    """
    if degree == 1 or config.audio is None:
        return CommVolume(0, 0)
    local = -(-image_tokens // degree)
    per_adapter = (degree - 1) * batch * local * config.hidden_size * bytes_per_element
    return CommVolume(all_to_all=0, all_gather=len(config.audio.insert_after) * per_adapter)
