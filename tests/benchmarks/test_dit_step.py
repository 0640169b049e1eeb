"""The DiT step benchmark runs end to end on CPU at the tiny preset; the docs writer touches only its section."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks._common import read_benchmarks_section, time_fn, write_benchmarks_section
from benchmarks.dit_flops import dit_forward_flops, latent_shape
from benchmarks.dit_step import measure, random_model
from model_core.configs import PRESETS
from model_core.dit import AttentionBackendUnavailable


@pytest.mark.parametrize("preset", ["tiny-hunyuanvideo-t2v-720p", "tiny-hunyuancustom-audio-720p"])
def test_measure_tiny_preset_on_cpu(preset: str) -> None:
    torch.set_num_threads(1)
    result = measure(
        preset,
        (32, 48, 9),
        attention="sdpa",
        device=torch.device("cpu"),
        dtype=torch.float32,
        text_len=8,
        warmup=0,
        repeats=1,
        peak_tflops=1.0,
    )
    cfg = PRESETS[preset]
    flops = dit_forward_flops(
        cfg,
        latent_shape(32, 48, 9),
        text_len=8,
        num_refs=int(cfg.identity_image),
        audio=cfg.audio is not None,
    )
    assert result.tflop == pytest.approx(flops.total / 1e12)
    # latent 3x4x6 -> 3 frames of 2x3 tokens; one identity image adds a frame's worth; 8 text tokens
    assert result.tokens == 3 * 2 * 3 + (2 * 3 if cfg.identity_image else 0) + 8
    assert result.seconds > 0 and result.achieved_tflops == pytest.approx(result.tflop / result.seconds)
    assert result.mfu == pytest.approx(result.achieved_tflops)  # peak given as 1 TFLOP/s


def test_flash_backend_on_cpu_is_refused_with_the_fix() -> None:
    with pytest.raises(AttentionBackendUnavailable, match="sdpa"):
        measure(
            "tiny-hunyuanvideo-t2v-720p",
            (32, 32, 5),
            attention="flash",
            device=torch.device("cpu"),
            dtype=torch.float32,
            text_len=4,
            warmup=0,
            repeats=1,
            peak_tflops=1.0,
        )


def test_random_model_has_no_meta_tensors_and_the_requested_dtype() -> None:
    model = random_model(PRESETS["tiny-hunyuancustom-editing-720p"], torch.device("cpu"), torch.bfloat16)
    params = list(model.parameters())
    assert params and all(not p.is_meta and p.dtype == torch.bfloat16 for p in params)
    assert 0.015 < torch.cat([p.float().flatten() for p in params]).std().item() < 0.025


def test_benchmarks_section_writer_keeps_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Other\n\nkeep me\n\n## DiT step\n\nold\n\n## Last\n\nme too\n")
    write_benchmarks_section("DiT step", "new table", path=path)
    text = path.read_text()
    assert "old" not in text and "keep me" in text and "me too" in text
    assert read_benchmarks_section("DiT step", path=path) == "new table"
    write_benchmarks_section("Fresh", "appended", path=path)
    assert path.read_text().rstrip().endswith("## Fresh\n\nappended")
    assert read_benchmarks_section("Missing", path=path) is None


def test_time_fn_counts_repeats() -> None:
    calls = []
    timing = time_fn(lambda: calls.append(1), device=torch.device("cpu"), warmup=2, repeats=3)
    assert len(calls) == 5 and len(timing.seconds) == 3 and timing.best <= timing.median
