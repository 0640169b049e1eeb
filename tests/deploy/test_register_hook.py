"""The chart's hook (charts/adrender/files/register_pipeline.py) against a loopback server speaking the KFP v2beta1
REST API: first install, a repeated upgrade that changes nothing, an upgrade to a new appVersion, runs removed from
the values, runs it does not manage, auth, and errors. The pipeline it uploads is compiled by `adrender compile`,
as in the hook Job, and the config is the one the chart renders. Request bodies are read with the API's generated
models (``kfp_server_api``), so only fields the API knows pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
import yaml

from pipelines.cli import main as adrender
from tests.deploy.conftest import CHART, FULL_VALUES, REQUIRED_VALUES, by_kind, merged, render

SCRIPT = CHART / "files" / "register_pipeline.py"
API = "/apis/v2beta1"


def _model(data: dict[str, Any], name: str) -> Any:
    klass = getattr(kfp_server_api.models, name)
    unknown = set(data) - set(klass.attribute_map.values())
    assert not unknown, f"{name} has no field(s) {unknown}"
    return kfp_server_api.ApiClient()._ApiClient__deserialize(data, name)


@dataclass
class FakeKfp:
    url: str = ""
    requests: list[tuple[str, str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: int | None = None

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _, _ in self.requests if m in ("POST", "DELETE")]


@pytest.fixture
def kfp() -> Iterator[FakeKfp]:
    state = FakeKfp()

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

        def _read(self, method: str) -> tuple[str, dict[str, list[str]], bytes]:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            state.requests.append(
                (method, parts.path, query, {k.lower(): v for k, v in self.headers.items()})
            )
            return parts.path.removeprefix(API), query, raw

        def _page(self, field_name: str, items: list[dict[str, Any]], query: dict[str, list[str]]) -> None:
            # two items a page, so paging is exercised; the display_name filter is honoured
            if "filter" in query:
                (pred,) = json.loads(query["filter"][0])["predicates"]
                items = [i for i in items if i.get(pred["key"]) == pred["string_value"]]
            start = int(query.get("page_token", ["0"])[0])
            page = {field_name: items[start : start + 2], "total_size": len(items)}
            if start + 2 < len(items):
                page["next_page_token"] = str(start + 2)
            self._reply(200, page)

        def do_GET(self) -> None:
            path, query, _ = self._read("GET")
            if state.fail_with:
                self._reply(state.fail_with, {"error": "internal error", "code": 13})
            elif path == "/pipelines":
                self._page("pipelines", list(state.pipelines.values()), query)
            elif path.startswith("/pipelines/") and path.endswith("/versions"):
                pid = path.split("/")[2]
                versions = [v for v in state.versions.values() if v["pipeline_id"] == pid]
                self._page("pipeline_versions", versions, query)
            elif path == "/experiments":
                self._page("experiments", list(state.experiments.values()), query)
            elif path == "/recurringruns":
                eid = query["experiment_id"][0]
                runs = [r for r in state.recurring.values() if r["experiment_id"] == eid]
                self._page("recurringRuns", runs, query)
            else:
                self._reply(404, {"error": f"no route {path}"})

        def do_POST(self) -> None:
            path, query, raw = self._read("POST")
            if path == "/pipelines":
                body = json.loads(raw)
                _model(body, "V2beta1Pipeline")
                pipeline = {**body, "pipeline_id": str(uuid.uuid4())}
                state.pipelines[pipeline["pipeline_id"]] = pipeline
                self._reply(200, pipeline)
            elif path == "/pipelines/upload_version":
                pid = query["pipelineid"][0]
                assert pid in state.pipelines
                ctype = self.headers["Content-Type"]
                assert ctype.startswith("multipart/form-data; boundary=")
                boundary = ctype.split("boundary=")[1].encode()
                (part,) = [p for p in raw.split(b"--" + boundary) if b'name="uploadfile"' in p]
                spec = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
                version = {
                    "pipeline_version_id": str(uuid.uuid4()),
                    "pipeline_id": pid,
                    "display_name": query["display_name"][0],
                    "name": query["name"][0],
                }
                state.versions[version["pipeline_version_id"]] = version
                state.uploads[version["pipeline_version_id"]] = spec
                self._reply(200, version)
            elif path == "/experiments":
                body = json.loads(raw)
                _model(body, "V2beta1Experiment")
                exp = {**body, "experiment_id": str(uuid.uuid4())}
                state.experiments[exp["experiment_id"]] = exp
                self._reply(200, exp)
            elif path == "/recurringruns":
                body = json.loads(raw)
                _model(body, "V2beta1RecurringRun")
                run = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
                state.recurring[run["recurring_run_id"]] = run
                self._reply(200, run)
            else:
                self._reply(404, {"error": f"no route {path}"})

        def do_DELETE(self) -> None:
            path, _, _ = self._read("DELETE")
            rid = path.removeprefix("/recurringruns/")
            if state.recurring.pop(rid, None) is None:
                self._reply(404, {"error": f"no recurring run {rid}"})
            else:
                self._reply(200, {})

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
def pipeline_yaml(tmp_path: Path) -> Path:
    """A stand-in for the compiled pipeline: the upload carries the file's bytes unchanged."""
    path = tmp_path / "pipeline.yaml"
    path.write_text("# PIPELINE DEFINITION\n# Name: adrender-render-campaign\npipelineInfo:\n  name: x\n")
    return path


def test_hook_compile_command(tmp_path: Path) -> None:
    """The hook Job's first command, with the chart's arguments, and the parameters the recurring runs set."""
    objects = render(merged(REQUIRED_VALUES, FULL_VALUES), release="ads")
    (job,) = by_kind(objects, "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"][0].split("&&")[0].split()
    assert args[:4] == ["adrender", "compile", "-o", "/tmp/pipeline.yaml"]
    path = tmp_path / "pipeline.yaml"
    image = "registry.example.com/ads/adrender@sha256:" + "1" * 64
    rest = [image if a == '"$ADRENDER_IMAGE"' else a for a in args[4:]]
    assert adrender(["compile", "-o", str(path), *rest]) == 0
    spec = next(yaml.safe_load_all(path.read_text()))
    declared = spec["root"]["inputDefinitions"]["parameters"]
    (cm,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "ads-adrender-register"]
    config = json.loads(cm["data"]["config.json"])
    assert {*config["parameters"], "campaign_uri"} <= set(declared)
    assert image in path.read_text()


def chart_config(values: dict[str, Any], kfp_url: str, tmp_path: Path, release: str = "ads") -> Path:
    """The hook's config.json as the chart renders it for ``values``, pointed at the fake API."""
    objects = render(merged(REQUIRED_VALUES, values), release=release)
    (cm,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-register")]
    config = json.loads(cm["data"]["config.json"])
    config["host"] = kfp_url
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(config))
    return path


def run_hook(config: Path, pipeline: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(config), "--pipeline", str(pipeline)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_first_install_registers_everything(kfp: FakeKfp, pipeline_yaml: Path, tmp_path: Path) -> None:
    result = run_hook(chart_config(FULL_VALUES, kfp.url, tmp_path), pipeline_yaml)
    assert result.returncode == 0, result.stderr
    (pipeline,) = kfp.pipelines.values()
    assert pipeline["display_name"] == "adrender" and pipeline["namespace"] == "ads-team"
    (version,) = kfp.versions.values()
    assert version["display_name"] == "0.1.0" and version["pipeline_id"] == pipeline["pipeline_id"]
    assert kfp.uploads[version["pipeline_version_id"]] == pipeline_yaml.read_bytes()
    (experiment,) = kfp.experiments.values()
    assert experiment["display_name"] == "nightly" and experiment["namespace"] == "ads-team"
    runs = {r["display_name"]: r for r in kfp.recurring.values()}
    assert set(runs) == {"ads-spring-nightly", "ads-summer-weekly"}
    nightly = runs["ads-spring-nightly"]
    assert nightly["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"  # KFP's cron: seconds first
    assert nightly["max_concurrency"] == "2" and nightly["mode"] == "ENABLE"
    assert runs["ads-summer-weekly"]["mode"] == "DISABLE"
    assert nightly["service_account"] == "ads-renderer"
    assert nightly["experiment_id"] == experiment["experiment_id"]
    assert nightly["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    params = nightly["runtime_config"]["parameters"]
    assert params["campaign_uri"] == "s3://ads-renders/campaigns/spring/campaign.yaml"
    assert params["store"] == "s3://ads-renders/nightly"
    assert params["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert params["tolerations"][0]["value"] == "h200"
    assert "uploaded pipeline adrender version 0.1.0" in result.stdout


def test_second_run_changes_nothing(kfp: FakeKfp, pipeline_yaml: Path, tmp_path: Path) -> None:
    config = chart_config(FULL_VALUES, kfp.url, tmp_path)
    assert run_hook(config, pipeline_yaml).returncode == 0
    before = len(kfp.writes())
    result = run_hook(config, pipeline_yaml)
    assert result.returncode == 0, result.stderr
    assert kfp.writes()[before:] == []
    assert "already has version 0.1.0; nothing to upload" in result.stdout
    assert result.stdout.count("is up to date") == 2


def test_upgrade_to_a_new_version(kfp: FakeKfp, pipeline_yaml: Path, tmp_path: Path) -> None:
    assert run_hook(chart_config(FULL_VALUES, kfp.url, tmp_path), pipeline_yaml).returncode == 0
    # someone else's recurring run in the same experiment is left alone
    (eid,) = kfp.experiments
    kfp.recurring["manual"] = {"recurring_run_id": "manual", "display_name": "by-hand", "experiment_id": eid}
    config = chart_config(
        {**FULL_VALUES, "recurringRuns": FULL_VALUES["recurringRuns"][:1]}, kfp.url, tmp_path
    )
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "version": "0.2.0"}))
    result = run_hook(config, pipeline_yaml)
    assert result.returncode == 0, result.stderr
    assert sorted(v["display_name"] for v in kfp.versions.values()) == ["0.1.0", "0.2.0"]
    new = next(v for v in kfp.versions.values() if v["display_name"] == "0.2.0")
    runs = {r["display_name"]: r for r in kfp.recurring.values()}
    assert set(runs) == {"ads-spring-nightly", "by-hand"}
    ref = runs["ads-spring-nightly"]["pipeline_version_reference"]
    assert ref["pipeline_version_id"] == new["pipeline_version_id"]
    assert "replaced recurring run ads-spring-nightly" in result.stdout
    assert "deleted recurring run ads-summer-weekly: no longer in the values" in result.stdout


def test_no_recurring_runs_creates_no_experiment(kfp: FakeKfp, pipeline_yaml: Path, tmp_path: Path) -> None:
    result = run_hook(chart_config({}, kfp.url, tmp_path), pipeline_yaml)
    assert result.returncode == 0, result.stderr
    assert len(kfp.versions) == 1 and not kfp.experiments and not kfp.recurring


def test_service_account_token_is_sent(kfp: FakeKfp, pipeline_yaml: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOi.test-token\n")
    result = run_hook(
        chart_config({}, kfp.url, tmp_path), pipeline_yaml, KF_PIPELINES_SA_TOKEN_PATH=str(token)
    )
    assert result.returncode == 0, result.stderr
    assert all(h.get("authorization") == "Bearer eyJhbGciOi.test-token" for _, _, _, h in kfp.requests)


def test_api_errors_fail_the_hook(kfp: FakeKfp, pipeline_yaml: Path, tmp_path: Path) -> None:
    kfp.fail_with = 500
    result = run_hook(chart_config({}, kfp.url, tmp_path), pipeline_yaml)
    assert result.returncode == 1
    assert "HTTP 500" in result.stderr and "/apis/v2beta1/pipelines" in result.stderr


def test_unreachable_api_names_the_host(pipeline_yaml: Path, tmp_path: Path) -> None:
    result = run_hook(chart_config({}, "http://127.0.0.1:9", tmp_path), pipeline_yaml)
    assert result.returncode == 1
    assert "is kfp.host right and the KFP API reachable?" in result.stderr


def test_rollback_points_the_runs_at_the_older_version(
    kfp: FakeKfp, pipeline_yaml: Path, tmp_path: Path
) -> None:
    old = chart_config(FULL_VALUES, kfp.url, tmp_path)
    assert run_hook(old, pipeline_yaml).returncode == 0
    new = tmp_path / "new.json"
    new.write_text(json.dumps({**json.loads(old.read_text()), "version": "0.2.0"}))
    assert run_hook(new, pipeline_yaml).returncode == 0
    result = run_hook(
        old, pipeline_yaml
    )  # helm rollback: the post-rollback hook with the old release's config
    assert result.returncode == 0, result.stderr
    assert len(kfp.versions) == 2  # nothing uploaded again
    first = next(v for v in kfp.versions.values() if v["display_name"] == "0.1.0")
    refs = {r["pipeline_version_reference"]["pipeline_version_id"] for r in kfp.recurring.values()}
    assert refs == {first["pipeline_version_id"]}
