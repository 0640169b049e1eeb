"""A loopback HTTP server speaking the part of the KFP v2beta1 REST API that adrender uses, for the tests of
``adrender submit / schedule / runs`` and of the chart's register hook.

No real KFP API server can run on these machines (it needs a Kubernetes cluster, Argo and MySQL). This one keeps
pipelines, versions, experiments, runs and recurring runs in memory, records every request, pages lists two items
at a time (so callers' paging is exercised), honours ``display_name`` filters, and reads every JSON body with the
API's own generated models (``kfp_server_api``): a field those models do not know is refused with HTTP 400, as
the API's gateway refuses it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp_server_api

API = "/apis/v2beta1"


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # the full path, e.g. /apis/v2beta1/runs
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    raw: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.raw) if self.raw else {}


class UnknownField(ValueError):
    pass


def read_model(data: dict[str, Any], name: str) -> Any:
    """``data`` read with the generated model ``name``; :class:`UnknownField` on a field it does not have."""
    klass = getattr(kfp_server_api.models, name)
    unknown = set(data) - set(klass.attribute_map.values())
    if unknown:
        raise UnknownField(f"{name} has no field(s) {sorted(unknown)}")
    return kfp_server_api.ApiClient()._ApiClient__deserialize(data, name)


@dataclass
class FakeKfp:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)  # version id -> the uploaded file
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    recurring: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: int | None = None  # answer every GET with this HTTP status

    def bodies(self, method: str, path: str) -> list[dict[str, Any]]:
        """The JSON bodies of the requests to ``path`` (relative to /apis/v2beta1)."""
        return [r.json() for r in self.requests if r.method == method and r.path == API + path]

    def writes(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests if r.method in ("POST", "DELETE")]

    # routes: (status, payload)

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if self.fail_with:
            return self.fail_with, {"error": "internal error", "code": 13}
        if path == "/healthz":
            return 200, {"multi_user": False, "pipeline_store": "database"}
        if path == "/pipelines":
            return 200, _page("pipelines", list(self.pipelines.values()), query)
        if path.startswith("/pipelines/") and path.endswith("/versions"):
            pid = path.split("/")[2]
            versions = [v for v in self.versions.values() if v["pipeline_id"] == pid]
            return 200, _page("pipeline_versions", versions, query)
        if path == "/experiments":
            return 200, _page("experiments", list(self.experiments.values()), query)
        if path == "/runs":
            eid = query.get("experiment_id", [None])[0]
            runs = [r for r in self.runs if r["experiment_id"] == eid][::-1]  # newest first
            return 200, {"runs": runs, "total_size": len(runs)}
        if path == "/recurringruns":
            eid = query["experiment_id"][0]
            recurring = [r for r in self.recurring.values() if r["experiment_id"] == eid]
            return 200, _page("recurringRuns", recurring, query)
        return 404, {"error": f"no route {path}"}

    def post(self, path: str, query: dict[str, list[str]], request: Request) -> tuple[int, dict[str, Any]]:
        if path == "/pipelines/upload_version":
            return self._upload_version(query, request)
        models = {
            "/pipelines": "V2beta1Pipeline",
            "/experiments": "V2beta1Experiment",
            "/runs": "V2beta1Run",
            "/recurringruns": "V2beta1RecurringRun",
        }
        if path not in models:
            return 404, {"error": f"no route {path}"}
        body = request.json()
        try:
            read_model(body, models[path])
        except UnknownField as exc:
            return 400, {"error": str(exc), "code": 3}
        new_id = str(uuid.uuid4())
        if path == "/pipelines":
            pipeline = {**body, "pipeline_id": new_id}
            self.pipelines[new_id] = pipeline
            return 200, pipeline
        if path == "/experiments":
            experiment = {**body, "experiment_id": new_id, "created_at": "2026-05-04T06:00:00Z"}
            self.experiments[new_id] = experiment
            return 200, experiment
        if path == "/runs":
            run = {**body, "run_id": new_id, "state": "PENDING", "created_at": "2026-05-04T06:00:01Z"}
            self.runs.append(run)
            return 200, run
        job = {**body, "recurring_run_id": new_id, "status": "ENABLED"}
        self.recurring[new_id] = job
        return 200, job

    def _upload_version(self, query: dict[str, list[str]], request: Request) -> tuple[int, dict[str, Any]]:
        pid = query["pipelineid"][0]
        if pid not in self.pipelines:
            return 404, {"error": f"no pipeline {pid}"}
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data; boundary="):
            return 400, {"error": f"expected a multipart upload, got {ctype!r}"}
        boundary = ctype.split("boundary=")[1].encode()
        (part,) = [p for p in request.raw.split(b"--" + boundary) if b'name="uploadfile"' in p]
        version = {
            "pipeline_version_id": str(uuid.uuid4()),
            "pipeline_id": pid,
            "display_name": query["display_name"][0],
            "name": query["name"][0],
        }
        self.versions[version["pipeline_version_id"]] = version
        self.uploads[version["pipeline_version_id"]] = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        return 200, version

    def delete(self, path: str) -> tuple[int, dict[str, Any]]:
        rid = path.removeprefix("/recurringruns/")
        if self.recurring.pop(rid, None) is None:
            return 404, {"error": f"no recurring run {rid}"}
        return 200, {}


def _page(name: str, items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    if "filter" in query:
        (pred,) = json.loads(query["filter"][0])["predicates"]
        wanted = pred.get("string_value", pred.get("stringValue"))
        items = [i for i in items if i.get(pred["key"]) == wanted]
    start = int(query.get("page_token", ["0"])[0])
    page: dict[str, Any] = {name: items[start : start + 2], "total_size": len(items)}
    if start + 2 < len(items):
        page["next_page_token"] = str(start + 2)
    return page


@contextmanager
def serve_kfp() -> Iterator[FakeKfp]:
    """A :class:`FakeKfp` listening on a free loopback port (``.url``) for the duration of the block."""
    state = FakeKfp()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                method,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length) if length else b"",
            )
            state.requests.append(request)
            path = parts.path.removeprefix(API)
            if method == "GET":
                code, payload = state.get(path, request.query)
            elif method == "POST":
                code, payload = state.post(path, request.query, request)
            else:
                code, payload = state.delete(path)
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
