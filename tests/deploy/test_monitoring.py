"""Alerts and the dashboard: `promtool check rules` and `promtool test rules` on the one rule source
(manifests/monitoring/prometheusrule.yaml), metric names that the code really emits, and every dashboard panel
queried on a real Prometheus after the steps' telemetry was pushed to a real Pushgateway."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Monitoring
from tests.deploy.conftest import MANIFESTS, REQUIRED_VALUES, ROOT, by_kind, render

RULES = MANIFESTS / "monitoring" / "prometheusrule.yaml"
DASHBOARD = MANIFESTS / "monitoring" / "dashboard.json"
# labels a query may group by: all bounded (telemetry.py: never a render id)
BOUNDED_LABELS = {
    "campaign",
    "step",
    "status",
    "direction",
    "metric",
    "verdict",
    "check",
    "job",
    "le",
    "shard",
}


def _spec() -> dict[str, Any]:
    return dict(yaml.safe_load(RULES.read_text())["spec"])


def _rules() -> list[dict[str, Any]]:
    return [r for g in _spec()["groups"] for r in g["rules"]]


def _panel_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt: prometheus)")
    return found


# metric names ------------------------------------------------------------------------------------------------


def emitted_metric_names() -> set[str]:
    """Every series name the code can push: the names registered in components/ and pipelines/, with the
    suffixes prometheus_client adds to counters, histograms and summaries, and the Pushgateway's own."""
    names: set[str] = {"push_time_seconds", "push_failure_time_seconds"}
    for folder in ("components", "pipelines"):
        for path in (ROOT / folder).rglob("*.py"):
            for base in re.findall(r'"(adrender_[a-z0-9_]+)"', path.read_text()):
                names |= {base + s for s in ("", "_total", "_bucket", "_sum", "_count", "_created")}
    return names


def _selectors(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (recording-rule names excluded)."""
    words = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[|\)|\s|>|$)", expr))
    return {w for w in words if w.startswith(("adrender_", "push_")) and ":" not in w}


def test_every_queried_metric_is_emitted() -> None:
    emitted = emitted_metric_names()
    queried = [(r.get("alert") or r["record"], r["expr"]) for r in _rules()] + _panel_exprs()
    seen = set()
    for where, expr in queried:
        names = _selectors(expr)
        assert not names - emitted, f"{where}: {sorted(names - emitted)} is not emitted by the code"
        seen |= names
    # the alerts and the dashboard cover the run outcome, units, QC, sampling and the push time
    for name in ("adrender_campaign_run_succeeded", "adrender_units_total", "adrender_qc_units_total",
                 "adrender_sampling_step_seconds_sum", "push_time_seconds"):  # fmt: skip
        assert name in seen


def test_queries_group_by_bounded_labels() -> None:
    exprs = [r["expr"] for r in _rules()] + [e for _, e in _panel_exprs()]
    for expr in exprs:
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            labels = {x.strip() for x in group.split(",")}
            assert labels <= BOUNDED_LABELS, expr


# promtool ----------------------------------------------------------------------------------------------------


def _annotations(rule: dict[str, Any], campaign: str, value: str = "") -> dict[str, str]:
    out = {}
    for key, text in rule["annotations"].items():
        text = text.replace("{{ $labels.campaign }}", campaign)
        out[key] = text.replace("{{ $value | humanizePercentage }}", value)
    return out


# (alert, input series, eval time, [(labels of a firing alert, its $value as humanizePercentage)])
ALERT_CASES: list[tuple[str, dict[str, str], str, list[tuple[dict[str, str], str]]]] = [
    (
        "AdrenderCampaignRunFailed",
        {
            'adrender_campaign_run_succeeded{job="adrender-campaign", campaign="spring"}': "1 1 0 0",
            'adrender_campaign_run_succeeded{job="adrender-campaign", campaign="summer"}': "1 1 1 1",
        },
        "3m",
        [({"job": "adrender-campaign", "campaign": "spring"}, "")],
    ),
    (
        "AdrenderCampaignRunFailed",
        {'adrender_campaign_run_succeeded{job="adrender-campaign", campaign="spring"}': "1 1 0 0"},
        "1m",
        [],
    ),
    (
        "AdrenderCampaignRunOverdue",
        {
            # hourly samples: spring's last run ended at 0 h, summer's every hour
            'adrender_campaign_run_finished_timestamp_seconds{job="adrender-campaign", campaign="spring"}': "0x30",
            'adrender_campaign_run_finished_timestamp_seconds{job="adrender-campaign", campaign="summer"}': "0+3600x30",
        },
        "27h",
        [({"job": "adrender-campaign", "campaign": "spring"}, "")],
    ),
    (
        "AdrenderCampaignRunOverdue",
        {
            'adrender_campaign_run_finished_timestamp_seconds{job="adrender-campaign", campaign="spring"}': "0x30"
        },
        "25h",
        [],
    ),
    (
        "AdrenderNoMetricsPushed",
        {
            'push_time_seconds{job="adrender", campaign="spring", step="plan"}': "0x30",
            'push_time_seconds{job="adrender", campaign="spring", step="publish"}': "0x30",
            'push_time_seconds{job="adrender", campaign="summer", step="plan"}': "0+3600x30",
        },
        "27h",
        [({"campaign": "spring"}, "")],
    ),
    (
        "AdrenderNoMetricsPushed",
        {'push_time_seconds{job="adrender", campaign="spring", step="plan"}': "0x30"},
        "20h",
        [],
    ),
    (
        "AdrenderUnitFailureRatioHigh",
        {
            'adrender_units_total{campaign="spring", step="publish", status="ok"}': "18x5",
            'adrender_units_total{campaign="spring", step="publish", status="failed"}': "2x5",
            'adrender_units_total{campaign="spring", step="dit_sample", status="failed"}': "9x5",
            'adrender_units_total{campaign="summer", step="publish", status="ok"}': "19x5",
            'adrender_units_total{campaign="summer", step="publish", status="failed"}': "1x5",  # 5%: not above
        },
        "2m",
        [({"campaign": "spring"}, "10%")],
    ),
    (
        "AdrenderQCFailureRatioHigh",
        {
            'adrender_qc_units_total{campaign="spring", step="qc_metrics", verdict="pass"}': "7x5",
            'adrender_qc_units_total{campaign="spring", step="qc_metrics", verdict="fail"}': "3x5",
            'adrender_qc_units_total{campaign="summer", step="qc_metrics", verdict="pass"}': "9x5",
            'adrender_qc_units_total{campaign="summer", step="qc_metrics", verdict="fail"}': "1x5",
        },
        "2m",
        [({"campaign": "spring"}, "30%")],
    ),
    (
        "AdrenderSamplingRegressed",
        {
            # every 5 min: one second per step for a week, then two (spring); summer stays at one
            'adrender_sampling_step_seconds_sum{campaign="spring", step="dit_sample"}': "50x2016 100x36",
            'adrender_sampling_step_seconds_count{campaign="spring", step="dit_sample"}': "50x2052",
            'adrender_sampling_step_seconds_sum{campaign="summer", step="dit_sample"}': "50x2052",
            'adrender_sampling_step_seconds_count{campaign="summer", step="dit_sample"}': "50x2052",
        },
        "169h",
        [({"campaign": "spring"}, "")],
    ),
    (
        "AdrenderSamplingRegressed",
        {
            'adrender_sampling_step_seconds_sum{campaign="spring", step="dit_sample"}': "50x2016 100x36",
            'adrender_sampling_step_seconds_count{campaign="spring", step="dit_sample"}': "50x2052",
        },
        "168h20m",  # slower for 20 min: not yet the 30 min of the rule's "for"
        [],
    ),
]


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "adrender.rules.yaml"
    path.write_text(yaml.safe_dump(_spec(), sort_keys=False))
    return path


def test_promtool_check_rules(rule_file: Path) -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(rule_file)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    assert {c[0] for c in ALERT_CASES if c[3]} == alerts
    assert all(
        r.get("labels", {}).get("severity") in ("warning", "critical") for r in _rules() if "alert" in r
    )


def test_promtool_test_rules(rule_file: Path) -> None:
    rules = {r["alert"]: r for r in _rules() if "alert" in r}
    # one unit-test file per evaluation interval: minutes for most, 5 min for the week-long sampling history
    files: dict[str, list[dict[str, Any]]] = {}
    for alert, series, at, firing in ALERT_CASES:
        rule = rules[alert]
        slow = "Sampling" in alert
        interval = "5m" if slow else "1h" if at.endswith("h") else "1m"
        exp = [
            {
                "exp_labels": {**labels, **rule["labels"], "alertname": alert},
                "exp_annotations": _annotations(rule, labels["campaign"], value),
            }
            for labels, value in firing
        ]
        files.setdefault("5m" if slow else "1m", []).append(
            {
                "interval": interval,
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": exp}],
            }
        )
    names = []
    for evaluation, tests in files.items():
        unit = rule_file.parent / f"adrender.rules.test-{evaluation}.yaml"
        unit.write_text(
            yaml.safe_dump(
                {"rule_files": [rule_file.name], "evaluation_interval": evaluation, "tests": tests}
            )
        )
        names.append(unit.name)
    result = subprocess.run(
        [_promtool(), "test", "rules", *names],
        check=False,
        capture_output=True,
        text=True,
        cwd=rule_file.parent,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_embeds_the_rule_source() -> None:
    (rule,) = by_kind(render(REQUIRED_VALUES), "PrometheusRule")
    assert rule["spec"] == _spec()


# the dashboard -----------------------------------------------------------------------------------------------


def test_dashboard_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "adrender-campaigns"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"  # no hard-coded data source
    (cm,) = [c for c in by_kind(render(REQUIRED_VALUES), "ConfigMap") if "adrender.json" in c.get("data", {})]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["adrender.json"]) == dash


def _push_a_campaign(monitoring: Monitoring, monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics one campaign run pushes: steps with units, checkpoint loads, sampling, QC, and the outcome."""
    from components.qc_metrics import QCTelemetry
    from components.runtime.telemetry import StepTelemetry
    from pipelines.kfp_tasks import report_outcome

    gateway = monitoring.pushgateway
    for step, shard in (
        ("plan", None),
        ("dit_sample", 0),
        ("tiled_decode", 0),
        ("qc_metrics", 0),
        ("publish", 0),
    ):
        with StepTelemetry("dashcheck", step, pushgateway=gateway, shard=shard) as tm:
            tm.bytes_moved("download", 1000)
            tm.bytes_moved("upload", 2000)
            if step == "dit_sample":
                tm.observe_checkpoint_load(3.0)
                for _ in range(3):
                    tm.observe_sampling_step(0.5)
            if step == "qc_metrics":
                qc = QCTelemetry(tm)
                qc.unit({"verdict": "pass", "scores": {"clip_text": 0.3}, "failed": []})
                qc.unit({"verdict": "fail", "scores": {"clip_text": 0.1}, "failed": ["model.clip_text"]})
            if step != "plan":
                tm.unit_done("ok", 3)
                tm.unit_done("failed", 1)
    monkeypatch.setenv("ADRENDER_PUSHGATEWAY", gateway)
    report_outcome(state="SUCCEEDED", error="", campaign_uri="s3://b/campaigns/dashcheck.yaml")


def test_every_panel_returns_data(monitoring: Monitoring, monkeypatch: pytest.MonkeyPatch) -> None:
    _push_a_campaign(monitoring, monkeypatch)
    monitoring.wait_for('adrender_campaign_run_succeeded{campaign="dashcheck"}')
    monitoring.wait_for('adrender_qc_units_total{campaign="dashcheck"}')
    for title, expr in _panel_exprs():
        query = expr.replace("$campaign", "dashcheck")
        assert monitoring.wait_for(query, timeout=10), f"panel {title!r} returned no data: {query}"
    for rule in _rules():
        if "record" in rule:  # the recording rules (what the ratio alerts read) evaluate on real data
            assert monitoring.wait_for(rule["expr"], timeout=10), rule["record"]
