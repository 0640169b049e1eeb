"""adrender submit / schedule / runs against a loopback HTTP server that speaks the KFP v2beta1 REST API
(tests/fake_kfp.py: no real KFP API server can run on these machines, it needs a Kubernetes cluster, Argo and
MySQL). The tests read every request body with the API's own generated models (``kfp_server_api``): only fields
those models know, of the right types. The campaign goes to a real S3 server (moto) first, as it would to the cluster's store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli import main
from pipelines.kfp_commands import CronError, to_kfp_cron
from tests.campaigns import ALL_MODES, write_campaign
from tests.conftest import S3Server
from tests.fake_kfp import FakeKfp, read_model, serve_kfp


@pytest.fixture
def kfp_server() -> Iterator[FakeKfp]:
    with serve_kfp() as server:
        yield server


@pytest.fixture
def s3_store(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, str]:
    from minio import Minio

    bucket = s3_server.new_bucket_name()
    client = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        region=s3_server.region,
    )
    client.make_bucket(bucket)
    for name, value in {
        "ADRENDER_STORE": f"s3://{bucket}/prod",
        "ADRENDER_S3_ENDPOINT": s3_server.url,
        "ADRENDER_S3_ACCESS_KEY": s3_server.access_key,
        "ADRENDER_S3_SECRET_KEY": s3_server.secret_key,
        "ADRENDER_S3_REGION": s3_server.region,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no KFP context file of the developer's
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("KF_PIPELINES_UI_ENDPOINT", raising=False)
    return client, bucket


def test_submit_uploads_the_campaign_and_starts_a_run_in_its_experiment(
    kfp_server: FakeKfp,
    s3_store: tuple[Any, str],
    demo_media: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, bucket = s3_store
    campaign = write_campaign(tmp_path, demo_media, ALL_MODES[:2], id="spring-launch")
    monkeypatch.setenv("ADRENDER_KFP_TOKEN", "t0ken")

    code = main(
        ["submit", str(campaign), "--kfp-host", kfp_server.url, "--gpus", "16", "--image", "r.example/a:1"]
    )
    out = capsys.readouterr().out
    assert code == 0, out

    (run_body,) = kfp_server.bodies("POST", "/runs")
    run = read_model(run_body, "V2beta1Run")
    (exp_body,) = kfp_server.bodies("POST", "/experiments")
    experiment = read_model(exp_body, "V2beta1Experiment")
    assert experiment.display_name == "spring-launch"
    (created,) = kfp_server.experiments.values()
    assert run.experiment_id == created["experiment_id"]
    # the IR and its Kubernetes platform spec (secrets, GPUs' placement) travel together
    pipeline, platform = run.pipeline_spec["pipeline_spec"], run.pipeline_spec["platform_spec"]
    assert pipeline["pipelineInfo"]["name"] == "adrender-render-campaign"
    assert "exec-distributed-step" in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    params = run.runtime_config.parameters
    uri = params["campaign_uri"]
    assert uri.startswith(f"s3://{bucket}/prod/campaigns/spring-launch/") and uri.endswith("/campaign.yaml")
    assert params["gpus_per_sampling_pod"] == 16
    executors = pipeline["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"r.example/a:1"}
    # the campaign and its relative assets are in the bucket, beside each other
    folder = uri[len(f"s3://{bucket}/") : -len("campaign.yaml")]
    names = {o.object_name for o in client.list_objects(bucket, prefix=folder, recursive=True)}
    assert {folder + "campaign.yaml", folder + "assets/woman.png", folder + "assets/man.png"} <= names
    assert folder + "assets/voiceover.wav" in names
    # the run's URL is printed; the token went along as a bearer token
    run_id = kfp_server.runs[0]["run_id"]
    assert f"{kfp_server.url}/#/runs/details/{run_id}" in out
    assert all(r.headers.get("authorization") == "Bearer t0ken" for r in kfp_server.requests)

    # runs: the campaign's runs, newest first, with their states
    assert main(["runs", "spring-launch", "--kfp-host", kfp_server.url]) == 0
    listed = capsys.readouterr().out
    assert run_id in listed and "PENDING" in listed
    query = next(r.query for r in kfp_server.requests if (r.method, r.path) == ("GET", "/apis/v2beta1/runs"))
    assert query["experiment_id"] == [created["experiment_id"]] and query["sort_by"] == ["created_at desc"]


def test_an_invalid_campaign_never_reaches_kfp(
    kfp_server: FakeKfp, s3_store: tuple[Any, str], demo_media: Path, tmp_path: Path
) -> None:
    missing = {**ALL_MODES[0], "subjects": [{"word": "woman", "image": "assets/nobody.png"}]}
    campaign = write_campaign(tmp_path, demo_media, [missing])
    assert main(["submit", str(campaign), "--kfp-host", kfp_server.url]) == 1
    assert main(["schedule", str(campaign), "--kfp-host", kfp_server.url]) == 1
    assert kfp_server.requests == []


def test_schedule_creates_a_recurring_run_from_the_campaign_cron(
    kfp_server: FakeKfp,
    s3_store: tuple[Any, str],
    demo_media: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    unscheduled = write_campaign(tmp_path / "a", demo_media, ALL_MODES[3:], id="meadow")
    assert main(["schedule", str(unscheduled), "--kfp-host", kfp_server.url]) == 1
    assert "has no schedule" in capsys.readouterr().err
    assert kfp_server.requests == []

    campaign = write_campaign(
        tmp_path / "b", demo_media, ALL_MODES[3:], id="meadow", schedule="30 6 * * mon-fri"
    )
    assert main(["schedule", str(campaign), "--kfp-host", kfp_server.url]) == 0
    (body,) = kfp_server.bodies("POST", "/recurringruns")
    job = read_model(body, "V2beta1RecurringRun")
    assert job.trigger.cron_schedule.cron == "0 30 6 * * mon-fri"
    assert int(job.max_concurrency) == 1 and job.no_catchup is True
    assert job.mode == "ENABLE"
    assert job.runtime_config.parameters["campaign_uri"].endswith("/campaign.yaml")
    (created,) = kfp_server.experiments.values()
    assert job.experiment_id == created["experiment_id"] and created["display_name"] == "meadow"
    assert "0 30 6 * * mon-fri" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("crontab", "kfp"),
    [
        ("0 6 * * 1", "0 0 6 * * 1"),
        ("*/15 * * * *", "0 */15 * * * *"),
        ("0 0 1,15 * *", "0 0 0 1,15 * *"),
        ("0 9 * jan-mar MON-FRI", "0 0 9 * jan-mar MON-FRI"),
        ("0 6 13 * 5", "0 0 6 13 * 5"),  # both days restricted: the 13th or a Friday, in both
        ("5/10 * * * *", "0 5/10 * * * *"),
        ("  0   6 * *   0 ", "0 0 6 * * 0"),
    ],
)
def test_cron_translation(crontab: str, kfp: str) -> None:
    assert to_kfp_cron(crontab) == kfp


@pytest.mark.parametrize(
    ("crontab", "message"),
    [
        ("0 6 * *", "4 fields"),
        ("0 0 6 * * 1", "6 fields"),
        ("0 6 */2 * 1", "'both' in cron and 'either'"),
        ("0 6 1 * */2", "'both' in cron and 'either'"),
    ],
)
def test_cron_translation_refuses(crontab: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        to_kfp_cron(crontab)
