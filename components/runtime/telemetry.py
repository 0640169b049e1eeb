"""Prometheus metrics of one pipeline step: pushed to a Pushgateway at the end, served while it runs.

Each step run creates one :class:`StepTelemetry` (campaign, step). It owns a private ``CollectorRegistry``
so steps in one process never mix their series::

    with StepTelemetry.from_settings("spring-sale", "dit_sample", settings) as tm:
        with tm.time_checkpoint_load():
            model = load(...)
        for i in range(steps):
            with tm.time_sampling_step():
                ...
        tm.unit_done("ok")
        tm.bytes_moved("upload", nbytes)
        tm.qc_score("clip_similarity", 0.31)
    # at exit: step duration observed, last-success stamp set (no exception), metrics pushed

Metrics (every series carries ``campaign`` and ``step``; labels are bounded, never a render id):

=========================================== ========== ==================================================
``adrender_step_duration_seconds``          histogram  wall time of the step
``adrender_units_total{status}``            counter    render units finished; status in :data:`UNIT_STATUSES`
``adrender_bytes_moved_total{direction}``   counter    bytes to/from the store; ``upload`` / ``download``
``adrender_checkpoint_load_seconds``        histogram  time to load model weights
``adrender_sampling_step_seconds``          histogram  time of one denoising step
``adrender_qc_score{metric}``               summary    QC scores (``_sum`` / ``_count`` give the mean)
``adrender_step_last_success_timestamp_seconds`` gauge  unix time the step last ended without error
=========================================== ========== ==================================================

Pushes use ``job="adrender"`` and the grouping key ``{campaign, step}`` (plus ``shard``, the shard's position in
its plan, for the steps that run once per shard: sum over it in queries) with POST semantics
(``pushadd``): a failed run replaces the same-named series but leaves the last-success stamp of the
previous good run. Metrics never fail a render: with no gateway configured the first push logs once
(INFO) and every push is a no-op; an unreachable gateway logs a warning and the step carries on.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, pushadd_to_gateway

from components.runtime.settings import RuntimeSettings

__all__ = [
    "DIRECTIONS",
    "JOB",
    "UNIT_STATUSES",
    "MetricsServer",
    "StepTelemetry",
]

log = logging.getLogger(__name__)

JOB = "adrender"
UNIT_STATUSES = ("ok", "failed", "skipped", "retried")
DIRECTIONS = ("upload", "download")
MAX_QC_METRICS = 64  # a bound on the qc_score label set, so a bug cannot turn it into a render id

_LABEL_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_QC_METRIC = re.compile(r"[a-z][a-z0-9_]{0,63}")

# steps last from seconds (plan) to half an hour (sampling 129 frames at 720p)
_STEP_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
_LOAD_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_SAMPLING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)

_no_gateway_logged = False
_no_gateway_lock = threading.Lock()


def _log_no_gateway_once() -> None:
    global _no_gateway_logged
    with _no_gateway_lock:
        if _no_gateway_logged:
            return
        _no_gateway_logged = True
    log.info("no Pushgateway configured (ADRENDER_PUSHGATEWAY is empty); step metrics are not pushed")


@dataclass(frozen=True)
class MetricsServer:
    """A running /metrics endpoint; :meth:`stop` it when the step ends."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """The scrape URL, ``http://host:port/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class StepTelemetry:
    """The metrics of one step run of one campaign, in a private registry.

    ``pushgateway`` is ``host:port`` or a URL; None disables pushing. Use it as a context manager to time
    the step and push at exit, or call :meth:`push` yourself. With ``metrics_port`` set (0 = a free
    port), the context manager also serves /metrics for the duration of the step.
    """

    def __init__(
        self,
        campaign: str,
        step: str,
        *,
        pushgateway: str | None = None,
        job: str = JOB,
        push_timeout: float = 5.0,
        metrics_port: int | None = None,
        shard: int | None = None,
    ) -> None:
        for name, value in (("campaign", campaign), ("step", step)):
            if not _LABEL_VALUE.fullmatch(value):
                raise ValueError(
                    f"{name} {value!r} is not usable as a metric label; use [A-Za-z0-9._-], <= 128 chars"
                )
        self.campaign = campaign
        self.step = step
        # the position of the shard in its plan: parallel shards of one step push to their own groups instead
        # of replacing each other's series; bounded by the shard count, and reused by the next run
        self.shard = shard
        self.pushgateway = pushgateway or None
        self.job = job
        self.push_timeout = push_timeout
        self.metrics_port = metrics_port  # serve /metrics on it while the step runs (context manager)
        self.registry = CollectorRegistry(auto_describe=True)
        base = ("campaign", "step")
        r = self.registry
        self._duration = Histogram(
            "adrender_step_duration_seconds",
            "Wall time of a pipeline step.",
            base,
            registry=r,
            buckets=_STEP_BUCKETS,
        )
        self._units = Counter(
            "adrender_units_total",
            "Render units finished by a step, by status.",
            (*base, "status"),
            registry=r,
        )
        self._bytes = Counter(
            "adrender_bytes_moved_total",
            "Bytes moved to or from the artifact store.",
            (*base, "direction"),
            registry=r,
        )
        self._load = Histogram(
            "adrender_checkpoint_load_seconds",
            "Time to load model weights.",
            base,
            registry=r,
            buckets=_LOAD_BUCKETS,
        )
        self._sampling = Histogram(
            "adrender_sampling_step_seconds",
            "Time of one denoising step.",
            base,
            registry=r,
            buckets=_SAMPLING_BUCKETS,
        )
        self._qc = Summary(
            "adrender_qc_score", "Quality-control scores, by metric.", (*base, "metric"), registry=r
        )
        self._last_success = Gauge(
            "adrender_step_last_success_timestamp_seconds",
            "Unix time at which the step last finished without error.",
            base,
            registry=r,
        )
        self._qc_metrics: set[str] = set()
        self._started: float | None = None
        self._server: MetricsServer | None = None

    @classmethod
    def from_settings(
        cls, campaign: str, step: str, settings: RuntimeSettings, *, shard: int | None = None
    ) -> StepTelemetry:
        """Telemetry pushing to ``settings.pushgateway`` and serving on ``settings.metrics_port`` (if set)."""
        return cls(
            campaign, step, pushgateway=settings.pushgateway, metrics_port=settings.metrics_port, shard=shard
        )

    @property
    def _labels(self) -> dict[str, str]:
        return {"campaign": self.campaign, "step": self.step}

    # recording

    def unit_done(self, status: str, count: int = 1) -> None:
        """Count ``count`` render units that ended with ``status`` (one of :data:`UNIT_STATUSES`)."""
        if status not in UNIT_STATUSES:
            raise ValueError(f"unit status {status!r} is not one of {UNIT_STATUSES}")
        self._units.labels(**self._labels, status=status).inc(count)

    def bytes_moved(self, direction: str, nbytes: int) -> None:
        """Add ``nbytes`` moved in ``direction`` (``upload`` or ``download``)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {DIRECTIONS}")
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        self._bytes.labels(**self._labels, direction=direction).inc(nbytes)

    def observe_checkpoint_load(self, seconds: float) -> None:
        """Record one checkpoint load that took ``seconds``."""
        self._load.labels(**self._labels).observe(seconds)

    def observe_sampling_step(self, seconds: float) -> None:
        """Record one denoising step that took ``seconds``."""
        self._sampling.labels(**self._labels).observe(seconds)

    @contextmanager
    def time_checkpoint_load(self) -> Iterator[None]:
        """Time the block as one checkpoint load."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe_checkpoint_load(time.perf_counter() - started)

    @contextmanager
    def time_sampling_step(self) -> Iterator[None]:
        """Time the block as one denoising step."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe_sampling_step(time.perf_counter() - started)

    def qc_score(self, metric: str, value: float) -> None:
        """Record one QC score; ``metric`` is a QC metric name (``[a-z][a-z0-9_]*``), never a render id."""
        if not _QC_METRIC.fullmatch(metric):
            raise ValueError(f"QC metric name {metric!r} must match [a-z][a-z0-9_]{{0,63}}")
        if metric not in self._qc_metrics and len(self._qc_metrics) >= MAX_QC_METRICS:
            raise ValueError(
                f"more than {MAX_QC_METRICS} distinct QC metric names in one step; label values must stay "
                "bounded (is a render id being passed as a metric name?)"
            )
        self._qc_metrics.add(metric)
        self._qc.labels(**self._labels, metric=metric).observe(value)

    # exporting

    def push(self) -> bool:
        """Push every metric to the Pushgateway; True when it was accepted. Never raises for gateway trouble."""
        if self.pushgateway is None:
            _log_no_gateway_once()
            return False
        try:
            pushadd_to_gateway(
                self.pushgateway,
                job=self.job,
                registry=self.registry,
                grouping_key=self._labels
                if self.shard is None
                else {**self._labels, "shard": str(self.shard)},
                timeout=self.push_timeout,
            )
        except Exception as exc:  # noqa: BLE001 - metrics must never fail a render
            log.warning(
                "could not push metrics of %s/%s to the Pushgateway at %s: %s; carrying on",
                self.campaign,
                self.step,
                self.pushgateway,
                exc,
            )
            return False
        return True

    def serve(self, port: int = 0, host: str = "0.0.0.0") -> MetricsServer:
        """Serve /metrics on ``host:port`` (0 = a free port) until :meth:`MetricsServer.stop` or step exit."""
        from prometheus_client import start_http_server

        if self._server is not None:
            raise RuntimeError(f"/metrics is already served at {self._server.url}")
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        bound_host, bound_port = server.server_address[:2]
        self._server = MetricsServer(str(bound_host), int(bound_port), server, thread)
        return self._server

    def stop_serving(self) -> None:
        """Stop the /metrics endpoint started by :meth:`serve` (no-op when none runs)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    # the step as a context

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        if self.metrics_port is not None and self._server is None:
            try:
                self.serve(self.metrics_port)
            except OSError as exc:  # a taken port must not fail the render either
                log.warning("cannot serve /metrics on port %s: %s; carrying on", self.metrics_port, exc)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started is not None:
            self._duration.labels(**self._labels).observe(time.perf_counter() - self._started)
        if exc_type is None:
            self._last_success.labels(**self._labels).set(time.time())
        try:
            self.push()
        finally:
            self.stop_serving()
