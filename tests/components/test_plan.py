"""plan: pins, shards, skips and the checks that stop a campaign before any GPU time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from components import plan as plan_step
from components.runtime.manifest import ShardManifest, read_manifest
from components.runtime.step import StepContext
from model_core.tiny_models import write_tiny_model
from tests.campaigns import ALL_MODES, SMALL, write_campaign

MEADOW = ALL_MODES[3]


def _plan(ctx: StepContext, campaign: Path, **kw: object) -> plan_step.PlanManifest:
    return plan_step.run(ctx, plan_step.PlanInputs(str(campaign), **kw))[1]  # type: ignore[arg-type]


def test_units_of_one_checkpoint_and_latent_size_share_a_shard_up_to_the_cap(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    jobs = [
        {**MEADOW, "variants": 3},
        {**MEADOW, "id": "meadow-b", "sizes": ["64x64", "128x128"], "size": None},
        ALL_MODES[0],
    ]
    jobs[1].pop("size")
    campaign = write_campaign(tmp_path, demo_media, jobs)
    ctx = make_ctx()
    plan = _plan(ctx, campaign, units_per_shard=2)
    assert plan.units_total == 3 + 2 + 1
    groups = sorted((s.dit, s.latent_size, s.units) for s in plan.shards)
    assert groups == [
        ("hunyuancustom-dit/1", (2, 8, 8), 1),
        ("hunyuanvideo-t2v-dit/1", (2, 8, 8), 2),
        ("hunyuanvideo-t2v-dit/1", (2, 8, 8), 2),
        ("hunyuanvideo-t2v-dit/1", (2, 16, 16), 1),
    ]
    units = {u.unit_id for s in plan.shards for u in read_manifest(ctx.store, s.key, ShardManifest).units}
    assert {"meadow-b-64x64-v00", "meadow-b-128x128-v00", "meadow-mood-v02"} <= units
    shard = read_manifest(ctx.store, plan.shards[0].key, ShardManifest)
    assert set(shard.models) == {v for u in shard.units for v in u.models.values()}
    assert [read_manifest(ctx.store, s.key, ShardManifest).index for s in plan.shards] == [0, 1, 2, 3]


def test_the_plan_is_stable_across_runs(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    campaign = write_campaign(tmp_path, demo_media, ALL_MODES)
    a = plan_step.run(make_ctx(tmp_path / "a"), plan_step.PlanInputs(str(campaign)))
    b = plan_step.run(make_ctx(tmp_path / "b"), plan_step.PlanInputs(str(campaign)))
    assert a[0] == b[0] and [s.key for s in a[1].shards] == [s.key for s in b[1].shards]


def test_foley_offload_travels_from_the_job_to_its_units(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    import typing

    from components.runtime.spec import FoleyOffloadMode
    from model_core.audio.foley.offload import FoleyOffload

    # the spec's choices are the step's modes (the spec does not import torch, so it spells them out)
    assert set(typing.get_args(FoleyOffloadMode)) == {m.value for m in FoleyOffload}
    jobs = [
        {**ALL_MODES[0], "foley": {"offload": "sequential"}},
        {**MEADOW, "foley": True},  # unset: the default
    ]
    ctx = make_ctx()
    plan = _plan(ctx, write_campaign(tmp_path, demo_media, jobs))
    units = {u.job_id: u for s in plan.shards for u in read_manifest(ctx.store, s.key, ShardManifest).units}
    assert units[jobs[0]["id"]].foley_offload == "sequential"
    assert units[MEADOW["id"]].foley_offload == "encoders"
    # where weights wait is not what is rendered: the unit's digest does not depend on it
    again = {**jobs[0], "foley": {"offload": "none"}}
    ctx_b = make_ctx(tmp_path / "store-b")
    plan = _plan(ctx_b, write_campaign(tmp_path, demo_media, [again]))  # the same folder: the same asset URIs
    (other,) = [u for s in plan.shards for u in read_manifest(ctx_b.store, s.key, ShardManifest).units]
    assert other.foley_offload == "none"
    assert other.render_digest == units[jobs[0]["id"]].render_digest


def test_unknown_only_job_is_named(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    campaign = write_campaign(tmp_path, demo_media, [MEADOW])
    with pytest.raises(plan_step.PlanError, match=r"--only names job\(s\) nope .* jobs: meadow-mood"):
        _plan(make_ctx(), campaign, only=("nope",))


def test_missing_media_stops_the_plan_before_models_are_resolved(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    job = {**ALL_MODES[0], "subjects": [{"word": "woman", "image": "assets/missing.png"}]}
    campaign = write_campaign(tmp_path, demo_media, [job])
    ctx = make_ctx()
    ctx.registry.tracking_uri = "http://127.0.0.1:9"  # would fail loudly if contacted
    with pytest.raises(plan_step.PlanError, match=r"jobs\[0\]\.subjects\[0\]\.image.*missing\.png"):
        _plan(ctx, campaign)


def test_unregistered_model_is_reported_with_the_field(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    campaign = write_campaign(
        tmp_path, demo_media, [MEADOW], models={"dit": {"t2v": "no-such-dit@production"}}
    )
    with pytest.raises(
        plan_step.PlanError, match=r"models: no-such-dit@production: model 'no-such-dit' is not registered"
    ):
        _plan(make_ctx(), campaign)


def _register_as(ctx: StepContext, tmp_path: Path, name: str, preset: str, **kw: object) -> None:
    folder = write_tiny_model("tiny-hunyuanvideo-t2v-720p", tmp_path / name)
    ctx.registry.register(name, folder, preset, aliases=["production"], validate=lambda f, p: None, **kw)  # type: ignore[arg-type]


def test_territory_excluded_by_a_licence_is_rejected_with_the_model(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    ctx = make_ctx()
    _register_as(
        ctx, tmp_path, "licensed-dit", "tiny-hunyuanvideo-t2v-720p", excluded_territories=["EU", "GB", "KR"]
    )
    models = {"dit": {"t2v": "licensed-dit@production"}}
    campaign = write_campaign(tmp_path, demo_media, [MEADOW], models=models, territory=["US", "FR", "KR"])
    with pytest.raises(
        plan_step.PlanError, match=r"territory: FR, KR excluded by the licence of licensed-dit/\d+"
    ):
        _plan(ctx, campaign)
    write_campaign(tmp_path, demo_media, [MEADOW], models=models, territory=["US", "CA"])
    assert _plan(ctx, campaign).units_total == 1


def test_a_released_model_refuses_a_size_it_was_not_trained_at(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    ctx = make_ctx()
    _register_as(ctx, tmp_path, "released-t2v", "hunyuanvideo-t2v-720p")
    campaign = write_campaign(
        tmp_path, demo_media, [MEADOW], models={"dit": {"t2v": "released-t2v@production"}}
    )
    with pytest.raises(
        plan_step.PlanError, match=r"jobs\[0\]\.sizes: 64x64 is not a size released-t2v/\d+ .*720x1280"
    ):
        _plan(ctx, campaign)
    assert SMALL["size"] == "64x64"
