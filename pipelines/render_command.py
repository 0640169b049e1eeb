"""`adrender render CAMPAIGN`: the render DAG on this machine (plan, every shard through the steps, index).

    adrender render examples/demo/campaign.yaml                  # render everything not yet published
    adrender render CAMPAIGN --dry-run                           # the plan only: units, shards, pinned models
    adrender render CAMPAIGN --only woman-intro --world-size 2   # one job, sampling and decode on 2 processes

Exit 0 when every unit is published, 1 when a unit failed (the table says which and why), 2 when the campaign
cannot be planned (every problem listed), 130 on Ctrl-C (step checkpoints are kept: rerun to resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from components.plan import DEFAULT_PREFIX, DEFAULT_UNITS_PER_SHARD, PlanError
from components.runtime.registry import RegistryError
from components.runtime.settings import SettingsError
from components.runtime.spec import CampaignError

__all__ = ["add_render", "cmd_render"]


def cmd_render(args: argparse.Namespace) -> int:
    from components.runtime.step import StepContext
    from pipelines.local import RenderOptions, render, summary_table

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # the runner draws its own bars over units and steps; MLflow's per-file download bars would interleave
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        ctx = StepContext.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = RenderOptions(
        campaign=args.campaign,
        prefix=args.prefix,
        only=tuple(args.only),
        world_size=args.world_size,
        dry_run=args.dry_run,
        checkpoint_every=args.checkpoint_every,
        units_per_shard=args.units_per_shard,
        check_media=not args.no_media_check,
        progress=not args.no_progress,
    )
    try:
        report = render(ctx, options)
    except (CampaignError, PlanError, RegistryError) as exc:
        print(f"cannot render {args.campaign}:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished units and step checkpoints are kept in the store; run the same command "
            "again to resume",
            file=sys.stderr,
        )
        return 130
    if args.dry_run:
        print(f"plan: {ctx.store.uri(report.plan_key)}")
        return 0
    print(summary_table(report))
    if report.index_key is not None:
        print(f"\ncampaign index: {ctx.store.uri(report.index_key)}")
        qc_report = report.index_key.rsplit("/", 1)[0] + "/qc-report.html"
        if ctx.store.exists(qc_report):
            print(f"QC report:      {ctx.store.uri(qc_report)}")
    print(
        f"{len(report.units) - len(report.failed)} of {len(report.units)} unit(s) published in {report.seconds:.1f} s"
    )
    if report.failed:
        print(f"{len(report.failed)} unit(s) failed; see the table above", file=sys.stderr)
        return 1
    return 0


def add_render(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render a campaign on this machine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("campaign", type=Path, metavar="CAMPAIGN", help="campaign file (.yaml or .json)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="JOB", help="render only this job (repeatable)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="plan only: print units, shards, pinned versions, estimate"
    )
    parser.add_argument(
        "--world-size",
        type=int,
        default=1,
        metavar="N",
        help="run sampling and decode as N processes (gloo on CPU)",
    )
    parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help="key prefix of intermediate artifacts in the store"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=5, metavar="K", help="sampling steps between checkpoints"
    )
    parser.add_argument("--units-per-shard", type=int, default=DEFAULT_UNITS_PER_SHARD, metavar="N")
    parser.add_argument(
        "--no-media-check", action="store_true", help="skip opening every referenced media file"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    parser.set_defaults(func=cmd_render)
