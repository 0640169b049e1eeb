"""Custom resources checked against the openAPIV3Schema of their published CRDs (vendored in ``crds/``, sources in
``crds/README.md``), the way the API server checks them on ``kubectl apply --validate=strict``.

The CRD's structural schema becomes a JSON schema (``jsonschema``): ``nullable`` allows null,
``x-kubernetes-int-or-string`` takes an integer or a string, and an object schema with ``properties`` rejects
fields it does not list unless it says ``x-kubernetes-preserve-unknown-fields`` (strict field validation; the
API server would otherwise drop them silently, which hides a misspelt field). Besides ``spec``, the object's
``apiVersion`` must be a served version of the CRD and ``metadata.name`` a DNS subdomain. The CEL rules
(``x-kubernetes-validations``) are not evaluated: no CEL interpreter is used here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parent / "crds"
# kind -> vendored CRD file
CRD_FILES = {
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
}
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class CrdInvalid(AssertionError):
    """A custom resource its CRD's schema refuses; the message lists each path and what is wrong there."""


def _strict(node: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema node as a JSON schema with the API server's meaning of the Kubernetes extensions."""
    out: dict[str, Any] = {
        k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"
    }
    if "properties" in node:
        out["properties"] = {name: _strict(sub) for name, sub in node["properties"].items()}
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(node["additionalProperties"])
    if isinstance(node.get("items"), dict):
        out["items"] = _strict(node["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            out[key] = [_strict(sub) for sub in node[key]]
    if "not" in node:
        out["not"] = _strict(node["not"])
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "pattern" in out and "(?i)" in out["pattern"]:
        # Go's RE2 takes a flag group anywhere; Python's re only at the start
        out["pattern"] = "(?i)" + out["pattern"].replace("(?i)", "")
    return out


@functools.cache
def _validators(kind: str) -> dict[str, jsonschema.protocols.Validator]:
    """apiVersion -> validator, for each served version of the CRD of ``kind``."""
    crd = yaml.safe_load((CRDS / CRD_FILES[kind]).read_text())
    group = crd["spec"]["group"]
    assert crd["spec"]["names"]["kind"] == kind
    out = {}
    for version in crd["spec"]["versions"]:
        if not version.get("served", False):
            continue
        schema = _strict(version["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": _NAME, "maxLength": 253}},
        }
        schema["properties"]["kind"] = {"const": kind}
        schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata"})
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
        cls.check_schema(schema)
        out[f"{group}/{version['name']}"] = cls(schema)
    return out


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every place where ``obj`` breaks its CRD's schema, as ``<path>: <message>``; empty when it is valid."""
    kind = obj.get("kind")
    if kind not in CRD_FILES:
        raise KeyError(f"no vendored CRD for kind {kind!r}; known: {sorted(CRD_FILES)}")
    validators = _validators(kind)
    validator = validators.get(obj.get("apiVersion", ""))
    if validator is None:
        return [
            f"apiVersion: {obj.get('apiVersion')!r} is not served by the {kind} CRD ({sorted(validators)})"
        ]
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def validate_custom(objects: Iterable[dict[str, Any]]) -> int:
    """Check every object of a vendored CRD's kind; raises :class:`CrdInvalid`; returns how many were checked."""
    checked = 0
    for obj in objects:
        if obj.get("kind") not in CRD_FILES:
            continue
        errors = crd_errors(obj)
        if errors:
            name = obj.get("metadata", {}).get("name")
            raise CrdInvalid(f"{obj['kind']}/{name}:\n  " + "\n  ".join(errors))
        checked += 1
    return checked
