"""Faults and ranks: dit_sample killed with SIGKILL mid-shard resumes exactly; world size 2 equals world size 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from components import plan as plan_step
from components.runtime.manifest import StepManifest, read_manifest
from components.runtime.step import StepContext
from components.runtime.tensors import get_tensors
from pipelines.dag import STAGES
from pipelines.local import run_stage
from tests.campaigns import write_campaign

# three text-to-video units of 128x128 x 9 frames (3 x 16 x 16 latents), 24 steps, a checkpoint every 2
JOB = {
    "id": "meadow",
    "prompt": "Morning light over a meadow of wild flowers.",
    "negative_prompt": "",
    "size": "128x128",
    "frames": 9,
    "steps": 24,
    "variants": 3,
}


def _prepare(ctx: StepContext, campaign: Path) -> tuple[str, dict[str, str]]:
    """Plan and run the stages before sampling; returns the shard key and the upstream manifest keys."""
    _, plan = plan_step.run(ctx, plan_step.PlanInputs(str(campaign), checkpoint_every=2))
    (shard,) = plan.shards
    keys: dict[str, str] = {}
    for stage in STAGES[:3]:
        keys[stage.name] = run_stage(ctx, stage, shard.key, {n: keys[u] for n, u in stage.inputs.items()}, 1)
    return shard.key, {"text": keys["llava_encode"], "cond": keys["vae_encode"]}


def _latents(ctx: StepContext, manifest_key: str) -> dict[str, torch.Tensor]:
    m = read_manifest(ctx.store, manifest_key, StepManifest)
    return {u: get_tensors(ctx.store, o.artifacts["latents"].key)[0]["latents"] for u, o in m.units.items()}


def test_sigkill_mid_shard_resumes_from_the_last_checkpoint_bit_exactly(
    make_ctx: Callable[..., StepContext],
    step_env: dict[str, str],
    demo_media: Path,
    tmp_path: Path,
) -> None:
    campaign = write_campaign(tmp_path, demo_media, [JOB])
    ctx = make_ctx()
    shard_key, inputs = _prepare(ctx, campaign)
    units = [f"meadow-v{i:02d}" for i in range(3)]

    cmd = [sys.executable, "-m", "components.dit_sample", "--shard", shard_key]
    cmd += [arg for name, key in sorted(inputs.items()) for arg in ("--input", f"{name}={key}")]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **step_env, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE
    )
    store_root = tmp_path / "store"
    deadline = time.monotonic() + 240
    try:
        # wait until the second unit has written a step checkpoint, then freeze and kill the process
        while time.monotonic() < deadline:
            if list(
                (store_root / "adrender/test-campaign" / units[1] / "dit_sample").rglob("ckpt-*.safetensors")
            ):
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.01)
        proc.send_signal(signal.SIGSTOP)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    checkpoints = sorted(
        (store_root / "adrender/test-campaign" / units[1] / "dit_sample").rglob("ckpt-*.safetensors")
    )
    assert checkpoints, "the second unit left no step checkpoint"
    last_step = int(checkpoints[-1].name[len("ckpt-") : -len(".safetensors")])
    assert 0 < last_step < 24

    from components import dit_sample

    resumed_ctx = make_ctx()
    key = dit_sample.run(resumed_ctx, shard_key, inputs)
    m = read_manifest(resumed_ctx.store, key, StepManifest)
    assert m.units[units[0]].status == "skipped"  # finished before the kill: not sampled again
    assert m.units[units[1]].details["resumed_from"] == last_step
    assert m.units[units[1]].details["steps_run"] == 24 - last_step
    assert m.units[units[2]].details["resumed_from"] == 0
    assert not list((store_root / "adrender/test-campaign" / units[1] / "dit_sample").rglob("ckpt-*"))

    # a rerun finds every unit done and keeps what the run that sampled them recorded
    again = read_manifest(resumed_ctx.store, dit_sample.run(resumed_ctx, shard_key, inputs), StepManifest)
    assert {u.status for u in again.units.values()} == {"skipped"}
    assert again.units[units[1]].details["resumed_from"] == last_step
    assert again.units[units[1]].artifacts == m.units[units[1]].artifacts

    # the interrupted unit equals an uninterrupted run of the same shard, bit for bit
    clean_ctx = make_ctx(tmp_path / "clean-store")
    clean_shard, clean_inputs = _prepare(clean_ctx, campaign)
    clean = _latents(clean_ctx, dit_sample.run(clean_ctx, clean_shard, clean_inputs))
    resumed = _latents(resumed_ctx, key)
    for unit in units:
        assert torch.equal(resumed[unit], clean[unit]), unit


def test_world_size_two_renders_the_latents_of_world_size_one(
    make_ctx: Callable[..., StepContext], step_env: dict[str, str], demo_media: Path, tmp_path: Path
) -> None:
    job = {**JOB, "steps": 4, "variants": 1, "size": "64x64", "frames": 5}
    campaign = write_campaign(tmp_path, demo_media, [job])
    one = make_ctx(tmp_path / "one")
    shard_one, inputs_one = _prepare(one, campaign)
    from components import dit_sample

    single = _latents(one, dit_sample.run(one, shard_one, inputs_one))

    ctx = make_ctx()  # the store of step_env
    shard_key, inputs = _prepare(ctx, campaign)
    sample_stage = next(s for s in STAGES if s.name == "dit_sample")
    key = run_stage(ctx, sample_stage, shard_key, inputs, world_size=2)
    m = read_manifest(ctx.store, key, StepManifest)
    assert m.units["meadow-v00"].details["world_size"] == 2
    two = _latents(ctx, key)
    torch.testing.assert_close(two["meadow-v00"], single["meadow-v00"], rtol=1e-5, atol=1e-5)

    decode_stage = next(s for s in STAGES if s.name == "tiled_decode")
    video = run_stage(ctx, decode_stage, shard_key, {"latents": key}, world_size=2)
    assert read_manifest(ctx.store, video, StepManifest).units["meadow-v00"].status == "ok"


@pytest.mark.parametrize("bad", ["cond"])
def test_a_step_without_its_inputs_says_which(bad: str, make_ctx: Callable[..., StepContext]) -> None:
    from components import dit_sample

    with pytest.raises(ValueError, match=f"needs --input {bad}="):
        dit_sample.run(make_ctx(), "adrender/x/_shards/s/shard.json", {"text": "k"})


def test_ctrl_c_exits_130_and_the_same_command_resumes(
    step_env: dict[str, str], demo_media: Path, tmp_path: Path
) -> None:
    campaign = write_campaign(tmp_path, demo_media, [{**JOB, "variants": 2}])
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "render",
        str(campaign),
        "--checkpoint-every",
        "2",
        "--no-progress",
    ]
    env = {**os.environ, **step_env, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampled = tmp_path / "store/adrender/test-campaign/meadow-v00/dit_sample"
    deadline = time.monotonic() + 240
    while not list(sampled.rglob("ckpt-*.safetensors")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "run the same command again to resume" in err
    assert list(sampled.rglob("ckpt-*.safetensors")), "the step checkpoints were not kept"

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert "2 of 2 unit(s) published" in again.stdout
    assert not list(sampled.rglob("ckpt-*.safetensors"))  # finished units leave no checkpoints
