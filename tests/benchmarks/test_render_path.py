"""The render-path benchmark runs end to end at the smallest sizes (slow: it bootstraps and renders)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_render_path_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.render_path import main

    main(["--plan-units", "8", "--overhead-units", "1", "--repeats", "1", "--demo-runs", "0", "--no-docs"])
    out = capsys.readouterr().out
    assert "| plan (load, pin, expand, shard manifests) |" in out
    assert "| local runner (less the QC step) |" in out and "per unit" in out
