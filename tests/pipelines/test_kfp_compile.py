"""The compiled pipeline, read back from its YAML: tasks and their step command lines, GPUs and placement, shared
memory, secrets as env, retries, parallelism and caching. Kubernetes settings never run locally, so this is
where they are checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.cli import main
from pipelines.dag import STAGES
from pipelines.render_campaign import PipelineOptions, compile_pipeline


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    path = tmp_path_factory.mktemp("kfp") / "pipeline.yaml"
    options = PipelineOptions(image="registry.example.com/adrender@sha256:" + "a" * 64, parallelism=3)
    compile_pipeline(options, path)
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of every DAG, by its display name (or task name)."""
    out: dict[str, dict[str, Any]] = {}
    for comp in [spec["root"], *spec["components"].values()]:
        for name, task in comp.get("dag", {}).get("tasks", {}).items():
            out[task.get("taskInfo", {}).get("name", name)] = task
    return out


def _task_keys(spec: dict[str, Any]) -> dict[str, str]:
    """Display name -> the task's key in its DAG (what placeholders refer to)."""
    return {
        task.get("taskInfo", {}).get("name", name): name
        for comp in [spec["root"], *spec["components"].values()]
        for name, task in comp.get("dag", {}).get("tasks", {}).items()
    }


def _executor(spec: dict[str, Any], task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    comp = spec["components"][task["componentRef"]["name"]]
    label = comp["executorLabel"]
    return label, spec["deploymentSpec"]["executors"][label]["container"]


def test_every_stage_runs_its_step_in_the_image_with_caching_off_and_retries(
    compiled: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    spec, _ = compiled
    tasks = _tasks(spec)
    expected = {"plan", "campaign index", "report outcome"} | {s.name.replace("_", " ") for s in STAGES}
    assert expected <= set(tasks), sorted(tasks)
    for name in expected:
        task = tasks[name]
        _, container = _executor(spec, task)
        assert container["image"] == "registry.example.com/adrender@sha256:" + "a" * 64
        # a lightweight component on the project image: KFP's executor runs the body; nothing is pip-installed
        assert "kfp.dsl.executor_main" in container["command"][-2]
        assert "pip install" not in " ".join(container["command"])
        assert task["cachingOptions"].get("enableCache", False) is False, name
        retry = task["retryPolicy"]
        assert retry["maxRetryCount"] == 3 and retry["backoffDuration"] == "60s", name
        assert retry["backoffFactor"] == 2.0 and retry["backoffMaxDuration"] == "1800s"
        assert (
            container["resources"]["resourceCpuRequest"] and container["resources"]["resourceMemoryRequest"]
        )
    # each stage task names its step module; the distributed ones run under torchrun with one process per GPU
    keys = _task_keys(spec)
    for stage in STAGES:
        task = tasks[stage.name.replace("_", " ")]
        params = task["inputs"]["parameters"]
        if stage.name != "publish":
            assert params["step"]["runtimeValue"]["constant"] == stage.name
        _, container = _executor(spec, task)
        body = container["command"][-1]
        if stage.distributed:
            assert "def distributed_step" in body and "nproc_per_node=nproc_per_node" in body
            source = "gpus_per_sampling_pod" if stage.name == "dit_sample" else "decode_gpus"
            assert params["nproc_per_node"]["componentInputParameter"].endswith(source)
        if stage.name == "publish":  # publish reads what the QC gate settled on (test_qc_gate_rounds)
            continue
        # inputs are the upstream tasks' manifest keys
        wired = params["inputs"]["runtimeValue"]["constant"]
        assert wired == {
            name: f"{{{{$.inputs.parameters['pipelinechannel--{keys[up.replace('_', ' ')]}-Output']}}}}"
            for name, up in stage.inputs.items()
        }


def test_qc_gate_rounds(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The QC gate unrolled: per round a gate task, the stages up to QC under dsl.If on its output, dsl.OneOf
    carrying the rounds run so far; publish reads the gate's result."""
    spec, _ = compiled
    tasks, keys = _tasks(spec), _task_keys(spec)
    rounds = PipelineOptions().qc_rounds
    assert rounds == 5  # the most re-renders a campaign may ask for (qc.max_rerenders <= 5)
    before = [s.name.replace("_", " ") for s in STAGES if s.name != "publish"]
    for r in range(1, rounds + 1):
        assert f"qc gate {r}" in tasks and f"qc attempt {r}" in tasks and f"qc kept {r}" in tasks
        assert {f"{name} (re-render {r})" for name in before} <= set(tasks)
        rerender = tasks[f"dit sample (re-render {r})"]
        assert rerender["inputs"]["parameters"]["shard"]["componentInputParameter"].endswith(
            f"{keys[f'qc gate {r}']}-Output"
        )
    conditions = [
        t["triggerPolicy"]["condition"]
        for comp in spec["components"].values()
        for t in comp.get("dag", {}).get("tasks", {}).values()
        if t.get("triggerPolicy", {}).get("condition")
    ]
    assert len(conditions) == 2 * rounds  # dsl.If and dsl.Else of each round
    publish = tasks["publish"]["inputs"]["parameters"]
    assert publish["shard"]["taskOutputParameter"] == {
        "producerTask": keys["qc result"],
        "outputParameterKey": "shard",
    }
    assert publish["stage_keys"]["taskOutputParameter"]["outputParameterKey"] == "keys"
    gate_runs = tasks["qc result"]["inputs"]["parameters"]["runs"]
    assert "oneof" in json.dumps(gate_runs).lower() or "taskOutputParameter" in gate_runs


def test_no_gate_rounds_publish_reads_the_first_pass(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    compile_pipeline(PipelineOptions(qc_rounds=0), path)
    spec, _ = yaml.safe_load_all(path.read_text())
    tasks, keys = _tasks(spec), _task_keys(spec)
    assert not any(name.startswith("qc gate") for name in tasks)
    wired = tasks["publish"]["inputs"]["parameters"]["stage_keys"]["runtimeValue"]["constant"]
    assert (
        wired["qc_metrics"] == f"{{{{$.inputs.parameters['pipelinechannel--{keys['qc metrics']}-Output']}}}}"
    )
    with pytest.raises(ValueError, match="qc_rounds must be in 0-5"):
        PipelineOptions(qc_rounds=6)


def test_sampling_pod_asks_for_gpus_shm_placement_secrets_and_the_model_cache(
    compiled: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    spec, executors = compiled
    tasks = _tasks(spec)
    label, container = _executor(spec, tasks["dit sample"])
    accel = container["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu"
    assert accel["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus_per_sampling_pod']}}"
    k8s = executors[label]
    shm = next(m for m in k8s["emptyDirMounts"] if m["mountPath"] == "/dev/shm")
    assert shm["medium"] == "Memory" and shm["sizeLimit"] == "64Gi"
    assert k8s["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith("node_selector")
    assert k8s["tolerations"][0]["tolerationJson"]["componentInputParameter"].endswith("tolerations")
    assert k8s["pvcMount"][0]["mountPath"] == "/var/cache/adrender/models"
    assert k8s["imagePullPolicy"] == "IfNotPresent" and int(k8s["activeDeadlineSeconds"]) == 24 * 3600
    assert {"name": "ADRENDER_MODEL_CACHE", "value": "/var/cache/adrender/models"} in container["env"]

    _, decode = _executor(spec, tasks["tiled decode"])
    assert decode["resources"]["accelerator"]["resourceCount"].endswith("decode_gpus']}}")

    # every task: S3 and MLflow credentials from Secrets as env, settings from the ConfigMap, never parameters
    for name, task in tasks.items():
        if "componentRef" not in task or not spec["components"][task["componentRef"]["name"]].get(
            "executorLabel"
        ):
            continue
        label, _ = _executor(spec, task)
        secrets = {s["secretName"]: s for s in executors[label]["secretAsEnv"]}
        assert {e["envVar"] for e in secrets["adrender-s3"]["keyToEnv"]} == {
            "ADRENDER_S3_ACCESS_KEY",
            "ADRENDER_S3_SECRET_KEY",
        }, name
        assert {e["envVar"] for e in secrets["adrender-mlflow"]["keyToEnv"]} == {
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        }
        assert executors[label]["configMapAsEnv"][0]["configMapName"] == "adrender-settings"
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert not any("key" in p.lower() or "secret" in p.lower() or "password" in p.lower() for p in inputs)
    # CPU steps get no GPU
    _, rewrite = _executor(spec, tasks["prompt rewrite"])
    assert "accelerator" not in rewrite["resources"]


def test_shards_fan_out_with_the_compiled_parallelism_and_fan_in_to_the_index(
    compiled: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    spec, _ = compiled
    loops = [
        t for comp in spec["components"].values() for t in comp.get("dag", {}).get("tasks", {}).values()
        if "parameterIterator" in t
    ]  # fmt: skip
    (loop,) = loops
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("plan-Output")
    index = _tasks(spec)["campaign index"]
    assert "publish" in str(index["inputs"]["parameters"]["publish_keys"])
    outcome = _tasks(spec)["report outcome"]
    assert outcome["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in params["campaign_uri"]  # the one argument a run must give
    assert all("defaultValue" in p for name, p in params.items() if name != "campaign_uri")


def test_compile_command_writes_ir_yaml_or_kubernetes_manifests(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    # one QC round: this test is about the two output formats, and each round adds seconds of compiling
    args = ["--image", "example.com/adrender:1.2.3", "--parallelism", "4", "--qc-rounds", "1"]
    assert main(["compile", "-o", str(out), *args]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    assert spec["pipelineInfo"]["name"] == "adrender-render-campaign"

    manifests = tmp_path / "k8s.yaml"
    assert (
        main(
            [
                "compile",
                "-o",
                str(manifests),
                "--kubernetes-manifests",
                "--namespace",
                "ads",
                "--qc-rounds",
                "1",
            ]
        )
        == 0
    )
    kinds = [
        (d["apiVersion"], d["kind"], d["metadata"].get("namespace"))
        for d in yaml.safe_load_all(manifests.read_text())
    ]
    assert ("pipelines.kubeflow.org/v2beta1", "Pipeline", "ads") in kinds
    assert ("pipelines.kubeflow.org/v2beta1", "PipelineVersion", "ads") in kinds


def test_compile_refuses_bad_names_and_rounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pipeline.yaml"
    with pytest.raises(SystemExit):
        main(["compile", "-o", str(out), "--s3-secret", "Bad_Name"])
    assert "'Bad_Name' is not a Kubernetes object name" in capsys.readouterr().err
    assert main(["compile", "-o", str(out), "--qc-rounds", "9"]) == 1
    assert "qc_rounds must be in 0-5" in capsys.readouterr().err
    assert not out.exists()
