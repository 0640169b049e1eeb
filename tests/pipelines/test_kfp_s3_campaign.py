"""A campaign read from S3, as a Kubeflow run gets it: relative asset paths name objects beside the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components import plan as plan_step
from components.runtime.manifest import ShardManifest, read_manifest
from components.runtime.settings import RuntimeSettings
from components.runtime.spec import CampaignError, parse_campaign
from components.runtime.step import StepContext
from components.runtime.store import LocalStore
from tests.campaigns import ALL_MODES, write_campaign
from tests.conftest import S3Server, TinyRegistry


def test_relative_assets_of_an_s3_campaign_resolve_beside_it() -> None:
    job = {"id": "j", "prompt": "A woman smiles.", "subjects": [{"word": "woman", "image": "./assets/w.png"}]}
    campaign = parse_campaign({"id": "c", "jobs": [job]}, base_uri="s3://ads/campaigns/spring")
    assert campaign.jobs[0].subjects[0].image == "s3://ads/campaigns/spring/assets/w.png"

    outside = {**job, "subjects": [{"word": "woman", "image": "../other/w.png"}]}
    with pytest.raises(CampaignError, match="outside the campaign's S3 folder"):
        parse_campaign({"id": "c", "jobs": [outside]}, base_uri="s3://ads/campaigns/spring")


def test_plan_reads_an_s3_campaign_and_its_media(
    s3_server: S3Server, tiny_registry: TinyRegistry, demo_media: Path, tmp_path: Path
) -> None:
    from minio import Minio

    bucket = s3_server.new_bucket_name()
    client = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        region=s3_server.region,
    )
    client.make_bucket(bucket)
    local = write_campaign(tmp_path / "src", demo_media, ALL_MODES[:1], id="s3-plan")
    client.fput_object(bucket, "campaigns/spring/campaign.yaml", str(local))
    client.fput_object(bucket, "campaigns/spring/assets/woman.png", str(local.parent / "assets/woman.png"))

    settings = RuntimeSettings(
        store=(tmp_path / "store").as_uri(),
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
        s3_secure=False,
    )
    ctx = StepContext(
        settings=settings,
        store=LocalStore(tmp_path / "store"),
        registry=tiny_registry.registry(tmp_path / "cache"),
        work_dir=tmp_path / "work",
    )
    uri = f"s3://{bucket}/campaigns/spring/campaign.yaml"
    _, plan = plan_step.run(ctx, plan_step.PlanInputs(uri))
    assert plan.campaign_uri == uri
    (ref,) = plan.shards
    (unit,) = read_manifest(ctx.store, ref.key, ShardManifest).units
    assert unit.subject_images == [f"s3://{bucket}/campaigns/spring/assets/woman.png"]

    # a missing asset beside the campaign is named by its S3 URI before any model is resolved
    doc = yaml.safe_load(local.read_text())
    doc["jobs"][0]["subjects"][0]["image"] = "assets/nobody.png"
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump(doc))
    client.fput_object(bucket, "campaigns/spring/missing.yaml", str(missing))
    with pytest.raises(plan_step.PlanError, match=f"s3://{bucket}/campaigns/spring/assets/nobody.png"):
        plan_step.run(ctx, plan_step.PlanInputs(f"s3://{bucket}/campaigns/spring/missing.yaml"))
    with pytest.raises(plan_step.PlanError, match="no such object"):
        plan_step.run(ctx, plan_step.PlanInputs(f"s3://{bucket}/campaigns/none.yaml"))
