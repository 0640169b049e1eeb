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


def test_kfp_local_rerenders_a_unit_that_fails_qc_once(
    make_ctx: Callable[..., StepContext],
    step_env: dict[str, str],
    demo_media: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The QC gate under KFP (a gate task per round, the stages under ``dsl.If``): a unit whose first render fails
    QC is rendered again with the gate's next seed, passes, and that render is published, as the local runner
    publishes it."""
    from components.qc_metrics import rerender_seed
    from pipelines.kfp_local import run_local

    # picture only: a failed identity check is one a new seed may fix; with seed 7 the tiny models' re-render
    # scores higher than the first render (DINO-Sim 0.990 against 0.972, Face-Sim 0.932 against 0.884)
    job = {**ALL_MODES[0], "foley": False, "seeds": [7]}
    unit = f"{job['id']}-v00"
    prov_key = f"deliverables/test-campaign/{job['id']}/{unit}.json"
    mp4 = f"deliverables/test-campaign/{job['id']}/{unit}.mp4"

    # the local runner, with thresholds no render reaches: the identity scores of the first render and of the
    # re-render (min_identity_similarity bounds DINO-Sim, min_face_similarity Face-Sim)
    reference = make_ctx(tmp_path / "local-store")
    never = {"min_identity_similarity": 0.9999, "min_face_similarity": 0.9999, "max_rerenders": 1}
    always = write_campaign(tmp_path / "ref", demo_media, [job], qc=never)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        render(reference, RenderOptions(always, progress=False))
    finally:
        torch.set_num_threads(threads)
    attempts = json.loads(reference.store.get_bytes(prov_key))["qc"]["attempts"]

    def identity(key: str) -> tuple[float, float]:
        scores = json.loads(reference.store.get_bytes(key))["scores"]
        return scores["dino_sim"], scores["face_sim"]

    first, second = (identity(a["key"]) for a in attempts)
    assert second[0] > first[0] and second[1] > first[1], (
        f"the re-render's identity scores {second} must beat the first {first} for this test"
    )

    # kfp.local with each threshold between the two renders' scores: the first render fails QC, the re-render
    # passes
    qc = {
        "min_identity_similarity": (first[0] + second[0]) / 2,
        "min_face_similarity": (first[1] + second[1]) / 2,
        "max_rerenders": 1,
    }
    campaign = write_campaign(tmp_path / "kfp", demo_media, [job], qc=qc)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "kfp-root"
    run_local(str(campaign), root, options=PipelineOptions(backoff="0s", qc_rounds=1))
    ctx = make_ctx(tmp_path / "store")  # step_env's store
    prov = json.loads(ctx.store.get_bytes(prov_key))
    seed = attempts[0]["seed"]
    checked = [json.loads(ctx.store.get_bytes(a["key"])) for a in prov["qc"]["attempts"] if "key" in a]
    assert [(a["seed"], a["verdict"]) for a in prov["qc"]["attempts"]] == [
        (seed, "fail"),
        (rerender_seed(seed, 1), "pass"),
    ], [(d["failed"], d["scores"]) for d in checked]
    assert set(checked[0]["failed"]) == {"model.dino_sim", "model.face_sim"}  # each under its own threshold
    assert prov["qc"]["verdict"] == "pass" and prov["seed"] == rerender_seed(seed, 1)
    assert ctx.store.get_bytes(mp4) == reference.store.get_bytes(mp4)  # the re-render, bit for bit

    # the KFP UI: the shard's QC report (HTML, both renders listed) and the QC table in its summary
    (report,) = [p for p in root.rglob("qc_report") if p.is_file()]
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and unit in page and str(rerender_seed(seed, 1)) in page
    summaries = [p.read_text() for p in root.rglob("summary") if p.is_file()]
    assert any(f"| {unit} | pass |" in s for s in summaries), summaries
