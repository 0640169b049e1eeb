"""The side-by-side benchmark: contention accounting, interleaving, summaries, and the DiT pair on one set of weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import side_by_side as sbs
from benchmarks._common import CONTENDED_CORES, CpuMeter, CpuUse, read_benchmarks_section
from model_core.configs import PRESETS


def test_others_cores_subtracts_our_own_cpu_time_and_adds_steal() -> None:
    quiet = CpuUse(wall=2.0, own=3.9, busy=4.0, steal=0.0)  # two of our threads, the machine otherwise idle
    assert quiet.others_cores == pytest.approx(0.05) and not quiet.contended
    busy = CpuUse(wall=2.0, own=2.0, busy=3.0, steal=0.2)
    assert busy.others_cores == pytest.approx(0.6) and busy.contended
    assert CpuUse(wall=1.0, own=1.2, busy=1.0, steal=0.0).others_cores == 0.0  # tick rounding never goes < 0
    assert CONTENDED_CORES == 0.10


def test_cpu_meter_sees_this_process_work() -> None:
    with CpuMeter() as meter:
        a = torch.randn(300, 300)
        for _ in range(30):
            a = torch.tanh(a @ a)
    use = meter.use
    assert use.wall > 0 and use.own > 0 and use.busy >= 0 and use.others_cores >= 0


def test_summary_uses_quiet_calls_when_two_are_quiet() -> None:
    side = sbs.Side("ours", lambda: None, [])
    side.calls = [sbs.Call(3.0, 1.0, True), sbs.Call(1.0, 0.0, False), sbs.Call(2.0, 0.05, False)]
    summary = sbs.summarize(side)
    assert (summary.min_s, summary.median_s, summary.quiet, summary.total) == (1.0, 1.5, 2, 3)
    assert not summary.contended and summary.max_others_cores == 1.0
    side.calls = [sbs.Call(3.0, 1.0, True), sbs.Call(1.0, 0.0, False), sbs.Call(2.0, 0.5, True)]
    summary = sbs.summarize(side)  # one quiet call: all calls count, and the row says so
    assert (summary.min_s, summary.median_s, summary.contended) == (1.0, 2.0, True)


def test_a_pair_compares_both_sides_on_the_same_basis() -> None:
    quiet = [sbs.Call(1.0, 0.0, False), sbs.Call(1.2, 0.0, False), sbs.Call(5.0, 1.0, True)]
    noisy = [sbs.Call(2.0, 0.0, False), sbs.Call(4.0, 1.0, True), sbs.Call(6.0, 1.0, True)]
    pair = sbs.summarize_pair("p", "c", sbs.Side("ours", print, quiet), sbs.Side("ref", print, noisy), "")
    # the reference has one quiet call, so both sides use all their calls
    assert pair.ours.contended and pair.reference.contended
    assert (pair.ours.median_s, pair.reference.median_s) == (1.2, 4.0)
    assert pair.ratio_median == pytest.approx(0.3)


def test_interleave_alternates_the_order_and_measures_every_call() -> None:
    order: list[str] = []
    sides = [sbs.Side(name, lambda name=name: order.append(name), []) for name in ("a", "b")]
    sbs.interleave(sides, repeats=3, warmup=1, memory=False)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert all(len(s.calls) == 3 for s in sides)


def test_dit_pair_runs_both_models_on_the_same_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sbs, "dit_config", lambda: PRESETS["tiny-hunyuanvideo-t2v-720p"])
    monkeypatch.setattr(sbs, "TEXT_LEN", 8)
    monkeypatch.setattr(sbs, "TEXT_VALID", 5)
    torch.set_num_threads(1)
    (result,) = sbs.dit_pair([(2, 4, 6)], repeats=2, warmup=0)
    assert result.case == "12 image + 8 text tokens"
    assert float(result.agreement.split()[-1]) < 1e-4  # same weights: the two forwards agree
    assert result.ours.total == result.reference.total == 2
    assert result.ratio_min == pytest.approx(result.ours.min_s / result.reference.min_s)
    doc = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(sbs, "write_benchmarks_section", lambda t, b: sbs_write(t, b, doc))
    context = {"date": "d", "machine": "m", "threads": 1, "repeats": 2, "wall_s": 1.0, "others_cores": 0.0}
    sbs.write_docs([result], context, "python -m benchmarks.side_by_side")
    body = read_benchmarks_section(sbs.SECTION, path=doc)
    assert body is not None and "| dit forward | 12 image + 8 text tokens |" in body


def sbs_write(title: str, body: str, path: Path) -> None:
    from benchmarks._common import write_benchmarks_section

    write_benchmarks_section(title, body, path=path)
