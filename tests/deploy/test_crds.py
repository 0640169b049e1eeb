"""The vendored CRDs (tests/deploy/crds) are the published files their README names, and the check built on them
refuses what the API server would refuse: unknown fields, wrong types, bad patterns, missing required fields."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.conftest import FULL_VALUES, REQUIRED_VALUES, by_kind, merged, render
from tests.deploy.crd_schema import CRD_FILES, CRDS, CrdInvalid, crd_errors, validate_custom


def test_vendored_files_are_the_ones_the_readme_names() -> None:
    readme = (CRDS / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([^`]+\.yaml)` \|.*\| `([0-9a-f]{64})` \|$", readme, flags=re.MULTILINE))
    assert set(rows) == set(CRD_FILES.values()) == {p.name for p in CRDS.glob("*.yaml")}
    for name, digest in rows.items():
        assert hashlib.sha256((CRDS / name).read_bytes()).hexdigest() == digest, name


@pytest.fixture(scope="module")
def chart_objects() -> dict[str, dict[str, Any]]:
    objects = render(merged(REQUIRED_VALUES, FULL_VALUES))
    return {kind: by_kind(objects, kind)[0] for kind in ("PrometheusRule", "ServiceMonitor", "PodMonitor")}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return change


_DELETE = object()

BROKEN = [
    pytest.param(
        "PrometheusRule", _set("spec/groups/0/rules/0/for", "5 minutes"), "does not match", id="bad-duration"
    ),
    pytest.param(
        "PrometheusRule",
        _set("spec/groups/0/rules/0/expression", "up"),
        "'expression' was unexpected",
        id="misspelt-field",
    ),
    pytest.param(
        "PrometheusRule",
        _set("spec/groups/0/name", _DELETE),
        "'name' is a required property",
        id="group-without-name",
    ),
    pytest.param(
        "PrometheusRule",
        _set("apiVersion", "monitoring.coreos.com/v1beta1"),
        "is not served",
        id="unserved-version",
    ),
    pytest.param(
        "ServiceMonitor",
        _set("spec/endpoints/0/honorLabels", "yes"),
        "'yes' is not of type 'boolean'",
        id="wrong-type",
    ),
    pytest.param(
        "ServiceMonitor",
        _set("spec/selector", _DELETE),
        "'selector' is a required property",
        id="no-selector",
    ),
    pytest.param(
        "PodMonitor",
        _set("spec/podMetricsEndpoints/0/relabelings/0/action", "rename"),
        "is not one of",
        id="bad-enum",
    ),
    pytest.param("PodMonitor", _set("metadata/name", "Sampler_Monitor"), "does not match", id="bad-name"),
]


@pytest.mark.parametrize(("kind", "change", "message"), BROKEN)
def test_broken_custom_resources_are_refused(
    chart_objects: dict[str, dict[str, Any]],
    kind: str,
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    good = chart_objects[kind]
    assert crd_errors(good) == []
    broken = copy.deepcopy(good)
    change(broken)
    errors = crd_errors(broken)
    assert any(message in e for e in errors), errors
    with pytest.raises(CrdInvalid, match=kind):
        validate_custom([broken])


def test_unknown_kinds_are_not_guessed() -> None:
    with pytest.raises(KeyError, match="no vendored CRD for kind 'Deployment'"):
        crd_errors({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}})
    assert validate_custom([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]) == 0
