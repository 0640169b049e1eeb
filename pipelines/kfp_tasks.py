"""What the Kubeflow tasks of the render pipeline run inside the project image.

Each component of ``pipelines/render_campaign.py`` is a few lines that import one function from here. The
functions run the step modules by their command line (``python -m components.<step> ... --output-file F``,
under ``torchrun`` for the distributed stages), so a task runs exactly what ``adrender render`` runs, and they
turn the small manifests the steps write into what the KFP UI shows: the plan's metadata, a Markdown summary
and metrics per shard, the campaign's deliverables. Nothing here imports KFP; the artifacts are plain paths.

Settings come from the environment (the ConfigMap and Secrets the pipeline mounts); a non-empty ``store``
argument replaces ``ADRENDER_STORE``, so that a run can write to another store than the cluster's default.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.runtime.manifest import PlanManifest, ShardManifest, StepManifest, read_manifest
from components.runtime.store import ObjectStore, open_store

__all__ = [
    "GateRoundsExhausted",
    "ShardReport",
    "StepFailed",
    "campaign_id",
    "campaign_index",
    "plan_campaign",
    "publish_shard",
    "qc_gate",
    "qc_gate_result",
    "report_outcome",
    "run_step",
    "run_trainjob_step",
    "shard_qc_report",
    "shard_report",
    "step_command",
]

log = logging.getLogger("adrender.kfp")


class StepFailed(RuntimeError):
    """A step's command exited non-zero: the task fails, and KFP retries it (its ``set_retry``)."""


def _use_store(store: str) -> None:
    if store:
        os.environ["ADRENDER_STORE"] = store


def step_command(
    step: str, shard: str, inputs: Mapping[str, str], output_file: Path, nproc_per_node: int = 0
) -> list[str]:
    """The command line of one stage of one shard; ``nproc_per_node`` > 0 runs it under torchrun."""
    if nproc_per_node > 0:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc_per_node), "-m", f"components.{step}",
        ]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", f"components.{step}"]
    cmd += ["--shard", shard, "--output-file", str(output_file)]
    for name, key in sorted(inputs.items()):
        cmd += ["--input", f"{name}={key}"]
    return cmd


def _run(cmd: Sequence[str], what: str) -> str:
    """Run a step's command with its output streamed to the task's log; returns the key it wrote."""
    out = Path(cmd[cmd.index("--output-file") + 1])
    log.info("%s: %s", what, " ".join(cmd))
    code = subprocess.run(list(cmd), check=False).returncode
    if code != 0 or not out.is_file():
        raise StepFailed(f"{what} exited with {code}; its log is above")
    return out.read_text().strip()


def run_step(
    step: str, shard: str, inputs: Mapping[str, str], *, store: str = "", nproc_per_node: int = 0
) -> str:
    """Run one stage of one shard; returns the key of the step manifest it wrote."""
    _use_store(store)
    with tempfile.TemporaryDirectory(prefix=f"adrender-{step}-") as tmp:
        cmd = step_command(step, shard, inputs, Path(tmp) / "manifest-key", nproc_per_node)
        return _run(cmd, step)


def run_trainjob_step(
    step: str,
    shard: str,
    inputs: Mapping[str, str],
    *,
    store: str = "",
    nodes: int,
    gpus_per_node: int,
    image: str,
    timeout_s: int,
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
    settings_env: Sequence[Mapping[str, Any]],
    task_config: Mapping[str, Any],
    api: Any = None,
    poll_s: float = 10.0,
) -> str:
    """Run one stage of one shard as a Kubeflow Trainer TrainJob over ``nodes`` nodes (``pipelines.trainjob``);
    returns the key of the step manifest its node 0 wrote. A non-empty ``store`` reaches the nodes as
    ``ADRENDER_STORE``; ``settings_env`` (the settings and credential references) fills what the task's own
    env (``task_config``) lacks."""
    from pipelines.trainjob import plain_env, run_multinode

    _use_store(store)
    return run_multinode(
        step, shard, inputs, nodes=nodes, gpus_per_node=gpus_per_node, image=image, timeout_s=timeout_s,
        task_config=task_config, node_selector=node_selector, tolerations=tolerations,
        env=plain_env({"ADRENDER_STORE": store} if store else {}), base_env=settings_env, api=api, poll_s=poll_s,
    )  # fmt: skip


# the QC re-render gate, unrolled over KFP tasks -----------------------------------------------------------------
#
# ``components.qc_metrics.rerender_gate`` runs the attempts through a callback. A KFP DAG is fixed when compiled,
# so the pipeline unrolls a bounded number of rounds, each a gate task and, under ``dsl.If``, the stages on the
# units to re-render. Every gate task replays ``rerender_gate`` from the start with the attempts already run
# (their stage manifest keys, ``runs``): the gate is deterministic (re-render shards and seeds derive from the
# shard key and the attempt number), so the replay asks for the same attempts, and the first attempt it has no
# keys for is the one this round runs.


class GateRoundsExhausted(RuntimeError):
    """The campaign allows more re-renders than the pipeline was compiled with."""


class _Attempt(Exception):
    def __init__(self, shard_key: str) -> None:
        super().__init__(shard_key)
        self.shard_key = shard_key


def _replay(
    shard: str, first: Mapping[str, str], runs: Sequence[Mapping[str, str]]
) -> tuple[str, dict[str, str]]:
    from components.qc_metrics import rerender_gate
    from components.runtime.step import StepContext

    done = iter(runs)

    def run_attempt(retry_shard: str) -> Mapping[str, str]:
        keys = next(done, None)
        if keys is None:
            raise _Attempt(retry_shard)
        return keys

    return rerender_gate(StepContext.from_env(), shard, first, run_attempt)


def qc_gate(
    shard: str, first: Mapping[str, str], runs: Sequence[Mapping[str, str]], *, store: str = ""
) -> str:
    """The shard of the units the next re-render round runs, or "" when no unit needs one (or the campaign's
    ``qc.max_rerenders`` is spent). ``first``: stage -> manifest key of the first attempt; ``runs``: those of
    the re-render rounds run so far."""
    _use_store(store)
    try:
        _replay(shard, first, runs)
    except _Attempt as attempt:
        return attempt.shard_key
    return ""


def qc_gate_result(
    shard: str, first: Mapping[str, str], runs: Sequence[Mapping[str, str]], *, store: str = ""
) -> tuple[str, dict[str, str]]:
    """After the last round: the shard and the stage manifests publish reads (each unit's last attempt), as the
    local runner's gate returns them."""
    _use_store(store)
    try:
        return _replay(shard, first, runs)
    except _Attempt as attempt:
        raise GateRoundsExhausted(
            f"the campaign asks for more than the {len(runs)} re-render round(s) this pipeline was compiled with "
            f"(next: {attempt.shard_key}); compile with `adrender compile --qc-rounds N` (N >= the campaign's "
            "qc.max_rerenders) or lower qc.max_rerenders"
        ) from None


def shard_qc_report(store: ObjectStore, campaign: str, qc_key: str) -> tuple[str, str]:
    """The QC report (HTML) and summary (Markdown) of one shard, from its ``qc_metrics`` manifest: every unit's
    QC document, with every attempt where the gate re-rendered it."""
    from components.report import render_html, render_markdown

    manifest = read_manifest(store, qc_key, StepManifest)
    docs: list[dict[str, Any]] = []
    for unit_id, out in sorted(manifest.units.items()):
        if "qc" not in out.artifacts:
            continue
        doc = json.loads(store.get_bytes(out.artifacts["qc"].key))
        if "attempts" in out.details:
            doc["attempts"] = out.details["attempts"]
        docs.append(doc)
    return render_html(campaign, docs), render_markdown(campaign, docs)


def plan_campaign(
    campaign_uri: str,
    *,
    prefix: str,
    units_per_shard: int,
    checkpoint_every: int,
    store: str = "",
    artifact_path: str | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Plan the campaign; returns the shard manifest keys and the plan's metadata (for the UI).

    The plan manifest is also copied to ``artifact_path`` when given (the task's output artifact).
    """
    _use_store(store)
    with tempfile.TemporaryDirectory(prefix="adrender-plan-") as tmp:
        out = Path(tmp) / "plan-key"
        cmd = [
            sys.executable, "-m", "components.plan", campaign_uri, "--prefix", prefix,
            "--units-per-shard", str(units_per_shard), "--checkpoint-every", str(checkpoint_every),
            "--output-file", str(out),
        ]  # fmt: skip
        key = _run(cmd, "plan")
    store_ = open_store()
    plan = read_manifest(store_, key, PlanManifest)
    if artifact_path is not None:
        Path(artifact_path).parent.mkdir(parents=True, exist_ok=True)
        Path(artifact_path).write_bytes(store_.get_bytes(key))
    metadata: dict[str, Any] = {
        "plan_key": key,
        "plan_uri": store_.uri(key),
        "campaign": plan.campaign_id,
        "campaign_uri": plan.campaign_uri,
        "units_total": plan.units_total,
        "units_to_render": sum(s.units for s in plan.shards),
        "published_before": len(plan.skipped),
        "shards": len(plan.shards),
        "models": {ref: pin.pinned for ref, pin in sorted(plan.models.items())},
        "estimated_h100_seconds": plan.estimated_gpu_seconds,
    }
    return [s.key for s in plan.shards], metadata


@dataclass(frozen=True)
class ShardReport:
    markdown: str
    metrics: dict[str, float]
    qc_html: str = ""


def publish_shard(
    shard: str, stage_keys: Mapping[str, str], *, store: str = "", gpus: int, decode_gpus: int
) -> tuple[str, ShardReport]:
    """Publish one shard from its stage manifests (``stage_keys``: stage -> key, after the QC gate); returns the
    publish manifest's key and what the KFP UI shows: the summary (with the QC table), metrics, the QC report."""
    from pipelines.dag import STAGES

    _use_store(store)
    (stage,) = [s for s in STAGES if s.name == "publish"]
    key = run_step("publish", shard, {name: stage_keys[up] for name, up in stage.inputs.items()}, store=store)
    store_ = open_store()
    report = shard_report(store_, shard, {**stage_keys, "publish": key}, gpus=gpus, decode_gpus=decode_gpus)
    if "qc_metrics" not in stage_keys:
        return key, report
    campaign = read_manifest(store_, shard, ShardManifest).campaign_id
    html, markdown = shard_qc_report(store_, campaign, stage_keys["qc_metrics"])
    return key, ShardReport(report.markdown + "\n" + markdown, report.metrics, html)


def shard_report(
    store: ObjectStore, shard_key: str, stage_keys: Mapping[str, str], *, gpus: int, decode_gpus: int
) -> ShardReport:
    """The shard's Markdown summary and metrics, from its step manifests (``stage_keys``: stage -> key)."""
    shard = read_manifest(store, shard_key, ShardManifest)
    manifests = {name: read_manifest(store, key, StepManifest) for name, key in stage_keys.items()}
    published = manifests["publish"]
    rows = ["| unit | status | seconds | deliverable |", "|---|---|---:|---|"]
    rendered = failed = 0
    seconds_total = 0.0
    for unit in shard.units:
        out = published.units.get(unit.unit_id)
        seconds = sum(m.units[unit.unit_id].seconds for m in manifests.values() if unit.unit_id in m.units)
        if out is None or out.status == "failed":
            failed += 1
            where = (out.error if out is not None else None) or "no output"
            status = "failed"
        else:
            rendered += 1 if out.status == "ok" else 0
            seconds_total += seconds
            where = store.uri(out.artifacts["video"].key)
            status = "published" if out.status == "ok" else "published before"
        rows.append(f"| {unit.unit_id} | {status} | {seconds:.1f} | {where.replace('|', '/')} |")
    gpu_seconds = manifests["dit_sample"].seconds * max(1, gpus) if "dit_sample" in manifests else 0.0
    if "tiled_decode" in manifests:
        gpu_seconds += manifests["tiled_decode"].seconds * max(1, decode_gpus)
    done = max(1, len(shard.units) - failed)
    metrics = {
        "units_rendered": float(rendered),
        "units_failed": float(failed),
        "seconds_per_unit": round(seconds_total / done, 3),
        "gpu_seconds": round(gpu_seconds, 3),
    }
    line = (
        f"Campaign **{shard.campaign_id}**, DiT `{shard.dit}`, latents {'x'.join(map(str, shard.latent_size))}: "
        f"{rendered} rendered, {failed} failed, {metrics['seconds_per_unit']:.1f} s per unit, "
        f"{metrics['gpu_seconds']:.0f} GPU-seconds."
    )
    head = [f"## Shard {shard.shard_id}", "", line, ""]
    return ShardReport("\n".join(head + rows) + "\n", metrics)


def campaign_index(
    plan_key: str, publish_keys: Sequence[str], *, store: str = "", artifact_path: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Write the campaign index (``python -m components.publish index``); returns its URI and the deliverables'
    metadata: per unit its URI, size, frames, fps, seed, status and pinned model versions."""
    _use_store(store)
    with tempfile.TemporaryDirectory(prefix="adrender-index-") as tmp:
        out = Path(tmp) / "index-key"
        cmd = [
            sys.executable,
            "-m",
            "components.publish",
            "index",
            "--plan",
            plan_key,
            "--output-file",
            str(out),
        ]
        cmd += [f"--input=publish={key}" for key in publish_keys]
        key = _run(cmd, "index")
    store_ = open_store()
    index = json.loads(store_.get_bytes(key))
    plan = read_manifest(store_, plan_key, PlanManifest)
    units: dict[str, Any] = {}
    for ref in plan.shards:
        for u in read_manifest(store_, ref.key, ShardManifest).units:
            units[u.unit_id] = {
                "size": f"{u.height}x{u.width}",
                "frames": u.frames,
                "fps": u.fps,
                "seed": u.seed,
                "models": dict(sorted(u.models.items())),
            }
    deliverables = [
        {
            "unit": e["unit"],
            "status": e["status"],
            "uri": store_.uri(e["video"]),
            "provenance": store_.uri(e["provenance"]),
            **units.get(e["unit"], {}),
        }
        for e in index["units"]
    ]
    if artifact_path is not None:
        Path(artifact_path).parent.mkdir(parents=True, exist_ok=True)
        Path(artifact_path).write_bytes(store_.get_bytes(key))
    metadata = {
        "campaign": plan.campaign_id,
        "index_uri": store_.uri(key),
        "counts": index["counts"],
        "deliverables": deliverables,
    }
    return store_.uri(key), metadata


def campaign_id(campaign_uri: str) -> str:
    """The campaign's own ``id`` (what the steps label their metrics with), read from its file; the file's name
    when the file cannot be read (the run may have failed on exactly that)."""
    from components.runtime.assets import localize
    from components.runtime.settings import RuntimeSettings
    from components.runtime.spec import load_campaign

    try:
        with tempfile.TemporaryDirectory(prefix="adrender-outcome-") as tmp:
            settings = RuntimeSettings.from_env()
            path = (
                localize(campaign_uri, settings, Path(tmp)) if "://" in campaign_uri else Path(campaign_uri)
            )
            return load_campaign(path).id
    except Exception as exc:  # noqa: BLE001 - any unreadable campaign falls back to its file name
        fallback = campaign_uri.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "campaign"
        log.warning("cannot read the campaign %s (%s); reporting it as %r", campaign_uri, exc, fallback)
        return fallback


def report_outcome(
    *,
    state: str,
    error: str | None,
    campaign_uri: str,
    run_name: str = "",
    webhook_url: str = "",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """The run's outcome: pushed to the Pushgateway (when ``ADRENDER_PUSHGATEWAY`` is set) as the campaign's
    final metrics, and posted as JSON to ``webhook_url`` when one is given. Never raises: a notification that
    fails must not fail a finished render; what went wrong is logged."""
    outcome: dict[str, Any] = {
        "campaign": campaign_id(campaign_uri),
        "campaign_uri": campaign_uri,
        "run": run_name,
        "state": state,
        "error": error or "",
    }
    gateway = os.environ.get("ADRENDER_PUSHGATEWAY", "")
    if gateway:
        try:
            from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

            registry = CollectorRegistry()
            succeeded = Gauge(
                "adrender_campaign_run_succeeded",
                "1 when the last Kubeflow run of the campaign succeeded, else 0",
                registry=registry,
            )
            succeeded.set(1.0 if state == "SUCCEEDED" else 0.0)
            finished = Gauge(
                "adrender_campaign_run_finished_timestamp_seconds",
                "when the last Kubeflow run of the campaign ended",
                registry=registry,
            )
            finished.set_to_current_time()
            push_to_gateway(
                gateway,
                job="adrender-campaign",
                grouping_key={"campaign": outcome["campaign"]},
                registry=registry,
            )
            outcome["pushed"] = True
        except Exception as exc:  # noqa: BLE001 - the render is done; the notification is best effort
            log.warning("could not push the run's outcome to %s: %s", gateway, exc)
    if webhook_url:
        body = json.dumps(outcome).encode()
        request = urllib.request.Request(
            webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                outcome["webhook_status"] = response.status
        except Exception as exc:  # noqa: BLE001
            log.warning("could not post the run's outcome to %s: %s", webhook_url, exc)
    return outcome
