"""The kustomize manifests (`kubectl kustomize`): the dev overlay renders and validates against the Kubernetes
schemas, and holds the same settings keys, alerts and dashboard as the chart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.render_campaign import SETTINGS_CONFIG_MAP, SETTINGS_KEYS, PipelineOptions
from tests.deploy.conftest import KUBE_VERSIONS, MANIFESTS, REQUIRED_VALUES, by_kind, merged, render, validate


def kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(folder)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def dev() -> list[dict[str, Any]]:
    return kustomize(MANIFESTS / "overlays" / "dev")


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_dev_overlay_validates(dev: list[dict[str, Any]], version: str) -> None:
    validate(dev, version)


def test_dev_overlay_objects(dev: list[dict[str, Any]]) -> None:
    assert all(o["metadata"]["namespace"] == "adrender-dev" for o in dev)
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "adrender" for o in dev)
    (settings,) = [c for c in by_kind(dev, "ConfigMap") if c["metadata"]["name"] == SETTINGS_CONFIG_MAP]
    assert set(settings["data"]) == set(SETTINGS_KEYS)
    assert settings["data"]["ADRENDER_STORE"] == "s3://adrender-dev/adrender"
    assert settings["data"]["ADRENDER_PUSHGATEWAY"] == "pushgateway.monitoring.svc:9091"
    (pvc,) = by_kind(dev, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == PipelineOptions().model_cache_pvc
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_same_alerts_dashboard_and_rbac_as_the_chart(dev: list[dict[str, Any]]) -> None:
    chart = render(REQUIRED_VALUES)
    (rule,) = by_kind(dev, "PrometheusRule")
    assert rule["spec"] == by_kind(chart, "PrometheusRule")[0]["spec"]
    (dash,) = [c for c in by_kind(dev, "ConfigMap") if "adrender.json" in c["data"]]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    (chart_dash,) = [c for c in by_kind(chart, "ConfigMap") if "adrender.json" in c.get("data", {})]
    assert json.loads(dash["data"]["adrender.json"]) == json.loads(chart_dash["data"]["adrender.json"])
    assert by_kind(dev, "Role")[0]["rules"] == by_kind(chart, "Role")[0]["rules"]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_multinode_component_grants_what_the_chart_grants(version: str, tmp_path: Path) -> None:
    """An overlay with the multinode component: the same RBAC as the chart with multiNode.enabled, and valid."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base, component = (os.path.relpath(MANIFESTS / name, overlay) for name in ("base", "multinode"))
    (overlay / "kustomization.yaml").write_text(f"resources: [{base}]\ncomponents: [{component}]\n")
    objects = kustomize(overlay)
    validate(objects, version)
    chart = render(merged(REQUIRED_VALUES, {"multiNode": {"enabled": True}}))
    assert by_kind(objects, "Role")[0]["rules"] == by_kind(chart, "Role")[0]["rules"]
    assert by_kind(objects, "ServiceAccount")[0]["automountServiceAccountToken"] is True
