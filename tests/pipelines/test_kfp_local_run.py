"""The compiled pipeline under ``kfp.local`` (SubprocessRunner): the same DAG, components and step command lines a
cluster runs, on the tiny models. Its deliverables and final latents equal the local runner's bit for bit,
also when a task crashes on its first attempt (KFP's retry runs it again) and when sampling is killed after
a step checkpoint (the retried task resumes from it)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from components.runtime.manifest import StepManifest, read_manifest
from components.runtime.step import StepContext
from components.runtime.tensors import get_tensors
from pipelines.local import RenderOptions, render
from pipelines.render_campaign import PipelineOptions
from tests.campaigns import ALL_MODES, write_campaign

# 2 steps with a checkpoint after each: the kill lands between them
JOB = {**ALL_MODES[0], "steps": 2}

# Faults injected from outside the product: Python imports `sitecustomize` at start-up from PYTHONPATH.
# prompt_rewrite exits on its first run; the sampling worker is killed with SIGKILL once its first step
# checkpoint is in the store.
FAULTS = """
import os, signal, sys, threading, time
from pathlib import Path

_marks = Path({marks!r})
_argv = sys.orig_argv

def _first(name):
    mark = _marks / name
    try:
        mark.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True

if "components.prompt_rewrite" in _argv and _first("prompt_rewrite"):
    os._exit(3)

if "components.dit_sample" in _argv and "torch.distributed.run" not in _argv and _first("dit_sample"):
    def _watch():
        while not list(Path({store!r}).rglob("ckpt-*.safetensors")):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=_watch, daemon=True).start()
"""


def test_kfp_local_run_equals_the_local_runner_through_a_crash_and_a_kill(
    make_ctx: Callable[..., StepContext],
    step_env: dict[str, str],
    demo_media: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines.kfp_local import run_local

    campaign = write_campaign(tmp_path, demo_media, [JOB])
    reference = make_ctx(tmp_path / "local-store")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the task processes run with OMP_NUM_THREADS=1: the same reduction order
    try:
        report = render(reference, RenderOptions(campaign, progress=False, checkpoint_every=1))
    finally:
        torch.set_num_threads(threads)
    assert [u.status for u in report.units] == ["published"]

    hooks, marks = tmp_path / "hooks", tmp_path / "marks"
    hooks.mkdir()
    marks.mkdir()
    store_root = tmp_path / "store"  # step_env's store
    (hooks / "sitecustomize.py").write_text(
        textwrap.dedent(FAULTS.format(marks=str(marks), store=str(store_root / "adrender")))
    )
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    run_local(
        str(campaign),
        tmp_path / "kfp-root",
        options=PipelineOptions(backoff="0s"),
        arguments={"checkpoint_every": 1},
    )
    assert (marks / "prompt_rewrite").exists() and (marks / "dit_sample").exists()

    # the run's sampling resumed after the kill; the reference ran uninterrupted
    ctx = make_ctx(store_root)
    unit = f"{JOB['id']}-v00"
    (sampled,) = [
        k
        for k in ctx.store.list("adrender/test-campaign/_shards")
        if "/dit_sample/" in k and k.endswith("manifest.json")
    ]
    details = read_manifest(ctx.store, sampled, StepManifest).units[unit].details
    assert details["resumed_from"] == 1 and details["steps_run"] == 1

    # deliverable (byte for byte) and final latents (bit for bit) equal the local runner's
    mp4 = f"deliverables/test-campaign/{JOB['id']}/{unit}.mp4"
    assert ctx.store.get_bytes(mp4) == reference.store.get_bytes(mp4)
    latents = sorted(
        k for k in ctx.store.list(f"adrender/test-campaign/{unit}/dit_sample") if "ckpt" not in k
    )
    assert latents and latents == sorted(
        k for k in reference.store.list(f"adrender/test-campaign/{unit}/dit_sample") if "ckpt" not in k
    )
    for key in latents:  # the tensors; the header also records how the run went (resumed, timings)
        ours, theirs = get_tensors(ctx.store, key)[0], get_tensors(reference.store, key)[0]
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), key
    index = json.loads(ctx.store.get_bytes("deliverables/test-campaign/index.json"))
    assert index["counts"] == {"published": 1, "failed": 0, "missing": 0}

    # the UI's artifacts: the shard summary, its metrics and the deliverables with their metadata
    root = tmp_path / "kfp-root"
    summary = next(root.rglob("summary"))
    assert unit in summary.read_text() and "| published |" in summary.read_text()
    (deliverables,) = list(root.rglob("deliverables"))
    assert json.loads(deliverables.read_text())["counts"]["published"] == 1
