"""The GPU suite's smoke mode: every case of the one-GPU command runs on CPU at tiny sizes, so it never rots."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo

from benchmarks import gpu_suite
from benchmarks._common import read_benchmarks_section


@pytest.fixture(scope="module")
def smoke() -> gpu_suite.Suite:
    torch.set_num_threads(1)
    try:
        return gpu_suite.run_suite(smoke=True, budget_s=600, compile_backend="eager")
    finally:
        torch._dynamo.reset()


def test_smoke_runs_every_case(smoke: gpu_suite.Suite) -> None:
    cases = {r.case for r in smoke.rows if r.status == "ok"}
    assert cases == {
        "matmul peak",
        "DiT forward",
        "CFG batch 2",
        "DeepCache step",
        "fp8 weights",
        "compiled blocks, first call",
        "compiled blocks",
        "VAE tiled decode",
        "Foley clip",
    }, [(r.case, r.variant, r.status) for r in smoke.rows]
    assert smoke.peak_tflops and smoke.peak_tflops > 0


def test_dit_rows_cover_both_sizes_the_reference_and_every_backend(smoke: gpu_suite.Suite) -> None:
    rows = [r for r in smoke.rows if r.case == "DiT forward"]
    ran = {(r.size, r.variant) for r in rows if r.status == "ok"}
    for size in ("64x64x9", "64x96x9"):
        assert (size, "sdpa flash") in ran and (size, "diffusers (default SDPA)") in ran
    # on CPU the CUDA-only kernels are reported as unavailable, with the reason, not dropped
    variants = {r.variant: r.status for r in rows}
    for label in ("flash-attn varlen", "sdpa cudnn", "sdpa efficient"):
        assert variants[label].startswith("unavailable: ")
    for r in rows:
        if r.status == "ok":
            assert r.seconds and r.tflop and r.mfu and r.mfu > 0


def test_deepcache_and_fp8_notes(smoke: gpu_suite.Suite) -> None:
    deepcache = next(r for r in smoke.rows if r.case == "DeepCache step")
    assert "22 full" in deepcache.note and "8 cached" in deepcache.note and "saved" in deepcache.note
    fp8 = next(r for r in smoke.rows if r.case == "fp8 weights")
    assert "Linears in e4m3" in fp8.note


def test_foley_rows_cover_every_offload_mode(smoke: gpu_suite.Suite) -> None:
    rows = {r.variant: r for r in smoke.rows if r.case == "Foley clip"}
    assert set(rows) == {"offload none", "offload encoders", "offload sequential"}
    for r in rows.values():
        assert r.status == "ok" and r.size == "tiny, 1 s, 2 steps" and r.seconds and r.seconds > 0
        assert r.peak_memory is not None


def test_budget_skips_cases_instead_of_running_them() -> None:
    suite = gpu_suite.Suite(torch.device("cpu"), gpu_suite.Plan.for_run(True), budget_s=-1.0)
    row = suite.run(gpu_suite.Row("x", "-", "-"), lambda: pytest.fail("must not run"))
    assert row.status.startswith("skipped")


def test_docs_table_and_pending_section(smoke: gpu_suite.Suite, tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    gpu_suite.write_docs(smoke, path=doc)
    body = read_benchmarks_section(gpu_suite.SECTION, path=doc)
    assert body is not None and "| DiT forward | 64x64x9 | sdpa flash |" in body
    assert "python -m benchmarks.gpu_suite" in gpu_suite.pending_body()
