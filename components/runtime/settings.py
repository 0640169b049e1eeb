"""Runtime configuration shared by the services a step uses (object store, telemetry).

Read once, explicitly, with :meth:`RuntimeSettings.from_env`; nothing is read at import time.

Environment variables
---------------------
``ADRENDER_STORE``
    URI root of every artifact: ``file:///abs/path`` (a local folder) or ``s3://bucket/prefix``.
    Default: ``./.adrender/store`` under the working directory at the time ``from_env`` runs, as a
    ``file://`` URI. A bare path (``/data/store``, ``./store``) is accepted and means a local folder.
``ADRENDER_S3_ENDPOINT``
    S3 endpoint as ``host:port`` or a URL (``http://minio.kubeflow:9000``, ``https://s3.amazonaws.com``).
    A URL scheme decides TLS and wins over ``ADRENDER_S3_SECURE``. Default: ``s3.amazonaws.com``.
``ADRENDER_S3_ACCESS_KEY`` / ``ADRENDER_S3_SECRET_KEY``
    S3 credentials. ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` are read when these are unset (the
    names Kubernetes secrets and KFP usually inject). Empty means anonymous access.
``ADRENDER_S3_REGION``
    Region sent with every request, so the client never asks the server for it. Default ``us-east-1``.
``ADRENDER_S3_SECURE``
    ``true`` / ``false``: TLS to the endpoint when it is given without a scheme. Default ``true``.
``ADRENDER_PUSHGATEWAY``
    Prometheus Pushgateway as ``host:port`` (or a URL). Empty: metrics are not pushed (logged once).
``ADRENDER_METRICS_PORT``
    Port on which a running step serves ``/metrics`` for scraping; ``0`` picks a free port.
    Empty: not served. Under torchrun only the pod's first process (``LOCAL_RANK`` 0) serves it: the ranks
    of one pod would otherwise race for the same port.

The model registry module reads its own variables (``MLFLOW_TRACKING_URI``, ``ADRENDER_MODEL_CACHE``);
they are not part of this object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_S3_ENDPOINT",
    "DEFAULT_STORE_DIR",
    "RuntimeSettings",
    "SettingsError",
    "normalise_store_uri",
]

DEFAULT_STORE_DIR = Path(".adrender") / "store"
DEFAULT_S3_ENDPOINT = "s3.amazonaws.com"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """An environment variable holds a value adrender cannot use; the message names it and the fix."""


@dataclass(frozen=True)
class RuntimeSettings:
    """Configuration of the runtime services, one immutable value per process or step.

    Build it with :meth:`from_env` (or directly, in tests and embedding code).
    """

    store: str = ""
    s3_endpoint: str = DEFAULT_S3_ENDPOINT
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_secure: bool = True
    pushgateway: str | None = None
    metrics_port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Read the variables listed in the module docstring from ``env`` (default ``os.environ``).

        Raises :class:`SettingsError` naming the variable for a value that cannot be used.
        """
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        store = get("ADRENDER_STORE") or (Path.cwd() / DEFAULT_STORE_DIR).as_uri()
        store = normalise_store_uri(store, variable="ADRENDER_STORE")

        endpoint_raw = get("ADRENDER_S3_ENDPOINT") or DEFAULT_S3_ENDPOINT
        secure_raw = get("ADRENDER_S3_SECURE")
        secure = True if secure_raw is None else _parse_bool(secure_raw, "ADRENDER_S3_SECURE")
        endpoint, scheme_secure = _parse_endpoint(endpoint_raw, "ADRENDER_S3_ENDPOINT")
        if scheme_secure is not None:
            secure = scheme_secure

        port_raw = get("ADRENDER_METRICS_PORT")
        metrics_port: int | None = None
        if port_raw is not None:
            if not port_raw.isdigit() or int(port_raw) > 65535:
                raise SettingsError(
                    f"ADRENDER_METRICS_PORT={port_raw!r} is not a TCP port; set an integer 0-65535 "
                    "(0 = any free port) or leave it empty to not serve /metrics"
                )
            metrics_port = int(port_raw)
            if get("LOCAL_RANK") not in (None, "0"):
                metrics_port = None

        gateway = get("ADRENDER_PUSHGATEWAY")
        if gateway is not None:
            _parse_endpoint(gateway, "ADRENDER_PUSHGATEWAY")

        return cls(
            store=store,
            s3_endpoint=endpoint,
            s3_access_key=get("ADRENDER_S3_ACCESS_KEY") or get("AWS_ACCESS_KEY_ID"),
            s3_secret_key=get("ADRENDER_S3_SECRET_KEY") or get("AWS_SECRET_ACCESS_KEY"),
            s3_region=get("ADRENDER_S3_REGION") or "us-east-1",
            s3_secure=secure,
            pushgateway=gateway,
            metrics_port=metrics_port,
        )


def normalise_store_uri(uri: str, *, variable: str = "store URI") -> str:
    """Return ``uri`` as ``file:///abs/path`` or ``s3://bucket[/prefix]``; a bare path becomes a file URI."""
    if uri.startswith("s3://"):
        if not urlsplit(uri).netloc:
            raise SettingsError(f"{variable}={uri!r} has no bucket; write s3://BUCKET/optional/prefix")
        return uri.rstrip("/")
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise SettingsError(
                f"{variable}={uri!r} names host {parts.netloc!r}; a file URI needs three slashes: file:///abs/path"
            )
        return Path(parts.path).resolve().as_uri()
    if "://" in uri:
        raise SettingsError(
            f"{variable}={uri!r} has an unsupported scheme; use file:///path or s3://bucket/prefix"
        )
    return Path(uri).expanduser().resolve().as_uri()


def _parse_bool(value: str, variable: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise SettingsError(f"{variable}={value!r} is not a boolean; set true or false")


def _parse_endpoint(value: str, variable: str) -> tuple[str, bool | None]:
    """Split ``host:port`` or ``scheme://host:port`` into (host:port, secure-from-scheme or None)."""
    if "://" not in value:
        if "/" in value:
            raise SettingsError(f"{variable}={value!r} must be host:port or a URL without a path")
        return value, None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise SettingsError(f"{variable}={value!r} must be host:port or http(s)://host:port without a path")
    return parts.netloc, parts.scheme == "https"
