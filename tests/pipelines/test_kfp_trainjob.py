"""Multi-node sampling (pipelines/trainjob.py): the TrainJob manifest against Kubeflow Trainer's published CRD, and
the launcher and waiter against a loopback HTTP server speaking the Kubernetes API for ``trainjobs``, reached
through the real ``kubernetes`` client. No API server, Trainer controller or GPU node runs here: the fake server
validates each created TrainJob against the CRD schema (422 otherwise, as the API server answers), and the test
plays the controller and node 0 (a condition on the job, a result in the store)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.runtime.store import open_store
from model_core.parallel import free_port
from pipelines.kfp_tasks import run_trainjob_step
from pipelines.render_campaign import SETTINGS_KEYS, PipelineOptions, compile_pipeline, secret_env
from pipelines.trainjob import (
    GROUP,
    PLURAL,
    SAMPLER_LABELS,
    VERSION,
    TrainJobApiError,
    TrainJobFailed,
    TrainJobRequest,
    TrainJobTimeout,
    build_trainjob,
    node_command,
    reference_env,
    result_key,
    run_node,
)
from tests.deploy.conftest import MANIFESTS
from tests.deploy.crd_schema import crd_errors

IMAGE = "registry.example.com/adrender@sha256:" + "a" * 64
SHARD = "adrender/spring/_shards/s000/abc123/shard.json"
# what KFP's TaskConfig passthrough hands the task on a cluster (Kubernetes JSON)
TASK_CONFIG: dict[str, Any] = {
    "resources": {
        "requests": {"cpu": "64", "memory": "512Gi"},
        "limits": {"memory": "512Gi", "nvidia.com/gpu": "8"},
    },
    "env": [{"name": "ADRENDER_WORK_DIR", "value": "/var/tmp/adrender"}],
    "volumes": [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": "adrender-model-cache"}},
    ],
    "volume_mounts": [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": "/var/cache/adrender/models"},
    ],
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


def _request(**changes: Any) -> TrainJobRequest:
    base: dict[str, Any] = {
        "name": "adrender-dit-sample-0123456789-abcdef",
        "namespace": "ads",
        "image": IMAGE,
        "step": "dit_sample",
        "shard": SHARD,
        "inputs": {"text": "k/text/manifest.json", "cond": "k/cond/manifest.json"},
        "result_key": "adrender/spring/_shards/s000/abc123/trainjobs/x/result.json",
        "nodes": 2,
        "gpus_per_node": 8,
        "timeout_s": 86400,
        "resources": TASK_CONFIG["resources"],
        "env": TASK_CONFIG["env"],
        "volumes": TASK_CONFIG["volumes"],
        "volume_mounts": TASK_CONFIG["volume_mounts"],
        "node_selector": TASK_CONFIG["node_selector"],
        "tolerations": TASK_CONFIG["tolerations"],
    }
    return TrainJobRequest(**{**base, **changes})


def test_manifest_matches_the_trainjob_crd() -> None:
    job = build_trainjob(_request())
    assert crd_errors(job) == []
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert trainer["image"] == IMAGE
    # every node: the step module under torchrun (world from PET_*), node 0 storing the result
    assert trainer["command"][:6] == [
        "python",
        "-m",
        "pipelines.trainjob",
        "node",
        "--result-key",
        _request().result_key,
    ]
    assert trainer["command"][7:10] == ["dit_sample", "--shard", SHARD]
    assert "--input" in trainer["command"] and "cond=k/cond/manifest.json" in trainer["command"]
    (patch,) = job["spec"]["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    pod = replicated["template"]["spec"]["template"]
    assert pod["metadata"]["labels"] == SAMPLER_LABELS
    spec = pod["spec"]
    assert spec["nodeSelector"] == TASK_CONFIG["node_selector"]
    assert spec["tolerations"] == TASK_CONFIG["tolerations"]
    assert {v["name"] for v in spec["volumes"]} == {"dshm", "model-cache"}
    (container,) = spec["containers"]
    assert container["name"] == "node" and container["volumeMounts"] == TASK_CONFIG["volume_mounts"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert {"TORCH_NCCL_ASYNC_ERROR_HANDLING", "ADRENDER_WORK_DIR"} <= {e["name"] for e in trainer["env"]}


def test_the_schema_check_catches_broken_trainjobs() -> None:
    """What the CRD refuses, so a manifest that passes is one the API server takes."""
    job = build_trainjob(_request())
    job["spec"]["trainer"]["numNodes"] = "two"
    job["spec"]["podSpecOverrides"] = []  # the field of older Trainer releases, gone in v2.3
    del job["spec"]["runtimeRef"]["name"]
    errors = "\n".join(crd_errors(job))
    assert "'two' is not of type 'integer'" in errors
    assert "'podSpecOverrides' was unexpected" in errors
    assert "'name' is a required property" in errors
    with pytest.raises(ValueError, match="nodes=1"):
        _request(nodes=1)


def test_the_16_gpu_example_in_manifests_is_what_the_launcher_builds() -> None:
    example = yaml.safe_load((MANIFESTS / "multinode" / "trainjob-16gpu.yaml").read_text())
    assert crd_errors(example) == []
    trainer = example["spec"]["trainer"]
    assert trainer["numNodes"] * trainer["numProcPerNode"] == 16
    built = build_trainjob(
        _request(
            name=example["metadata"]["name"],
            namespace=example["metadata"]["namespace"],
            image=trainer["image"],
            shard=trainer["command"][9],
            inputs={
                "cond": trainer["command"][11].split("=", 1)[1],
                "text": trainer["command"][13].split("=", 1)[1],
            },
            result_key=trainer["command"][5],
            env=[
                e
                for e in trainer["env"]
                if e["name"] not in ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_DEBUG")
            ],
            timeout_s=example["spec"]["activeDeadlineSeconds"],
        )
    )
    assert built == example


# the loopback Kubernetes API ------------------------------------------------------------------------------


@dataclass
class FakeKube:
    url: str = ""
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    refuse_create: int | None = None
    # called with the job on every GET: plays the Trainer controller (sets conditions) and the nodes
    on_get: Callable[[dict[str, Any], int], None] = lambda job, n: None
    gets: int = 0


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    state = FakeKube()
    base = f"/apis/{GROUP}/{VERSION}/namespaces/"

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

        def _parts(self) -> list[str]:
            state.requests.append((self.command, self.path))
            assert self.path.startswith(base), self.path
            return self.path.split("?")[0].removeprefix(base).split("/")  # ns, plural[, name]

        def _status(self, code: int, reason: str, message: str) -> None:
            self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                               "message": message, "code": code})  # fmt: skip

        def do_POST(self) -> None:
            ns, plural = self._parts()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if state.refuse_create:
                return self._status(state.refuse_create, "Forbidden", f"cannot create {plural} in {ns}")
            errors = crd_errors(body)
            if errors or plural != PLURAL or body["metadata"]["namespace"] != ns:
                return self._status(422, "Invalid", "; ".join(errors) or "wrong path")
            state.jobs[body["metadata"]["name"]] = body
            self._reply(201, body)

        def do_GET(self) -> None:
            _, _, name = self._parts()
            job = state.jobs.get(name)
            if job is None:
                return self._status(404, "NotFound", f"trainjobs {name} not found")
            state.gets += 1
            state.on_get(job, state.gets)
            self._reply(200, job)

        def do_DELETE(self) -> None:
            _, _, name = self._parts()
            # the children (the JobSet, its Jobs and pods) go first
            if "propagationPolicy=Foreground" not in self.path:
                return self._status(400, "BadRequest", "expected propagationPolicy=Foreground")
            state.deleted.append(name)
            self._reply(200, state.jobs.pop(name))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _api(kube: FakeKube) -> Any:
    from kubernetes import client

    config = client.Configuration()
    config.host = kube.url
    return client.CustomObjectsApi(client.ApiClient(config))


def _condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-05-04T06:00:00Z"}  # fmt: skip


@pytest.fixture
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("ADRENDER_STORE", root.resolve().as_uri())
    monkeypatch.setenv("ADRENDER_NAMESPACE", "ads")
    return root


def _launch(kube: FakeKube, **changes: Any) -> str:
    kwargs: dict[str, Any] = {
        "store": "", "nodes": 2, "gpus_per_node": 8, "image": IMAGE, "timeout_s": 3600, "node_selector": {}, "tolerations": [],
        "settings_env": reference_env("adrender-settings", SETTINGS_KEYS, secret_env(PipelineOptions())),
        "task_config": TASK_CONFIG, "api": _api(kube), "poll_s": 0.01,
    }  # fmt: skip
    kwargs.update(changes)
    return run_trainjob_step("dit_sample", SHARD, {"text": "k/t.json", "cond": "k/c.json"}, **kwargs)


def test_a_trainjob_that_completes_returns_the_manifest_node_0_stored(
    kube: FakeKube, store_env: Path
) -> None:
    store = open_store()

    def controller(job: dict[str, Any], n: int) -> None:
        if n == 3:  # the nodes ran; node 0 stored the manifest key, then the job completed
            key = job["spec"]["trainer"]["command"][5]
            store.put_bytes(
                key, json.dumps({"exit": 0, "manifest": "adrender/spring/dit/manifest.json"}).encode()
            )
            job["status"] = {"conditions": [_condition("Complete", "JobSetCompleted", "done")]}

    kube.on_get = controller
    assert _launch(kube, store=store_env.resolve().as_uri()) == "adrender/spring/dit/manifest.json"
    (name,) = kube.deleted
    assert name.startswith("adrender-dit-sample-") and kube.gets == 3
    (post,) = [p for m, p in kube.requests if m == "POST"]
    assert post == f"/apis/{GROUP}/{VERSION}/namespaces/ads/{PLURAL}"
    # the result sits beside the shard, under the job's name
    assert result_key(SHARD, name) == "adrender/spring/_shards/s000/abc123/trainjobs/" + name + "/result.json"


def test_env_of_the_nodes(kube: FakeKube, store_env: Path) -> None:
    """The run's store wins, then the task's env, then the settings and credential references."""
    seen: dict[str, Any] = {}

    def controller(job: dict[str, Any], n: int) -> None:
        seen.update({e["name"]: e for e in job["spec"]["trainer"]["env"]})
        job["status"] = {"conditions": [_condition("Failed", "x", "y")]}

    kube.on_get = controller
    task_config = {**TASK_CONFIG, "env": [{"name": "ADRENDER_STORE", "value": "s3://task/x"}]}
    with pytest.raises(TrainJobFailed):
        _launch(kube, store="s3://run/override", task_config=task_config)
    assert seen["ADRENDER_STORE"] == {"name": "ADRENDER_STORE", "value": "s3://run/override"}
    assert seen["MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]["name"] == "adrender-settings"
    assert seen["ADRENDER_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "adrender-s3", "key": "secret-key", "optional": True,
    }  # fmt: skip


def test_a_failed_trainjob_raises_with_its_reason(kube: FakeKube, store_env: Path) -> None:
    def controller(job: dict[str, Any], n: int) -> None:
        if n == 2:
            job["status"] = {"conditions": [_condition("Failed", "DeadlineExceeded", "exceeded 3600 s")]}

    kube.on_get = controller
    with pytest.raises(TrainJobFailed, match=r"failed \(DeadlineExceeded\): exceeded 3600 s") as err:
        _launch(kube)
    assert "kubectl logs -n ads -l jobset.sigs.k8s.io/jobset-name=" in str(err.value)
    assert len(kube.deleted) == 1 and not kube.jobs


def test_complete_without_a_result_or_with_a_failed_step(kube: FakeKube, store_env: Path) -> None:
    def complete(job: dict[str, Any], n: int) -> None:
        job["status"] = {"conditions": [_condition("Complete", "JobSetCompleted", "")]}

    kube.on_get = complete
    with pytest.raises(TrainJobFailed, match="node 0 wrote no result"):
        _launch(kube)

    store = open_store()

    def step_failed(job: dict[str, Any], n: int) -> None:
        store.put_bytes(job["spec"]["trainer"]["command"][5], b'{"exit": 3}')
        complete(job, n)

    kube.on_get = step_failed
    with pytest.raises(TrainJobFailed, match="exited with 3"):
        _launch(kube)


def test_a_trainjob_past_its_deadline_is_deleted(kube: FakeKube, store_env: Path) -> None:
    from pipelines.trainjob import launch_and_wait

    clock = iter(range(0, 10_000, 100))
    job = build_trainjob(_request())
    with pytest.raises(TrainJobTimeout, match="did not finish in 250 s"):
        launch_and_wait(
            _api(kube),
            job,
            lambda: None,
            deadline_s=250,
            poll_s=0,
            clock=lambda: float(next(clock)),
            sleep=lambda s: None,
        )
    assert kube.deleted == [job["metadata"]["name"]] and kube.gets == 3


def test_api_refusals_name_the_fix(kube: FakeKube, store_env: Path) -> None:
    kube.refuse_create = 403
    with pytest.raises(TrainJobApiError, match="HTTP 403: cannot create trainjobs in ads.*multiNode.enabled"):
        _launch(kube)
    kube.refuse_create = None
    # a manifest the CRD refuses (TrainJobRequest itself refuses 0 GPUs, so the manifest is edited)
    from pipelines.trainjob import launch_and_wait

    bad = build_trainjob(_request())
    bad["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(
        TrainJobApiError, match="HTTP 422: spec/trainer/numNodes: 'two' is not of type 'integer'"
    ):
        launch_and_wait(_api(kube), bad, lambda: None, deadline_s=1)
    assert not kube.jobs


# on each node -----------------------------------------------------------------------------------------------


def test_node_runs_the_step_under_torchrun_and_node_0_stores_its_exit(
    store_env: Path, tmp_path: Path
) -> None:
    """The node command, run here with the world torchrun reads from PET_* (1 node x 1 process): the step fails
    on a shard that is not in the store, and node 0 records that exit code for the launcher."""
    request = _request(shard="adrender/none/_shards/s0/0/shard.json", result_key="adrender/none/result.json")
    cmd = node_command(request)
    assert cmd[:3] == ["python", "-m", "pipelines.trainjob"]
    env = {**os.environ, "PET_NNODES": "1", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0",
           "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(free_port()), "ADRENDER_DEVICE": "cpu",
           "ADRENDER_WORK_DIR": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, *cmd[1:]], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    result = json.loads(open_store().get_bytes(request.result_key))
    assert result["exit"] == proc.returncode and "manifest" not in result
    assert "torch.distributed.run" in proc.stderr and "components.dit_sample" in proc.stderr

    # any other node leaves the result to node 0 (a command that exits at once stands in for its torchrun)
    other = "adrender/none/result-1.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PET_NODE_RANK", "1")
        assert (
            run_node(other, ["dit_sample", "--shard", request.shard], python=shutil.which("false") or "false")
            == 1
        )
    assert not open_store().exists(other)


# the compiled pipeline ---------------------------------------------------------------------------------------


def test_compiled_multinode_sampling_is_a_trainjob_launcher(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    compile_pipeline(PipelineOptions(image=IMAGE, sampling_nodes=2, s3_secret="ads-s3", qc_rounds=0), path)
    spec, platform = yaml.safe_load_all(path.read_text())
    comp = spec["components"]["comp-trainjob-step"]
    fields = [p["field"] for p in comp["taskConfigPassthroughs"]]
    assert fields[:4] == [
        "RESOURCES",
        "KUBERNETES_NODE_SELECTOR",
        "KUBERNETES_TOLERATIONS",
        "KUBERNETES_AFFINITY",
    ]
    applied = {p["field"] for p in comp["taskConfigPassthroughs"] if p.get("applyToTask")}
    assert applied == {"ENV", "KUBERNETES_VOLUMES"}  # the GPUs go to the TrainJob, not the launcher's pod
    assert comp["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
    container = spec["deploymentSpec"]["executors"]["exec-trainjob-step"]["container"]
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "run_trainjob_step" in container["command"][-1]
    assert "exec-distributed-step" in spec["deploymentSpec"]["executors"]  # decode stays a one-pod torchrun
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-trainjob-step"]
    assert {s["secretName"] for s in executor["secretAsEnv"]} == {"ads-s3", "adrender-mlflow"}
    (dit,) = [t for c in spec["components"].values() for n, t in c.get("dag", {}).get("tasks", {}).items()
              if t.get("taskInfo", {}).get("name") == "dit sample"]  # fmt: skip
    params = dit["inputs"]["parameters"]
    assert params["nodes"]["runtimeValue"]["constant"] == 2
    env = {e["name"]: e for e in params["settings_env"]["runtimeValue"]["constant"]}
    assert env["ADRENDER_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "ads-s3"
    assert env["ADRENDER_METRICS_PORT"]["value"] == "9400"
