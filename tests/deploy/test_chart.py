"""The Helm chart rendered through the Helm v4 Go SDK: lint, Kubernetes schemas, the restricted Pod Security
Standard, labels, the names the compiled pipeline reads, and the values schema's rejections."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
import yaml

from pipelines.render_campaign import (
    MLFLOW_SECRET,
    S3_SECRET,
    SETTINGS_CONFIG_MAP,
    SETTINGS_KEYS,
)
from pipelines.trainjob import SAMPLER_LABELS
from tests.deploy.conftest import (
    CHART,
    DIGEST,
    FULL_VALUES,
    KUBE_VERSIONS,
    REQUIRED_VALUES,
    ROOT,
    by_kind,
    merged,
    render,
    validate,
)
from tests.deploy.crd_schema import CRD_FILES, validate_custom

helm = pytest.importorskip("helm_python")

VALUES = {"required": REQUIRED_VALUES, "full": merged(REQUIRED_VALUES, FULL_VALUES)}
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(VALUES[request.param])


def test_chart_versions_follow_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


@pytest.mark.parametrize("name", sorted(VALUES))
@pytest.mark.parametrize("kube", [f"v{v}" for v in KUBE_VERSIONS])
def test_lint_strict(name: str, kube: str) -> None:
    report = helm.lint(str(CHART), VALUES[name], strict=True, kube_version=kube)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_object_validates_against_kubernetes(rendered: list[dict[str, Any]], version: str) -> None:
    validate(rendered, version)


def test_default_install_objects() -> None:
    kinds = sorted(o["kind"] for o in render(REQUIRED_VALUES))
    assert kinds == sorted(
        [
            "ConfigMap",  # settings
            "ConfigMap",  # dashboard
            "ConfigMap",  # hook script and config
            "Job",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PrometheusRule",
            "Role",
            "RoleBinding",
            "ServiceAccount",
        ]
    )


def test_full_values_objects() -> None:
    objects = render(VALUES["full"])
    assert {"Deployment", "Service", "ServiceMonitor"} <= {o["kind"] for o in objects}
    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (rule,) = by_kind(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_custom_resources_match_their_crds(rendered: list[dict[str, Any]]) -> None:
    """PrometheusRule, ServiceMonitor and PodMonitor against prometheus-operator's published CRDs."""
    kinds = sorted(o["kind"] for o in rendered if o["kind"] in CRD_FILES)
    assert validate_custom(rendered) == len(kinds)
    assert kinds in (["PrometheusRule"], ["PodMonitor", "PrometheusRule", "ServiceMonitor"])


def test_sampler_pod_monitor() -> None:
    (monitor,) = by_kind(render(VALUES["full"]), "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == SAMPLER_LABELS
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "__address__" and relabel["replacement"] == "${1}:9500"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not by_kind(render(REQUIRED_VALUES), "PodMonitor")


def test_every_object_carries_the_recommended_labels(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        labels = obj["metadata"].get("labels", {})
        missing = [k for k in RECOMMENDED_LABELS if k not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


# restricted Pod Security Standard (kubernetes.io/docs/concepts/security/pod-security-standards/)

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objects:
        template = obj.get("spec", {}).get("template")
        if template is not None:
            specs.append((f"{obj['kind']}/{obj['metadata']['name']}", template["spec"]))
    return specs


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in ``pod`` breaks the restricted profile (plus this chart's read-only root filesystem rule)."""
    bad = []
    psc = pod.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            bad.append(host)
    for vol in pod.get("volumes", []):
        kind = next(k for k in vol if k != "name")
        if kind not in RESTRICTED_VOLUMES:
            bad.append(f"volume {vol['name']} is {kind}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities.drop must hold ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            bad.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{name}: hostPort")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: readOnlyRootFilesystem")
        if "@sha256:" not in c["image"]:
            bad.append(f"{name}: image {c['image']} is not pinned by digest")
    return bad


def test_every_pod_is_restricted(rendered: list[dict[str, Any]]) -> None:
    pods = _pod_specs(rendered)
    assert pods
    for where, pod in pods:
        assert restricted_violations(pod) == [], where
        assert pod.get("automountServiceAccountToken") is False, where


def test_the_restricted_check_catches_violations() -> None:
    (pod,) = (p for _, p in _pod_specs(render(REQUIRED_VALUES)))
    pod = json.loads(json.dumps(pod))
    c = pod["containers"][0]
    c["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    c["image"] = "ghcr.io/adrender/adrender:latest"
    pod["securityContext"] = {}
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    found = " | ".join(restricted_violations(pod))
    for expected in ("privileged", "allowPrivilegeEscalation", "drop must hold ALL", "SYS_ADMIN", "runAsNonRoot",
                     "seccompProfile", "readOnlyRootFilesystem", "not pinned", "hostPath"):  # fmt: skip
        assert expected in found


# what the compiled pipeline reads: the names must agree with pipelines/render_campaign.py


def test_settings_config_map_is_what_the_pipeline_reads() -> None:
    (settings,) = [c for c in by_kind(render(REQUIRED_VALUES), "ConfigMap") if "ADRENDER_STORE" in c["data"]]
    assert settings["metadata"]["name"] == SETTINGS_CONFIG_MAP
    assert set(settings["data"]) == set(SETTINGS_KEYS)
    assert settings["data"]["ADRENDER_STORE"] == "s3://adrender/adrender"
    assert settings["data"]["ADRENDER_S3_ENDPOINT"] == "http://minio.mlops.svc:9000"
    assert settings["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops.svc:5000"
    assert settings["data"]["ADRENDER_PUSHGATEWAY"] == ""


def test_full_settings() -> None:
    objects = render(VALUES["full"], release="ads")
    (settings,) = [c for c in by_kind(objects, "ConfigMap") if "ADRENDER_STORE" in c["data"]]
    assert settings["data"]["ADRENDER_STORE"] == "s3://ads-renders/nightly"
    assert settings["data"]["ADRENDER_PUSHGATEWAY"] == "ads-adrender-pushgateway.adrender.svc:9091"
    assert settings["data"]["ADRENDER_REWRITE_BACKEND"] == "openai"
    assert settings["metadata"]["name"] == "ads-render-settings"
    (pvc,) = by_kind(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "ads-model-cache"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-nvme",
        "resources": {"requests": {"storage": "2Ti"}},
    }


def test_rbac_is_least_privilege() -> None:
    (role,) = by_kind(render(REQUIRED_VALUES), "Role")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [SETTINGS_CONFIG_MAP, "kfp-launcher"],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"],
         "resourceNames": [S3_SECRET, MLFLOW_SECRET, "mlpipeline-minio-artifact"], "verbs": ["get"]},
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
    ]  # fmt: skip
    (sa,) = by_kind(render(REQUIRED_VALUES), "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    objects = render(merged(VALUES["full"], {"kfp": {"artifactSecret": ""}}))
    (role,) = by_kind(objects, "Role")
    assert role["rules"][0]["resourceNames"] == ["ads-render-settings", "kfp-launcher"]
    assert role["rules"][1]["resourceNames"] == [
        "ads-s3-credentials"
    ]  # mlflow.existingSecret "", no artifact one
    # multi-node: the dit_sample task creates and watches TrainJobs through the API, with the account's token
    (sa,) = by_kind(objects, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is True
    trainer = [r for r in role["rules"] if r["apiGroups"] == ["trainer.kubeflow.org"]]
    assert trainer[0]["resources"] == ["trainjobs"]
    assert set(trainer[0]["verbs"]) == {"create", "get", "list", "watch", "delete"}
    (binding,) = by_kind(render(VALUES["full"]), "RoleBinding")
    assert binding["subjects"][0]["name"] == "ads-renderer"


def test_no_credentials_in_the_chart(rendered: list[dict[str, Any]]) -> None:
    assert not by_kind(rendered, "Secret")


def test_hook_job_compiles_and_registers() -> None:
    objects = render(VALUES["full"], release="ads")
    (job,) = by_kind(objects, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade,post-rollback"
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == f"registry.example.com/ads/adrender@{DIGEST}"
    script = c["args"][0]
    assert script.startswith(
        'adrender compile -o /tmp/pipeline.yaml --image "$ADRENDER_IMAGE" --parallelism 4'
    )
    assert "--retries 1" in script and "register_pipeline.py" in script
    assert pod["serviceAccountName"] == "ads-renderer"
    assert [v["name"] for v in pod["volumes"]] == ["register", "tmp"]  # serviceAccountToken: false
    hook_cm = next(
        c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "ads-adrender-register"
    )
    config = json.loads(hook_cm["data"]["config.json"])
    assert config["version"] == "0.1.0"
    assert config["namespace"] == "ads-team" and config["experiment"] == "nightly"
    assert config["parameters"]["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert [r["name"] for r in config["recurringRuns"]] == ["spring-nightly", "summer-weekly"]
    source = (CHART / "files" / "register_pipeline.py").read_text()
    assert hook_cm["data"]["register_pipeline.py"].strip() == source.strip()


def test_kfp_token_is_projected_for_multi_user_kfp() -> None:
    (job,) = by_kind(render(REQUIRED_VALUES), "Job")
    pod = job["spec"]["template"]["spec"]
    token = next(v for v in pod["volumes"] if v["name"] == "kfp-token")
    source = token["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "pipelines.kubeflow.org"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["KF_PIPELINES_SA_TOKEN_PATH"] == "/var/run/secrets/kubeflow/pipelines/token"


def test_network_policy_egress() -> None:
    (policy,) = by_kind(render(VALUES["full"]), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Egress"] and spec["podSelector"] == {}
    dns = spec["egress"][0]
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-dns"}
    assert {"port": 53, "protocol": "UDP"} in dns["ports"]
    assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in spec["egress"][-1]["to"]
    assert (
        len(spec["egress"]) == 1 + 5 + 1
    )  # DNS, store / MLflow / KFP / Pushgateway / API server, the extra rule
    assert not by_kind(
        render(merged(REQUIRED_VALUES, {"networkPolicy": {"enabled": False}})), "NetworkPolicy"
    )


def test_optional_parts_switch_off() -> None:
    off = {"alerts": {"enabled": False}, "dashboard": {"enabled": False}}
    kinds = [o["kind"] for o in render(merged(REQUIRED_VALUES, off))]
    assert "PrometheusRule" not in kinds
    assert kinds.count("ConfigMap") == 2


# the values schema: what it refuses, with Helm's message

REJECTED = [
    pytest.param({}, "at '/store/bucket'", id="missing-bucket"),
    pytest.param({}, "at '/kfp/host'", id="missing-kfp-host"),
    pytest.param({}, "at '/image/digest': '' does not match pattern", id="missing-digest"),
    pytest.param(
        merged(REQUIRED_VALUES, {"image": {"digest": "latest"}}),
        "at '/image/digest': 'latest' does not match pattern '^sha256:[a-f0-9]{64}$'",
        id="tag-not-digest",
    ),
    pytest.param(
        merged(REQUIRED_VALUES, {"pipeline": {"parallelism": "two"}}),
        "at '/pipeline/parallelism': got string, want integer",
        id="wrong-type",
    ),
    pytest.param(
        merged(REQUIRED_VALUES, {"replicas": 2}),
        "additional properties 'replicas' not allowed",
        id="unknown-key",
    ),
    pytest.param(
        merged(REQUIRED_VALUES, {"store": {"endpiont": "x"}}),
        "at '/store': additional properties 'endpiont' not allowed",
        id="misspelt-key",
    ),
    pytest.param(
        merged(REQUIRED_VALUES, {"s3": {"secretKey": "wJalrXUtnFEMI"}}),
        "at '/s3': additional properties 'secretKey' not allowed",
        id="inline-secret",
    ),
    pytest.param(
        merged(REQUIRED_VALUES, {"s3": {"existingSecret": "My_S3"}}),
        "at '/s3/existingSecret': 'My_S3' does not match pattern",
        id="secret-name-not-a-kubernetes-name",
    ),
    pytest.param(
        merged(REQUIRED_VALUES, {"multiNode": {"enabled": True, "nodes": 1}}),
        "at '/multiNode/nodes': minimum: got 1, want 2",
        id="multi-node-of-one-node",
    ),
    pytest.param(
        merged(
            REQUIRED_VALUES,
            {"recurringRuns": [{"name": "n", "campaignUri": "s3://b/c.yaml", "cron": "@daily"}]},
        ),
        "at '/recurringRuns/0/cron': '@daily' does not match pattern",
        id="bad-cron",
    ),
    pytest.param(
        merged(REQUIRED_VALUES, {"recurringRuns": [{"name": "n", "cron": "0 2 * * *"}]}),
        "at '/recurringRuns/0': missing property 'campaignUri'",
        id="run-without-campaign",
    ),
    pytest.param(
        merged(REQUIRED_VALUES, {"pushgateway": {"enabled": True}}),
        "at '/pushgateway/image/digest': '' does not match pattern",
        id="pushgateway-without-digest",
    ),
    pytest.param(
        merged(REQUIRED_VALUES, {"modelCache": {"accessMode": "ReadWriteSometimes"}}),
        "at '/modelCache/accessMode': value must be one of",
        id="bad-enum",
    ),
]


@pytest.mark.parametrize(("values", "message"), REJECTED)
def test_schema_rejects(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    assert message in str(err.value)


def test_install_with_only_the_required_values() -> None:
    """`helm install --dry-run=client` through the SDK (in-memory release storage): the install path, hooks included."""
    config = helm.Config(storage_driver="memory", namespace="adrender")
    release = config.install(str(CHART), "adrender", REQUIRED_VALUES, dry_run="client")
    assert release["app_version"] == "0.1.0" and release["status"] == "pending-install"
    assert "hook Job adrender-register" in release["notes"]
    with pytest.raises(helm.HelmError, match="at ./kfp/host.: .. does not match pattern"):
        config.install(
            str(CHART), "adrender", {k: v for k, v in REQUIRED_VALUES.items() if k != "kfp"}, dry_run="client"
        )
