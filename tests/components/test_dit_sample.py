"""How dit_sample lays out a torchrun world over the DiT's attention heads."""

from __future__ import annotations

import pytest

from components.dit_sample import parallel_options
from model_core.sampling import SamplingOptions

CFG = SamplingOptions(num_steps=30, shift=13.0, cfg_scale=7.5)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 6, 8])
def test_a_world_that_divides_the_heads_is_one_sp_group(world: int) -> None:
    assert parallel_options(CFG, world, 24) is CFG


def test_sixteen_ranks_run_as_two_cfg_halves_of_eight() -> None:
    options = parallel_options(CFG, 16, 24)
    assert options.cfg_parallel
    # the result does not change with the layout: checkpoints written under either resume under the other
    assert options.digest() == CFG.digest()


@pytest.mark.parametrize(
    ("options", "why"),
    [
        (CFG.with_(cfg_scale=1.0), "one branch"),
        (CFG.with_(ip_cfg_scale=2.0), "three branches"),
        (CFG.with_(skip_uncond_from=20), "the uncond half idles"),
    ],
)
def test_sixteen_ranks_without_two_branches_are_refused(options: SamplingOptions, why: str) -> None:
    with pytest.raises(
        ValueError, match=r"16 sampling ranks do not divide the model's 24 attention heads"
    ) as err:
        parallel_options(options, 16, 24)
    assert "[2, 3, 4, 6, 8, 12, 24]" in str(err.value), why


def test_a_world_no_layout_fits_names_the_usable_sizes() -> None:
    with pytest.raises(ValueError, match=r"use \[2, 3, 4, 6, 8, 12, 24\] ranks, or \[16, 48\]"):
        parallel_options(CFG, 10, 24)
