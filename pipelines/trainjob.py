"""Sampling beyond one node: a Kubeflow Trainer ``TrainJob`` launched by the KFP ``dit_sample`` task.

For a sequence-parallel world larger than one pod (16 GPUs over 2 nodes), the KFP task is a thin launcher:

1. :func:`build_trainjob` writes a ``trainer.kubeflow.org/v1alpha1`` ``TrainJob`` on the ``torch-distributed``
   runtime (Kubeflow Trainer v2.3, github.com/kubeflow/trainer ``manifests/base/crds``) whose nodes run the
   project image with the task's resources per node, env, volumes, node selector and tolerations (KFP's
   ``TaskConfig`` passthrough), under the restricted Pod Security Standard.
2. Every node runs ``python -m pipelines.trainjob node --result-key K -- <step arguments>``: ``torchrun`` over
   ``python -m components.dit_sample`` (the same entry as the one-pod path), with the world read from the
   ``PET_*`` variables the runtime sets; node 0 then writes the step's manifest key (or its exit code) to the
   store at ``K``.
3. :func:`launch_and_wait` creates the job through the Kubernetes API, polls it until its ``Complete`` or
   ``Failed`` condition or a deadline, deletes it, and returns the manifest key read from the store. A failure
   raises :class:`TrainJobFailed` with the job's reason and message, so the KFP task fails and ``set_retry``
   runs it again; the step's checkpoints in the store make the retry resume.

Errors: ``TrainJobError`` > ``TrainJobFailed`` (the job failed, or finished without a result),
``TrainJobTimeout`` (the deadline passed), ``TrainJobApiError`` (the Kubernetes API refused a request).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONTAINER",
    "GROUP",
    "PLURAL",
    "RUNTIME",
    "SAMPLER_LABELS",
    "VERSION",
    "TrainJobApiError",
    "TrainJobError",
    "TrainJobFailed",
    "TrainJobRequest",
    "TrainJobTimeout",
    "build_trainjob",
    "custom_objects_api",
    "job_name",
    "launch_and_wait",
    "main",
    "merged_env",
    "node_command",
    "plain_env",
    "reference_env",
    "result_key",
    "run_multinode",
    "run_node",
]

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
RUNTIME = "torch-distributed"
# the replicated job and container of the torch-distributed runtime (Trainer pkg/constants: Node = "node")
CONTAINER = "node"
# the sampling pods' labels (one-pod task and TrainJob nodes): the chart's PodMonitor selects them
SAMPLER_LABELS = {"app.kubernetes.io/component": "sampler", "app.kubernetes.io/part-of": "adrender"}
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

log = logging.getLogger("adrender.trainjob")


class TrainJobError(RuntimeError):
    """Multi-node sampling did not produce a result."""


class TrainJobFailed(TrainJobError):
    """The TrainJob failed (its ``Failed`` condition), or completed without writing its result."""


class TrainJobTimeout(TrainJobError):
    """The TrainJob did not finish before the deadline; it was deleted."""


class TrainJobApiError(TrainJobError):
    """The Kubernetes API refused a request (RBAC, a missing CRD, a bad manifest)."""


@dataclass(frozen=True)
class TrainJobRequest:
    """What the TrainJob runs and where: one step of one shard over ``nodes`` x ``gpus_per_node`` processes.

    ``resources``, ``env``, ``volumes``, ``volume_mounts``, ``node_selector``, ``tolerations``: Kubernetes JSON,
    as KFP's ``TaskConfig`` hands them to the task (empty ones are left out of the job).
    """

    name: str
    namespace: str
    image: str
    step: str
    shard: str
    inputs: Mapping[str, str]
    result_key: str
    nodes: int
    gpus_per_node: int
    timeout_s: int
    resources: Mapping[str, Any] = field(default_factory=dict)
    env: Sequence[Mapping[str, Any]] = ()
    volumes: Sequence[Mapping[str, Any]] = ()
    volume_mounts: Sequence[Mapping[str, Any]] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    run_as_user: int = 10001

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ValueError(
                f"a TrainJob is for 2 or more nodes; got nodes={self.nodes} (one pod runs torchrun)"
            )
        if self.gpus_per_node < 1:
            raise ValueError(f"gpus_per_node must be >= 1; got {self.gpus_per_node}")
        if self.timeout_s < 1:
            raise ValueError(f"timeout_s must be >= 1; got {self.timeout_s}")


def job_name(step: str, shard: str) -> str:
    """A fresh DNS-1035 name per launch: the step, a digest of the shard, and a random suffix (a retry must not
    collide with the job of the attempt before it)."""
    digest = hashlib.sha256(shard.encode()).hexdigest()[:10]
    return f"adrender-{step.replace('_', '-')}-{digest}-{uuid.uuid4().hex[:6]}"


def result_key(shard: str, name: str) -> str:
    """Where node 0 writes the result: beside the shard manifest, under the job's name."""
    return f"{shard.rsplit('/', 1)[0]}/trainjobs/{name}/result.json"


def node_command(request: TrainJobRequest) -> list[str]:
    """The command of every node (:func:`run_node` under ``python -m pipelines.trainjob node``)."""
    cmd = ["python", "-m", "pipelines.trainjob", "node", "--result-key", request.result_key, "--"]
    cmd += [request.step, "--shard", request.shard]
    for name, key in sorted(request.inputs.items()):
        cmd += ["--input", f"{name}={key}"]
    return cmd


def merged_env(*layers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """EnvVar lists merged by name, earlier layers winning; sorted by name."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for e in layer:
            out.setdefault(e["name"], dict(e))
    return [out[k] for k in sorted(out)]


def plain_env(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def reference_env(
    config_map: str, config_keys: Sequence[str], secrets: Mapping[str, Mapping[str, str]]
) -> list[dict[str, Any]]:
    """The settings ConfigMap's keys and the Secrets' keys (``secret -> {key: env name}``) as optional references,
    as the one-pod tasks get them (``use_config_map_as_env`` / ``use_secret_as_env``)."""
    env = [
        {"name": k, "valueFrom": {"configMapKeyRef": {"name": config_map, "key": k, "optional": True}}}
        for k in config_keys
    ]
    for secret, keys in secrets.items():
        env += [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for key, name in keys.items()
        ]
    return env


def build_trainjob(request: TrainJobRequest) -> dict[str, Any]:
    """The ``TrainJob`` manifest for ``request`` (validated against the Trainer CRD's schema in the tests)."""
    restricted = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container: dict[str, Any] = {"name": CONTAINER, "securityContext": restricted}
    if request.volume_mounts:
        container["volumeMounts"] = [dict(m) for m in request.volume_mounts]
    pod_spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": request.run_as_user,
            "runAsGroup": request.run_as_user,
            "fsGroup": request.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if request.node_selector:
        pod_spec["nodeSelector"] = dict(request.node_selector)
    if request.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in request.tolerations]
    if request.volumes:
        pod_spec["volumes"] = [dict(v) for v in request.volumes]
    trainer: dict[str, Any] = {
        "image": request.image,
        "command": node_command(request),
        "numNodes": request.nodes,
        "numProcPerNode": request.gpus_per_node,
        # NCCL: fail a hung collective instead of waiting forever, so the job fails and the task retries
        "env": merged_env(
            request.env, plain_env({"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "NCCL_DEBUG": "WARN"})
        ),
    }
    if request.resources:
        trainer["resourcesPerNode"] = dict(request.resources)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": request.name, "namespace": request.namespace, "labels": dict(SAMPLER_LABELS)},
        "spec": {
            "runtimeRef": {"name": RUNTIME, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "activeDeadlineSeconds": request.timeout_s,
            "trainer": trainer,
            "runtimePatches": [
                {
                    "manager": "adrender.kubeflow.org/pipeline",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": CONTAINER,
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "metadata": {"labels": dict(SAMPLER_LABELS)},
                                                    "spec": pod_spec,
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


# the launcher ----------------------------------------------------------------------------------------------


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def _api_error(what: str, exc: Exception) -> TrainJobApiError:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None) or str(exc)
    try:
        body = json.loads(body).get("message", body)
    except (TypeError, ValueError):
        pass
    hint = ""
    if status == 403:
        hint = " (the pipeline's service account may not manage TrainJobs: install the chart with multiNode.enabled)"
    elif status == 404:
        hint = f" (is Kubeflow Trainer installed? the {GROUP} CRDs are missing)"
    return TrainJobApiError(f"{what}: HTTP {status}: {body}{hint}")


def launch_and_wait(
    api: Any,
    manifest: Mapping[str, Any],
    read_result: Callable[[], bytes | None],
    *,
    deadline_s: float,
    poll_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Create the TrainJob with ``api`` (a ``kubernetes.client.CustomObjectsApi``), wait for it, delete it, and
    return the step manifest key node 0 wrote (``read_result()`` returns the result object's bytes, or None).

    Raises :class:`TrainJobFailed` when the job fails or completes without a result, :class:`TrainJobTimeout`
    after ``deadline_s`` seconds, :class:`TrainJobApiError` when the API refuses a request.
    """
    from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"]["namespace"]
    where = f"TrainJob {namespace}/{name}"
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, dict(manifest))
    except ApiException as exc:
        raise _api_error(f"creating {where}", exc) from exc
    log.info("%s created: %s nodes", where, manifest["spec"]["trainer"]["numNodes"])
    started = clock()
    try:
        while True:
            try:
                job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as exc:
                raise _api_error(f"reading {where}", exc) from exc
            failed = _condition(job, "Failed")
            if failed is not None:
                raise TrainJobFailed(
                    f"{where} failed ({failed.get('reason', 'no reason')}): {failed.get('message', '')}; "
                    f"the nodes' logs: kubectl logs -n {namespace} -l jobset.sigs.k8s.io/jobset-name={name}"
                )
            if _condition(job, "Complete") is not None:
                return _read_result(where, read_result)
            if clock() - started > deadline_s:
                raise TrainJobTimeout(
                    f"{where} did not finish in {deadline_s:.0f} s (deadline); it is deleted, and the task's "
                    "retry resumes from the step checkpoints"
                )
            sleep(poll_s)
    finally:
        try:
            api.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground"
            )
        except ApiException as exc:  # the outcome above matters more than the clean-up
            log.warning("could not delete %s: %s", where, exc)


def _read_result(where: str, read_result: Callable[[], bytes | None]) -> str:
    raw = read_result()
    if raw is None:
        raise TrainJobFailed(f"{where} completed but node 0 wrote no result; see the nodes' logs")
    result = json.loads(raw)
    if result.get("exit", 1) != 0 or not result.get("manifest"):
        raise TrainJobFailed(
            f"{where}: the step on node 0 exited with {result.get('exit')}; see the nodes' logs"
        )
    return str(result["manifest"])


def _namespace() -> str:
    if _SA_NAMESPACE.is_file():
        return _SA_NAMESPACE.read_text().strip()
    return os.environ.get("ADRENDER_NAMESPACE", "default")


def custom_objects_api() -> Any:
    """A ``CustomObjectsApi`` from the pod's service account, else from the local kubeconfig."""
    from kubernetes import client, config  # type: ignore[import-untyped]

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def run_multinode(
    step: str,
    shard: str,
    inputs: Mapping[str, str],
    *,
    nodes: int,
    gpus_per_node: int,
    image: str,
    timeout_s: int,
    task_config: Mapping[str, Any] | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    env: Sequence[Mapping[str, Any]] = (),
    base_env: Sequence[Mapping[str, Any]] = (),
    api: Any = None,
    poll_s: float = 10.0,
) -> str:
    """What the KFP task runs when ``nodes`` > 1: the TrainJob for one step of one shard; its manifest key out.

    ``task_config``: the task's ``TaskConfig`` as a dict (``resources``, ``env``, ``volumes``, ``volume_mounts``,
    ``node_selector``, ``tolerations``); the pipeline's ``node_selector`` / ``tolerations`` fill in what it lacks.
    ``env``: EnvVars that win over the task's (the run's store); ``base_env``: those the task's win over (the
    settings and credential references).
    """
    from components.runtime.store import ObjectNotFound, open_store

    tc = dict(task_config or {})
    name = job_name(step, shard)
    request = TrainJobRequest(
        name=name,
        namespace=_namespace(),
        image=image,
        step=step,
        shard=shard,
        inputs=inputs,
        result_key=result_key(shard, name),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        timeout_s=timeout_s,
        resources=tc.get("resources") or {},
        env=merged_env(env, tc.get("env") or [], base_env),
        volumes=tc.get("volumes") or [],
        volume_mounts=tc.get("volume_mounts") or [],
        node_selector=tc.get("node_selector") or dict(node_selector or {}),
        tolerations=tc.get("tolerations") or list(tolerations or []),
    )
    store = open_store()

    def read() -> bytes | None:
        try:
            return store.get_bytes(request.result_key)
        except ObjectNotFound:
            return None

    # the job's own activeDeadlineSeconds ends it; the launcher waits a little longer for the condition
    return launch_and_wait(
        api or custom_objects_api(), build_trainjob(request), read, deadline_s=timeout_s + 300, poll_s=poll_s
    )


# on every node ---------------------------------------------------------------------------------------------


def run_node(result_key_: str, step_args: Sequence[str], *, python: str = sys.executable) -> int:
    """Run the step under torchrun on this node (world from ``PET_*``); node 0 stores the result. Returns the
    step's exit code."""
    from components.runtime.store import open_store

    if not step_args:
        raise ValueError("no step: write `node --result-key K -- STEP --shard KEY [--input NAME=KEY ...]`")
    step, rest = step_args[0], list(step_args[1:])
    with tempfile.TemporaryDirectory(prefix="adrender-node-") as tmp:
        out = Path(tmp) / "manifest-key"
        cmd = [
            python,
            "-m",
            "torch.distributed.run",
            "-m",
            f"components.{step}",
            *rest,
            "--output-file",
            str(out),
        ]
        log.info("node %s: %s", os.environ.get("PET_NODE_RANK", "?"), " ".join(cmd))
        code = subprocess.run(cmd, check=False).returncode
        if os.environ.get("PET_NODE_RANK", "0") == "0":
            result: dict[str, Any] = {"exit": code}
            if code == 0 and out.is_file():
                result["manifest"] = out.read_text().strip()
            open_store().put_bytes(result_key_, json.dumps(result).encode())
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.trainjob",
        description="Run on each node of a sampling TrainJob: the step under torchrun; node 0 stores the result.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run the step on this node")
    node.add_argument("--result-key", required=True, help="store key node 0 writes the result to")
    node.add_argument(
        "step_args", nargs=argparse.REMAINDER, help="-- STEP --shard KEY [--input NAME=KEY ...]"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    step_args = args.step_args[1:] if args.step_args[:1] == ["--"] else args.step_args
    return run_node(args.result_key, step_args)


if __name__ == "__main__":
    sys.exit(main())
