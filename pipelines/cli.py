"""The `adrender` command line.

Each subcommand is a pair of functions: `_add_<name>(subparsers)` declares its arguments and
`cmd_<name>(args) -> int` runs it and returns the exit code. `main` dispatches; a new subcommand
(render, compile, submit, schedule, models, status) is one more pair added to `_SUBCOMMANDS`.

    adrender validate FILE...      check campaign files; exit 0 when all are valid, 1 otherwise
    adrender models ACTION ...     the model registry: register, alias, list, resolve, fetch
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from components.report import add_report
from components.runtime.settings import RuntimeSettings, SettingsError
from components.runtime.spec import CampaignError, CampaignIssue, load_campaign
from pipelines.kfp_commands import add_compile, add_runs, add_schedule, add_submit
from pipelines.model_commands import add_models
from pipelines.render_command import add_render

__all__ = ["build_parser", "cmd_validate", "main"]


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate every file given; print one OK line per valid file and every problem of the others.

    Warnings (allowed, but probably not meant) are printed as ``WARNING FILE: FIELD: ...`` and do not fail
    a file. Unless ``--no-media``, the media each campaign references are opened and checked as well.
    """
    failed = 0
    settings: RuntimeSettings | None = None
    for file in args.files:
        try:
            campaign = load_campaign(file)
            issues = list(campaign.warnings)
            if not args.no_media:
                # ffmpeg and numpy are loaded only when media are checked
                from components.runtime.assets import DEFAULT_CACHE_DIR, check_assets

                settings = settings or RuntimeSettings.from_env()
                issues += check_assets(campaign, settings, args.asset_cache or DEFAULT_CACHE_DIR)
        except CampaignError as exc:
            issues = list(exc.issues)
        except SettingsError as exc:
            issues = [CampaignIssue(str(file), "", f"cannot check its media: {exc} (or pass --no-media)")]
        errors = [i for i in issues if i.severity == "error"]
        for issue in issues:
            if issue.severity == "warning":
                print(f"WARNING {issue}", file=sys.stderr)
        if errors:
            failed += 1
            print(f"FAIL {file}: {len(errors)} problem(s)", file=sys.stderr)
            for issue in errors:
                print(f"  {issue}", file=sys.stderr)
            continue
        units = campaign.render_units()
        print(f"OK {file}: {len(campaign.jobs)} jobs, {len(units)} render units")
        if args.verbose:
            for job in campaign.jobs:
                sizes = ",".join(str(s) for s in job.sizes)
                print(
                    f"  {job.id}: mode={job.mode.value} size={sizes} frames={job.frames} steps={job.steps} "
                    f"cfg={job.cfg_scale} shift={job.flow_shift} seeds={job.seeds} "
                    f"foley={'on' if job.foley.enabled else 'off'} dit={campaign.models_for(job)['dit']}"
                )
    return 1 if failed else 0


def _add_validate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check campaign files (YAML or JSON) and their media without rendering",
        description="Check campaign files and the media they reference; list every problem with its field path "
        "and fix.",
    )
    parser.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="campaign file (.yaml, .yml or .json)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print each job's resolved mode, sizes, sampling settings and seeds",
    )
    parser.add_argument(
        "--no-media",
        action="store_true",
        help="check the files only; do not open the images, audio and videos they reference",
    )
    parser.add_argument(
        "--asset-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="where s3:// assets are downloaded for checking (default: ./.adrender/assets)",
    )
    parser.set_defaults(func=cmd_validate)


_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    _add_validate,
    add_render,
    add_models,
    add_compile,
    add_submit,
    add_schedule,
    add_runs,
    add_report,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="adrender", description="Batch rendering of generated video ads.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `adrender` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
