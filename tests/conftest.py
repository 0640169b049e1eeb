"""Session-wide fixtures: real services on loopback, shared by every test folder.

* ``s3_server``: moto's standalone S3 server (ThreadedMotoServer); only the minio client speaks to it.
* ``mlflow_server``: a real ``mlflow server`` (sqlite backend, proxied artifacts in a bucket of ``s3_server``).
* ``monitoring``: ``prometheus-pushgateway`` and a ``prometheus`` scraping it every second.

Ports come from :func:`model_core.parallel.launch.free_port`, imported where a fixture starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from components.runtime.registry import Registry
    from components.runtime.step import StepContext


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

    def make_bucket(self) -> str:
        """Create a fresh bucket through the minio client; returns its name."""
        from minio import Minio

        bucket = self.new_bucket_name()
        Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
        ).make_bucket(bucket)
        return bucket


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


# ---------------------------------------------------------------------------------------------------
# process helpers


def _free_port() -> int:
    from model_core.parallel.launch import free_port  # torch is imported only by sessions that need a port

    return free_port()


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name}, or `make deps`)")
    return path


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail with the end of ``log`` if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------
# MLflow


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: its URL, the bucket holding its artifacts, and its log file."""

    url: str
    bucket: str
    log: Path


@pytest.fixture(scope="session")
def mlflow_server(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` on loopback: sqlite backend, ``--serve-artifacts`` into a fresh S3 bucket."""

    root = tmp_path_factory.mktemp("mlflow-server")
    bucket = s3_server.make_bucket()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
        AWS_DEFAULT_REGION=s3_server.region,
        AWS_EC2_METADATA_DISABLED="true",
        MLFLOW_S3_ENDPOINT_URL=s3_server.url,
    )
    log = root / "server.log"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    # fmt: off
    command = [
        str(mlflow_bin), "server",
        "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
        "--serve-artifacts", "--artifacts-destination", f"s3://{bucket}/",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    # fmt: on
    with log.open("wb") as out:
        # own process group: the server forks workers and a job runner that SIGTERM alone would orphan
        proc = subprocess.Popen(
            command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # ~10 s on an idle 2-core machine; far longer when the cores are shared with other test runs
        _wait_ready(f"{url}/health", proc, log, timeout=120)
        yield MlflowServer(url=url, bucket=bucket, log=log)
    finally:
        _stop_group(proc)


# ---------------------------------------------------------------------------------------------------
# Prometheus and the Pushgateway


@dataclass(frozen=True)
class Monitoring:
    """A Pushgateway and a Prometheus scraping it every second (honor_labels)."""

    pushgateway: str  # host:port
    prometheus_url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query through Prometheus's HTTP API; the result vector."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, promql: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns a non-empty vector (scrape interval is 1 s)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.25)

    def gateway_metrics(self) -> str:
        """The Pushgateway's own /metrics text."""
        with urllib.request.urlopen(f"http://{self.pushgateway}/metrics", timeout=5) as response:
            return str(response.read().decode())


@pytest.fixture(scope="session")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    """prometheus-pushgateway and prometheus as subprocesses on free loopback ports, for the session."""
    gateway_bin = _binary("prometheus-pushgateway")
    prometheus_bin = _binary("prometheus")
    work = tmp_path_factory.mktemp("monitoring")
    gw_port, prom_port = _free_port(), _free_port()
    gateway = f"127.0.0.1:{gw_port}"
    gw_log = work / "pushgateway.log"
    with gw_log.open("wb") as out:
        gw = subprocess.Popen(
            [gateway_bin, f"--web.listen-address={gateway}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    procs = [gw]
    try:
        _wait_ready(f"http://{gateway}/-/ready", gw, gw_log, timeout=20)
        config = work / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: pushgateway\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: ['{gateway}']\n"
        )
        prom_log = work / "prometheus.log"
        with prom_log.open("wb") as out:
            prom = subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(prom)
        _wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", prom, prom_log, timeout=20)
        yield Monitoring(pushgateway=gateway, prometheus_url=f"http://127.0.0.1:{prom_port}")
    finally:
        for proc in reversed(procs):
            _stop_group(proc)


@pytest.fixture(autouse=True)
def _no_ambient_adrender_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit a developer's cluster settings."""
    for name in list(os.environ):
        if name.startswith(("ADRENDER_", "MLFLOW_")):
            monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------------
# the render path: tiny models in a real sqlite MLflow registry, demo media, step contexts
# (registering the tiny models takes a few seconds: once per session; each test gets its own store and cache)

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class TinyRegistry:
    uri: str
    root: Path

    def registry(self, cache: Path) -> Registry:
        from components.runtime.registry import Registry

        return Registry(self.uri, cache)


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> TinyRegistry:
    """Every model a campaign needs, tiny and random, registered with alias `production` in a sqlite MLflow."""
    from components.runtime.registry import Registry
    from pipelines.bootstrap import bootstrap_tiny

    root = tmp_path_factory.mktemp("tiny-registry")
    uri = f"sqlite:///{root}/mlflow.db"
    bootstrap_tiny(Registry(uri, root / "cache"), work_dir=root / "work")
    return TinyRegistry(uri, root)


@pytest.fixture(scope="session")
def demo_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's media, generated by the script the README tells users to run."""
    out = tmp_path_factory.mktemp("demo-media") / "assets"
    subprocess.run([sys.executable, str(REPO / "examples/demo/make_media.py"), str(out)], check=True)
    return out


@pytest.fixture
def make_ctx(tiny_registry: TinyRegistry, tmp_path: Path) -> Callable[..., StepContext]:
    """A step context on a local-folder store under tmp_path (one per call: a fresh model cache in memory)."""
    from components.runtime.settings import RuntimeSettings
    from components.runtime.step import StepContext
    from components.runtime.store import LocalStore

    def make(store_dir: Path | None = None) -> StepContext:
        store_root = store_dir or tmp_path / "store"
        settings = RuntimeSettings(store=store_root.resolve().as_uri())
        return StepContext(
            settings=settings,
            store=LocalStore(store_root),
            registry=tiny_registry.registry(tmp_path / "model-cache"),
            device="cpu",
            work_dir=tmp_path / "work",
        )

    return make


@pytest.fixture
def step_env(
    tiny_registry: TinyRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The environment variables that make `StepContext.from_env()` (and step subprocesses) match `make_ctx`."""
    env = {
        "ADRENDER_STORE": (tmp_path / "store").resolve().as_uri(),
        "MLFLOW_TRACKING_URI": tiny_registry.uri,
        "ADRENDER_MODEL_CACHE": str(tmp_path / "model-cache"),
        "ADRENDER_DEVICE": "cpu",
        "ADRENDER_WORK_DIR": str(tmp_path / "work"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
