"""Register the compiled render pipeline and the chart's recurring runs with the KFP v2beta1 REST API.

Run by the chart's post-install / post-upgrade / post-rollback hook Job after ``adrender compile``:

    python register_pipeline.py --config config.json --pipeline pipeline.yaml

Idempotent: the pipeline is created once; a version named after the chart's appVersion is uploaded only if the
pipeline has none of that name; a recurring run is recreated only when what the values ask for changed (its
description carries a digest of it) and deleted when the values no longer list it. KFP cannot edit a recurring
run, so a change is a delete and a create. Standard library only, plus ``pipelines.kfp_commands.to_kfp_cron`` of
the project image when it is importable.

config.json: ``host``, ``namespace`` ("" = single-user KFP), ``pipeline``, ``version``, ``experiment``,
``release``, ``serviceAccount``, ``parameters`` (pipeline parameters every run gets) and ``recurringRuns``
(``name``, ``campaignUri``, ``cron``, ``maxConcurrency``, ``enabled``). With ``KF_PIPELINES_SA_TOKEN_PATH``
set, its token is sent as a bearer token.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

API = "/apis/v2beta1"
MANAGED = "managed by the adrender chart, release "


class KfpError(Exception):
    """The KFP API refused a request or could not be reached; the message names the request."""


def to_kfp_cron(expr: str) -> str:
    """A 5-field crontab as KFP's 6-field cron (seconds first), with the project's own checks when available."""
    try:
        from pipelines.kfp_commands import to_kfp_cron as project_cron
    except ImportError:
        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(f"schedule {expr!r} has {len(fields)} fields; write a 5-field crontab") from None
        return " ".join(["0", *fields])
    return project_cron(expr)


class Kfp:
    def __init__(self, host: str, namespace: str, token: str | None, timeout: float = 30.0) -> None:
        self.host = host.rstrip("/")
        self.namespace = namespace
        self.token = token
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        data: bytes | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        url = f"{self.host}{API}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if body is not None:
            data = json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise KfpError(f"{method} {url}: HTTP {exc.code}: {detail}") from exc
        except OSError as exc:
            raise KfpError(f"{method} {url}: {exc}; is kfp.host right and the KFP API reachable?") from exc
        return json.loads(raw) if raw.strip() else {}

    def list_all(self, path: str, field: str, query: dict[str, str] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            q = {**(query or {}), "page_size": "100"}
            if token:
                q["page_token"] = token
            page = self.request("GET", path, query=q)
            items.extend(page.get(field) or [])
            token = page.get("next_page_token") or ""
            if not token:
                return items

    def _ns(self) -> dict[str, str]:
        return {"namespace": self.namespace} if self.namespace else {}

    @staticmethod
    def _by_name(name: str) -> dict[str, str]:
        predicate = {"key": "display_name", "operation": "EQUALS", "string_value": name}
        return {"filter": json.dumps({"predicates": [predicate]})}

    def find(
        self, path: str, field: str, name: str, query: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        found = [x for x in self.list_all(path, field, {**(query or {}), **self._by_name(name)})]
        return next((x for x in found if x.get("display_name") == name), None)

    def upload_version(self, pipeline_id: str, name: str, description: str, spec: bytes) -> dict[str, Any]:
        boundary = uuid.uuid4().hex
        data = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="uploadfile"; filename="pipeline.yaml"\r\n'
                "Content-Type: application/x-yaml\r\n\r\n"
            ).encode()
            + spec
            + f"\r\n--{boundary}--\r\n".encode()
        )
        query = {"name": name, "display_name": name, "pipelineid": pipeline_id, "description": description}
        return self.request(
            "POST",
            "/pipelines/upload_version",
            query=query,
            data=data,
            content_type=f"multipart/form-data; boundary={boundary}",
        )


def ensure_pipeline_version(kfp: Kfp, name: str, version: str, spec: bytes) -> tuple[str, str, bool]:
    """(pipeline id, version id, whether it was uploaded now)."""
    pipeline = kfp.find("/pipelines", "pipelines", name, kfp._ns())
    if pipeline is None:
        body: dict[str, Any] = {
            "display_name": name,
            "name": name,
            "description": "adrender: render a campaign",
        }
        if kfp.namespace:
            body["namespace"] = kfp.namespace
        pipeline = kfp.request("POST", "/pipelines", body=body)
        print(f"created pipeline {name} ({pipeline['pipeline_id']})")
    pid = pipeline["pipeline_id"]
    existing = kfp.find(f"/pipelines/{pid}/versions", "pipeline_versions", version)
    if existing is not None:
        print(f"pipeline {name} already has version {version}; nothing to upload")
        return pid, existing["pipeline_version_id"], False
    created = kfp.upload_version(pid, version, f"adrender {version}", spec)
    print(f"uploaded pipeline {name} version {version} ({created['pipeline_version_id']})")
    return pid, created["pipeline_version_id"], True


def recurring_run_body(
    cfg: dict[str, Any], run: dict[str, Any], experiment_id: str, pipeline_id: str, version_id: str
) -> dict[str, Any]:
    params = {**cfg.get("parameters", {}), "campaign_uri": run["campaignUri"]}
    wanted = {
        "version": cfg["version"],
        "cron": run["cron"],
        "maxConcurrency": run.get("maxConcurrency", 1),
        "enabled": run.get("enabled", True),
        "parameters": params,
        "serviceAccount": cfg.get("serviceAccount", ""),
    }
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    body: dict[str, Any] = {
        "display_name": f"{cfg['release']}-{run['name']}",
        "description": f"{MANAGED}{cfg['release']}; spec {digest}",
        "experiment_id": experiment_id,
        "pipeline_version_reference": {"pipeline_id": pipeline_id, "pipeline_version_id": version_id},
        "runtime_config": {"parameters": params},
        "trigger": {"cron_schedule": {"cron": to_kfp_cron(run["cron"])}},
        "max_concurrency": str(wanted["maxConcurrency"]),
        "mode": "ENABLE" if wanted["enabled"] else "DISABLE",
        "no_catchup": True,
    }
    if cfg.get("serviceAccount"):
        body["service_account"] = cfg["serviceAccount"]
    return body


def sync_recurring_runs(kfp: Kfp, cfg: dict[str, Any], pipeline_id: str, version_id: str) -> None:
    runs = cfg.get("recurringRuns", [])
    experiment = kfp.find("/experiments", "experiments", cfg["experiment"], kfp._ns())
    if experiment is None:
        if not runs:
            return
        body = {"display_name": cfg["experiment"], **kfp._ns()}
        experiment = kfp.request("POST", "/experiments", body=body)
        print(f"created experiment {cfg['experiment']}")
    eid = experiment["experiment_id"]
    existing = kfp.list_all("/recurringruns", "recurringRuns", {"experiment_id": eid, **kfp._ns()})
    mine = {
        r["display_name"]: r
        for r in existing
        if (r.get("description") or "").startswith(f"{MANAGED}{cfg['release']};")
    }
    for run in runs:
        body = recurring_run_body(cfg, run, eid, pipeline_id, version_id)
        name = body["display_name"]
        current = mine.pop(name, None)
        if current is not None and current.get("description") == body["description"]:
            print(f"recurring run {name} is up to date")
            continue
        if current is not None:
            kfp.request("DELETE", f"/recurringruns/{current['recurring_run_id']}")
        created = kfp.request("POST", "/recurringruns", body=body)
        verb = "replaced" if current is not None else "created"
        print(f"{verb} recurring run {name} ({created['recurring_run_id']}) on {run['cron']!r}")
    for name, stale in sorted(mine.items()):
        kfp.request("DELETE", f"/recurringruns/{stale['recurring_run_id']}")
        print(f"deleted recurring run {name}: no longer in the values")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--pipeline", type=Path, required=True, help="the compiled pipeline YAML")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config.read_text())
    token_path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    token = Path(token_path).read_text().strip() if token_path and Path(token_path).exists() else None
    kfp = Kfp(cfg["host"], cfg.get("namespace", ""), token)
    try:
        pid, vid, _ = ensure_pipeline_version(
            kfp, cfg["pipeline"], cfg["version"], args.pipeline.read_bytes()
        )
        sync_recurring_runs(kfp, cfg, pid, vid)
    except (KfpError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
