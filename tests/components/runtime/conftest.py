"""Fixtures for the runtime services: real Prometheus and Pushgateway processes on loopback."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name}, or `make deps`)")
    return path


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Monitoring:
    """A Pushgateway and a Prometheus scraping it every second (honor_labels)."""

    pushgateway: str  # host:port
    prometheus_url: str

    def query(self, promql: str) -> list[dict]:
        """Instant query through Prometheus's HTTP API; the result vector."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, promql: str, timeout: float = 15.0) -> list[dict]:
        """Poll ``promql`` until it returns a non-empty vector (scrape interval is 1 s)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.25)

    def gateway_metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.pushgateway}/metrics", timeout=5) as response:
            return response.read().decode()


@pytest.fixture(scope="session")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    """prometheus-pushgateway and prometheus as subprocesses on free loopback ports, for the session."""
    gateway_bin = _binary("prometheus-pushgateway")
    prometheus_bin = _binary("prometheus")
    work = tmp_path_factory.mktemp("monitoring")
    gw_port, prom_port = _free_port(), _free_port()
    gateway = f"127.0.0.1:{gw_port}"
    gw_log = work / "pushgateway.log"
    gw = subprocess.Popen(
        [gateway_bin, f"--web.listen-address={gateway}"],
        stdout=gw_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    procs = [gw]
    try:
        _wait_ready(f"http://{gateway}/-/ready", gw, gw_log)
        config = work / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: pushgateway\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: ['{gateway}']\n"
        )
        prom_log = work / "prometheus.log"
        prom = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=prom_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append(prom)
        _wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", prom, prom_log)
        yield Monitoring(pushgateway=gateway, prometheus_url=f"http://127.0.0.1:{prom_port}")
    finally:
        for proc in reversed(procs):
            _stop(proc)
