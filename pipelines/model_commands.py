"""`adrender models ...`: the model registry from the command line.

    adrender models register NAME FOLDER --preset PRESET [--alias production] [--source TEXT]
                                    [--excluded-territories EU,GB,KR]
    adrender models alias NAME ALIAS VERSION
    adrender models list
    adrender models resolve REF              (REF = name@alias or name/version)
    adrender models fetch REF [--quick]      (download into the local cache, verify it, print its folder)

`register` checks first that the preset exists and that the files fit it. `fetch` re-hashes every cached file
(sha256) unless `--quick`, which only compares sizes.
    adrender models bootstrap-tiny [--alias production] [--force]   (random tiny models for the demo and tests)

The registry is the one `MLFLOW_TRACKING_URI` names (default: a sqlite file under ./.adrender), the cache the one
`ADRENDER_MODEL_CACHE` names; see `components.runtime.registry`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from components.runtime.registry import ModelRef, Registry, RegistryError, ResolvedModel

__all__ = ["add_models"]


def _registry() -> Registry:
    registry = Registry.from_env()
    print(f"contacting model registry {registry.tracking_uri}", file=sys.stderr)
    return registry


def _cmd_register(args: argparse.Namespace) -> int:
    resolved = _registry().register(
        args.name,
        args.folder,
        args.preset,
        source=args.source or str(args.folder),
        aliases=tuple(args.alias),
        excluded_territories=args.excluded_territories,
        max_subjects=args.max_subjects,
    )
    aliases = f" (aliases: {', '.join(args.alias)})" if args.alias else ""
    excluded = (
        f"; licence excludes {','.join(resolved.excluded_territories)}"
        if resolved.excluded_territories
        else ""
    )
    subjects = f"; trained for {resolved.max_subjects} subjects" if resolved.max_subjects > 1 else ""
    print(
        f"registered {resolved}: preset {resolved.preset}, {len(resolved.files)} files, "
        f"{resolved.total_bytes} bytes{aliases}{excluded}{subjects}"
    )
    return 0


def _subject_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--max-subjects takes a whole number >= 1, got {text!r}")
    return value


def _cmd_alias(args: argparse.Namespace) -> int:
    _registry().set_alias(args.name, args.alias, args.version)
    print(f"{args.name}@{args.alias} -> version {args.version}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    models = _registry().list_models()
    if not models:
        print("no registered models; add one with `adrender models register NAME FOLDER --preset PRESET`")
        return 0
    for info in models:
        aliases = ", ".join(f"{alias}->{version}" for alias, version in sorted(info.aliases.items())) or "-"
        versions = ", ".join(str(v) for v in info.versions) or "-"
        print(f"{info.name}: versions {versions}; aliases {aliases}")
    return 0


def _cmd_resolve(args: argparse.Namespace) -> int:
    resolved = _registry().resolve(ModelRef.parse(args.ref))
    print(json.dumps(resolved.as_dict(), indent=2, sort_keys=True))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    registry = _registry()
    resolved = registry.resolve(ModelRef.parse(args.ref))
    folder = registry.fetch(resolved, full_verify=not args.quick, quick=args.quick)
    print(folder)
    return 0


def _cmd_bootstrap_tiny(args: argparse.Namespace) -> int:
    from pipelines.bootstrap import bootstrap_tiny

    registry = _registry()
    print(f"registering tiny random-weight models (they render noise) at {registry.tracking_uri}")

    def report(resolved: ResolvedModel, registered: bool) -> None:
        state = "registered" if registered else "unchanged "
        print(f"{state} {resolved.name}@{args.alias} -> {resolved}  preset {resolved.preset}", flush=True)

    bootstrap_tiny(registry, alias=args.alias, force=args.force, progress=report)
    return 0


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Registry errors and bad references become one line on stderr and exit code 1, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            result: int = func(args)
        except (RegistryError, ValueError) as exc:
            print(f"adrender models {args.models_command}: {exc}", file=sys.stderr)
            return 1
        return result

    return run


def add_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare `adrender models` and its subcommands."""
    parser = subparsers.add_parser(
        "models",
        help="register, alias, list, resolve and fetch checkpoints",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    register = sub.add_parser("register", help="upload a folder of checkpoint files as a new model version")
    register.add_argument("name", help="registered model name, e.g. hunyuancustom-dit")
    register.add_argument("folder", type=Path, help="folder of the official checkpoint files")
    register.add_argument("--preset", required=True, help="model_core preset the files load into")
    register.add_argument(
        "--alias",
        action="append",
        default=[],
        help="alias to point at the new version (repeatable), e.g. production",
    )
    register.add_argument("--source", default="", help="where the files came from (free text, kept as a tag)")
    register.add_argument(
        "--excluded-territories",
        default="",
        metavar="CODES",
        help="territories the weights' licence excludes: two-letter codes separated by commas, e.g. EU,GB,KR",
    )
    register.add_argument(
        "--max-subjects",
        type=_subject_count,
        default=1,
        metavar="K",
        help="DiT only: the subjects (identity images) per job the checkpoint was trained for; default 1, as the "
        "released HunyuanCustom checkpoints. plan refuses jobs with more subjects than their DiT version takes",
    )
    register.set_defaults(func=_guarded(_cmd_register))

    alias = sub.add_parser("alias", help="point an alias at a version")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=int)
    alias.set_defaults(func=_guarded(_cmd_alias))

    listing = sub.add_parser("list", help="registered models with their versions and aliases")
    listing.set_defaults(func=_guarded(_cmd_list))

    resolve = sub.add_parser(
        "resolve", help="print the version, preset and file digests a reference resolves to"
    )
    resolve.add_argument("ref", help="name@alias or name/version")
    resolve.set_defaults(func=_guarded(_cmd_resolve))

    fetch = sub.add_parser("fetch", help="download a version into the local cache and print its folder")
    fetch.add_argument("ref", help="name@alias or name/version")
    fetch.add_argument(
        "--quick", action="store_true", help="only compare the cached files' sizes instead of their sha256"
    )
    fetch.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)  # the default now
    fetch.set_defaults(func=_guarded(_cmd_fetch))

    tiny = sub.add_parser(
        "bootstrap-tiny",
        help="register random tiny versions of every model a campaign needs",
        description="Write tiny random-weight models (four DiT modes, VAE, LLaVA, CLIP, Whisper) and register "
        "them under the campaign's default model names. They render noise: use them to try the pipeline, then "
        "register the released checkpoints. Running it again registers nothing new.",
    )
    tiny.add_argument(
        "--alias",
        default="production",
        help="alias to point at the tiny versions (default: production, what campaigns use by default)",
    )
    tiny.add_argument(
        "--force",
        action="store_true",
        help="move the alias even where it points at a released (non-tiny) checkpoint",
    )
    tiny.set_defaults(func=_guarded(_cmd_bootstrap_tiny))
