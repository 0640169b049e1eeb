"""Model loading: where each Foley network is placed at load, per offload mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from torch import nn

from components import plan as plan_step
from components.runtime.manifest import ShardManifest, read_manifest
from components.runtime.models import load_foley
from components.runtime.step import StepContext
from tests.campaigns import ALL_MODES, write_campaign


def _devices(*modules: nn.Module) -> set[str]:
    return {p.device.type for m in modules for p in [*m.parameters(), *m.buffers()]}


@pytest.mark.parametrize(
    ("offload", "on_device"),
    [("none", {"dit", "decoder", "synchformer"}), ("encoders", {"dit", "decoder"}), ("sequential", set())],
)
def test_foley_networks_load_on_the_cpu_unless_the_mode_keeps_them_on_the_device(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path, offload: str, on_device: set[str]
) -> None:
    # `meta` as the compute device: what the loader puts there is visible (and holds no weights), what it leaves
    # on the CPU is not loaded onto the device at all, so the load is never above the largest phase
    ctx = make_ctx()
    _, plan = plan_step.run(
        ctx, plan_step.PlanInputs(str(write_campaign(tmp_path, demo_media, [ALL_MODES[0]])))
    )
    shard = read_manifest(ctx.store, plan.shards[0].key, ShardManifest)
    ctx.device = "meta"
    models = load_foley(ctx, shard.pin("foley", shard.units[0]), offload)
    parts = {
        "dit": (models.dit,),
        "decoder": (models.dac.decoder, models.dac.post_quant_conv),
        "synchformer": (models.synchformer,),
    }
    placed = {name: _devices(*modules) for name, modules in parts.items()}
    assert placed == {name: {"meta" if name in on_device else "cpu"} for name in parts}, placed
    assert _devices(models.dac.encoder, models.dac.quant_conv) == {"cpu"}  # never run by inference
