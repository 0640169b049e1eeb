"""Model registry: checkpoint folders as versions of MLflow registered models, and a verified local cache.

A registered model version holds one folder of checkpoint files (logged as artifacts of a run in the
experiment ``adrender-models``) and tags that say what it is:

- ``adrender.preset``: the ``model_core`` preset the files load into;
- ``adrender.files.parts`` and ``adrender.files.000``, ``adrender.files.001``, ...: a JSON object
  ``{relative path: {"sha256": hex, "size": bytes}}``, split into pieces of at most 5000 characters
  because older MLflow servers cap a model-version tag value at 5000 (MLflow 3 allows 100 000);
- ``adrender.total_bytes`` and ``adrender.source`` (where the files came from, free text);
- ``adrender.license.excluded_territories``: territories the licence of the weights excludes, as
  comma-separated upper-case ISO 3166-1 alpha-2 codes (``EU,GB,KR``); absent when none are;
- ``adrender.max_subjects``: how many subjects (identity images) one render may condition on; absent means
  one. The released HunyuanCustom checkpoints were trained and released for a single identity image (multi-image
  input was announced, never released), so they are registered without it and ``plan`` rejects a job with two
  subjects for them. A checkpoint trained for k subjects (identity latents at t = -1..-k with the w shift, one
  LLaVA image slot per subject) is registered with ``register(..., max_subjects=k)``
  (the `adrender models register` command line has no option for it yet).

:meth:`Registry.register` first checks that the files fit the preset (:func:`check_checkpoint`): the preset
exists, a DiT or VAE checkpoint has exactly the preset's keys and shapes (read from the file header or a
memory map, not loaded), an encoder folder's ``config.json`` has one of the preset's ``model_type`` values.

Campaigns name models as ``name@alias`` (``hunyuancustom-dit@production``) or ``name/version``.
:meth:`Registry.resolve` turns a reference into a :class:`ResolvedModel` (one immutable version), and
:meth:`Registry.fetch` downloads that version into ``<cache>/<name>/<version>/``, verifies every sha256
and moves it into place atomically under a file lock, so concurrent processes on one node share a single
copy. Aliases, never stages: stages are deprecated since MLflow 2.9.

Configuration (read only by :meth:`Registry.from_env`, never at import):

``MLFLOW_TRACKING_URI``
    Tracking and registry server. Default ``sqlite:///./.adrender/mlflow.db`` (the embedded default, no
    server), whose run artifacts go to ``./.adrender/mlartifacts``. For a cluster, the URL of an
    ``mlflow server --serve-artifacts`` (``http://mlflow.mlops:5000``); clients then need only HTTP.
``ADRENDER_MODEL_CACHE``
    Local folder of downloaded checkpoints. Default ``./.adrender/models``. On a cluster, a node-local
    volume so the ranks of a pod download tens of GB once.

MLflow's own HTTP settings apply as usual (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``,
``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``).
Left unset, this module sets them for the process to 3 retries, backoff factor 1 and 60 s (MLflow's own
defaults retry for about four minutes before an unreachable server is reported).

Before the first call, the registry logs ``contacting model registry <uri>`` and checks that it can be
reached: an ``http(s)`` server must answer within about 25 s (two tries of 5 s to connect and 10 s to answer);
a ``sqlite`` database's folder must exist (it is created if it can be) and be writable, and an existing file
must be an SQLite database. Otherwise :class:`RegistryUnavailable` names the URI and the fix.

Errors (all raised by the public methods)::

    RegistryError                 anything the registry cannot do; the message names the fix
    ├── ModelNotFound             no registered model of that name
    ├── AliasNotFound             the model exists, the alias does not
    ├── VersionNotFound           the model exists, the version does not
    ├── RegistryUnavailable       the tracking server or database cannot be reached
    ├── PresetMismatch            the preset does not exist, or the files to register do not fit it
    └── CorruptCheckpoint         downloaded or registered files do not match their recorded sha256

MLflow and connection errors are translated in one place, :meth:`Registry._mlflow_errors`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

if TYPE_CHECKING:  # mlflow takes seconds to import; load it on first use
    from mlflow.tracking import MlflowClient

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_NAME",
    "AliasNotFound",
    "CorruptCheckpoint",
    "ModelNotFound",
    "ModelRef",
    "PresetMismatch",
    "RegisteredModelInfo",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "ResolvedModel",
    "VersionNotFound",
    "check_checkpoint",
]

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///./.adrender/mlflow.db"
DEFAULT_CACHE_DIR = "./.adrender/models"
EXPERIMENT_NAME = "adrender-models"

TAG_PRESET = "adrender.preset"
TAG_TOTAL_BYTES = "adrender.total_bytes"
TAG_SOURCE = "adrender.source"
TAG_FILES_PARTS = "adrender.files.parts"
TAG_FILES_PART = "adrender.files.{:03d}"
TAG_EXCLUDED_TERRITORIES = "adrender.license.excluded_territories"
TAG_MAX_SUBJECTS = "adrender.max_subjects"
# MLflow 2.x servers reject model-version tag values over 5000 characters.
TAG_VALUE_LIMIT = 5000

ARTIFACT_DIR = "checkpoint"
MARKER_NAME = ".adrender-complete.json"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# MLflow reserves "latest" and "v<digits>" as alias names.
_RESERVED_ALIAS_RE = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)
_HASH_CHUNK = 4 << 20
_TERRITORY_RE = re.compile(r"^[A-Z]{2}$")

# MLflow's HTTP client settings when the user sets none (its defaults retry for about four minutes).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
# The reachability check of an http(s) tracking server: (connect, answer) seconds per try, and tries.
PROBE_TIMEOUT_S = (5.0, 10.0)
PROBE_TRIES = 2
# A cached file whose (size, mtime, ctime, inode) match the marker is not hashed again, unless its mtime lies
# this close to when the marker was written: a change within one timestamp tick could keep the mtime.
RACY_MTIME_NS = 2_000_000_000
SQLITE_HEADER = b"SQLite format 3\x00"

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------
# errors


class RegistryError(Exception):
    """Base class of every registry error; the message names what was asked, what exists and the fix."""


class ModelNotFound(RegistryError):
    """No registered model has the requested name."""


class AliasNotFound(RegistryError):
    """The registered model exists but has no such alias."""


class VersionNotFound(RegistryError):
    """The registered model exists but has no such version."""


class RegistryUnavailable(RegistryError):
    """The tracking server (or its database) cannot be reached."""


class CorruptCheckpoint(RegistryError):
    """Files do not match the sha256/size recorded for the model version."""


class PresetMismatch(RegistryError, ValueError):
    """The preset to register under does not exist, or the files do not fit it; names the preset they fit."""


# ---------------------------------------------------------------------------------------------------
# values


@dataclass(frozen=True)
class ModelRef:
    """A reference to a model version: ``name@alias`` or ``name/version``.

    Exactly one of ``alias`` and ``version`` is set. Parse user text with :meth:`parse`.
    """

    name: str
    alias: str | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if (self.alias is None) == (self.version is None):
            raise ValueError(
                f"model reference {self.name!r} needs exactly one of alias or version "
                f"(got alias={self.alias!r}, version={self.version!r}); write 'name@alias' or 'name/version'"
            )
        if self.alias is not None:
            _check_alias(self.alias)
        if self.version is not None and (isinstance(self.version, bool) or self.version < 1):
            raise ValueError(f"model version must be a positive integer, got {self.version!r}")

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``name@alias`` or ``name/version`` (a leading ``models:/`` is accepted).

        Raises ``ValueError`` naming the expected forms.
        """
        raw = text.strip()
        raw = raw.removeprefix("models:/")
        if "@" in raw and "/" not in raw:
            name, _, alias = raw.partition("@")
            return cls(name=name, alias=alias)
        if "/" in raw and "@" not in raw:
            name, _, version = raw.partition("/")
            if not version.isdigit():
                raise ValueError(
                    f"model reference {text!r}: version {version!r} is not a positive integer; "
                    "write 'name/3' or use an alias, 'name@production'"
                )
            return cls(name=name, version=int(version))
        raise ValueError(
            f"model reference {text!r} is neither 'name@alias' (e.g. 'hunyuancustom-dit@production') "
            "nor 'name/version' (e.g. 'hunyuancustom-dit/3')"
        )

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias is not None else f"{self.name}/{self.version}"


def _max_subjects(value: str, what: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise RegistryError(
            f"{what} has {TAG_MAX_SUBJECTS}={value!r}; it must be a whole number >= 1. Fix the tag with "
            f"`mlflow` or register the folder again with max_subjects set."
        )
    return count


@dataclass(frozen=True)
class ResolvedModel:
    """One immutable registered model version and what its files must be.

    ``files`` maps each relative path (POSIX separators) to its sha256 hex digest, ``sizes`` to its
    byte count. ``excluded_territories`` are the upper-case ISO 3166-1 alpha-2 codes (and ``EU``) where
    the licence of the weights does not allow their use. ``max_subjects`` is how many subjects (identity
    images) one render may condition on (the ``adrender.max_subjects`` tag, 1 without it).
    ``str(resolved)`` is ``name/version``, the form to record in cache keys and manifests.
    """

    name: str
    version: int
    preset: str
    files: Mapping[str, str] = field(hash=False)
    total_bytes: int
    source: str
    sizes: Mapping[str, int] = field(hash=False, default_factory=dict)
    excluded_territories: tuple[str, ...] = ()
    max_subjects: int = 1

    @property
    def ref(self) -> ModelRef:
        """The pinned reference ``name/version``."""
        return ModelRef(self.name, version=self.version)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, for manifests passed between steps."""
        return {
            "name": self.name,
            "version": self.version,
            "preset": self.preset,
            "files": dict(self.files),
            "sizes": dict(self.sizes),
            "total_bytes": self.total_bytes,
            "source": self.source,
            "excluded_territories": list(self.excluded_territories),
            "max_subjects": self.max_subjects,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolvedModel:
        """Inverse of :meth:`as_dict`."""
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            preset=str(data["preset"]),
            files={str(k): str(v) for k, v in data["files"].items()},
            total_bytes=int(data["total_bytes"]),
            source=str(data.get("source", "")),
            sizes={str(k): int(v) for k, v in data.get("sizes", {}).items()},
            excluded_territories=tuple(str(t) for t in data.get("excluded_territories", ())),
            max_subjects=int(data.get("max_subjects", 1)),
        )

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class RegisteredModelInfo:
    """A registered model as listed by :meth:`Registry.list_models`."""

    name: str
    versions: tuple[int, ...]
    aliases: Mapping[str, int] = field(hash=False)
    description: str = ""


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"model name {name!r} is invalid: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (e.g. 'hunyuancustom-dit')"
        )


def _check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias) or _RESERVED_ALIAS_RE.match(alias):
        raise ValueError(
            f"model alias {alias!r} is invalid: use 1-64 letters, digits, '_' or '-', starting with a letter; "
            "'latest' and 'v<number>' are reserved by MLflow (e.g. 'production', 'staging')"
        )


def _territory_codes(codes: str | Iterable[str]) -> tuple[str, ...]:
    """Sorted, unique upper-case territory codes from ``"eu, GB,kr"`` or ``["EU", "GB"]``.

    Raises ``ValueError`` naming any code that is not two letters (ISO 3166-1 alpha-2, or ``EU``).
    """
    items = codes.split(",") if isinstance(codes, str) else [p for c in codes for p in str(c).split(",")]
    found = {item.strip().upper() for item in items if item.strip()}
    bad = sorted(code for code in found if not _TERRITORY_RE.match(code))
    if bad:
        raise ValueError(
            f"excluded territories {bad} are not territory codes: use two-letter ISO 3166-1 codes such as "
            "GB, KR, US, or EU for the European Union, separated by commas (e.g. 'EU,GB,KR')"
        )
    return tuple(sorted(found))


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``'1-3, 5'``."""
    spans: list[list[int]] = []
    for n in sorted(set(numbers)):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


# ---------------------------------------------------------------------------------------------------
# files and digests


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _scan_folder(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative posix path: {"sha256", "size"}} of every regular file under ``folder``."""
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            entries[rel] = {"sha256": _sha256(path), "size": path.stat().st_size}
    return entries


def _safe_relpath(rel: str) -> bool:
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts


def _encode_files_tags(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    parts = [text[i : i + TAG_VALUE_LIMIT] for i in range(0, len(text), TAG_VALUE_LIMIT)] or [""]
    tags = {TAG_FILES_PART.format(i): part for i, part in enumerate(parts)}
    tags[TAG_FILES_PARTS] = str(len(parts))
    return tags


def _decode_files_tags(tags: Mapping[str, str], what: str) -> dict[str, dict[str, Any]]:
    try:
        count = int(tags[TAG_FILES_PARTS])
        text = "".join(tags[TAG_FILES_PART.format(i)] for i in range(count))
        entries = json.loads(text)
    except (KeyError, ValueError) as exc:
        raise RegistryError(
            f"{what} has no readable '{TAG_FILES_PARTS}' / 'adrender.files.NNN' tags ({exc!r}); it was not "
            "registered by adrender. Register the folder again with `adrender models register`."
        ) from exc
    if not isinstance(entries, dict) or not all(isinstance(entry, dict) for entry in entries.values()):
        raise CorruptCheckpoint(
            f"{what} has file tags that are not a mapping of path to {{sha256, size}}; "
            "register the folder again"
        )
    bad = [rel for rel in entries if not _safe_relpath(rel)]
    if bad:
        raise CorruptCheckpoint(f"{what} lists unsafe file paths {bad}; register the folder again")
    return entries


# ---------------------------------------------------------------------------------------------------
# the registry


class Registry:
    """MLflow model registry plus a local, verified checkpoint cache.

    Args:
        tracking_uri: MLflow tracking/registry URI (``http://...``, ``sqlite:///path.db``, ...).
        cache_dir: folder of downloaded versions, ``<cache_dir>/<name>/<version>/``.
        artifact_location: where the ``adrender-models`` experiment stores run artifacts when this
            registry creates it. Default: beside the database for ``sqlite:`` URIs
            (``<db folder>/mlartifacts``), the server's choice otherwise.
        ready_timeout_s: how long :meth:`register` waits for a version to become READY.
        lock_timeout_s: how long :meth:`fetch` waits for another process's download (``None``: forever).
    """

    def __init__(
        self,
        tracking_uri: str,
        cache_dir: str | Path,
        *,
        artifact_location: str | None = None,
        ready_timeout_s: float = 300.0,
        lock_timeout_s: float | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.cache_dir = Path(cache_dir)
        self.ready_timeout_s = ready_timeout_s
        self.lock_timeout_s = lock_timeout_s
        self._sqlite_path = _sqlite_path(tracking_uri)
        if artifact_location is None and self._sqlite_path is not None:
            artifact_location = (self._sqlite_path.parent / "mlartifacts").resolve().as_uri()
        self.artifact_location = artifact_location
        self._client_obj: MlflowClient | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Registry:
        """Build from ``MLFLOW_TRACKING_URI`` and ``ADRENDER_MODEL_CACHE`` (see the module docstring)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
            env.get("ADRENDER_MODEL_CACHE") or DEFAULT_CACHE_DIR,
        )

    def __repr__(self) -> str:
        return f"Registry(tracking_uri={self.tracking_uri!r}, cache_dir={str(self.cache_dir)!r})"

    # -- MLflow access --------------------------------------------------------------------------------

    @property
    def _client(self) -> MlflowClient:
        if self._client_obj is None:
            log.info("contacting model registry %s", self.tracking_uri)
            if self._sqlite_path is not None:
                _check_sqlite(self.tracking_uri, self._sqlite_path)
            elif self.tracking_uri.startswith(("http://", "https://")):
                for name, value in HTTP_DEFAULTS.items():
                    os.environ.setdefault(name, value)
                _probe_http(self.tracking_uri)
            from mlflow.tracking import MlflowClient

            # Explicit URIs: never touch MLflow's process-global tracking URI.
            with self._mlflow_errors("open the tracking store"):
                self._client_obj = MlflowClient(
                    tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
                )
        return self._client_obj

    @contextmanager
    def _mlflow_errors(self, doing: str) -> Iterator[None]:
        """Translate MLflow, HTTP and database errors raised while ``doing`` into :class:`RegistryError`."""
        try:
            yield
        except RegistryError:
            raise
        except Exception as exc:
            if _is_unreachable(exc):
                raise RegistryUnavailable(
                    f"cannot {doing}: the MLflow tracking server or database at {self.tracking_uri} is unreachable "
                    f"({_short(exc)}). Start it or point MLFLOW_TRACKING_URI at a running server "
                    f"(the embedded default is {DEFAULT_TRACKING_URI})."
                ) from exc
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException):
                raise RegistryError(
                    f"cannot {doing} in the MLflow registry at {self.tracking_uri}: {_short(exc)}"
                ) from exc
            raise

    def _lookup(self, doing: str, fn: Callable[[], T]) -> T | None:
        """Run an MLflow call; ``None`` when MLflow answers that the resource does not exist."""
        from mlflow.exceptions import MlflowException

        with self._mlflow_errors(doing):
            try:
                return fn()
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

    def _versions(self, name: str) -> list[int]:
        with self._mlflow_errors(f"list the versions of model {name!r}"):
            found = self._client.search_model_versions(f"name = '{name}'")
        return sorted(int(mv.version) for mv in found)

    def _model_names(self, limit: int = 20) -> list[str]:
        with self._mlflow_errors("list registered models"):
            found = self._client.search_registered_models(max_results=limit, order_by=["name ASC"])
        return [rm.name for rm in found]

    def _require_model(self, name: str) -> Any:
        rm = self._lookup(f"look up model {name!r}", lambda: self._client.get_registered_model(name))
        if rm is None:
            known = self._model_names()
            listing = ", ".join(known) + (", ..." if len(known) == 20 else "") if known else "none"
            raise ModelNotFound(
                f"model {name!r} is not registered at {self.tracking_uri} (registered models: {listing}). "
                "Check the name in the campaign, or register it with `adrender models register`."
            )
        return rm

    def _describe(self, name: str, aliases: Mapping[str, Any]) -> str:
        alias_text = ", ".join(sorted(aliases)) if aliases else "none"
        versions = self._versions(name)
        version_text = _ranges(versions) if versions else "none"
        return f"model {name!r} has aliases {alias_text}; versions {version_text}"

    # -- public API -----------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        folder: str | Path,
        preset: str,
        *,
        source: str = "",
        aliases: Sequence[str] = (),
        excluded_territories: Sequence[str] = (),
        max_subjects: int = 1,
        validate: Callable[[Path, str], None] | None = None,
    ) -> ResolvedModel:
        """Upload ``folder`` as a new version of registered model ``name`` and return it, READY.

        The files are first checked against ``preset`` by ``validate`` (default :func:`check_checkpoint`:
        the preset exists and the files fit it; :class:`PresetMismatch` otherwise, naming the preset they
        fit). Every regular file under ``folder`` is then hashed, logged as an artifact of a run in the
        ``adrender-models`` experiment, and recorded in the version's tags with ``preset`` (a
        ``model_core`` preset name), ``source`` (where the files came from) and ``excluded_territories``
        (codes such as ``["EU", "GB", "KR"]`` or ``"EU,GB,KR"``), and ``max_subjects`` when the checkpoint
        was trained for more than one subject. ``aliases`` are then pointed at the new version.
        """
        _check_name(name)
        for alias in aliases:
            _check_alias(alias)
        territories = _territory_codes(excluded_territories)
        if not isinstance(max_subjects, int) or max_subjects < 1:
            raise ValueError(f"max_subjects must be a whole number >= 1, got {max_subjects!r}")
        if not preset or not isinstance(preset, str):
            raise ValueError(f"preset must be a model_core preset name such as 'hunyuan-vae', got {preset!r}")
        folder = Path(folder)
        if not folder.is_dir():
            raise RegistryError(f"cannot register {name!r}: {folder} is not a folder of checkpoint files")
        entries = _scan_folder(folder)
        if not entries:
            raise RegistryError(f"cannot register {name!r}: {folder} holds no files")
        (validate or check_checkpoint)(folder, preset)
        total = sum(int(e["size"]) for e in entries.values())
        source = source or str(folder.resolve())
        tags = {TAG_PRESET: preset, TAG_TOTAL_BYTES: str(total), TAG_SOURCE: source[:TAG_VALUE_LIMIT]}
        if territories:
            tags[TAG_EXCLUDED_TERRITORIES] = ",".join(territories)
        if max_subjects > 1:
            tags[TAG_MAX_SUBJECTS] = str(max_subjects)
        tags.update(_encode_files_tags(entries))

        client = self._client
        experiment_id = self._experiment_id()
        with self._mlflow_errors(f"upload {folder} for model {name!r}"):
            run = client.create_run(experiment_id, tags={"adrender.model": name, TAG_PRESET: preset})
            try:
                client.log_artifacts(run.info.run_id, str(folder), ARTIFACT_DIR)
            except BaseException:
                client.set_terminated(run.info.run_id, status="FAILED")
                raise
            client.set_terminated(run.info.run_id)
        if self._lookup(f"look up model {name!r}", lambda: client.get_registered_model(name)) is None:
            from mlflow.exceptions import MlflowException

            with self._mlflow_errors(f"create registered model {name!r}"):
                try:
                    client.create_registered_model(name)
                except MlflowException as exc:  # another process created it meanwhile
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
        with self._mlflow_errors(f"create a version of model {name!r}"):
            mv = client.create_model_version(
                name,
                source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}",
                run_id=run.info.run_id,
                tags=tags,
                await_creation_for=0,  # waited for below, with our own timeout and error
            )
        version = int(mv.version)
        if str(mv.status) != "READY":
            self._wait_ready(name, version)
        for alias in aliases:
            self.set_alias(name, alias, version)
        log.info("registered %s/%d (%s, %d files, %d bytes)", name, version, preset, len(entries), total)
        return ResolvedModel(
            name=name,
            version=version,
            preset=preset,
            files={rel: str(e["sha256"]) for rel, e in entries.items()},
            total_bytes=total,
            source=source,
            sizes={rel: int(e["size"]) for rel, e in entries.items()},
            excluded_territories=territories,
            max_subjects=max_subjects,
        )

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``name@alias`` at ``version`` (creating or moving the alias)."""
        _check_name(name)
        _check_alias(alias)
        self._get_version(name, int(version), None)  # clear errors for an unknown model or version
        with self._mlflow_errors(f"set alias {name}@{alias} -> {version}"):
            self._client.set_registered_model_alias(name, alias, str(version))

    def resolve(self, ref: ModelRef | str) -> ResolvedModel:
        """Resolve ``name@alias`` or ``name/version`` to one registered version and its file digests."""
        if isinstance(ref, str):
            ref = ModelRef.parse(ref)
        if ref.alias is not None:
            rm = self._require_model(ref.name)
            aliases = dict(rm.aliases or {})
            if ref.alias not in aliases:
                raise AliasNotFound(
                    f"alias {ref} does not exist: {self._describe(ref.name, aliases)}. Use one of those, or "
                    f"point the alias at a version with `adrender models alias {ref.name} {ref.alias} VERSION`."
                )
            version = int(aliases[ref.alias])
        else:
            assert ref.version is not None
            version = ref.version
        mv = self._get_version(ref.name, version, ref)
        what = f"model version {ref.name}/{version}"
        tags = dict(mv.tags or {})
        if TAG_PRESET not in tags:
            raise RegistryError(
                f"{what} has no '{TAG_PRESET}' tag; it was not registered by adrender. Register the folder "
                "again with `adrender models register`."
            )
        entries = _decode_files_tags(tags, what)
        return ResolvedModel(
            name=ref.name,
            version=version,
            preset=tags[TAG_PRESET],
            files={rel: str(e["sha256"]) for rel, e in entries.items()},
            total_bytes=int(tags.get(TAG_TOTAL_BYTES, sum(int(e["size"]) for e in entries.values()))),
            source=tags.get(TAG_SOURCE, ""),
            sizes={rel: int(e["size"]) for rel, e in entries.items()},
            excluded_territories=tuple(
                sorted(
                    {
                        t.strip().upper()
                        for t in tags.get(TAG_EXCLUDED_TERRITORIES, "").split(",")
                        if t.strip()
                    }
                )
            ),
            max_subjects=_max_subjects(tags.get(TAG_MAX_SUBJECTS, "1"), what),
        )

    def fetch(self, resolved: ResolvedModel, *, full_verify: bool = False, quick: bool = False) -> Path:
        """Return ``<cache>/<name>/<version>/`` holding the verified files of ``resolved``.

        A cached entry is verified before it is returned. Its marker records, per file, the (size, mtime,
        ctime, inode) seen when the file was last hashed; a file whose values are unchanged is not hashed
        again (a pod reusing a 26 GB checkpoint does not re-read it), any other file is (an in-place
        change, even one keeping the size, moves the mtime and ctime). ``full_verify`` hashes every
        file regardless; ``quick`` only compares sizes, and misses a same-size corruption. A corrupted
        entry is logged and downloaded again. Downloads go to a temporary folder beside the entry, are
        verified, and are renamed into place, all under a file lock, so concurrent fetches of one version
        download once and never expose a partial folder.
        """
        from filelock import FileLock, Timeout

        if full_verify and quick:
            raise ValueError("fetch: full_verify and quick exclude each other")
        mode = "full" if full_verify else "size" if quick else "changed"

        _check_name(resolved.name)
        model_dir = self.cache_dir / resolved.name
        model_dir.mkdir(parents=True, exist_ok=True)
        dest = model_dir / str(resolved.version)
        lock = FileLock(str(model_dir / f".{resolved.version}.lock"))
        try:
            lock.acquire(timeout=-1 if self.lock_timeout_s is None else self.lock_timeout_s)
        except Timeout as exc:
            raise RegistryError(
                f"waited {self.lock_timeout_s} s for another process to finish downloading {resolved} into "
                f"{dest}; if no such process is running, delete {lock.lock_file}"
            ) from exc
        try:
            # leftovers of a fetch that was killed while it held this lock
            for kind in ("download", "trash"):
                for stale in model_dir.glob(f".{resolved.version}.{kind}-*"):
                    shutil.rmtree(stale, ignore_errors=True)
            if dest.exists():
                problem = _cache_problem(dest, resolved, mode=mode)
                if problem is None:
                    return dest
                log.warning(
                    "cached checkpoint %s at %s is corrupt (%s); downloading it again",
                    resolved,
                    dest,
                    problem,
                )
                _remove_tree(dest)
            self._download(resolved, dest)
            return dest
        finally:
            lock.release()

    def list_models(self) -> list[RegisteredModelInfo]:
        """Every registered model with its versions and aliases, sorted by name."""
        infos: list[RegisteredModelInfo] = []
        token: str | None = None
        while True:
            with self._mlflow_errors("list registered models"):
                page = self._client.search_registered_models(max_results=100, page_token=token)
            for rm in page:
                infos.append(
                    RegisteredModelInfo(
                        name=rm.name,
                        versions=tuple(self._versions(rm.name)),
                        aliases={k: int(v) for k, v in (rm.aliases or {}).items()},
                        description=rm.description or "",
                    )
                )
            token = page.token
            if not token:
                break
        return sorted(infos, key=lambda info: info.name)

    # -- internals ------------------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        client = self._client
        with self._mlflow_errors(f"open experiment {EXPERIMENT_NAME!r}"):
            exp = client.get_experiment_by_name(EXPERIMENT_NAME)
            if exp is not None:
                return str(exp.experiment_id)
            try:
                return str(
                    client.create_experiment(EXPERIMENT_NAME, artifact_location=self.artifact_location)
                )
            except MlflowException as exc:  # created by a concurrent register
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = client.get_experiment_by_name(EXPERIMENT_NAME)
                assert exp is not None
                return str(exp.experiment_id)

    def _get_version(self, name: str, version: int, ref: ModelRef | None) -> Any:
        mv = self._lookup(
            f"look up version {name}/{version}", lambda: self._client.get_model_version(name, str(version))
        )
        if mv is None:
            rm = self._require_model(name)
            asked = (
                f"version {name}/{version}"
                if ref is None or ref.alias is None
                else f"{ref} -> version {version}"
            )
            raise VersionNotFound(
                f"{asked} does not exist: {self._describe(name, dict(rm.aliases or {}))}. "
                f"Use an existing version or an alias ('{name}@production')."
            )
        return mv

    def _wait_ready(self, name: str, version: int) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        delay = 0.05
        while True:
            mv = self._get_version(name, version, None)
            status = str(mv.status)
            if status == "READY":
                return
            if status == "FAILED_REGISTRATION":
                raise RegistryError(
                    f"MLflow failed to register {name}/{version}: {mv.status_message or 'no reason given'}; "
                    "check the server log and register again"
                )
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"{name}/{version} is still {status} after {self.ready_timeout_s} s; check the MLflow "
                    "server, or raise ready_timeout_s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _download(self, resolved: ResolvedModel, dest: Path) -> None:
        import mlflow.artifacts

        # Beside the entry: same filesystem, so the final rename is atomic.
        staging = Path(tempfile.mkdtemp(prefix=f".{resolved.version}.download-", dir=dest.parent))
        try:
            with self._mlflow_errors(f"download {resolved}"):
                uri = self._client.get_model_version_download_uri(resolved.name, str(resolved.version))
                # Not "models:/...": MLflow resolves those against the process-global registry URI.
                local = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=uri, dst_path=str(staging), tracking_uri=self.tracking_uri
                    )
                )
            if not local.is_dir() or local.resolve().parent != staging.resolve():
                raise CorruptCheckpoint(
                    f"{resolved} downloaded from {uri} is not a folder of checkpoint files; register it again"
                )
            problem = _verify_files(local, resolved, full=True, exact=True)
            if problem is not None:
                raise CorruptCheckpoint(
                    f"{resolved} downloaded from {uri} does not match its registered digests: {problem}. "
                    "The stored artifacts are damaged; register the original folder again."
                )
            _write_marker(local, resolved, _stat_records(local, resolved))
            os.replace(local, dest)
            log.info("fetched %s into %s (%d bytes)", resolved, dest, resolved.total_bytes)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# does a folder fit a preset?


def check_checkpoint(folder: str | Path, preset: str) -> None:
    """Raise :class:`PresetMismatch` unless the files in ``folder`` fit ``model_core`` preset ``preset``.

    The preset must exist (``model_core.configs.MODEL_PRESETS``). DiT and VAE presets: the checkpoint file
    (the names ``model_core.checkpoints.resolve_checkpoint_file`` looks for, or an ``*_fp8`` file) must hold
    exactly the preset's keys and shapes; safetensors headers and memory-mapped torch files are read, not
    the weights. Encoder presets: ``config.json`` must carry one of the preset's ``model_type`` values. Foley
    presets: the release's three files (MMDiT, DAC-VAE, Synchformer) with the preset's keys and shapes (the
    training-only and unused keys the loaders drop by name are allowed).
    The message names the preset the files fit best. Imports model_core (and torch) on first use.
    """
    from model_core.configs import (
        MODEL_PRESETS,
        DiTConfig,
        EncoderPreset,
        FoleyRelease,
        VAEConfig,
        encoder_refusal,
    )

    folder = Path(folder)
    config = MODEL_PRESETS.get(preset)
    if config is None:
        raise PresetMismatch(
            f"unknown preset {preset!r}{_fit_hint(folder)}; known presets: {', '.join(sorted(MODEL_PRESETS))}"
        )
    if isinstance(config, FoleyRelease):
        from model_core.audio.foley.release import release_problems

        problems = release_problems(folder, config)
        if problems:
            raise PresetMismatch(f"{folder} does not fit Foley preset {preset!r}: " + "\n".join(problems))
        return
    if isinstance(config, EncoderPreset):
        model_type = _model_type(folder)
        refusal = encoder_refusal(config, model_type)
        if refusal is not None:
            raise PresetMismatch(f"{folder} does not fit encoder preset {preset!r}: {refusal}")
        if model_type in config.model_types:
            return
        found = f"model_type {model_type!r}" if model_type else "no config.json with a model_type"
        raise PresetMismatch(
            f"{folder} does not fit encoder preset {preset!r}: it has {found}, the preset needs one of "
            f"{list(config.model_types)}{_fit_hint(folder)}"
        )
    found_shapes = _checkpoint_shapes(folder)
    if found_shapes is None:
        raise PresetMismatch(
            f"{folder} holds no checkpoint file for preset {preset!r}: expected mp_rank_00_model_states.pt, "
            "an *_fp8.pt file, pytorch_model.pt or a *.safetensors file"
        )
    _, shapes = found_shapes
    assert isinstance(config, (DiTConfig, VAEConfig))
    expected = _expected_shapes(preset)
    if isinstance(config, VAEConfig):
        shapes = _strip_vae_prefix(shapes)
    from model_core.checkpoints import diff_keys

    diff = diff_keys(shapes, expected)
    if diff.ok:
        return
    raise PresetMismatch(f"{folder} does not fit preset {preset!r}{_fit_hint(folder)}\n{diff.describe()}")


def _fit_hint(folder: Path) -> str:
    """``; the files fit preset ...`` for the preset(s) the files in ``folder`` fit best."""
    from model_core.configs import ENCODER_PRESETS

    model_type = _model_type(folder)
    encoders = [name for name, p in ENCODER_PRESETS.items() if model_type in p.model_types]
    if encoders:
        names = " or ".join(repr(name) for name in encoders)
        return f"; the files fit preset {names} (config.json model_type {model_type!r})"
    fits = _best_fit(folder)
    if fits is None:
        return "; no known preset fits the files"
    name, score = fits
    return f"; the files fit preset {name!r} best ({score:.0%} of keys with matching shapes): register them as {name!r}"


def _model_type(folder: Path) -> str | None:
    try:
        value = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _checkpoint_shapes(folder: Path) -> tuple[Path, dict[str, tuple[int, ...]]] | None:
    """The checkpoint file in ``folder`` and its ``{key: shape}``, read without loading the weights."""
    from model_core.checkpoints import CheckpointError, read_state_dict, resolve_checkpoint_file

    try:
        file = resolve_checkpoint_file(folder)
    except CheckpointError:
        fp8 = sorted(p for p in folder.glob("*_fp8.*") if p.suffix in (".pt", ".safetensors"))
        safetensors = sorted(folder.glob("*.safetensors"))
        candidates = fp8 or safetensors
        if len(candidates) != 1:
            return None
        file = candidates[0]
    try:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                return file, {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        # zip-format torch files are memory-mapped: the shapes come without reading the tensors
        return file, {k: tuple(v.shape) for k, v in read_state_dict(file).items()}
    except (CheckpointError, OSError, RuntimeError) as exc:
        raise PresetMismatch(f"{file} is not a readable checkpoint: {_short(exc)}") from exc


def _strip_vae_prefix(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """HunyuanCustom stores the VAE under ``vae.``; the loader strips it, and so does the check."""
    if any(k.startswith("vae.") for k in shapes):
        return {k[len("vae.") :]: v for k, v in shapes.items() if k.startswith("vae.")}
    return dict(shapes)


@functools.cache
def _expected_shapes(preset: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a DiT or VAE preset, built on the meta device (no memory)."""
    import torch

    from model_core.configs import MODEL_PRESETS, DiTConfig, VAEConfig

    config = MODEL_PRESETS[preset]
    with torch.device("meta"):
        if isinstance(config, DiTConfig):
            from model_core.dit import HunyuanDiT

            model: torch.nn.Module = HunyuanDiT(config)
        else:
            from model_core.vae import CausalVAE3D

            assert isinstance(config, VAEConfig), preset
            model = CausalVAE3D(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _best_fit(folder: Path) -> tuple[str, float] | None:
    """The DiT or VAE preset the weights in ``folder`` fit best and the share of keys with matching shapes."""
    from model_core.configs import PRESETS, VAE_PRESETS

    try:
        found = _checkpoint_shapes(folder)
    except PresetMismatch:
        return None
    if found is None:
        return None
    shapes = found[1]
    best: tuple[str, float] | None = None
    for name in [*PRESETS, *VAE_PRESETS]:
        have = _strip_vae_prefix(shapes) if name in VAE_PRESETS else shapes
        expected = _expected_shapes(name)
        same = sum(1 for k, shape in have.items() if expected.get(k) == shape)
        score = same / len(expected.keys() | have.keys())
        if same and (best is None or score > best[1]):
            best = (name, score)
    return best


# ---------------------------------------------------------------------------------------------------
# cache checks and helpers


def _verify_files(folder: Path, resolved: ResolvedModel, *, full: bool, exact: bool) -> str | None:
    """A description of the first mismatch between ``folder`` and ``resolved``, or None."""
    for rel, digest in sorted(resolved.files.items()):
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        expected_size = resolved.sizes.get(rel)
        if expected_size is not None and path.stat().st_size != expected_size:
            return f"{rel} has {path.stat().st_size} bytes, expected {expected_size}"
        if full and _sha256(path) != digest:
            return f"{rel} has sha256 {_sha256(path)[:12]}..., expected {digest[:12]}..."
    if exact:
        extra = sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file()
            and p.name != MARKER_NAME
            and p.relative_to(folder).as_posix() not in resolved.files
        )
        if extra:
            return f"unexpected files {extra}"
    return None


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _stat_records(folder: Path, resolved: ResolvedModel) -> dict[str, list[int]]:
    """(size, mtime_ns, ctime_ns, inode) of every file of ``resolved`` in ``folder``, taken after hashing."""
    return {rel: _stat_key(folder / rel) for rel in sorted(resolved.files)}


def _write_marker(folder: Path, resolved: ResolvedModel, stats: Mapping[str, list[int]]) -> None:
    marker = {
        "name": resolved.name,
        "version": resolved.version,
        "files": dict(resolved.files),
        "stat": dict(stats),
        "stat_taken_ns": time.time_ns(),
    }
    tmp = folder / f".{MARKER_NAME}.tmp"
    tmp.write_text(json.dumps(marker, sort_keys=True, indent=1))
    os.replace(tmp, folder / MARKER_NAME)


def _cache_problem(dest: Path, resolved: ResolvedModel, *, mode: str) -> str | None:
    """What is wrong with the cached entry ``dest`` (None: nothing), checked per ``mode``.

    ``full`` hashes every file, ``size`` compares sizes only, ``changed`` hashes the files whose
    (size, mtime, ctime, inode) differ from the marker's record, or were recorded within
    :data:`RACY_MTIME_NS` of their last change. The record is refreshed for every file hashed.
    """
    marker_path = dest / MARKER_NAME
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict):
        marker = None
        mode = "full"  # not written by a completed fetch: trust nothing
    elif marker.get("files") != dict(resolved.files):
        # e.g. a model deleted and registered again reuses version numbers
        return "its marker lists other digests than the registry"
    recorded = marker.get("stat") if marker is not None else None
    recorded = recorded if isinstance(recorded, dict) else {}
    taken_ns = marker.get("stat_taken_ns", 0) if marker is not None else 0
    stats: dict[str, list[int]] = {}
    hashed = False
    for rel, digest in sorted(resolved.files.items()):
        path = dest / rel
        if not path.is_file():
            return f"{rel} is missing"
        now = _stat_key(path)
        expected_size = resolved.sizes.get(rel)
        if expected_size is not None and now[0] != expected_size:
            return f"{rel} has {now[0]} bytes, expected {expected_size}"
        unchanged = (
            recorded.get(rel) == now and isinstance(taken_ns, int) and now[1] + RACY_MTIME_NS < taken_ns
        )
        if mode == "full" or (mode == "changed" and not unchanged):
            actual = _sha256(path)
            if actual != digest:
                return f"{rel} has sha256 {actual[:12]}..., expected {digest[:12]}..."
            stats[rel] = _stat_key(path)
            hashed = True
        elif rel in recorded:
            stats[rel] = list(recorded[rel])
    if hashed:
        _write_marker(dest, resolved, stats)
    return None


def _remove_tree(path: Path) -> None:
    # Rename first so the entry vanishes at once, then delete at leisure.
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.trash-", dir=path.parent))
    os.replace(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``sqlite:///rel.db``, ``sqlite:////abs.db``)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///") :].split("?", 1)[0]))


def _unavailable(uri: str, problem: str, fix: str) -> RegistryUnavailable:
    return RegistryUnavailable(f"cannot use the model registry at {uri}: {problem}. {fix}")


def _check_sqlite(uri: str, path: Path) -> None:
    """Fail at once, naming the fix, where MLflow would retry for minutes or end in a traceback."""
    if str(path) in ("", ":memory:"):
        return
    fix = (
        "Fix the path in MLFLOW_TRACKING_URI (sqlite:///relative.db or sqlite:////absolute.db), or unset it "
        f"for the embedded default {DEFAULT_TRACKING_URI}"
    )
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
    except OSError as exc:
        raise _unavailable(
            uri, f"its folder {folder} does not exist and cannot be created ({exc.strerror})", fix
        ) from exc
    if not folder.is_dir():
        raise _unavailable(uri, f"{folder} is not a folder", fix)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise _unavailable(
            uri,
            f"its folder {folder} is not writable ({exc.strerror}); sqlite writes its journal beside the database",
            "Give this user write access to the folder, or " + fix[0].lower() + fix[1:],
        ) from None
    if path.is_dir():
        raise _unavailable(uri, f"{path} is a folder, not a database file", fix)
    if not path.exists():
        return
    try:
        with path.open("r+b") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise _unavailable(
            uri, f"the database file {path} cannot be opened for writing ({exc.strerror})", fix
        ) from None
    if header and header != SQLITE_HEADER:
        raise _unavailable(
            uri,
            f"{path} is not an SQLite database (it starts with {header[:16]!r})",
            "Point MLFLOW_TRACKING_URI at the registry's database, or move the file away to start an empty one",
        )


def _probe_http(uri: str) -> None:
    """Check that an MLflow server answers at ``uri``; any HTTP answer below 500 will do (auth is MLflow's)."""
    import requests

    problem = ""
    for attempt in range(PROBE_TRIES):
        if attempt:
            time.sleep(1.0)
        try:
            with requests.get(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S, stream=True) as answer:
                if answer.status_code < 500:
                    return
                problem = f"it answered HTTP {answer.status_code}"
        except requests.Timeout:
            problem = f"no answer within {PROBE_TIMEOUT_S[0]:.0f} s to connect / {PROBE_TIMEOUT_S[1]:.0f} s to reply"
        except requests.RequestException as exc:
            problem = f"cannot connect ({_short(exc, 200)})"
    raise _unavailable(
        uri,
        f"the MLflow tracking server is unreachable after {PROBE_TRIES} tries: {problem}",
        "Start the server (or check the network path to it), or point MLFLOW_TRACKING_URI at a running one "
        f"(unset, it is the embedded default {DEFAULT_TRACKING_URI})",
    )


def _is_unreachable(exc: BaseException) -> bool:
    """True for connection refused/reset, timeouts, DNS failures, 5xx answers and unopenable databases."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        text = str(current)
        if re.search(r"API request to .* failed with (exception|timeout exception|error code 5\d\d)", text):
            return True
        if any(
            needle in text
            for needle in (
                "unable to open database file",
                "file is not a database",
                "database disk image is malformed",
            )
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
