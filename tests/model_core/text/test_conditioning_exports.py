"""The public names of the conditioning packages exist once each (ruff RUF022 keeps them sorted)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "name", ["model_core.text", "model_core.audio", "model_core.vision", "model_core.io"]
)
def test_all_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert len(set(module.__all__)) == len(module.__all__)
    for attr in module.__all__:
        assert getattr(module, attr) is not None, attr
