"""The chart's hook (charts/adrender/files/register_pipeline.py) against a loopback server speaking the KFP v2beta1
REST API (tests/fake_kfp.py): first install, a repeated upgrade that changes nothing, an upgrade to a new appVersion, runs removed from
the values, runs it does not manage, auth, and errors. The pipeline it uploads is compiled by `adrender compile`,
as in the hook Job, and the config is the one the chart renders."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.cli import main as adrender
from tests.deploy.conftest import CHART, FULL_VALUES, REQUIRED_VALUES, by_kind, merged, render
from tests.fake_kfp import FakeKfp, serve_kfp

SCRIPT = CHART / "files" / "register_pipeline.py"


@pytest.fixture
def kfp() -> Iterator[FakeKfp]:
    with serve_kfp() as server:
        yield server


@pytest.fixture
def pipeline_yaml(tmp_path: Path) -> Path:
    """A stand-in for the compiled pipeline: the upload carries the file's bytes unchanged."""
    path = tmp_path / "pipeline.yaml"
    path.write_text("# PIPELINE DEFINITION\n# Name: adrender-render-campaign\npipelineInfo:\n  name: x\n")
    return path


def _compile_as_the_hook(
    values: dict[str, Any], tmp_path: Path
) -> tuple[list[dict[str, Any]], dict[str, Any], Path]:
    """Run the hook Job's first command (as its shell would split it) here; returns the chart's objects, the
    compiled pipeline's executors' Kubernetes settings and the compiled file."""
    objects = render(merged(REQUIRED_VALUES, values), release="ads")
    (job,) = by_kind(objects, "Job")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0].split("&&")[0]
    image = "registry.example.com/ads/adrender@sha256:" + "1" * 64
    args = shlex.split(script.replace("$ADRENDER_IMAGE", image))
    assert args[:4] == ["adrender", "compile", "-o", "/tmp/pipeline.yaml"]
    path = tmp_path / "pipeline.yaml"
    assert adrender(["compile", "-o", str(path), *args[4:]]) == 0
    assert image in path.read_text()
    _, platform = yaml.safe_load_all(path.read_text())
    return objects, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], path


def test_hook_compile_command(tmp_path: Path) -> None:
    """The hook Job's first command, with the chart's arguments, and the parameters the recurring runs set."""
    objects, _, path = _compile_as_the_hook(FULL_VALUES, tmp_path)
    spec = next(yaml.safe_load_all(path.read_text()))
    declared = spec["root"]["inputDefinitions"]["parameters"]
    (cm,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "ads-adrender-register"]
    config = json.loads(cm["data"]["config.json"])
    assert {*config["parameters"], "campaign_uri"} <= set(declared)


@pytest.mark.parametrize("values", [{}, FULL_VALUES], ids=["default-names", "own-names"])
def test_hook_compiles_with_the_charts_names(values: dict[str, Any], tmp_path: Path) -> None:
    """Every task of the pipeline the hook uploads reads the ConfigMap, Secrets and claim this release has."""
    objects, executors, _ = _compile_as_the_hook(values, tmp_path)
    (settings,) = [c for c in by_kind(objects, "ConfigMap") if "ADRENDER_STORE" in c.get("data", {})]
    (pvc,) = by_kind(objects, "PersistentVolumeClaim")
    (role,) = by_kind(objects, "Role")
    secrets_allowed = set(role["rules"][1]["resourceNames"])
    merged_values = merged(REQUIRED_VALUES, values)
    mlflow = merged_values.get("mlflow", {}).get("existingSecret", "adrender-mlflow")
    for name, executor in executors.items():
        assert {c["configMapName"] for c in executor["configMapAsEnv"]} == {settings["metadata"]["name"]}, (
            name
        )
        secrets = {s["secretName"] for s in executor["secretAsEnv"]}
        assert secrets <= secrets_allowed, name
        assert (mlflow in secrets) == bool(mlflow), name
        for mount in executor.get("pvcMount", []):
            assert mount["constant"] == pvc["metadata"]["name"], name
    assert any(e.get("pvcMount") for e in executors.values())
    # multi-node on: sampling is the TrainJob launcher
    assert ("exec-trainjob-step" in executors) == merged_values.get("multiNode", {}).get("enabled", False)


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
    assert all(
        h.get("authorization") == "Bearer eyJhbGciOi.test-token" for h in (r.headers for r in kfp.requests)
    )


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
