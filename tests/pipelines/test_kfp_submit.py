"""adrender submit / schedule / runs against a loopback HTTP server that speaks the KFP v2beta1 REST API.

No real KFP API server can run on these machines (it needs a Kubernetes cluster, Argo and MySQL), so the server
here answers the few endpoints the commands use, records each request, and the tests read every request body
with the API's own generated models (``kfp_server_api``): only fields those models know, of the right types.
The campaign goes to a real S3 server (moto) first, as it would to the cluster's store."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp_server_api
import pytest

from pipelines.cli import main
from pipelines.kfp_commands import CronError, to_kfp_cron
from tests.campaigns import ALL_MODES, write_campaign
from tests.conftest import S3Server


@dataclass
class FakeKfp:
    url: str
    requests: list[tuple[str, str, dict[str, list[str]], dict[str, Any], dict[str, str]]] = field(
        default_factory=list
    )
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def bodies(self, method: str, path: str) -> list[dict[str, Any]]:
        return [body for m, p, _, body, _ in self.requests if m == method and p == path]


def _model(data: dict[str, Any], name: str) -> Any:
    """``data`` read with the generated model ``name``; fails on a field the model does not have."""
    klass = getattr(kfp_server_api.models, name)
    unknown = set(data) - set(klass.attribute_map.values())
    assert not unknown, f"{name} has no field(s) {unknown}"
    client = kfp_server_api.ApiClient()
    return client._ApiClient__deserialize(data, name)


@pytest.fixture
def kfp_server() -> Iterator[FakeKfp]:
    state = FakeKfp(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, method: str) -> tuple[str, dict[str, list[str]], dict[str, Any]]:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            query = parse_qs(parts.query)
            state.requests.append(
                (method, parts.path, query, body, {k.lower(): v for k, v in self.headers.items()})
            )
            return parts.path, query, body

        def do_GET(self) -> None:
            path, query, _ = self._record("GET")
            if path == "/apis/v2beta1/experiments":
                wanted = (
                    json.loads(query["filter"][0])["predicates"][0]["stringValue"]
                    if "filter" in query
                    else None
                )
                found = [e for e in state.experiments.values() if wanted in (None, e["display_name"])]
                self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
            elif path == "/apis/v2beta1/healthz":
                self._reply(200, {"multi_user": False, "pipeline_store": "database"})
            elif path == "/apis/v2beta1/runs":
                exp = query.get("experiment_id", [None])[0]
                runs = [r for r in state.runs if r["experiment_id"] == exp]
                self._reply(200, {"runs": runs[::-1], "total_size": len(runs)})
            else:
                self._reply(404, {"error": f"no route {path}"})

        def do_POST(self) -> None:
            path, _, body = self._record("POST")
            if path == "/apis/v2beta1/experiments":
                exp = {**body, "experiment_id": str(uuid.uuid4()), "created_at": "2026-05-04T06:00:00Z"}
                state.experiments[exp["experiment_id"]] = exp
                self._reply(200, exp)
            elif path == "/apis/v2beta1/runs":
                run = {
                    **body,
                    "run_id": str(uuid.uuid4()),
                    "state": "PENDING",
                    "created_at": "2026-05-04T06:00:01Z",
                }
                state.runs.append(run)
                self._reply(200, run)
            elif path == "/apis/v2beta1/recurringruns":
                self._reply(200, {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"})
            else:
                self._reply(404, {"error": f"no route {path}"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


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

    (run_body,) = kfp_server.bodies("POST", "/apis/v2beta1/runs")
    run = _model(run_body, "V2beta1Run")
    (exp_body,) = kfp_server.bodies("POST", "/apis/v2beta1/experiments")
    experiment = _model(exp_body, "V2beta1Experiment")
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
    assert all(h.get("authorization") == "Bearer t0ken" for *_, h in kfp_server.requests)

    # runs: the campaign's runs, newest first, with their states
    assert main(["runs", "spring-launch", "--kfp-host", kfp_server.url]) == 0
    listed = capsys.readouterr().out
    assert run_id in listed and "PENDING" in listed
    (_, _, query, _, _) = next(
        r for r in kfp_server.requests if r[0] == "GET" and r[1] == "/apis/v2beta1/runs"
    )
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
    (body,) = kfp_server.bodies("POST", "/apis/v2beta1/recurringruns")
    job = _model(body, "V2beta1RecurringRun")
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
