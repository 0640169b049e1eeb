"""plan and multi-subject jobs: only a DiT version registered for k subjects takes more than one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from components import plan as plan_step
from components.runtime.registry import TAG_MAX_SUBJECTS, ResolvedModel
from components.runtime.step import StepContext
from model_core.tiny_models import write_tiny_model
from tests.campaigns import ALL_MODES, write_campaign

TWO_SUBJECTS = {
    **ALL_MODES[0],
    "subjects": [
        {"word": "woman", "image": "assets/woman.png"},
        {"word": "bottle", "image": "assets/bottle.png"},
    ],
}


def _register(ctx: StepContext, tmp_path: Path, name: str, **kw: object) -> ResolvedModel:
    folder = write_tiny_model("tiny-hunyuancustom-720p", tmp_path / name)
    return ctx.registry.register(name, folder, "tiny-hunyuancustom-720p", aliases=["production"], **kw)  # type: ignore[arg-type]


def _plan(ctx: StepContext, campaign: Path) -> plan_step.PlanManifest:
    return plan_step.run(ctx, plan_step.PlanInputs(str(campaign)))[1]


def test_two_subjects_need_a_version_registered_for_them(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    ctx = make_ctx()
    single = _register(ctx, tmp_path, "single-subject-dit")
    assert single.max_subjects == 1
    campaign = write_campaign(
        tmp_path, demo_media, [TWO_SUBJECTS], models={"dit": {"image": "single-subject-dit@production"}}
    )
    with pytest.raises(
        plan_step.PlanError,
        match=r"jobs\[0\]\.subjects: 2 subjects, but single-subject-dit/\d+ .* registered for 1.*max_subjects >= 2",
    ):
        _plan(ctx, campaign)

    multi = _register(ctx, tmp_path, "two-subject-dit", max_subjects=2)
    assert multi.max_subjects == 2  # register returns what it recorded
    assert ctx.registry.resolve("two-subject-dit@production").max_subjects == 2
    assert ResolvedModel.from_dict(multi.as_dict()) == multi
    write_campaign(
        tmp_path, demo_media, [TWO_SUBJECTS], models={"dit": {"image": "two-subject-dit@production"}}
    )
    manifest = _plan(ctx, campaign)
    assert manifest.units_total == 1


def test_the_tag_is_written_only_for_more_than_one_subject(
    make_ctx: Callable[..., StepContext], tmp_path: Path
) -> None:
    ctx = make_ctx()
    _register(ctx, tmp_path, "plain-dit")
    _register(ctx, tmp_path, "pair-dit", max_subjects=2)
    client = ctx.registry._client
    assert TAG_MAX_SUBJECTS not in client.get_model_version("plain-dit", "1").tags
    assert client.get_model_version("pair-dit", "1").tags[TAG_MAX_SUBJECTS] == "2"
    with pytest.raises(ValueError, match="max_subjects"):
        _register(ctx, tmp_path, "no-subject-dit", max_subjects=0)
