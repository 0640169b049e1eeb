"""The render path on one machine: plan time at campaign scale, runner overhead per unit, the demo's wall time.

    python -m benchmarks.render_path                      # all three, results into docs/BENCHMARKS.md
    python -m benchmarks.render_path --plan-units 10000 --overhead-units 4 --demo-runs 3 --no-docs

- plan: ``components.plan.run`` on a generated text-to-video campaign of N units (jobs x 2 sizes x 2 variants)
  against a sqlite registry of the tiny models: campaign loading, pinning, unit expansion, content keys, shard
  manifests written to a local store.
- overhead: K text-to-video units (64x64, 5 frames, 3 steps, foley off) rendered by the local runner against the
  same work as bare model_core calls (LLaVA + CLIP encode, sample, tiled decode, H.264 encode), both with the
  models already loaded, interleaved in one process; the QC step's own seconds (its models score every unit,
  which the bare calls do not) are taken out of the runner's time. The difference per unit is what the step
  contract, the store and the manifests cost.
- demo: ``adrender render examples/demo/campaign.yaml`` as a fresh process on a fresh store (media and tiny
  models prepared once beforehand).

Each measurement records the CPU time other processes used meanwhile; runs where others used more than
``CONTENDED_CORES`` are flagged and left out of the quoted minimum and median when quiet runs exist.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from benchmarks._common import (
    REPO_ROOT,
    CpuMeter,
    CpuUse,
    machine_description,
    markdown_table,
    write_benchmarks_section,
)

SECTION = "Render path"


@dataclass
class Runs:
    """Seconds and CPU use of repeated runs of one thing."""

    name: str
    seconds: list[float]
    use: list[CpuUse]

    def quiet(self) -> list[float]:
        quiet = [s for s, u in zip(self.seconds, self.use, strict=True) if not u.contended]
        return quiet or self.seconds

    @property
    def contended_runs(self) -> int:
        return sum(u.contended for u in self.use)

    @property
    def others(self) -> float:
        return max(u.others_cores for u in self.use)

    def row(self, extra: str = "") -> list[object]:
        q = self.quiet()
        return [
            self.name,
            f"{min(q):.2f}",
            f"{statistics.median(q):.2f}",
            f"{len(self.seconds)} ({self.contended_runs} contended)",
            f"{self.others:.2f}",
            extra,
        ]


def _measure(fn: Callable[[], object]) -> tuple[float, CpuUse]:
    with CpuMeter() as meter:
        started = time.perf_counter()
        fn()
        seconds = time.perf_counter() - started
    return seconds, meter.use


def _registry(root: Path):  # type: ignore[no-untyped-def]
    from components.runtime.registry import Registry
    from pipelines.bootstrap import bootstrap_tiny

    registry = Registry(f"sqlite:///{root}/mlflow.db", root / "models")
    bootstrap_tiny(registry, work_dir=root / "tiny")
    return registry


def _ctx(registry, store: Path, work: Path):  # type: ignore[no-untyped-def]
    from components.runtime.settings import RuntimeSettings
    from components.runtime.step import StepContext
    from components.runtime.store import LocalStore

    return StepContext(
        settings=RuntimeSettings(store=store.resolve().as_uri()),
        store=LocalStore(store, fsync=False),
        registry=registry,
        work_dir=work,
    )


def plan_scale(root: Path, units: int, repeats: int) -> tuple[Runs, Runs]:
    """(load_campaign, whole plan) over a campaign of `units` text-to-video units."""
    from components import plan as plan_step
    from components.runtime.spec import load_campaign

    jobs = [
        {
            "id": f"spot-{i:05d}",
            "prompt": f"Morning light over meadow number {i}, dew drops on green leaves.",
            "negative_prompt": "",
            "sizes": ["544x960", "960x544"],
            "variants": 2,
        }
        for i in range(max(1, units // 4))
    ]
    campaign = root / "scale" / "campaign.yaml"
    campaign.parent.mkdir(parents=True, exist_ok=True)
    campaign.write_text(yaml.safe_dump({"id": "scale", "jobs": jobs}, sort_keys=False))
    registry = _registry(root / "registry")
    load, plan = Runs("load_campaign", [], []), Runs("plan (load, pin, expand, shard manifests)", [], [])
    for i in range(repeats):
        s, u = _measure(lambda: load_campaign(campaign))
        load.seconds.append(s)
        load.use.append(u)
        ctx = _ctx(registry, root / f"scale-store-{i}", root / "work")
        s, u = _measure(
            lambda ctx=ctx: plan_step.run(ctx, plan_step.PlanInputs(str(campaign), check_media=False))
        )
        plan.seconds.append(s)
        plan.use.append(u)
    return load, plan


def _bare_render(models: dict, prompts: list[str], seeds: list[int], out: Path) -> None:  # type: ignore[type-arg]
    """The model work of K text-to-video units without the pipeline around it."""
    from components.runtime.media import VideoWriter
    from model_core.sampling import BranchInputs, Conditioning, default_options, sample
    from model_core.text import encode_prompt
    from model_core.vae import tiled_decode
    from model_core.vision import VAE_SCALING_FACTOR, official_tiling

    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        with torch.no_grad():
            text = encode_prompt(models["llava"], models["clip"], prompt)
            cond = Conditioning((2, 8, 8), BranchInputs(text.states, text.mask, text.pooled))
            latents = sample(models["dit"], cond, default_options("t2v", num_steps=3, seed=seed))
            vae = models["vae"]
            pixels = tiled_decode(vae, latents / VAE_SCALING_FACTOR, official_tiling(vae))
        frames = ((pixels[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        with VideoWriter(out / f"{i}.mp4", fps=24) as writer:
            for f in range(frames.shape[1]):
                writer.write(frames[:, f].permute(1, 2, 0).contiguous().numpy())


def runner_overhead(root: Path, units: int, repeats: int) -> tuple[Runs, Runs]:
    """(runner, bare model calls) for `units` units, models loaded beforehand in both."""
    from components.runtime.manifest import ShardManifest, read_manifest
    from components.runtime.models import load_clip, load_dit, load_llava, load_vae
    from pipelines.local import RenderOptions, render

    registry = _registry(root / "registry")
    jobs = [
        {
            "id": f"spot-{i}",
            "prompt": f"Morning light over meadow number {i}.",
            "negative_prompt": "",
            "size": "64x64",
            "frames": 5,
            "steps": 3,
            "foley": False,
        }
        for i in range(units)
    ]
    campaign = root / "overhead" / "campaign.yaml"
    campaign.parent.mkdir(parents=True, exist_ok=True)
    campaign.write_text(yaml.safe_dump({"id": "overhead", "jobs": jobs}, sort_keys=False))

    warm = _ctx(registry, root / "overhead-warm", root / "work")
    report = render(
        warm, RenderOptions(campaign, progress=False), stream=io.StringIO()
    )  # loads every model into warm.model_cache
    plan_shard = read_manifest(warm.store, _shard_keys(warm, report.plan_key)[0], ShardManifest)
    unit = plan_shard.units[0]
    models = {
        "llava": load_llava(warm, plan_shard.pin("text_encoder", unit)),
        "clip": load_clip(warm, plan_shard.pin("text_encoder_2", unit)),
        "dit": load_dit(warm, plan_shard.models[plan_shard.dit]),
        "vae": load_vae(warm, plan_shard.pin("vae", unit)),
    }
    prompts = [str(j["prompt"]) for j in jobs]
    seeds = [u.seed for u in plan_shard.units]
    runner, bare = Runs("local runner (less the QC step)", [], []), Runs("bare model_core calls", [], [])
    for i in range(repeats):
        store = root / f"overhead-store-{i}"
        ctx = _ctx(registry, store, root / "work")
        ctx.model_cache = warm.model_cache
        box: list[object] = []
        s, u = _measure(
            lambda ctx=ctx, box=box: box.append(
                render(ctx, RenderOptions(campaign, progress=False), stream=io.StringIO())
            )
        )
        # the QC step scores every unit with its own models, work the bare calls do not do: it is taken out
        runner.seconds.append(s - _stage_seconds(ctx, box[0], "qc_metrics"))
        runner.use.append(u)
        out = root / f"bare-{i}"
        out.mkdir()
        s, u = _measure(lambda out=out: _bare_render(models, prompts, seeds, out))
        bare.seconds.append(s)
        bare.use.append(u)
    return runner, bare


def _stage_seconds(ctx, report, stage: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds a stage's manifests record over every shard of a render."""
    from components.runtime.manifest import StepManifest, read_manifest

    return sum(
        read_manifest(ctx.store, keys[stage], StepManifest).seconds
        for keys in report.stage_keys.values()
        if stage in keys
    )


def _shard_keys(ctx, plan_key: str) -> list[str]:  # type: ignore[no-untyped-def]
    from components.runtime.manifest import PlanManifest, read_manifest

    return [s.key for s in read_manifest(ctx.store, plan_key, PlanManifest).shards]


def demo_wall(root: Path, runs: int) -> Runs:
    """`adrender render examples/demo/campaign.yaml` as a fresh process on a fresh store."""
    demo = REPO_ROOT / "examples" / "demo"
    subprocess.run([sys.executable, str(demo / "make_media.py")], check=True, capture_output=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/demo-registry/mlflow.db",
        "ADRENDER_MODEL_CACHE": str(root / "demo-registry" / "models"),
        "ADRENDER_WORK_DIR": str(root / "demo-work"),
    }
    (root / "demo-registry").mkdir(parents=True, exist_ok=True)
    adrender = Path(sys.executable).with_name("adrender")
    subprocess.run([str(adrender), "models", "bootstrap-tiny"], check=True, capture_output=True, env=env)
    out = Runs("adrender render examples/demo/campaign.yaml (4 units)", [], [])
    for i in range(runs):
        env["ADRENDER_STORE"] = str(root / f"demo-store-{i}")
        cmd = [str(adrender), "render", str(demo / "campaign.yaml"), "--no-progress"]
        s, u = _measure(
            lambda cmd=cmd: subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO_ROOT)
        )
        out.seconds.append(s)
        out.use.append(u)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plan-units", type=int, default=10_000)
    parser.add_argument("--overhead-units", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo-runs", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = Path(tempfile.mkdtemp(prefix="adrender-bench-"))
    try:
        load, plan = plan_scale(root, args.plan_units, args.repeats)
        runner, bare = runner_overhead(root, args.overhead_units, args.repeats)
        demo = demo_wall(root, args.demo_runs) if args.demo_runs else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_unit = (statistics.median(runner.quiet()) - statistics.median(bare.quiet())) / args.overhead_units
    ratio = statistics.median(runner.quiet()) / statistics.median(bare.quiet())
    rows = [
        load.row(f"{args.plan_units} units"),
        plan.row(f"{args.plan_units} units"),
        runner.row(f"{args.overhead_units} units; {per_unit:+.2f} s per unit, x{ratio:.2f} the bare calls"),
        bare.row(f"{args.overhead_units} units"),
    ]
    if demo is not None:
        rows.append(demo.row("a fresh process: imports, model loads, foley and QC included"))
    headers = ["what", "min s", "median s", "runs", "others' cores (max)", "notes"]
    head = (
        f"{datetime.now(UTC):%Y-%m-%d}, {machine_description(torch.device('cpu'))}, "
        f"{torch.get_num_threads()} threads. `python -m benchmarks.render_path --plan-units {args.plan_units} "
        f"--overhead-units {args.overhead_units} --repeats {args.repeats} --demo-runs {args.demo_runs}`."
    )
    note = (
        "Minimum and median are over the runs in which other processes used less than 0.1 core on average "
        "(over all runs when none was that quiet; the runs column says how many were contended)."
    )
    body = "\n".join([head, "", note, "", markdown_table(headers, rows)])
    print(body)
    if not args.no_docs:
        write_benchmarks_section(SECTION, body)


if __name__ == "__main__":
    main()
