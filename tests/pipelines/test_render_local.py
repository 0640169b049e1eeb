"""The render DAG end to end on one machine: tiny models from a real sqlite MLflow, a local-folder store,
real ffmpeg. Every mode, the published files and their provenance, reruns, an alias moved mid-run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from components import plan as plan_step
from components.runtime.manifest import PlanManifest, ShardManifest, StepManifest, read_manifest
from components.runtime.media import probe
from components.runtime.step import StepContext
from components.runtime.tensors import get_tensors
from pipelines.dag import STAGES
from pipelines.local import RenderOptions, render, run_stage
from tests.campaigns import ALL_MODES, SMALL, write_campaign


def _latents(ctx: StepContext, keys: dict[str, str], unit_id: str) -> torch.Tensor:
    m = read_manifest(ctx.store, keys["dit_sample"], StepManifest)
    return get_tensors(ctx.store, m.units[unit_id].artifacts["latents"].key)[0]["latents"]


def test_renders_every_mode_to_probed_mp4s_with_provenance(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    campaign = write_campaign(tmp_path, demo_media, ALL_MODES)
    ctx = make_ctx()
    report = render(ctx, RenderOptions(campaign, progress=False))

    assert [u.status for u in report.units] == ["published"] * 4, report.units
    store_root = tmp_path / "store"
    for job in ALL_MODES:
        unit = f"{job['id']}-v00"
        mp4 = store_root / "deliverables/test-campaign" / str(job["id"]) / f"{unit}.mp4"
        info = probe(mp4, count_frames=True)
        video = info.video
        assert video is not None and video.codec == "h264"
        assert (video.height, video.width, video.frame_count) == (64, 64, 5)
        assert video.fps == pytest.approx(25 if job["id"] != "meadow-mood" else 24)
        prov = json.loads(mp4.with_suffix(".json").read_text())
        assert prov["unit"] == unit and prov["job"] == job["id"] and prov["campaign"] == "test-campaign"
        assert prov["prompt"]["original"] == job["prompt"] and prov["prompt"]["rendered"] == job["prompt"]
        assert prov["models"]["dit"]["version"] == 1 and len(prov["models"]["dit"]["files"]) == 1
        assert prov["sampling"]["num_steps"] == 3 and prov["seed"] == prov["sampling"]["seed"]
        assert prov["steps"]["dit_sample"]["status"] == "ok" and prov["steps"]["dit_sample"]["seconds"] > 0
        assert prov["steps"]["v2a_foley"]["status"] == "ok"
        foley = prov["steps"]["v2a_foley"]["foley"]
        assert foley == ("off" if job["id"] == "man-voiceover" else "on")
        assert info.audio is not None  # foley, or the driving voice of the audio job
        assert prov["steps"]["qc_metrics"]["status"] == "ok" and prov["qc"]["verdict"] in ("pass", "fail")
        assert (
            prov["video"]["sha256"]
            == ctx.store.stat(f"deliverables/test-campaign/{job['id']}/{unit}.mp4").sha256
        )
    index = json.loads((store_root / "deliverables/test-campaign/index.json").read_text())
    assert index["counts"] == {"published": 4, "failed": 0, "missing": 0}

    # a second run of the finished campaign does no model work at all
    again = make_ctx()
    report2 = render(again, RenderOptions(campaign, progress=False))
    assert [u.status for u in report2.units] == ["published-before"] * 4
    assert again.model_cache == {}


def test_modes_differ_and_rendering_is_deterministic(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    campaign = write_campaign(tmp_path, demo_media, ALL_MODES[:1])
    a = render(make_ctx(tmp_path / "a"), RenderOptions(campaign, progress=False))
    b = render(make_ctx(tmp_path / "b"), RenderOptions(campaign, progress=False))
    (ka,) = a.stage_keys.values()
    (kb,) = b.stage_keys.values()
    la, lb = (
        _latents(make_ctx(tmp_path / "a"), ka, "woman-intro-v00"),
        _latents(make_ctx(tmp_path / "b"), kb, "woman-intro-v00"),
    )
    assert torch.equal(la, lb)  # same inputs, same ops, same order: bit-identical
    assert la.shape == (1, 16, 2, 8, 8) and la.std() > 0.1


def test_changed_prompt_renders_again_and_unchanged_units_are_skipped(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    jobs = [dict(ALL_MODES[3]), {**ALL_MODES[3], "id": "meadow-two"}]
    campaign = write_campaign(tmp_path, demo_media, jobs)
    render(make_ctx(), RenderOptions(campaign, progress=False))
    jobs[1]["prompt"] = "Evening light over a meadow."
    write_campaign(tmp_path, demo_media, jobs)
    report = render(make_ctx(), RenderOptions(campaign, progress=False))
    assert {u.unit_id: u.status for u in report.units} == {
        "meadow-mood-v00": "published-before",
        "meadow-two-v00": "published",
    }


def test_alias_moved_mid_run_keeps_the_pinned_version(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path, tiny_registry: object
) -> None:
    from model_core.tiny_models import write_tiny_model

    campaign = write_campaign(tmp_path, demo_media, [ALL_MODES[3]])
    ctx = make_ctx()
    _, plan = plan_step.run(ctx, plan_step.PlanInputs(str(campaign), check_media=True))
    assert plan.models["hunyuanvideo-t2v-dit@production"].version == 1
    (shard_ref,) = plan.shards

    # another version takes the alias after plan pinned it
    registry = ctx.registry
    folder = write_tiny_model("tiny-hunyuanvideo-t2v-720p", tmp_path / "v2", seed=99)
    moved = registry.register(
        "hunyuanvideo-t2v-dit", folder, "tiny-hunyuanvideo-t2v-720p", aliases=["production"]
    )
    try:
        assert registry.resolve("hunyuanvideo-t2v-dit@production").version == moved.version
        keys: dict[str, str] = {}
        for stage in STAGES:
            keys[stage.name] = run_stage(
                ctx, stage, shard_ref.key, {n: keys[u] for n, u in stage.inputs.items()}, 1
            )
        sampled = read_manifest(ctx.store, keys["dit_sample"], StepManifest)
        assert sampled.model_versions == {"hunyuanvideo-t2v-dit": "hunyuanvideo-t2v-dit/1"}
        assert ("dit", "hunyuanvideo-t2v-dit/1") in ctx.model_cache
        assert not any(v == f"hunyuanvideo-t2v-dit/{moved.version}" for _, v in ctx.model_cache)
        # and the latents are those of version 1: equal to a run planned before the alias existed elsewhere
        registry.set_alias("hunyuanvideo-t2v-dit", "production", 1)
        fresh = make_ctx(tmp_path / "fresh")
        report = render(fresh, RenderOptions(campaign, progress=False))
        (fresh_keys,) = report.stage_keys.values()
        assert torch.equal(
            _latents(ctx, keys, "meadow-mood-v00"), _latents(fresh, fresh_keys, "meadow-mood-v00")
        )
    finally:
        registry.set_alias("hunyuanvideo-t2v-dit", "production", 1)


def test_dry_run_prints_the_plan_and_renders_nothing(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    import io

    campaign = write_campaign(tmp_path, demo_media, ALL_MODES)
    ctx = make_ctx()
    out = io.StringIO()
    report = render(ctx, RenderOptions(campaign, dry_run=True, progress=False), stream=out)
    text = out.getvalue()
    assert "4 unit(s), 0 already published, 4 to render in 4 shard(s)" in text
    assert (
        "hunyuancustom-dit@production" in text and "-> hunyuancustom-dit/1 (tiny-hunyuancustom-720p)" in text
    )
    assert "H100-hours" in text
    assert report.units == [] and ctx.model_cache == {}
    plan = read_manifest(ctx.store, report.plan_key, PlanManifest)
    assert sum(s.units for s in plan.shards) == 4
    shard = read_manifest(ctx.store, plan.shards[0].key, ShardManifest)
    assert shard.units[0].sampling["num_steps"] == SMALL["steps"]
