"""Session-wide fixtures: real services on loopback.

The S3 server is moto's standalone server (ThreadedMotoServer); only the minio client speaks to it.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint on loopback and the credentials to reach it."""

    host: str
    port: int
    access_key: str = "adrender-test"
    secret_key: str = "adrender-test-secret"
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        """host:port, the form the minio client takes."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def new_bucket_name(self) -> str:
        return f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with a free port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(host=host, port=port)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_ambient_adrender_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit a developer's cluster settings."""
    for name in list(os.environ):
        if name.startswith(("ADRENDER_", "MLFLOW_")):
            monkeypatch.delenv(name, raising=False)
