"""The checkpoint-loading benchmark: the scaled config has the asked size; both methods load the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.load_checkpoint import parameter_bytes, run, scaled_config


@pytest.mark.parametrize("size_gb", [1.0, 2.0, 4.0])
def test_scaled_config_is_about_the_asked_size(size_gb: float) -> None:
    config = scaled_config(size_gb)
    assert config.depth_single == 2 * config.depth_double
    # the size moves in steps of one double + two single blocks (~0.28 GB at hidden 1024)
    assert parameter_bytes(config) == pytest.approx(size_gb * 1e9, abs=0.15e9)


@pytest.mark.slow
def test_run_measures_every_case_and_compares_the_loaded_weights(tmp_path: Path) -> None:
    rows = run(0.05, "cpu", repeats=1, write_docs=False, keep=tmp_path)  # the smallest config, ~0.46 GB
    cases = [(r["method"], r["format"], r["dtype"]) for r in rows]
    assert cases == [
        ("plain", "pt", "float32"),
        ("ours", "pt", "float32"),
        ("ours", "safetensors", "float32"),
        ("plain", "pt", "bfloat16"),
        ("ours", "pt", "bfloat16"),
    ]
    nbytes = parameter_bytes(scaled_config(0.05))
    by_case = {c: r for c, r in zip(cases, rows, strict=True)}
    # plain holds the built model and the loaded dict; ours holds the file-backed tensors once
    assert by_case[("ours", "pt", "float32")]["peak_over_base"] < 1.4 * nbytes
    assert by_case[("plain", "pt", "float32")]["peak_over_base"] > 1.6 * nbytes
