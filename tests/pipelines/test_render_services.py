"""The render DAG against real services on loopback: an S3 server (moto) as the store, a real `mlflow server`
as the registry (artifacts proxied to S3), and a Pushgateway scraped by Prometheus."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from pathlib import Path

from components.runtime.registry import Registry
from components.runtime.settings import RuntimeSettings
from components.runtime.step import StepContext
from components.runtime.store import open_store
from pipelines.local import RenderOptions, render
from tests.campaigns import ALL_MODES, write_campaign
from tests.conftest import MlflowServer, Monitoring, S3Server


def test_campaign_through_s3_mlflow_server_and_pushgateway(
    s3_server: S3Server,
    mlflow_server: MlflowServer,
    monitoring: Monitoring,
    demo_media: Path,
    tmp_path: Path,
) -> None:

    from pipelines.bootstrap import bootstrap_tiny

    registry = Registry(mlflow_server.url, tmp_path / "model-cache")
    bootstrap_tiny(registry, work_dir=tmp_path / "tiny")

    bucket = s3_server.make_bucket()
    settings = RuntimeSettings(
        store=f"s3://{bucket}/runs",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region=s3_server.region,
        s3_secure=False,
        pushgateway=monitoring.pushgateway,
    )
    store = open_store(settings=settings)
    ctx = StepContext(settings=settings, store=store, registry=registry, work_dir=tmp_path / "work")
    meadow = {**ALL_MODES[3], "id": "s3-meadow", "variants": 2}
    campaign = write_campaign(tmp_path, demo_media, [ALL_MODES[0], meadow], id="s3-campaign")

    report = render(ctx, RenderOptions(campaign, progress=False))
    assert sorted(u.status for u in report.units) == ["published"] * 3, report.units

    # deliverables and the index are in the bucket; the index's presigned URLs serve the exact mp4
    assert report.index_key == "deliverables/s3-campaign/index.json"
    index = json.loads(store.get_bytes(report.index_key))
    assert index["counts"]["published"] == 3
    for entry in index["units"]:
        info = store.stat(entry["video"])
        with urllib.request.urlopen(entry["url"], timeout=10) as response:
            assert hashlib.sha256(response.read()).hexdigest() == info.sha256 == entry["sha256"]
        prov = json.loads(store.get_bytes(entry["provenance"]))
        assert prov["models"]["dit"]["version"] == 1 and prov["unit"] == entry["unit"]
    assert any(
        k.startswith("runs/") is False and "/dit_sample/" in k for k in store.list("adrender/s3-campaign")
    )

    # step metrics reached Prometheus through the Pushgateway, one group per shard, summed here
    sel = 'campaign="s3-campaign",step="dit_sample"'
    assert _settled(monitoring, f'sum(adrender_units_total{{{sel},status="ok"}})', 3)
    assert _settled(
        monitoring, f"sum(adrender_sampling_step_seconds_count{{{sel}}})", 3 * 3
    )  # 3 units x 3 steps
    assert _settled(
        monitoring, 'sum(adrender_units_total{campaign="s3-campaign",step="publish",status="ok"})', 3
    )


def _settled(monitoring: Monitoring, promql: str, expected: float, timeout: float = 20.0) -> bool:
    """True once the query answers `expected` (Prometheus scrapes the gateway every second)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        result = monitoring.query(promql)
        value = float(result[0]["value"][1]) if result else None
        if value == expected:
            return True
        time.sleep(0.25)
    raise AssertionError(f"{promql} = {value}, expected {expected}\n{monitoring.gateway_metrics()}")
