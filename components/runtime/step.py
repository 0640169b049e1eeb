"""The step contract: one context built once from the environment, and the command line every step shares.

Every step is a module ``components/<step>.py`` with

- ``run(ctx: StepContext, inputs: <Step>Inputs) -> <manifest>``: the work, typed, with no KFP in sight;
- ``main(argv)``: ``python -m components.<step> --shard KEY --input NAME=KEY ... [--output-file PATH]``, the
  command line the KFP containers call. It prints the key of the manifest it wrote (and writes it to
  ``--output-file`` when given, for KFP's output parameter).

:class:`StepContext` holds the services a step uses: the settings, the artifact store, the model registry and
the device. It is built once per process with :meth:`StepContext.from_env` (the only place that reads the
environment) or directly in tests. :meth:`StepContext.telemetry` gives a step its Prometheus metrics, pushed
when the step ends. :func:`unit_loop` runs the per-unit body of a step with the skip-if-cached rule, timing
and error capture in one place.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.runtime.manifest import (
    ArtifactRef,
    ShardManifest,
    StepManifest,
    UnitOutput,
    UnitPlan,
    read_manifest,
    short_digest,
    write_manifest,
)
from components.runtime.registry import Registry
from components.runtime.settings import RuntimeSettings
from components.runtime.store import ObjectNotFound, ObjectStore, open_store, validate_key
from components.runtime.telemetry import StepTelemetry

__all__ = [
    "ProgressHook",
    "StepContext",
    "artifact_ref",
    "existing_artifacts",
    "shard_step",
    "step_main",
    "unit_failed",
    "unit_loop",
    "upstream_failure",
    "write_step_manifest",
]

log = logging.getLogger("adrender.step")

# (unit_id, steps_done, steps_total): a runner shows it as a progress bar; None logs it
ProgressHook = Callable[[str, int, int], None]


@dataclass
class StepContext:
    """The services of one step process.

    settings: store and telemetry settings. store: the artifact store. registry: MLflow registry and the
    verified checkpoint cache. device: where models run (``cuda`` when available, else ``cpu``).
    progress: per-unit progress of long loops (the local runner draws bars with it).
    """

    settings: RuntimeSettings
    store: ObjectStore
    registry: Registry
    device: str = "cpu"
    progress: ProgressHook | None = None
    work_dir: Path = field(default_factory=lambda: Path(".adrender") / "work")
    rewrite_backend: str = "none"
    rewrite_options: Mapping[str, str] = field(default_factory=dict)
    # models loaded in this process, by (role, pinned name/version): the local runner loads each model once
    model_cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StepContext:
        """Build everything from the environment (see README's configuration table)."""
        env = os.environ if env is None else env
        settings = RuntimeSettings.from_env(env)
        registry = Registry.from_env(env)
        device = env.get("ADRENDER_DEVICE") or _default_device()
        work = Path(env.get("ADRENDER_WORK_DIR") or Path(".adrender") / "work")
        backend = env.get("ADRENDER_REWRITE_BACKEND") or "none"
        options = {
            k: v
            for k, v in (
                ("base_url", env.get("ADRENDER_REWRITE_URL")),
                ("model", env.get("ADRENDER_REWRITE_MODEL")),
                ("path", env.get("ADRENDER_REWRITE_PATH")),
            )
            if v
        }
        return cls(
            settings=settings,
            store=open_store(settings=settings),
            registry=registry,
            device=device,
            work_dir=work,
            rewrite_backend=backend,
            rewrite_options=options,
        )

    def telemetry(self, campaign: str, step: str, shard: int | None = None) -> StepTelemetry:
        """This step's metrics: pushed to the Pushgateway (if configured) when the ``with`` block ends.
        ``shard``: the shard's position in its plan, for steps that run once per shard."""
        return StepTelemetry.from_settings(campaign, step, self.settings, shard=shard)

    def scratch(self, *parts: str) -> Path:
        """A local folder for temporary files of a step (under ``work_dir``)."""
        path = self.work_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def report(self, unit: str, done: int, total: int) -> None:
        """Progress of a long loop of one unit."""
        if self.progress is not None:
            self.progress(unit, done, total)
        elif done == total or done % max(1, total // 5) == 0:
            log.info("%s: %d/%d", unit, done, total)


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


def artifact_ref(store: ObjectStore, key: str) -> ArtifactRef:
    """The key, sha256 and size of a stored object."""
    info = store.stat(key)
    return ArtifactRef(key=key, sha256=info.sha256 or "", size=info.size)


def existing_artifacts(store: ObjectStore, keys: Mapping[str, str]) -> dict[str, ArtifactRef] | None:
    """Refs of every key when all exist (the step's work is done), else None."""
    refs: dict[str, ArtifactRef] = {}
    for name, key in keys.items():
        try:
            refs[name] = artifact_ref(store, key)
        except ObjectNotFound:
            return None
    return refs


# (unit) -> (output keys by name, or None when the unit cannot run) ; body(unit, keys) -> details
KeysFor = Callable[[UnitPlan], Mapping[str, str]]
Body = Callable[[UnitPlan, Mapping[str, str]], Mapping[str, Any] | None]


def unit_loop(
    ctx: StepContext,
    shard: ShardManifest,
    step: str,
    keys_for: KeysFor,
    body: Body,
    *,
    telemetry: StepTelemetry,
    upstream: Sequence[StepManifest] = (),
) -> dict[str, UnitOutput]:
    """Run ``body`` for every unit of the shard whose outputs are not stored yet.

    A unit that failed in an upstream step is marked failed here too, without running. A unit whose every
    output key exists is skipped (logged, counted as ``skipped``). An exception in ``body`` fails that unit
    only; the error is kept in its :class:`UnitOutput`, and the other units go on.
    """
    outputs: dict[str, UnitOutput] = {}
    for unit in shard.units:
        failed = upstream_failure(unit.unit_id, upstream)
        if failed is not None:
            outputs[unit.unit_id] = failed
            telemetry.unit_done("failed")
            continue
        started = time.perf_counter()
        try:
            keys = dict(keys_for(unit))
            if not keys:  # nothing to produce for this unit (e.g. no latent conditions in text-to-video)
                outputs[unit.unit_id] = UnitOutput(unit_id=unit.unit_id, status="ok")
                telemetry.unit_done("ok")
                continue
            found = existing_artifacts(ctx.store, keys)
            if found is not None:
                log.info("%s %s: outputs exist, skipped (%s)", step, unit.unit_id, next(iter(keys.values())))
                outputs[unit.unit_id] = UnitOutput(unit_id=unit.unit_id, status="skipped", artifacts=found)
                telemetry.unit_done("skipped")
                continue
            details = body(unit, keys) or {}
            refs = {name: artifact_ref(ctx.store, key) for name, key in keys.items()}
            for ref in refs.values():
                telemetry.bytes_moved("upload", ref.size)
            outputs[unit.unit_id] = UnitOutput(
                unit_id=unit.unit_id,
                status="ok",
                artifacts=refs,
                seconds=round(time.perf_counter() - started, 3),
                details=dict(details),
            )
            telemetry.unit_done("ok")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one unit's failure must not lose the others
            outputs[unit.unit_id] = unit_failed(step, unit.unit_id, exc, started)
            telemetry.unit_done("failed")
    return outputs


def upstream_failure(unit_id: str, upstream: Sequence[StepManifest]) -> UnitOutput | None:
    """A failed output for ``unit_id`` when an upstream step did not produce it, else None."""
    failed = next((m for m in upstream if m.ok(unit_id) is None), None)
    if failed is None:
        return None
    why = failed.units.get(unit_id)
    return UnitOutput(
        unit_id=unit_id, status="failed", error=f"{failed.step} failed: {why.error if why else 'no output'}"
    )


def unit_failed(step: str, unit_id: str, exc: BaseException, started: float) -> UnitOutput:
    """Log a unit's failure (traceback at debug level) and return its failed output."""
    log.error("%s %s failed: %s", step, unit_id, exc)
    log.debug("%s", traceback.format_exc())
    return UnitOutput(
        unit_id=unit_id,
        status="failed",
        error=f"{type(exc).__name__}: {exc}",
        seconds=round(time.perf_counter() - started, 3),
    )


def step_main(
    name: str,
    run: Callable[[StepContext, str, dict[str, str]], str],
    argv: Sequence[str] | None = None,
    *,
    description: str = "",
) -> int:
    """The shared command line: ``--shard KEY --input NAME=KEY ... [--output-file PATH]``.

    ``run(ctx, shard_key, inputs)`` returns the key of the manifest the step wrote; it is printed and written
    to ``--output-file``. Exit 0 once the manifest is written, even when some units failed (their errors are in
    it, and ``publish`` reports them), so that the other units of the shard go on; 2 on bad arguments.
    """
    parser = argparse.ArgumentParser(prog=f"python -m components.{name}", description=description)
    parser.add_argument("--shard", required=True, help="store key of the shard manifest")
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=KEY", help="store key of an upstream manifest"
    )
    parser.add_argument("--output-file", type=Path, help="also write the manifest key to this file (KFP)")
    args = parser.parse_args(argv)
    inputs: dict[str, str] = {}
    for item in args.input:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            parser.error(f"--input {item!r}: write NAME=KEY, e.g. --input prompts=adrender/demo/...")
        inputs[key] = value
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = StepContext.from_env()
    key = run(ctx, args.shard, inputs)
    print(key)
    # under torchrun every rank runs this; only rank 0 has a key, and a later rank must not blank its file
    if args.output_file is not None and key:
        args.output_file.parent.mkdir(parents=True, exist_ok=True)
        args.output_file.write_text(key)
    return 0


# (shard, upstream manifests by name, telemetry) -> outputs by unit id
ShardWork = Callable[[ShardManifest, Mapping[str, StepManifest], StepTelemetry], dict[str, UnitOutput]]


def shard_step(
    ctx: StepContext,
    step: str,
    shard_key: str,
    upstream: Mapping[str, str],
    work: ShardWork,
    *,
    model_roles: Sequence[str] = (),
) -> str:
    """Read the shard and upstream manifests, run ``work``, write this step's manifest; returns its key."""
    shard = read_manifest(ctx.store, shard_key, ShardManifest)
    ups = {name: read_manifest(ctx.store, key, StepManifest) for name, key in sorted(upstream.items())}
    started = time.perf_counter()
    with ctx.telemetry(shard.campaign_id, step, shard.index) as telemetry:
        units = work(shard, ups, telemetry)
    versions = sorted({u.models[r] for u in shard.units for r in model_roles if r in u.models})
    key = write_step_manifest(ctx, shard, shard_key, step, upstream, units, started, versions)
    return key


def write_step_manifest(
    ctx: StepContext,
    shard: ShardManifest,
    shard_key: str,
    step: str,
    upstream: Mapping[str, str],
    units: dict[str, UnitOutput],
    started: float,
    versions: Sequence[str] = (),
) -> str:
    """Store a step's manifest of one shard and log its counts; returns its key.

    The key hashes the shard and the upstream manifests' keys, so a rerun of the same inputs overwrites the same
    manifest (with the units now found ``skipped``). A skipped unit keeps the details and seconds the run that
    produced its artifacts recorded (resume step, loudness, ...), so the provenance does not lose them.
    """
    digest = short_digest({"shard": shard_key, "upstream": dict(sorted(upstream.items())), "step": step})
    key = validate_key(
        f"{shard.prefix.strip('/')}/{shard.campaign_id}/_shards/{shard.shard_id}/{step}/{digest}/manifest.json"
    )
    units = _keep_earlier_details(ctx, key, units)
    manifest = StepManifest(
        step=step,
        campaign_id=shard.campaign_id,
        shard_id=shard.shard_id,
        units=units,
        seconds=round(time.perf_counter() - started, 3),
        model_versions={v.split("/")[0]: v for v in versions},
    )
    write_manifest(ctx.store, key, manifest)
    counts = {s: sum(1 for u in units.values() if u.status == s) for s in ("ok", "skipped", "failed")}
    log.info("%s %s: %s in %.1f s", step, shard.shard_id, counts, manifest.seconds)
    return key


def _keep_earlier_details(ctx: StepContext, key: str, units: dict[str, UnitOutput]) -> dict[str, UnitOutput]:
    """Skipped units take the details and seconds of the manifest already under ``key``, when its artifacts match."""
    if not any(u.status == "skipped" for u in units.values()):
        return units
    try:
        earlier = read_manifest(ctx.store, key, StepManifest)
    except (ObjectNotFound, ValueError):
        return units
    out = dict(units)
    for unit_id, unit in units.items():
        before = earlier.units.get(unit_id)
        if unit.status == "skipped" and before is not None and before.artifacts == unit.artifacts:
            out[unit_id] = unit.model_copy(update={"details": before.details, "seconds": before.seconds})
    return out
