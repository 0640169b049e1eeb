"""publish: each finished unit's mp4 under a stable, readable key with its provenance, and the campaign index.

Deliverables go to ``<output_prefix>/<campaign>/<job>/<unit>.mp4`` with ``<unit>.json`` beside it: campaign,
job, unit, seed, the original and rewritten prompt, every model (name, version, preset, file sha256), the
sampling settings, the seconds each step took, the code version and the unit's render digest (``plan``
skips a unit whose published digest matches), and the QC result (``qc``: verdict, failed checks, scores, every
check and the key of the full ``qc.json``) when ``qc_metrics`` ran. A unit that fails QC is still published,
marked ``qc.verdict: fail``, never dropped. The deliverable is ``v2a_foley``'s mp4 (with its soundtrack, or the
decoded video where foley is off). Steps that did not run are listed as such; no score is made up. ``index``
writes ``<output_prefix>/<campaign>/index.json`` listing every deliverable of the campaign with its QC verdict
(presigned URLs on S3), then the campaign's QC report ``qc-report.html`` beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from components.runtime.manifest import (
    PlanManifest,
    ShardManifest,
    StepManifest,
    UnitOutput,
    UnitPlan,
    deliverable_key,
    read_manifest,
)
from components.runtime.step import StepContext, artifact_ref, shard_step, step_main, unit_loop
from components.runtime.store import ObjectNotFound, S3Store

__all__ = ["PIPELINE_STEPS", "STEP", "code_version", "index", "main", "run"]

STEP = "publish"
# every step of the render DAG, in order; those without an upstream manifest did not run for the campaign
PIPELINE_STEPS = (
    "prompt_rewrite",
    "llava_encode",
    "vae_encode",
    "dit_sample",
    "tiled_decode",
    "v2a_foley",
    "qc_metrics",
)
_NOT_BUILT = {
    "v2a_foley": "not run: no foley manifest was given to publish",
    "qc_metrics": "not run: no qc manifest was given to publish",
}
URL_LIFETIME = timedelta(days=7)

log = logging.getLogger("adrender.publish")


@cache
def code_version() -> str:
    """The package version and, from a git checkout or ``ADRENDER_CODE_VERSION`` (set in images), the commit."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        base = version("adrender")
    except PackageNotFoundError:
        base = "unknown"
    commit = os.environ.get("ADRENDER_CODE_VERSION")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short=12", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return f"{base}+{commit}" if commit else base


def _provenance(
    shard: ShardManifest, unit: UnitPlan, ups: Mapping[str, StepManifest], video_key: str
) -> dict[str, Any]:
    return {
        "format": 1,
        "campaign": shard.campaign_id,
        "job": unit.job_id,
        "unit": unit.unit_id,
        "variant": unit.variant,
        "seed": unit.seed,
        "mode": unit.mode,
        "size": {"height": unit.height, "width": unit.width, "frames": unit.frames, "fps": unit.fps},
        "prompt": {"original": unit.prompt},
        "negative_prompt": unit.negative_prompt,
        "subjects": [
            {"word": w, "image": i, "sha256": unit.assets.get(i)}
            for w, i in zip(unit.subject_words, unit.subject_images)
        ],
        "models": {
            role: {
                "name": shard.models[pinned].name,
                "version": shard.models[pinned].version,
                "preset": shard.models[pinned].preset,
                "files": shard.models[pinned].files,
            }
            for role, pinned in sorted(unit.models.items())
        },
        "sampling": unit.sampling,
        "steps": {
            name: (
                {
                    "status": m.units[unit.unit_id].status,
                    "seconds": m.units[unit.unit_id].seconds,
                    **m.units[unit.unit_id].details,
                }
                if unit.unit_id in m.units
                else {"status": "no output"}
            )
            for name, m in ((m.step, m) for m in ups.values())
        }
        | {
            name: {"status": why}
            for name, why in _NOT_BUILT.items()
            if not any(m.step == name for m in ups.values())
        },
        "source_video": video_key,
        "render_digest": unit.render_digest,
        "code_version": code_version(),
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _qc_record(doc: Mapping[str, Any], key: str, attempts: list[Any] | None = None) -> dict[str, Any]:
    """The provenance's ``qc`` section: the verdict and scores of ``qc.json`` without its thumbnails, and every
    attempt (seed, verdict, failed checks) when the re-render gate rendered the unit more than once."""
    return {
        "verdict": doc["verdict"],
        "failed": doc["failed"],
        "rerender": doc["rerender"],
        "profile": doc["profile"],
        "scores": doc["scores"],
        "models": doc["models"],
        "checks": doc["checks"],
        "attempts": [
            {k: a[k] for k in ("seed", "verdict", "failed", "key", "error") if k in a}
            for a in attempts or [{"seed": doc["seed"], "verdict": doc["verdict"], "failed": doc["failed"]}]
        ],
        "key": key,
    }


def run(ctx: StepContext, shard_key: str, upstream: Mapping[str, str]) -> str:
    """Publish a shard (needs ``upstream['video']`` and ``upstream['prompts']``; every other upstream manifest
    adds its timings to the provenance); returns the step manifest key."""
    for name in ("video", "prompts"):
        if name not in upstream:
            raise ValueError(f"{STEP} needs --input {name}=<manifest key>")

    def work(shard: Any, ups: Mapping[str, StepManifest], telemetry: Any) -> dict[str, UnitOutput]:
        video = ups["video"]
        final = ups.get("foley") or video  # the muxed mp4 when foley ran

        def keys_for(unit: UnitPlan) -> dict[str, str]:
            return {
                "video": deliverable_key(
                    shard.output_prefix, shard.campaign_id, unit.job_id, unit.unit_id, ".mp4"
                ),
                "provenance": deliverable_key(
                    shard.output_prefix, shard.campaign_id, unit.job_id, unit.unit_id, ".json"
                ),
            }

        def body(unit: UnitPlan, keys: Mapping[str, str]) -> dict[str, Any]:
            src = final.units[unit.unit_id].artifacts["video"]
            path = ctx.scratch("publish") / f"{unit.unit_id}-{os.getpid()}.mp4"
            ctx.store.get_file(src.key, path)
            ctx.store.put_file(keys["video"], path, metadata={"format": "mp4"})
            path.unlink(missing_ok=True)
            record = _provenance(shard, unit, ups, src.key)
            prompts = ups["prompts"].ok(unit.unit_id)
            if prompts is not None:
                data = json.loads(ctx.store.get_bytes(prompts.artifacts["prompts"].key))
                record["prompt"] = {
                    "original": data["original"],
                    "rendered": data["prompt"],
                    "rewritten": data["rewritten"],
                    "rewrite_backend": data["backend"],
                    "rewrite_note": data.get("reason"),
                }
            record["video"] = {"key": keys["video"], "sha256": src.sha256, "bytes": src.size}
            qc = ups["qc"].ok(unit.unit_id) if "qc" in ups else None
            if qc is not None:
                record["qc"] = _qc_record(
                    json.loads(ctx.store.get_bytes(qc.artifacts["qc"].key)),
                    qc.artifacts["qc"].key,
                    qc.details.get("attempts"),
                )
            # the provenance is written last: plan treats it as the mark of a published unit
            ctx.store.put_bytes(
                keys["provenance"], (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode()
            )
            return {
                "deliverable": keys["video"],
                **({"qc": record["qc"]["verdict"]} if "qc" in record else {}),
            }

        # a unit published before with another render digest is overwritten: check digests, not existence
        outputs: dict[str, UnitOutput] = {}
        for unit in shard.units:
            keys = keys_for(unit)
            try:
                old = json.loads(ctx.store.get_bytes(keys["provenance"]))
            except (ObjectNotFound, ValueError):
                old = None
            if isinstance(old, dict) and old.get("render_digest") != unit.render_digest:
                ctx.store.delete(keys["provenance"])
        outputs = unit_loop(ctx, shard, STEP, keys_for, body, telemetry=telemetry, upstream=[final])
        return outputs

    return shard_step(ctx, STEP, shard_key, upstream, work)


def index(ctx: StepContext, plan_key: str, publish_keys: Sequence[str] = ()) -> str:
    """Write the campaign index (every deliverable of the plan, published now or before); returns its key."""
    plan = read_manifest(ctx.store, plan_key, PlanManifest)
    entries: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    for key in publish_keys:
        m = read_manifest(ctx.store, key, StepManifest)
        failures |= {u: o.error or "failed" for u, o in m.units.items() if o.status == "failed"}
    units: list[tuple[str, str]] = [(s.unit_id, s.deliverable) for s in plan.skipped]
    for ref in plan.shards:
        shard = read_manifest(ctx.store, ref.key, ShardManifest)
        units += [
            (u.unit_id, deliverable_key(plan.output_prefix, plan.campaign_id, u.job_id, u.unit_id, ".mp4"))
            for u in shard.units
        ]
    for unit_id, mp4 in sorted(units):
        entry: dict[str, Any] = {"unit": unit_id, "video": mp4, "provenance": mp4[: -len(".mp4")] + ".json"}
        if unit_id in failures:
            entry |= {"status": "failed", "error": failures[unit_id]}
        else:
            try:
                info = artifact_ref(ctx.store, mp4)
                entry |= {"status": "published", "sha256": info.sha256, "bytes": info.size}
                with contextlib.suppress(ObjectNotFound, ValueError, AttributeError):
                    entry["qc"] = json.loads(ctx.store.get_bytes(entry["provenance"]))["qc"]["verdict"]
                if isinstance(ctx.store, S3Store):
                    entry["url"] = ctx.store.presigned_url(mp4, URL_LIFETIME)
                else:
                    entry["uri"] = ctx.store.uri(mp4)
            except ObjectNotFound:
                entry["status"] = "missing"
        entries.append(entry)
    doc = {
        "format": 1,
        "campaign": plan.campaign_id,
        "plan": plan_key,
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "units": entries,
        "counts": {
            s: sum(1 for e in entries if e["status"] == s) for s in ("published", "failed", "missing")
        },
        "qc": {
            "counts": {v: sum(1 for e in entries if e.get("qc") == v) for v in ("pass", "fail")},
            "report": f"{plan.output_prefix}/{plan.campaign_id}/qc-report.html",
        },
    }
    key = f"{plan.output_prefix}/{plan.campaign_id}/index.json"
    ctx.store.put_bytes(key, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode())
    from components.report import write_report

    write_report(ctx.store, plan.output_prefix, plan.campaign_id)
    return key


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m components.publish --shard KEY --input video=KEY --input prompts=KEY ...`` publishes a
    shard; ``python -m components.publish index --plan KEY [--input publish=KEY ...]`` writes the index."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["index"]:
        import argparse

        parser = argparse.ArgumentParser(prog="python -m components.publish index")
        parser.add_argument("--plan", required=True)
        parser.add_argument("--input", action="append", default=[], metavar="publish=KEY")
        parser.add_argument("--output-file", type=Path)
        ns = parser.parse_args(args[1:])
        logging.basicConfig(level=logging.INFO)
        key = index(StepContext.from_env(), ns.plan, [i.partition("=")[2] for i in ns.input])
        print(key)
        if ns.output_file is not None:
            ns.output_file.write_text(key)
        return 0
    return step_main(STEP, run, args, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
