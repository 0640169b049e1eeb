"""The render DAG as a Kubeflow Pipelines (KFP v2) pipeline.

``plan`` -> ``ParallelFor(shards, parallelism=...)`` over the stages of ``pipelines.dag.STAGES`` (prompt rewrite,
LLaVA encode, VAE encode, sampling under torchrun, tiled decode, foley, QC, publish) -> the campaign index,
all inside an ``ExitHandler`` whose task reports the run's outcome. Tasks pass only manifest keys; tensors and
videos move through the store once. Between QC and publish, the QC re-render gate is unrolled over
``qc_rounds`` rounds (a gate task, the stages under ``dsl.If``, ``dsl.OneOf``; ``pipelines.kfp_tasks.qc_gate``).
With ``sampling_nodes`` > 1 the sampling task launches a Kubeflow Trainer TrainJob (``pipelines.trainjob``).

The components are lightweight Python components whose ``base_image`` is the project image, with the KFP
package already installed there (``install_kfp_package=False``): each body imports one function of
``pipelines.kfp_tasks`` that runs the step's command line. Unlike container components, these also run under
``kfp.local``'s SubprocessRunner, so the exact DAG compiled here runs on a machine without Docker.

KFP's own cache is off for every task: the store's content keys already skip finished work, and a KFP cache
hit could return a manifest key whose objects a lifecycle rule removed, or a plan whose aliases have moved.

    from pipelines.render_campaign import PipelineOptions, build_pipeline, compile_pipeline
    compile_pipeline(PipelineOptions(image="registry.example.com/adrender:0.1.0"), Path("pipeline.yaml"))
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl, kubernetes  # type: ignore[import-untyped]

from pipelines.dag import STAGES, Stage
from pipelines.kfp_names import (
    MLFLOW_SECRET,
    MLFLOW_SECRET_KEYS,
    MODEL_CACHE_PVC,
    S3_SECRET,
    S3_SECRET_KEYS,
    SETTINGS_CONFIG_MAP,
    SETTINGS_KEYS,
)
from pipelines.trainjob import SAMPLER_LABELS, reference_env

__all__ = [
    "DEFAULT_IMAGE",
    "MLFLOW_SECRET",
    "MODEL_CACHE_PVC",
    "PIPELINE_NAME",
    "S3_SECRET",
    "SETTINGS_CONFIG_MAP",
    "SETTINGS_KEYS",
    "PipelineOptions",
    "build_pipeline",
    "compile_pipeline",
]

PIPELINE_NAME = "adrender-render-campaign"
DEFAULT_IMAGE = "ghcr.io/adrender/adrender:0.1.0"
MODEL_CACHE_MOUNT = "/var/cache/adrender/models"
WORK_MOUNT = "/var/tmp/adrender"


@dataclass(frozen=True)
class Resources:
    """Per task: CPU and memory requests (and limits), GPUs, and the pod's deadline in seconds."""

    cpu: str
    memory: str
    timeout_s: int
    cpu_limit: str | None = None
    memory_limit: str | None = None


@dataclass(frozen=True)
class PipelineOptions:
    """What is fixed when the pipeline is compiled (everything a run may change is a pipeline parameter).

    image: the project image. parallelism: how many shards render at once (= 8-GPU nodes in use; KFP takes it
    at compile time). retries / backoff: ``set_retry`` of every task. model_cache_pvc: the PVC holding the
    checkpoint cache (mounted on the model steps). shm_size: the ``/dev/shm`` memory volume of the GPU steps.
    settings_config_map, s3_secret, mlflow_secret: the ConfigMap and Secrets every task reads as env (the Helm
    chart compiles with its own names; ``mlflow_secret`` "" = an MLflow server without auth).
    sampling_nodes: > 1 makes ``dit_sample`` launch a Kubeflow Trainer TrainJob over that many nodes
    (``pipelines.trainjob``) instead of running torchrun in its own pod. sampler_metrics_port: the sampling
    pods serve /metrics on it (``ADRENDER_METRICS_PORT``; None = not served).
    """

    image: str = DEFAULT_IMAGE
    parallelism: int = 1
    retries: int = 3
    backoff: str = "60s"
    backoff_factor: float = 2.0
    backoff_max: str = "1800s"
    pull_policy: str = "IfNotPresent"
    model_cache_pvc: str = MODEL_CACHE_PVC
    settings_config_map: str = SETTINGS_CONFIG_MAP
    s3_secret: str = S3_SECRET
    mlflow_secret: str = MLFLOW_SECRET
    sampling_nodes: int = 1
    sampler_metrics_port: int | None = 9400
    # re-render rounds of the QC gate unrolled in the DAG: the most any campaign's qc.max_rerenders allows
    qc_rounds: int = field(default_factory=lambda: _max_rerenders())
    shm_size: str = "64Gi"
    accelerator: str = "nvidia.com/gpu"
    # ADRENDER_WORK_DIR / ADRENDER_MODEL_CACHE point at the pod's volumes; off for kfp.local, which has none
    volume_paths: bool = True
    resources: dict[str, Resources] = field(
        default_factory=lambda: {
            "plan": Resources("1", "2Gi", 1800),
            "prompt_rewrite": Resources("2", "8Gi", 3600),
            "llava_encode": Resources("8", "64Gi", 3 * 3600),
            "vae_encode": Resources("8", "32Gi", 3 * 3600),
            "dit_sample": Resources("64", "512Gi", 24 * 3600),
            "tiled_decode": Resources("16", "128Gi", 6 * 3600),
            "v2a_foley": Resources("8", "64Gi", 3 * 3600),  # Foley xxl bf16 ~10 GB + SigLIP2, CLAP, DAC
            "qc_metrics": Resources("8", "32Gi", 3600),  # CLIP-B/32, DINOv2-base, ArcFace on sampled frames
            "publish": Resources("2", "4Gi", 3600),
            "index": Resources("1", "2Gi", 1800),
            "qc_gate": Resources("500m", "1Gi", 900),
            "notify": Resources("500m", "512Mi", 600),
        }
    )
    # stages that load a model on a GPU: one GPU each, the model cache mounted
    gpu_stages: tuple[str, ...] = ("llava_encode", "vae_encode", "v2a_foley", "qc_metrics")

    def __post_init__(self) -> None:
        if self.sampling_nodes < 1:
            raise ValueError(
                f"sampling_nodes must be >= 1 (1 = one pod runs torchrun); got {self.sampling_nodes}"
            )
        if self.parallelism < 1:
            raise ValueError(f"parallelism must be >= 1; got {self.parallelism}")
        if not 0 <= self.qc_rounds <= _max_rerenders():
            raise ValueError(
                f"qc_rounds must be in 0-{_max_rerenders()} (qc.max_rerenders); got {self.qc_rounds}"
            )


def _max_rerenders() -> int:
    """The largest ``qc.max_rerenders`` a campaign may ask for (the campaign schema's bound)."""
    from components.runtime.spec import QCProfile

    return next(int(m.le) for m in QCProfile.model_fields["max_rerenders"].metadata if hasattr(m, "le"))


# components: each body imports one function of pipelines.kfp_tasks (imports inside: the body runs alone)


# what the multi-node sampling task forwards to its TrainJob (KFP's TaskConfig): the GPUs, CPU and memory, node
# selector and tolerations go to the TrainJob's nodes only; env and volumes also stay on the launcher's pod
TRAINJOB_PASSTHROUGHS = [
    dsl.TaskConfigField.RESOURCES,
    dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
    dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
    dsl.TaskConfigField.KUBERNETES_AFFINITY,
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_VOLUMES, apply_to_task=True),
]


def _make_components(image: str) -> dict[str, Any]:
    def component(func: Callable[..., Any], **kwargs: Any) -> Any:
        return dsl.component(func, base_image=image, install_kfp_package=False, **kwargs)

    def plan(
        campaign_uri: str,
        prefix: str,
        units_per_shard: int,
        checkpoint_every: int,
        store: str,
        plan_manifest: dsl.Output[dsl.Artifact],
    ) -> list:  # type: ignore[type-arg]
        """Plan the campaign: pin model versions, expand render units, write the shards; their keys out."""
        from pipelines.kfp_tasks import plan_campaign

        shards, metadata = plan_campaign(
            campaign_uri,
            prefix=prefix,
            units_per_shard=units_per_shard,
            checkpoint_every=checkpoint_every,
            store=store,
            artifact_path=plan_manifest.path,
        )
        plan_manifest.metadata.update(metadata)
        return shards

    def render_step(step: str, shard: str, inputs: dict, store: str) -> str:  # type: ignore[type-arg]
        """One stage of one shard (``python -m components.<step>``); the key of its manifest out."""
        from pipelines.kfp_tasks import run_step

        return run_step(step, shard, inputs, store=store)

    def distributed_step(step: str, shard: str, inputs: dict, store: str, nproc_per_node: int) -> str:  # type: ignore[type-arg]
        """One stage of one shard under torchrun, one process per GPU; the key of its manifest out."""
        from pipelines.kfp_tasks import run_step

        return run_step(step, shard, inputs, store=store, nproc_per_node=nproc_per_node)

    def trainjob_step(
        step: str,
        shard: str,
        inputs: dict,  # type: ignore[type-arg]
        store: str,
        nodes: int,
        gpus_per_node: int,
        image: str,
        timeout_s: int,
        node_selector: dict,  # type: ignore[type-arg]
        tolerations: list,  # type: ignore[type-arg]
        settings_env: list,  # type: ignore[type-arg]
        task_config: dsl.TaskConfig,
    ) -> str:
        """One stage of one shard as a Kubeflow Trainer TrainJob over ``nodes`` nodes; its manifest key out."""
        import dataclasses

        from pipelines.kfp_tasks import run_trainjob_step

        return run_trainjob_step(
            step, shard, inputs, store=store, nodes=nodes, gpus_per_node=gpus_per_node, image=image,
            timeout_s=timeout_s, node_selector=node_selector, tolerations=tolerations, settings_env=settings_env,
            task_config=dataclasses.asdict(task_config) if task_config is not None else {},
        )  # fmt: skip

    def qc_gate(shard: str, first: dict, runs: list, store: str) -> str:  # type: ignore[type-arg]
        """The shard of the units that failed QC and get another seed this round ("" = none)."""
        from pipelines.kfp_tasks import qc_gate as gate

        return gate(shard, first, runs, store=store)

    def qc_attempt(runs: list, keys: dict) -> list:  # type: ignore[type-arg]
        """The rounds run so far, this one's stage manifests added."""
        return [*runs, keys]

    def qc_keep(runs: list) -> list:  # type: ignore[type-arg]
        """The rounds run so far, when this round had nothing to re-render."""
        return runs

    def qc_result(
        shard: str,
        first: dict,  # type: ignore[type-arg]
        runs: list,  # type: ignore[type-arg]
        store: str,
    ) -> NamedTuple("Gate", [("shard", str), ("keys", dict)]):  # type: ignore[valid-type]
        """The shard and stage manifests publish reads: each unit's last attempt."""
        from pipelines.kfp_tasks import qc_gate_result

        return qc_gate_result(shard, first, runs, store=store)

    def publish(
        shard: str,
        stage_keys: dict,  # type: ignore[type-arg]
        store: str,
        gpus: int,
        decode_gpus: int,
        summary: dsl.Output[dsl.Markdown],
        metrics: dsl.Output[dsl.Metrics],
        qc_report: dsl.Output[dsl.HTML],
    ) -> str:
        """Publish the shard's deliverables and provenance; its summary, metrics and QC report for the UI."""
        from pathlib import Path

        from pipelines.kfp_tasks import publish_shard

        key, report = publish_shard(shard, stage_keys, store=store, gpus=gpus, decode_gpus=decode_gpus)
        Path(summary.path).write_text(report.markdown)
        Path(qc_report.path).write_text(report.qc_html)
        for name, value in report.metrics.items():
            metrics.log_metric(name, value)
        return key

    def index(
        plan_manifest: dsl.Input[dsl.Artifact],
        publish_keys: list,  # type: ignore[type-arg]
        store: str,
        deliverables: dsl.Output[dsl.Artifact],
    ) -> str:
        """The campaign index over every shard; the deliverables (URIs, sizes, seeds, versions) as metadata."""
        from pipelines.kfp_tasks import campaign_index

        uri, metadata = campaign_index(
            plan_manifest.metadata["plan_key"], publish_keys, store=store, artifact_path=deliverables.path
        )
        deliverables.metadata.update(metadata)
        return uri

    def notify(campaign_uri: str, webhook_url: str, status: dsl.PipelineTaskFinalStatus) -> None:
        """The run's outcome: final metrics to the Pushgateway, and a POST to the webhook when one is set."""
        from pipelines.kfp_tasks import report_outcome

        print(
            report_outcome(
                state=status.state,
                error=status.error_message,
                campaign_uri=campaign_uri,
                run_name=status.pipeline_job_resource_name,
                webhook_url=webhook_url,
            )
        )

    made = {
        f.__name__: component(f)
        for f in (
            plan,
            render_step,
            distributed_step,
            qc_gate,
            qc_attempt,
            qc_keep,
            qc_result,
            publish,
            index,
            notify,
        )
    }
    made["trainjob_step"] = component(trainjob_step, task_config_passthroughs=TRAINJOB_PASSTHROUGHS)
    return made


# task settings


def secret_env(options: PipelineOptions) -> dict[str, dict[str, str]]:
    """Secret name -> {key: env name}: the credentials every task reads."""
    out = {options.s3_secret: S3_SECRET_KEYS}
    if options.mlflow_secret:
        out[options.mlflow_secret] = MLFLOW_SECRET_KEYS
    return out


def _settings_env(task: Any, cache_mount: bool, options: PipelineOptions) -> None:
    kubernetes.use_config_map_as_env(
        task, options.settings_config_map, {k: k for k in SETTINGS_KEYS}, optional=True
    )
    for secret, keys in secret_env(options).items():
        kubernetes.use_secret_as_env(task, secret, keys, optional=True)
    kubernetes.empty_dir_mount(task, volume_name="work", mount_path=WORK_MOUNT)
    kubernetes.empty_dir_mount(task, volume_name="tmp", mount_path="/tmp")
    if options.volume_paths:
        task.set_env_variable("ADRENDER_WORK_DIR", WORK_MOUNT)
    if cache_mount:
        kubernetes.mount_pvc(task, pvc_name=options.model_cache_pvc, mount_path=MODEL_CACHE_MOUNT)
        if options.volume_paths:
            task.set_env_variable("ADRENDER_MODEL_CACHE", MODEL_CACHE_MOUNT)


def _common(task: Any, name: str, options: PipelineOptions, *, cache_mount: bool = False) -> Any:
    res = options.resources[name]
    task.set_caching_options(enable_caching=False)
    task.set_retry(
        num_retries=options.retries,
        backoff_duration=options.backoff,
        backoff_factor=options.backoff_factor,
        backoff_max_duration=options.backoff_max,
    )
    task.set_cpu_request(res.cpu).set_memory_request(res.memory)
    if res.cpu_limit:
        task.set_cpu_limit(res.cpu_limit)
    task.set_memory_limit(res.memory_limit or res.memory)
    kubernetes.set_image_pull_policy(task, options.pull_policy)
    kubernetes.set_timeout(task, res.timeout_s)
    _settings_env(task, cache_mount, options)
    return task


def _on_gpus(task: Any, count: Any, node_selector: Any, tolerations: Any, options: PipelineOptions) -> None:
    task.set_accelerator_type(options.accelerator).set_accelerator_limit(count)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.empty_dir_mount(
        task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=options.shm_size
    )


def build_pipeline(options: PipelineOptions | None = None) -> Any:
    """The pipeline function (a ``GraphComponent``) for these compile-time options."""
    options = options or PipelineOptions()
    c = _make_components(options.image)

    @dsl.pipeline(  # type: ignore[untyped-decorator]
        name=PIPELINE_NAME,
        description="Render an adrender campaign: plan, then every shard through the HunyuanCustom steps, then "
        "publish the deliverables and the campaign index.",
    )
    def render_campaign(
        campaign_uri: str,
        store: str = "",
        prefix: str = "adrender",
        units_per_shard: int = 16,
        checkpoint_every: int = 5,
        gpus_per_sampling_pod: int = 8,
        decode_gpus: int = 1,
        node_selector: dict = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},  # type: ignore[type-arg]  # noqa: B006
        tolerations: list = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],  # type: ignore[type-arg]  # noqa: B006
        webhook_url: str = "",
    ) -> None:
        notify = c["notify"](campaign_uri=campaign_uri, webhook_url=webhook_url).set_display_name(
            "report outcome"
        )
        _common(notify, "notify", options)
        with dsl.ExitHandler(notify, name="render"):
            plan = c["plan"](
                campaign_uri=campaign_uri,
                prefix=prefix,
                units_per_shard=units_per_shard,
                checkpoint_every=checkpoint_every,
                store=store,
            ).set_display_name("plan")
            _common(plan, "plan", options, cache_mount=True)
            with dsl.ParallelFor(plan.outputs["Output"], parallelism=options.parallelism) as shard:
                place = {"gpus": gpus_per_sampling_pod, "decode_gpus": decode_gpus,
                         "node_selector": node_selector, "tolerations": tolerations}  # fmt: skip
                published = _shard_tasks(c, shard, store, options, place)
            index = c["index"](
                plan_manifest=plan.outputs["plan_manifest"],
                publish_keys=dsl.Collected(published.outputs["Output"]),
                store=store,
            ).set_display_name("campaign index")
            _common(index, "index", options)

    return render_campaign


def _shard_tasks(
    c: dict[str, Any], shard: Any, store: Any, options: PipelineOptions, place: dict[str, Any]
) -> Any:
    """One shard: every stage up to QC, the re-render rounds of the QC gate, publish; returns the publish task.

    Round r: a gate task names the shard of the units to render again (the local runner's gate, replayed over
    the rounds so far), and under ``dsl.If`` the stages run on it; ``dsl.OneOf`` carries the rounds run so far
    to the next round, whichever branch ran."""
    before = tuple(s for s in STAGES if s.name != "publish")
    tasks = _stages(c, before, shard, store, options, place)
    first = {name: t.outputs["Output"] for name, t in tasks.items()}
    final_shard, stage_keys = shard, first
    if options.qc_rounds > 0:
        runs: Any = []
        for r in range(1, options.qc_rounds + 1):
            gate = c["qc_gate"](shard=shard, first=first, runs=runs, store=store)
            _common(gate.set_display_name(f"qc gate {r}"), "qc_gate", options)
            with dsl.If(gate.output != "", name=f"rerender-{r}"):
                again = _stages(c, before, gate.output, store, options, place, suffix=f" (re-render {r})")
                keys = {name: t.outputs["Output"] for name, t in again.items()}
                attempt = c["qc_attempt"](runs=runs, keys=keys).set_display_name(f"qc attempt {r}")
                _common(attempt, "qc_gate", options)
            with dsl.Else(name=f"qc-passed-{r}"):
                keep = c["qc_keep"](runs=runs).set_display_name(f"qc kept {r}")
                _common(keep, "qc_gate", options)
            runs = dsl.OneOf(attempt.output, keep.output)
        result = c["qc_result"](shard=shard, first=first, runs=runs, store=store)
        _common(result.set_display_name("qc result"), "qc_gate", options)
        final_shard, stage_keys = result.outputs["shard"], result.outputs["keys"]
    task = c["publish"](
        shard=final_shard,
        stage_keys=stage_keys,
        store=store,
        gpus=place["gpus"],
        decode_gpus=place["decode_gpus"],
    )
    return _common(task.set_display_name("publish"), "publish", options)


def _stages(
    c: dict[str, Any],
    stages: tuple[Stage, ...],
    shard: Any,
    store: Any,
    options: PipelineOptions,
    place: dict[str, Any],
    suffix: str = "",
) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for stage in stages:
        inputs = {name: tasks[up].outputs["Output"] for name, up in stage.inputs.items()}
        task = _stage_task(c, stage, shard, inputs, store, options, **place)
        tasks[stage.name] = task.set_display_name(stage.name.replace("_", " ") + suffix)
    return tasks


def _stage_task(
    c: dict[str, Any],
    stage: Stage,
    shard: Any,
    inputs: dict[str, Any],
    store: Any,
    options: PipelineOptions,
    *,
    gpus: Any,
    decode_gpus: Any,
    node_selector: Any,
    tolerations: Any,
) -> Any:
    if stage.name == "dit_sample" and options.sampling_nodes > 1:
        task = _trainjob_task(c, stage, shard, inputs, store, options, gpus, node_selector, tolerations)
    elif stage.distributed:
        count = gpus if stage.name == "dit_sample" else decode_gpus
        task = c["distributed_step"](
            step=stage.name, shard=shard, inputs=inputs, store=store, nproc_per_node=count
        )
        _common(task, stage.name, options, cache_mount=True)
        _on_gpus(task, count, node_selector, tolerations, options)
        if stage.name == "dit_sample":
            _sampler(task, options)
    else:
        task = c["render_step"](step=stage.name, shard=shard, inputs=inputs, store=store)
        on_gpu = stage.name in options.gpu_stages
        _common(task, stage.name, options, cache_mount=on_gpu)
        if on_gpu:
            _on_gpus(task, 1, node_selector, tolerations, options)
    return task


def _sampler(task: Any, options: PipelineOptions) -> None:
    """The sampling pod: labelled for the chart's PodMonitor, serving /metrics while it runs."""
    for key, value in SAMPLER_LABELS.items():
        kubernetes.add_pod_label(task, key, value)
    if options.sampler_metrics_port is not None:
        task.set_env_variable("ADRENDER_METRICS_PORT", str(options.sampler_metrics_port))


def _trainjob_task(
    c: dict[str, Any],
    stage: Stage,
    shard: Any,
    inputs: dict[str, Any],
    store: Any,
    options: PipelineOptions,
    gpus: Any,
    node_selector: Any,
    tolerations: Any,
) -> Any:
    """``dit_sample`` as a thin launcher of a TrainJob: the GPUs, CPU, memory and placement set here reach the
    TrainJob's nodes through the TaskConfig passthrough, not the launcher's pod."""
    res = options.resources[stage.name]
    env = reference_env(options.settings_config_map, SETTINGS_KEYS, secret_env(options))
    if options.sampler_metrics_port is not None:
        env.append({"name": "ADRENDER_METRICS_PORT", "value": str(options.sampler_metrics_port)})
    task = c["trainjob_step"](
        step=stage.name, shard=shard, inputs=inputs, store=store, nodes=options.sampling_nodes,
        gpus_per_node=gpus, image=options.image, timeout_s=res.timeout_s, node_selector=node_selector,
        tolerations=tolerations, settings_env=env,
    )  # fmt: skip
    _common(task, stage.name, options, cache_mount=True)
    _on_gpus(task, gpus, node_selector, tolerations, options)
    # the launcher outlives its TrainJob's deadline by the time it takes to see the job's end and delete it
    kubernetes.set_timeout(task, res.timeout_s + 900)
    return task


class CompileResult(NamedTuple):
    path: Path
    kubernetes_manifest: bool


def compile_pipeline(
    options: PipelineOptions,
    path: Path,
    *,
    kubernetes_manifest: bool = False,
    namespace: str | None = None,
    pipeline_version: str | None = None,
) -> CompileResult:
    """Compile to KFP's IR YAML, or (``kubernetes_manifest``) to ``Pipeline`` / ``PipelineVersion`` resources of
    the Kubernetes-native API mode."""
    kwargs: dict[str, Any] = {}
    if kubernetes_manifest:
        from kfp.compiler.compiler_utils import KubernetesManifestOptions  # type: ignore[import-untyped]

        kwargs = {
            "kubernetes_manifest_format": True,
            "kubernetes_manifest_options": KubernetesManifestOptions(
                pipeline_name=PIPELINE_NAME,
                pipeline_version_name=pipeline_version or f"{PIPELINE_NAME}-{_image_tag(options.image)}",
                namespace=namespace,
                include_pipeline_manifest=True,
            ),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(options), str(path), **kwargs)
    return CompileResult(path, kubernetes_manifest)


def _image_tag(image: str) -> str:
    import re

    tag = image.rsplit("@", 1)[0].rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else "latest"
    return re.sub(r"[^a-z0-9-]", "-", tag.lower()).strip("-") or "latest"
