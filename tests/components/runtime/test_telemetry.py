"""Step telemetry against real prometheus-pushgateway and prometheus processes on loopback."""

from __future__ import annotations

import logging
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import TYPE_CHECKING

import pytest

from components.runtime import telemetry
from components.runtime.settings import RuntimeSettings
from components.runtime.telemetry import StepTelemetry

if TYPE_CHECKING:
    from conftest import Monitoring  # tests/components/runtime/conftest.py


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _campaign() -> str:
    return f"camp-{uuid.uuid4().hex[:8]}"


def _value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_push_is_scraped_and_queryable(monitoring: Monitoring) -> None:
    campaign = _campaign()
    before = time.time()
    with StepTelemetry(campaign, "dit_sample", pushgateway=monitoring.pushgateway) as tm:
        with tm.time_checkpoint_load():
            time.sleep(0.05)
        for seconds in (0.2, 0.3, 0.4, 0.5):
            tm.observe_sampling_step(seconds)
        tm.unit_done("ok", 3)
        tm.unit_done("failed")
        tm.bytes_moved("upload", 1234)
        tm.bytes_moved("download", 10)
        tm.qc_score("clip_similarity", 0.8)
        tm.qc_score("clip_similarity", 0.6)

    sel = f'campaign="{campaign}",step="dit_sample"'
    ok = monitoring.wait_for(f'adrender_units_total{{{sel},status="ok"}}')
    assert _value(ok) == 3
    assert ok[0]["metric"]["job"] == "adrender"  # honor_labels kept the grouping key
    assert _value(monitoring.query(f'adrender_units_total{{{sel},status="failed"}}')) == 1
    assert _value(monitoring.query(f'adrender_bytes_moved_total{{{sel},direction="upload"}}')) == 1234
    assert _value(monitoring.query(f"adrender_sampling_step_seconds_count{{{sel}}}")) == 4
    assert _value(monitoring.query(f"adrender_sampling_step_seconds_sum{{{sel}}}")) == pytest.approx(1.4)
    assert _value(monitoring.query(f'adrender_sampling_step_seconds_bucket{{{sel},le="0.25"}}')) == 1
    assert _value(monitoring.query(f"adrender_checkpoint_load_seconds_sum{{{sel}}}")) >= 0.05
    mean = monitoring.query(
        f'adrender_qc_score_sum{{{sel},metric="clip_similarity"}} / adrender_qc_score_count{{{sel},metric="clip_similarity"}}'
    )
    assert _value(mean) == pytest.approx(0.7)
    assert _value(monitoring.query(f"adrender_step_duration_seconds_count{{{sel}}}")) == 1
    assert (
        before
        <= _value(monitoring.query(f"adrender_step_last_success_timestamp_seconds{{{sel}}}"))
        <= time.time()
    )


def test_failed_step_is_pushed_and_keeps_the_last_success(monitoring: Monitoring) -> None:
    campaign = _campaign()
    with StepTelemetry(campaign, "qc_metrics", pushgateway=monitoring.pushgateway) as tm:
        tm.unit_done("ok")
    sel = f'campaign="{campaign}",step="qc_metrics"'
    first = _value(monitoring.wait_for(f"adrender_step_last_success_timestamp_seconds{{{sel}}}"))

    with (
        pytest.raises(RuntimeError, match="decoder"),
        StepTelemetry(campaign, "qc_metrics", pushgateway=monitoring.pushgateway) as tm,
    ):
        tm.unit_done("failed", 2)
        raise RuntimeError("decoder crashed")
    failed = monitoring.wait_for(f'adrender_units_total{{{sel},status="failed"}}')
    assert _value(failed) == 2
    text = monitoring.gateway_metrics()
    stamp = [
        line
        for line in text.splitlines()
        if line.startswith("adrender_step_last_success_timestamp_seconds") and campaign in line
    ]
    assert len(stamp) == 1 and float(stamp[0].split()[-1]) == pytest.approx(first)


def test_no_gateway_logs_once_and_carries_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "_no_gateway_logged", False)
    settings = RuntimeSettings.from_env({})
    assert settings.pushgateway is None
    with caplog.at_level(logging.INFO, logger="components.runtime.telemetry"):
        for step in ("plan", "publish"):
            with StepTelemetry.from_settings("c1", step, settings) as tm:
                tm.unit_done("ok")
            assert tm.push() is False
    messages = [r.getMessage() for r in caplog.records if "Pushgateway" in r.getMessage()]
    assert len(messages) == 1 and "not pushed" in messages[0]


def test_gateway_down_warns_and_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="components.runtime.telemetry"),
        StepTelemetry("c1", "tiled_decode", pushgateway=dead, push_timeout=2) as tm,
    ):
        tm.unit_done("ok")
    assert time.monotonic() - started < 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and dead in warnings[0].getMessage()
    assert tm.push() is False


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_metrics_served_while_the_step_runs() -> None:
    settings = RuntimeSettings(store="file:///unused", metrics_port=0)
    with StepTelemetry.from_settings("c1", "dit_sample", settings) as tm:
        tm.observe_sampling_step(0.5)
        tm.unit_done("ok")
        assert tm._server is not None
        url = tm._server.url
        body = _fetch(url)
        for name in (
            "adrender_sampling_step_seconds_bucket",
            "adrender_units_total",
            "adrender_step_duration_seconds",
            "adrender_bytes_moved_total",
            "adrender_checkpoint_load_seconds",
            "adrender_qc_score",
        ):
            assert name in body
        assert 'adrender_units_total{campaign="c1",status="ok",step="dit_sample"} 1.0' in body
    with pytest.raises(urllib.error.URLError):
        _fetch(url)  # stopped with the step

    manual = StepTelemetry("c1", "plan").serve(port=0, host="127.0.0.1")
    try:
        assert "adrender_units_total" in _fetch(manual.url)
    finally:
        manual.stop()


def test_labels_stay_bounded() -> None:
    render_id = "render-7f3a9c0d"
    tm = StepTelemetry("spring", "v2a_foley")
    with tm:
        tm.unit_done("ok")
        tm.unit_done("skipped")
        tm.bytes_moved("download", 5)
        tm.qc_score("loudness_lufs", -23.0)
        tm.observe_checkpoint_load(1.0)
        tm.observe_sampling_step(0.1)
    label_names: set[str] = set()
    for family in tm.registry.collect():
        assert family.name.startswith("adrender_")
        for sample in family.samples:
            label_names.update(sample.labels)
            assert render_id not in sample.labels.values()
            assert (sample.labels["campaign"], sample.labels["step"]) == ("spring", "v2a_foley")
    assert label_names <= {"campaign", "step", "status", "direction", "metric", "le", "quantile"}

    with pytest.raises(ValueError, match="status"):
        tm.unit_done(render_id)
    with pytest.raises(ValueError, match="direction"):
        tm.bytes_moved(render_id, 1)
    with pytest.raises(ValueError, match="QC metric name"):
        tm.qc_score(render_id, 1.0)
    for i in range(telemetry.MAX_QC_METRICS - 1):
        tm.qc_score(f"m{i}", 0.0)
    with pytest.raises(ValueError, match="bounded"):
        tm.qc_score("one_too_many", 0.0)
    with pytest.raises(ValueError, match="campaign"):
        StepTelemetry("bad campaign/..", "plan")
