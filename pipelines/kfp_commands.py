"""``adrender compile | submit | schedule | runs``: the render pipeline on a Kubeflow Pipelines cluster.

    adrender compile [-o pipeline.yaml] [--kubernetes-manifests]   the pipeline as KFP IR YAML (or as Pipeline /
                                                                  PipelineVersion resources), for upload
    adrender submit CAMPAIGN --kfp-host URL      upload the campaign (and its media) to the store, start a run in
                                                 the experiment named after the campaign, print the run's URL
    adrender schedule CAMPAIGN --kfp-host URL    a recurring run on the campaign's `schedule` (5-field crontab)
    adrender runs CAMPAIGN --kfp-host URL        the campaign's recent runs and their states

``submit`` and ``schedule`` validate the campaign and its media before they talk to KFP. Authentication is the
KFP SDK's: ``KF_PIPELINES_ENDPOINT`` (the host), ``KF_PIPELINES_SA_TOKEN_PATH`` (a service-account token
file), the IAP / OAuth client variables, plus ``ADRENDER_KFP_TOKEN`` (a bearer token) and
``ADRENDER_KFP_COOKIES`` (a ``Cookie`` header value, e.g. ``authservice_session=...``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.runtime.spec import Campaign, CampaignError, load_campaign
from pipelines.kfp_names import MLFLOW_SECRET, MODEL_CACHE_PVC, S3_SECRET, SETTINGS_CONFIG_MAP

if TYPE_CHECKING:  # kfp loads in about a second: only the commands that need it import it
    from kfp import Client  # type: ignore[import-untyped]

    from pipelines.render_campaign import PipelineOptions

__all__ = ["CronError", "add_compile", "add_runs", "add_schedule", "add_submit", "to_kfp_cron"]

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


class CronError(ValueError):
    """A crontab that KFP's scheduler cannot run with the same meaning."""


def to_kfp_cron(expr: str) -> str:
    """A 5-field crontab (``minute hour day-of-month month day-of-week``) as KFP's 6-field cron, seconds first.

    KFP's scheduler (robfig/cron) reads the same fields and names, and also treats a day-of-month and a
    day-of-week that are both restricted as "either". It differs where a field starts with ``*/``: classic cron
    counts ``*/2`` as unrestricted (so ``0 6 */2 * 1`` means odd days *and* Mondays), robfig/cron as
    restricted (odd days *or* Mondays); such a schedule is refused rather than run on other days.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(
            f"schedule {expr!r} has {len(fields)} fields; write a 5-field crontab "
            "'minute hour day-of-month month day-of-week', e.g. '0 6 * * 1'"
        )
    dom, dow = fields[2], fields[4]
    stepped_star = [f for f in (dom, dow) if f.startswith("*/")]
    if stepped_star and dom != "*" and dow != "*":
        raise CronError(
            f"schedule {expr!r}: {stepped_star[0]!r} with a restricted "
            f"{'day of week' if dom.startswith('*/') else 'day of month'} means 'both' in cron and 'either' in "
            "KFP's scheduler; list the days explicitly (e.g. '1-31/2' for odd days) or drop one of the two"
        )
    return " ".join(["0", *fields])


# compile -----------------------------------------------------------------------------------------------------


def _options(args: argparse.Namespace) -> PipelineOptions:
    from pipelines.render_campaign import DEFAULT_IMAGE, PipelineOptions

    image = args.image or os.environ.get("ADRENDER_IMAGE") or DEFAULT_IMAGE
    try:
        return PipelineOptions(
            image=image,
            parallelism=args.parallelism,
            retries=args.retries,
            settings_config_map=args.settings_config_map,
            s3_secret=args.s3_secret,
            mlflow_secret=args.mlflow_secret,
            model_cache_pvc=args.model_cache_pvc,
            sampling_nodes=args.sampling_nodes,
            **({"qc_rounds": args.qc_rounds} if args.qc_rounds is not None else {}),
        )
    except ValueError as exc:
        raise SubmitError(str(exc)) from exc


def _k8s_name(value: str) -> str:
    """An argparse type: a Kubernetes object name (DNS subdomain)."""
    if (
        not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", value)
        or len(value) > 253
    ):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a Kubernetes object name: lower-case letters, digits, '-' and '.', e.g. adrender-s3"
        )
    return value


def _add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image", default=None,
        help="the project image, best pinned by digest (default: $ADRENDER_IMAGE, else the released image)",
    )  # fmt: skip
    parser.add_argument(
        "--parallelism",
        type=int,
        default=1,
        help="shards rendered at once: the 8-GPU nodes to use (default 1)",
    )
    parser.add_argument("--retries", type=int, default=3, help="retries of every task (default 3)")
    names = parser.add_argument_group("the cluster objects every task reads (the Helm chart's values)")
    names.add_argument(
        "--settings-config-map", type=_k8s_name, default=SETTINGS_CONFIG_MAP,
        help=f"ConfigMap of settings read as env (default {SETTINGS_CONFIG_MAP})",
    )  # fmt: skip
    names.add_argument(
        "--s3-secret", type=_k8s_name, default=S3_SECRET,
        help=f"Secret with the keys access-key, secret-key (default {S3_SECRET})",
    )  # fmt: skip
    names.add_argument(
        "--mlflow-secret", type=lambda v: v and _k8s_name(v), default=MLFLOW_SECRET,
        help=f'Secret with the keys username, password; "" for an MLflow server without auth (default {MLFLOW_SECRET})',
    )  # fmt: skip
    names.add_argument(
        "--model-cache-pvc", type=_k8s_name, default=MODEL_CACHE_PVC,
        help=f"PersistentVolumeClaim of the checkpoint cache (default {MODEL_CACHE_PVC})",
    )  # fmt: skip
    parser.add_argument(
        "--qc-rounds", type=int, default=None,
        help="re-render rounds of the QC gate in the DAG (default 5, the most qc.max_rerenders allows)",
    )  # fmt: skip
    parser.add_argument(
        "--sampling-nodes", type=int, default=1,
        help="nodes per sampling job: above 1, dit_sample runs as a Kubeflow Trainer TrainJob (default 1)",
    )  # fmt: skip


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.render_campaign import compile_pipeline

    try:
        options = _options(args)
    except SubmitError as exc:
        return _fail(exc)
    result = compile_pipeline(
        options, args.output, kubernetes_manifest=args.kubernetes_manifests, namespace=args.namespace
    )
    kind = "Pipeline and PipelineVersion manifests" if result.kubernetes_manifest else "pipeline"
    print(f"wrote {kind} to {result.path}")
    return 0


def add_compile(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "compile",
        help="compile the Kubeflow pipeline to YAML",
        description="Compile the render pipeline to KFP IR YAML (upload it in the KFP UI) or, with "
        "--kubernetes-manifests, to Pipeline / PipelineVersion resources for KFP's Kubernetes-native API mode.",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("pipeline.yaml"), help="default: pipeline.yaml"
    )
    parser.add_argument("--kubernetes-manifests", action="store_true", help="write Kubernetes resources")
    parser.add_argument("--namespace", default=None, help="namespace of the Kubernetes resources")
    _add_pipeline_options(parser)
    parser.set_defaults(func=cmd_compile)


# the campaign on the store --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedCampaign:
    campaign: Campaign
    uri: str  # the s3:// URI a run reads


class SubmitError(Exception):
    """The campaign cannot be started: the message says why and what to do."""


def _check(campaign: Campaign, check_media: bool) -> None:
    if not check_media:
        return
    from components.runtime.assets import DEFAULT_CACHE_DIR, check_assets
    from components.runtime.settings import RuntimeSettings

    errors = [
        i
        for i in check_assets(campaign, RuntimeSettings.from_env(), DEFAULT_CACHE_DIR)
        if i.severity == "error"
    ]
    if errors:
        raise CampaignError(errors)


def stage_campaign(source: str, *, check_media: bool = True) -> StagedCampaign:
    """Validate the campaign (and its media), and put it where the cluster reads it.

    An ``s3://`` campaign is used where it is. A local file is uploaded to the store (``ADRENDER_STORE``, which
    must be on S3) under ``campaigns/<id>/<digest>/``, with every asset it names by a relative path beside it:
    the run reads exactly these bytes even if the local files change later.
    """
    from components.runtime.store import S3Store, open_store

    if source.startswith("s3://"):
        from components.runtime.assets import DEFAULT_CACHE_DIR, AssetError, localize
        from components.runtime.settings import RuntimeSettings

        try:
            local = localize(source, RuntimeSettings.from_env(), DEFAULT_CACHE_DIR)
        except AssetError as exc:
            raise SubmitError(str(exc)) from exc
        campaign = load_campaign(local, source_uri=source)
        _check(campaign, check_media)
        return StagedCampaign(campaign, source)

    path = Path(source)
    campaign = load_campaign(path)
    _check(campaign, check_media)
    store = open_store()
    if not isinstance(store, S3Store):
        raise SubmitError(
            f"ADRENDER_STORE is {store.uri('')}: a cluster reads the campaign from S3; set ADRENDER_STORE to "
            "s3://bucket/prefix (and ADRENDER_S3_ENDPOINT, credentials) or pass an s3:// campaign URI"
        )
    folder = path.resolve().parent
    assets: dict[str, Path] = {}
    for uri in _asset_uris(campaign):
        if not uri.startswith("file://"):
            continue
        from urllib.parse import unquote, urlsplit

        local = Path(unquote(urlsplit(uri).path))
        if not local.is_relative_to(folder):
            raise SubmitError(
                f"{path}: {uri} is outside the campaign's folder; a cluster cannot read local files: put it "
                "beside the campaign (relative path) or upload it and use its s3:// URI"
            )
        assets[local.relative_to(folder).as_posix()] = local
    digest = hashlib.sha256(path.read_bytes())
    for rel, local in sorted(assets.items()):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(local.read_bytes()).digest())
    base = f"campaigns/{campaign.id}/{digest.hexdigest()[:16]}"
    for rel, local in sorted(assets.items()):
        store.put_file(f"{base}/{rel}", local)
    key = f"{base}/{path.name}"
    store.put_file(key, path)
    return StagedCampaign(campaign, store.uri(key))


def _asset_uris(campaign: Campaign) -> list[str]:
    uris: list[str] = []
    for job in campaign.jobs:
        uris += [s.image for s in job.subjects]
        if job.audio is not None:
            uris.append(job.audio.uri)
        if job.edit is not None:
            uris += [job.edit.video, job.edit.mask]
    return sorted(set(uris))


# KFP ---------------------------------------------------------------------------------------------------------


def kfp_client(host: str | None, namespace: str | None = None) -> Client:
    """A KFP client with the SDK's usual authentication, plus ``ADRENDER_KFP_TOKEN`` / ``ADRENDER_KFP_COOKIES``."""
    from kfp import Client

    host = host or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise SubmitError("no KFP host: pass --kfp-host URL or set KF_PIPELINES_ENDPOINT")
    kwargs: dict[str, Any] = {"host": host, "ui_host": os.environ.get("KF_PIPELINES_UI_ENDPOINT") or host}
    if os.environ.get("ADRENDER_KFP_TOKEN"):
        kwargs["existing_token"] = os.environ["ADRENDER_KFP_TOKEN"]
    if os.environ.get("ADRENDER_KFP_COOKIES"):
        kwargs["cookies"] = os.environ["ADRENDER_KFP_COOKIES"]
    if namespace:
        kwargs["namespace"] = namespace
    return Client(**kwargs)


@contextmanager
def _package(args: argparse.Namespace) -> Iterator[str]:
    from pipelines.render_campaign import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="adrender-kfp-") as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compile_pipeline(_options(args), path)
        yield str(path)


def _arguments(args: argparse.Namespace, staged: StagedCampaign) -> dict[str, Any]:
    params: dict[str, Any] = {"campaign_uri": staged.uri}
    if args.gpus is not None:
        params["gpus_per_sampling_pod"] = args.gpus
    if args.webhook_url:
        params["webhook_url"] = args.webhook_url
    return params


def _ui(client: Client, host: str | None, path: str) -> str:
    base = os.environ.get("KF_PIPELINES_UI_ENDPOINT") or host or os.environ.get("KF_PIPELINES_ENDPOINT") or ""
    return f"{base.rstrip('/')}/#/{path}"


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        staged = stage_campaign(args.campaign, check_media=not args.no_media)
        client = kfp_client(args.kfp_host, args.namespace)
        with _package(args) as package:
            result = client.create_run_from_pipeline_package(
                package,
                arguments=_arguments(args, staged),
                run_name=args.run_name or f"{staged.campaign.id}",
                experiment_name=staged.campaign.id,
                namespace=args.namespace,
                enable_caching=False,
            )
    except (CampaignError, SubmitError) as exc:
        return _fail(exc)
    print(f"campaign {staged.campaign.id}: {staged.uri}")
    print(f"run {result.run_id}: {_ui(client, args.kfp_host, f'runs/details/{result.run_id}')}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    try:
        staged = stage_campaign(args.campaign, check_media=not args.no_media)
        if not staged.campaign.schedule:
            raise SubmitError(
                f'{args.campaign}: the campaign has no schedule; add e.g. schedule: "0 6 * * 1" (5-field '
                "crontab, UTC) or start one run with adrender submit"
            )
        cron = to_kfp_cron(staged.campaign.schedule)
        client = kfp_client(args.kfp_host, args.namespace)
        experiment = client.create_experiment(staged.campaign.id, namespace=args.namespace)
        with _package(args) as package:
            job = client.create_recurring_run(
                experiment_id=experiment.experiment_id,
                job_name=f"{staged.campaign.id} ({staged.campaign.schedule})",
                cron_expression=cron,
                max_concurrency=args.max_concurrency,
                no_catchup=not args.catchup,
                params=_arguments(args, staged),
                pipeline_package_path=package,
                enable_caching=False,
            )
    except (CampaignError, SubmitError, CronError) as exc:
        return _fail(exc)
    job_id = job.recurring_run_id
    print(f"campaign {staged.campaign.id}: {staged.uri}")
    print(
        f"recurring run {job_id} on {cron!r} (KFP cron, seconds first), at most {args.max_concurrency} at once"
    )
    print(_ui(client, args.kfp_host, f"recurringrun/details/{job_id}"))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    name = args.campaign
    try:
        if name.endswith((".yaml", ".yml", ".json")) and "://" not in name:
            name = load_campaign(name).id
        client = kfp_client(args.kfp_host, args.namespace)
        try:
            experiment = client.get_experiment(experiment_name=name, namespace=args.namespace)
        except ValueError:
            print(f"no runs of campaign {name} (no experiment named {name})")
            return 0
        response = client.list_runs(
            experiment_id=experiment.experiment_id, page_size=args.limit, sort_by="created_at desc"
        )
    except (CampaignError, SubmitError) as exc:
        return _fail(exc)
    runs = response.runs or []
    rows = [("run", "state", "created", "name")]
    rows += [(r.run_id, str(r.state), str(r.created_at or ""), r.display_name or "") for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")
    return 0


def _add_kfp_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kfp-host", default=None, help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT)")
    parser.add_argument("--namespace", default=None, help="KFP namespace (multi-user installs)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("campaign", help="campaign file, or its s3:// URI")
    _add_kfp_options(parser)
    _add_pipeline_options(parser)
    parser.add_argument("--gpus", type=int, default=None, help="GPUs per sampling pod (default 8)")
    parser.add_argument("--webhook-url", default="", help="POST the run's outcome (JSON) to this URL")
    parser.add_argument("--no-media", action="store_true", help="do not open the media before submitting")


def add_submit(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="start a render of a campaign on Kubeflow",
        description="Validate the campaign and its media, upload them to the store, and start a run in the "
        "experiment named after the campaign; prints the run's URL.",
    )
    _add_run_options(parser)
    parser.add_argument("--run-name", default=None, help="default: the campaign id")
    parser.set_defaults(func=cmd_submit)


def add_schedule(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="render a campaign on Kubeflow on its schedule",
        description="Validate the campaign and its media, upload them, and create a recurring run from the "
        "campaign's schedule (a 5-field crontab, run by KFP as 6 fields with seconds). Missed runs are not "
        "caught up unless --catchup.",
    )
    _add_run_options(parser)
    parser.add_argument("--max-concurrency", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--catchup", action="store_true", help="run the schedules missed while paused")
    parser.set_defaults(func=cmd_schedule)


def add_runs(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="recent Kubeflow runs of a campaign and their states",
        description="List the newest runs in the experiment named after the campaign.",
    )
    parser.add_argument("campaign", help="campaign id, or a campaign file")
    _add_kfp_options(parser)
    parser.add_argument("--limit", type=int, default=10, help="how many runs (default 10)")
    parser.set_defaults(func=cmd_runs)
