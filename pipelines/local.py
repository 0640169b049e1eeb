"""The render DAG on one machine: plan, then every shard through the steps in this process, then the index.

``render(ctx, RenderOptions(...))`` is what ``adrender render`` runs. Steps are the same functions the KFP
containers call; distributed stages (sampling, decode) run in-process at world size 1 and as ``torchrun``
with N gloo processes at ``world_size=N``. Progress bars show units and sampling steps; Ctrl-C keeps the step
checkpoints in the store, so running the same command again resumes where it stopped.
"""

from __future__ import annotations

import functools
import importlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from components import plan as plan_step
from components import publish as publish_step
from components import qc_metrics as qc_step
from components.runtime.manifest import ShardManifest, StepManifest, read_manifest
from components.runtime.step import StepContext
from pipelines.dag import STAGES, Stage

__all__ = ["RenderOptions", "RenderReport", "UnitResult", "render"]


@dataclass(frozen=True)
class RenderOptions:
    campaign: Path
    prefix: str = plan_step.DEFAULT_PREFIX
    only: tuple[str, ...] = ()
    world_size: int = 1
    dry_run: bool = False
    checkpoint_every: int = 5
    units_per_shard: int = plan_step.DEFAULT_UNITS_PER_SHARD
    check_media: bool = True
    progress: bool = True


@dataclass(frozen=True)
class UnitResult:
    unit_id: str
    status: str  # published | published-before | failed
    seconds: float
    where: str  # the mp4's URI, or the error
    resumed_from: int = 0


@dataclass
class RenderReport:
    plan_key: str
    index_key: str | None = None
    units: list[UnitResult] = field(default_factory=list)
    seconds: float = 0.0
    stage_keys: dict[str, dict[str, str]] = field(default_factory=dict)  # shard -> stage -> manifest key

    @property
    def failed(self) -> list[UnitResult]:
        return [u for u in self.units if u.status == "failed"]


def _child_env(ctx: StepContext, world_size: int) -> dict[str, str]:
    """The environment of a torchrun child: the same store, registry, cache and device as this process."""
    s = ctx.settings
    env = dict(os.environ)
    env.update(
        ADRENDER_STORE=s.store,
        ADRENDER_S3_ENDPOINT=("https://" if s.s3_secure else "http://") + s.s3_endpoint,
        ADRENDER_S3_REGION=s.s3_region,
        MLFLOW_TRACKING_URI=ctx.registry.tracking_uri,
        ADRENDER_MODEL_CACHE=str(Path(ctx.registry.cache_dir).resolve()),
        ADRENDER_DEVICE=ctx.device,
        ADRENDER_WORK_DIR=str(ctx.work_dir.resolve()),
        OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // world_size)),
        GLOO_SOCKET_IFNAME="lo",
    )
    if s.s3_access_key:
        env["ADRENDER_S3_ACCESS_KEY"] = s.s3_access_key
    if s.s3_secret_key:
        env["ADRENDER_S3_SECRET_KEY"] = s.s3_secret_key
    if s.pushgateway:
        env["ADRENDER_PUSHGATEWAY"] = s.pushgateway
    return env


def run_torchrun(
    ctx: StepContext, stage: Stage, shard_key: str, inputs: dict[str, str], world_size: int
) -> str:
    """Run a distributed stage as ``world_size`` gloo processes under torchrun; returns its manifest key."""
    from model_core.parallel import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "manifest-key"
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world_size),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", f"components.{stage.name}", "--shard", shard_key, "--output-file", str(out),
        ]  # fmt: skip
        for name, key in sorted(inputs.items()):
            cmd += ["--input", f"{name}={key}"]
        proc = subprocess.run(
            cmd, check=False, env=_child_env(ctx, world_size), capture_output=True, text=True
        )
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
            raise RuntimeError(
                f"{stage.name} on {world_size} processes failed (exit {proc.returncode}):\n{tail}"
            )
        return out.read_text().strip()


def run_stage(ctx: StepContext, stage: Stage, shard_key: str, inputs: dict[str, str], world_size: int) -> str:
    """One stage of one shard, in-process (or under torchrun for a distributed stage at world size > 1)."""
    if stage.distributed and world_size > 1:
        return run_torchrun(ctx, stage, shard_key, inputs, world_size)
    module = importlib.import_module(f"components.{stage.name}")
    key: str = module.run(ctx, shard_key, inputs)
    return key


class _Bars:
    """Progress: one bar over the units' sampling, one over the steps of the unit being sampled."""

    def __init__(self, total_units: int, enabled: bool, stream: IO[str]) -> None:
        self.enabled = enabled
        self.stream = stream
        self.units = None
        self.steps: Any = None
        self.current = ""
        if enabled:
            from tqdm import tqdm

            self._tqdm = tqdm
            self.units = tqdm(total=total_units, desc="units", unit="unit", file=stream, position=0)

    def step(self, unit: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if unit != self.current or self.steps is None:
            if self.steps is not None:
                self.steps.close()
            self.current = unit
            self.steps = self._tqdm(
                total=total, desc=f"  {unit}", unit="step", file=self.stream, position=1, leave=False
            )
        self.steps.n = done
        self.steps.refresh()
        if done == total and self.units is not None:
            self.units.update(1)

    def close(self) -> None:
        if self.steps is not None:
            self.steps.close()
        if self.units is not None:
            self.units.close()


def render(
    ctx: StepContext,
    options: RenderOptions,
    *,
    stream: IO[str] = sys.stderr,
    on_stage: Callable[[str, str, str], None] | None = None,
) -> RenderReport:
    """Plan the campaign and render every shard; returns what happened to every unit."""
    started = time.perf_counter()
    plan_key, plan = plan_step.run(
        ctx,
        plan_step.PlanInputs(
            str(options.campaign),
            options.prefix,
            options.only,
            options.units_per_shard,
            options.checkpoint_every,
            options.check_media,
        ),
    )
    report = RenderReport(plan_key=plan_key)
    print(_plan_summary(plan), file=stream)
    if options.dry_run:
        return report
    todo = sum(r.units for r in plan.shards)
    bars = _Bars(todo, options.progress and todo > 0, stream)
    previous = ctx.progress
    ctx.progress = bars.step
    publish_keys: list[str] = []
    try:
        before = tuple(s for s in STAGES if s.name != "publish")
        after = tuple(s for s in STAGES if s.name == "publish")
        for ref in plan.shards:
            run = functools.partial(
                _run_stages, ctx, ref.shard_id, world_size=options.world_size, on_stage=on_stage
            )
            # every stage up to QC, units that failed QC re-rendered with new seeds (bounded), then publish
            keys = run(ref.key, before)
            shard_key, keys = qc_step.rerender_gate(ctx, ref.key, keys, functools.partial(run, stages=before))
            keys = run(shard_key, after, keys)
            report.stage_keys[ref.shard_id] = keys
            publish_keys.append(keys["publish"])
            _collect(ctx, ref.key, keys, report)
    finally:
        ctx.progress = previous
        bars.close()
    for s in plan.skipped:
        report.units.append(UnitResult(s.unit_id, "published-before", 0.0, ctx.store.uri(s.deliverable)))
    report.index_key = publish_step.index(ctx, plan_key, publish_keys)
    report.seconds = time.perf_counter() - started
    return report


def _run_stages(
    ctx: StepContext,
    shard_id: str,
    shard_key: str,
    stages: tuple[Stage, ...],
    keys: dict[str, str] | None = None,
    *,
    world_size: int,
    on_stage: Callable[[str, str, str], None] | None,
) -> dict[str, str]:
    """Run ``stages`` on a shard in order, adding each stage's manifest key to ``keys`` (a new dict when None);
    returns ``keys``."""
    keys = {} if keys is None else keys
    for stage in stages:
        inputs = {name: keys[up] for name, up in stage.inputs.items()}
        keys[stage.name] = run_stage(ctx, stage, shard_key, inputs, world_size)
        if on_stage is not None:
            on_stage(shard_id, stage.name, keys[stage.name])
    return keys


def _collect(ctx: StepContext, shard_key: str, keys: dict[str, str], report: RenderReport) -> None:
    shard = read_manifest(ctx.store, shard_key, ShardManifest)
    manifests = {name: read_manifest(ctx.store, key, StepManifest) for name, key in keys.items()}
    pub = manifests["publish"]
    for unit in shard.units:
        seconds = sum(m.units[unit.unit_id].seconds for m in manifests.values() if unit.unit_id in m.units)
        out = pub.units.get(unit.unit_id)
        sampled = manifests["dit_sample"].units.get(unit.unit_id)
        resumed = int(sampled.details.get("resumed_from", 0)) if sampled is not None else 0
        if out is None or out.status == "failed":
            report.units.append(
                UnitResult(unit.unit_id, "failed", seconds, (out.error or "failed") if out else "no output")
            )
        else:
            report.units.append(
                UnitResult(
                    unit.unit_id, "published", seconds, ctx.store.uri(out.artifacts["video"].key), resumed
                )
            )


def _plan_summary(plan: Any) -> str:
    head = (
        f"campaign {plan.campaign_id}: {plan.units_total} unit(s), {len(plan.skipped)} already published, "
        f"{sum(s.units for s in plan.shards)} to render in {len(plan.shards)} shard(s)"
    )
    lines = [head, "models (pinned for this run):"]
    lines += [
        f"  {ref:<45} -> {pin.name}/{pin.version} ({pin.preset})" for ref, pin in sorted(plan.models.items())
    ]
    for s in plan.shards:
        lines.append(
            f"  shard {s.shard_id}: {s.units} unit(s), dit {s.dit}, latents {'x'.join(map(str, s.latent_size))}"
        )
    lines.append(
        f"estimated sampling time with the production 13B DiT: {plan.estimated_gpu_seconds / 3600:.2f} H100-hours "
        f"({plan.estimated_gpu_seconds:.0f} s)"
    )
    shown = 10
    lines += [f"warning: {w}" for w in plan.warnings[:shown]]
    if len(plan.warnings) > shown:
        lines.append(f"... and {len(plan.warnings) - shown} more warning(s), listed in the plan manifest")
    return "\n".join(lines)


def summary_table(report: RenderReport) -> str:
    """The end-of-run table: unit, status, seconds, where the mp4 is (or the error)."""
    rows = [("unit", "status", "seconds", "video")]
    rows += [(u.unit_id, u.status, f"{u.seconds:.1f}", u.where) for u in report.units]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    return "\n".join(out)
