"""What the Kubeflow tasks run besides the steps (pipelines/kfp_tasks.py): the exit task's outcome names the
campaign by its own id, posted to a webhook on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipelines.kfp_tasks import campaign_id, report_outcome
from tests.campaigns import ALL_MODES, write_campaign


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_the_outcome_names_the_campaign_by_its_id(
    demo_media: Path, tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    path = write_campaign(
        tmp_path, demo_media, ALL_MODES[:1], id="spring-launch"
    )  # the file is campaign.yaml
    assert campaign_id(str(path)) == "spring-launch"
    url, received = webhook
    outcome = report_outcome(
        state="FAILED", error="dit sample: exit 1", campaign_uri=str(path), webhook_url=url
    )
    assert outcome["campaign"] == "spring-launch" and outcome["webhook_status"] == 204
    (body,) = received
    assert body == {
        "campaign": "spring-launch",
        "campaign_uri": str(path),
        "run": "",
        "state": "FAILED",
        "error": "dit sample: exit 1",
    }


def test_an_unreadable_campaign_is_reported_by_its_file_name(tmp_path: Path) -> None:
    assert campaign_id(str(tmp_path / "missing" / "autumn.yaml")) == "autumn"
