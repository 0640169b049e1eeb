"""The public names of the sampling and parallel packages are declared, sorted and importable."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("name", ["model_core.sampling", "model_core.parallel"])
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    # ruff's isort-style order: CONSTANTS, then Classes, then functions
    assert exported == sorted(exported, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    assert len(set(exported)) == len(exported)
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == []
