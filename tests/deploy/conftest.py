"""Shared by the deployment tests: the chart rendered through the Helm v4 Go SDK (helm-python-sdk), the values
files, and Kubernetes schema validation (kubernetes-validate) for the oldest and newest supported versions."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.crd_schema import CRD_FILES, validate_custom

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "adrender"
MANIFESTS = ROOT / "manifests"
# the Kubernetes versions the chart and the manifests are validated against (Chart.yaml: kubeVersion >=1.25)
KUBE_VERSIONS = ("1.25.0", "1.37.0")
DIGEST = "sha256:" + "1" * 64

# only what `helm install` needs (docs/HELM.md, "The values that matter")
REQUIRED_VALUES: dict[str, Any] = {
    "image": {"digest": DIGEST},
    "store": {"endpoint": "http://minio.mlops.svc:9000", "bucket": "adrender"},
    "mlflow": {"trackingUri": "http://mlflow.mlops.svc:5000"},
    "kfp": {"host": "http://ml-pipeline.kubeflow.svc:8888"},
}

# every switch the other way round
FULL_VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example.com/ads/adrender", "digest": DIGEST, "pullPolicy": "Always"},
    "imagePullSecrets": ["regcred", {"name": "regcred2"}],
    "store": {
        "endpoint": "https://s3.eu-central-1.amazonaws.com",
        "bucket": "ads-renders",
        "prefix": "/nightly/",
        "region": "eu-central-1",
    },
    "s3": {"existingSecret": "ads-s3-credentials"},
    "mlflow": {"trackingUri": "https://mlflow.example.com", "existingSecret": ""},
    "settings": {"configMapName": "ads-render-settings"},
    "metrics": {"pushgatewayAddress": ""},
    "rewrite": {"backend": "openai", "url": "http://vllm.llm.svc:8000/v1", "model": "qwen3-8b"},
    "kfp": {
        "host": "http://ml-pipeline.kubeflow.svc:8888",
        "namespace": "ads-team",
        "serviceAccountToken": False,
        "experiment": "nightly",
        "pipelineName": "adrender",
    },
    "pipeline": {
        "parallelism": 4,
        "retries": 1,
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200"},
        "tolerations": [{"key": "gpu", "operator": "Equal", "value": "h200", "effect": "NoSchedule"}],
    },
    "recurringRuns": [
        {
            "name": "spring-nightly",
            "campaignUri": "s3://ads-renders/campaigns/spring/campaign.yaml",
            "cron": "0 2 * * *",
            "maxConcurrency": 2,
            "enabled": True,
        },
        {
            "name": "summer-weekly",
            "campaignUri": "s3://ads-renders/campaigns/summer/campaign.yaml",
            "cron": "30 3 * * 1",
            "enabled": False,
        },
    ],
    "registerJob": {"backoffLimit": 0, "activeDeadlineSeconds": 900},
    "serviceAccount": {"name": "ads-renderer", "annotations": {"example.com/team": "ads"}},
    "multiNode": {"enabled": True, "nodes": 2},
    "samplerMonitor": {"enabled": True, "port": 9500, "labels": {"release": "kube-prometheus-stack"}},
    "modelCache": {
        "claimName": "ads-model-cache",
        "size": "2Ti",
        "accessMode": "ReadWriteOnce",
        "storageClassName": "fast-nvme",
    },
    "alerts": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "dashboard": {"enabled": True, "label": "grafana_dashboard", "labelValue": "adrender"},
    "pushgateway": {
        "enabled": True,
        "image": {"repository": "quay.io/prometheus/pushgateway", "digest": "sha256:" + "2" * 64},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    },
    "networkPolicy": {
        "enabled": True,
        "dnsNamespace": "kube-dns",
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 8000}]}],
    },
}


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Values layered like several ``-f`` files (later wins, maps merged)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def render(
    values: dict[str, Any], *, release: str = "rel", namespace: str = "adrender"
) -> list[dict[str, Any]]:
    """The chart's objects (hooks included) for ``values``, as `helm template` renders them."""
    import helm_python as helm

    files = helm.Chart.load(str(CHART)).render(values, name=release, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def validate(objects: list[dict[str, Any]], version: str) -> None:
    """Every built-in object against the Kubernetes ``version`` schema, and every PrometheusRule, ServiceMonitor,
    PodMonitor and TrainJob against its CRD's schema; unknown fields rejected."""
    import kubernetes_validate

    for obj in objects:
        if obj["kind"] not in CRD_FILES:
            kubernetes_validate.validate(obj, version, strict=True)
    validate_custom(objects)
