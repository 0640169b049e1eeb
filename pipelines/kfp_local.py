"""The compiled render pipeline run by ``kfp.local`` on this machine: the same DAG, tasks and step command lines
as on a cluster, each task a subprocess (KFP's SubprocessRunner; no Docker needed).

Kubernetes settings (GPUs, node selector, tolerations, volumes, secrets) do not apply locally; the tasks read
the store, registry and device from this process's environment, as ``adrender render`` does.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.render_campaign import PipelineOptions, build_pipeline

__all__ = ["run_local"]


def _qc_rounds(campaign_uri: str) -> int:
    from components.runtime.spec import load_campaign

    if "://" in campaign_uri and not campaign_uri.startswith("file://"):
        return PipelineOptions().qc_rounds
    path = campaign_uri.removeprefix("file://")
    return load_campaign(Path(path)).qc.max_rerenders


def run_local(
    campaign_uri: str,
    pipeline_root: Path,
    *,
    options: PipelineOptions | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> None:
    """Run the pipeline for one campaign with ``kfp.local``; raises when a task fails after its retries.

    ``arguments``: pipeline parameters besides ``campaign_uri`` (e.g. ``{"checkpoint_every": 1}``). GPU counts
    default to 1 here: they are the torchrun process counts of sampling and decode. Without ``options``, the QC
    gate is unrolled over as many rounds as a local campaign file allows re-renders (fewer tasks to run here).
    """
    from kfp import local  # type: ignore[import-untyped]

    opts = dataclasses.replace(
        options or PipelineOptions(qc_rounds=_qc_rounds(campaign_uri)),
        volume_paths=False,
        sampler_metrics_port=None,
    )
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True
    )
    params: dict[str, Any] = {"gpus_per_sampling_pod": 1, "decode_gpus": 1, **(arguments or {})}
    with warnings.catch_warnings():
        # the project image is not named like a Python image; the SubprocessRunner warns about that
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        build_pipeline(opts)(campaign_uri=campaign_uri, **params)
