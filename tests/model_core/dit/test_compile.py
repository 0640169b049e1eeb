"""`HunyuanDiT.compile_blocks`: regional compilation changes how the blocks run, nothing else."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT


def _unique_graphs(depth: int, inputs_factory: Callable[..., Any]) -> tuple[int, bool]:
    config = dataclasses.replace(
        PRESETS["tiny-hunyuanvideo-t2v-720p"], depth_double=depth, depth_single=depth
    )
    torch.manual_seed(0)
    model = HunyuanDiT(config).eval()
    inp = inputs_factory(config)
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        expected = model(*inp.args, **inp.extras)
        model.compile_blocks(backend="eager")
        got = model(*inp.args, **inp.extras)
    return counters["stats"]["unique_graphs"], torch.equal(got, expected)


def test_compile_blocks_compiles_the_blocks_only_and_keeps_the_names() -> None:
    model = HunyuanDiT(PRESETS["tiny-hunyuancustom-720p"])
    keys = list(model.state_dict())
    model.compile_blocks(backend="eager")
    assert list(model.state_dict()) == keys
    compiled = {
        name for name, m in model.named_modules() if getattr(m, "_compiled_call_impl", None) is not None
    }
    assert compiled == {f"double_blocks.{i}" for i in range(2)} | {f"single_blocks.{i}" for i in range(2)}


def test_one_graph_per_block_kind_whatever_the_depth(inputs_factory: Callable[..., Any]) -> None:
    try:
        shallow, same_shallow = _unique_graphs(2, inputs_factory)
        deep, same_deep = _unique_graphs(4, inputs_factory)
    finally:
        torch._dynamo.reset()
    assert shallow == deep == 2  # one double-block graph, one single-block graph, no graph breaks
    assert same_shallow and same_deep  # the traced graph runs the same operations: bit-equal output
