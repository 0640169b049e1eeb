"""Artifact store: one interface, two backends (a local folder, and S3 through the ``minio`` client).

Every step reads and writes its artifacts through :class:`ObjectStore`. Keys are relative, ``/``-separated
paths such as ``renders/spring/job1-v0/vae_encode/3f2a9c0d1e4b5a67/latents.safetensors`` (see
:func:`components.runtime.manifest.content_key`). Guarantees, on both backends:

* **Atomic writes.** No partial object is ever visible under its final key. Locally the data goes to a
  temporary file in the same folder, is fsynced and moved into place with ``os.replace``. On S3 a single
  PUT or a completed multipart upload is the only way an object appears; a failed multipart upload is
  aborted so that no parts linger.
* **A sha256 on every object, verified on read.** On S3 it is the user metadata ``x-amz-meta-sha256``;
  locally a sidecar ``.<name>.meta.json`` holding ``{"sha256", "size", "metadata"}``. A mismatch raises
  :class:`IntegrityError` naming the key and both digests.
* **Retries.** S3 calls are retried with exponential backoff on connection errors and 5xx answers
  (:class:`RetryPolicy`); an upload is retried whole, so a server restarted mid-way either ends in a
  complete object or in :class:`StoreUnavailable` naming the endpoint.

Error hierarchy (the only exceptions a store raises for store problems; minio and urllib3 errors are
translated in :meth:`S3Store._translate`)::

    StoreError
     ├── StoreUnavailable   endpoint unreachable or answering 5xx after every retry
     ├── ObjectNotFound     nothing stored under the key
     ├── IntegrityError     the bytes do not match their recorded sha256, or no sha256 is recorded
     ├── InvalidKey         an unsafe key or key part (``..``, empty segment, leading dot...); also a ValueError
     └── StoreConfigError   a bad store URI, a missing bucket, credentials refused

Key rules: segments match ``[A-Za-z0-9_][A-Za-z0-9._=+@,~-]*`` (at most 255 characters; no leading dot,
which the local backend reserves for its sidecars and temporary files); a key has at most 1024 bytes.

Local atomicity of the data/sidecar pair: the data file is moved into place first, then its sidecar, both
under an exclusive ``flock`` of the key's ``.<name>.lock``; readers read the sidecar and open the data file
under a shared one. So a reader never pairs one write's bytes with another's digest, and writers racing on
one key (a retried step and the zombie pod it replaced) leave the last writer's pair. An object is visible
(``exists``, ``list``, reads) only when both files exist, so a new key appears at once. Keys resolve inside
the root only: a symlink that leads out of it is refused (:class:`InvalidKey`). File-system errors become
:class:`StoreError` (permission problems :class:`StoreConfigError`, a missing path :class:`ObjectNotFound`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import tempfile
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path, PurePath
from typing import IO, TYPE_CHECKING, Any, TypeVar

from components.runtime.settings import RuntimeSettings, SettingsError, normalise_store_uri

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

__all__ = [
    "IntegrityError",
    "InvalidKey",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "RetryPolicy",
    "S3Store",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailable",
    "canonical_json",
    "open_store",
    "payload_digest",
    "validate_key",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int], None]

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # the S3 minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB  # the S3 maximum of a part and of a single PUT
CHUNK = 1 * MiB
SHA256_META = "x-amz-meta-sha256"
CONTENT_HASH_CHARS = 16  # 64 bits of sha256: collisions are negligible at campaign scale (< 1e-9 at 1e5 keys)

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=+@,~-]*")
_META_KEY = re.compile(r"[a-z0-9][a-z0-9-]*")


# errors ------------------------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of every object-store error."""


class StoreUnavailable(StoreError):
    """The store's endpoint could not be reached (or kept answering 5xx) after every retry."""


class ObjectNotFound(StoreError):
    """No object is stored under the key."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"no object under key {key!r} in {where}")
        self.key = key


class IntegrityError(StoreError):
    """The stored bytes do not match their recorded sha256 (or none is recorded)."""

    def __init__(
        self, key: str, expected: str | None, actual: str, where: str, *, reason: str | None = None
    ) -> None:
        if reason is not None:
            message = f"object {key!r} in {where} is damaged: {reason}; write it again through the store"
        elif expected is None:
            message = (
                f"object {key!r} in {where} has no recorded sha256 (written outside adrender?); "
                "write it again through the store"
            )
        else:
            message = (
                f"object {key!r} in {where} is corrupted: expected sha256 {expected}, got {actual}; "
                "delete it and run the producing step again"
            )
        super().__init__(message)
        self.key = key
        self.expected = expected
        self.actual = actual


class InvalidKey(StoreError, ValueError):
    """A key or key part that is unsafe as an object name or a path."""


class StoreConfigError(StoreError):
    """The store is misconfigured: bad URI, missing bucket, refused credentials."""


# keys --------------------------------------------------------------------------------------------------


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidKey` saying what to fix."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"key must be a non-empty string, got {key!r}")
    if len(key.encode()) > 1024:
        raise InvalidKey(f"key {key[:60]!r}... is {len(key.encode())} bytes; the limit is 1024")
    if key.startswith("/"):
        raise InvalidKey(f"key {key!r} starts with '/'; keys are relative to the store root")
    for segment in key.split("/"):
        _validate_segment(segment, key)
    return key


def _validate_segment(segment: str, context: str) -> None:
    if segment == "":
        raise InvalidKey(f"key {context!r} has an empty segment ('//' or a trailing '/')")
    if segment in (".", ".."):
        raise InvalidKey(f"key {context!r} has a {segment!r} segment; keys cannot walk out of their folder")
    if len(segment) > 255:
        raise InvalidKey(f"key {context!r} has a segment of {len(segment)} characters; the limit is 255")
    if not _SEGMENT.fullmatch(segment):
        raise InvalidKey(
            f"key {context!r} has segment {segment!r}; use letters, digits and . _ = + @ , ~ - "
            "(not first: '.') and no spaces or backslashes"
        )


def _validate_prefix(prefix: str) -> str:
    """A list prefix may end in a partial segment or '/', but must not escape or contain unsafe parts."""
    if prefix == "":
        return prefix
    head, _, tail = prefix.rpartition("/")
    if head:
        validate_key(head)
    if tail and (
        tail in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._=+@,~-]*", tail) or tail.startswith(".")
    ):
        raise InvalidKey(f"list prefix {prefix!r} has an unsafe last part {tail!r}")
    return prefix


def _canonical(value: Any, where: str) -> Any:
    """Turn ``value`` into plain JSON types with one spelling per meaning."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Enum):
        return _canonical(value.value, where)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"payload{where} is {value!r}; NaN and infinities have no stable digest")
        # 6 and 6.0 mean the same cfg scale, and -0.0 the same as 0.0: one spelling each
        if value.is_integer():
            return int(value)
        return value
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if isinstance(k, Enum):
                k = k.value
            if not isinstance(k, str):
                raise TypeError(
                    f"payload{where} has key {k!r} of type {type(k).__name__}; keys must be strings"
                )
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_canonical(v, f"{where}{{}}") for v in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True, separators=(",", ":")))
    if hasattr(value, "model_dump"):  # pydantic models
        return _canonical(value.model_dump(mode="json"), where)
    if hasattr(value, "__dataclass_fields__"):
        return _canonical({f: getattr(value, f) for f in value.__dataclass_fields__}, where)
    raise TypeError(
        f"payload{where} is a {type(value).__name__}, which has no canonical JSON form; "
        "pass str, int, float, bool, None, Path, lists or string-keyed mappings"
    )


def canonical_json(payload: Mapping[str, Any]) -> str:
    """JSON of ``payload`` with sorted keys, no whitespace, integral floats as ints, paths as strings."""
    return json.dumps(_canonical(payload, ""), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_digest(payload: Mapping[str, Any]) -> str:
    """Full sha256 hex digest of :func:`canonical_json` of ``payload``."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


# the interface -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object."""

    key: str
    size: int
    sha256: str | None  # None only for objects written outside adrender
    metadata: Mapping[str, str] = field(default_factory=dict)
    etag: str | None = None  # S3 only; ends in "-<parts>" for multipart uploads
    modified: datetime | None = None


class ObjectStore(ABC):
    """Where artifacts live. Implementations: :class:`LocalStore`, :class:`S3Store`.

    ``metadata`` arguments are small string maps (keys ``[a-z0-9-]``) kept with the object.
    ``progress`` callbacks receive the number of bytes sent since the previous call.
    """

    @abstractmethod
    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        """Store the concatenation of ``chunks`` under ``key``; nothing is visible if ``chunks`` raises."""

    def put_bytes(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically."""
        return self.put_stream(key, [bytes(data)], metadata=metadata)

    @abstractmethod
    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Store the file at ``path`` under ``key`` atomically; the file must not change meanwhile."""

    @abstractmethod
    def open(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """Open ``key`` for streaming reads; reading to the end verifies the sha256 (IntegrityError)."""

    def get_bytes(self, key: str) -> bytes:
        """Return the verified bytes of ``key``."""
        with self.open(key) as f:
            return f.read()

    @abstractmethod
    def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Download ``key`` to ``path`` (atomically replaced, verified before it appears)."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size, recorded sha256 and metadata of ``key`` (ObjectNotFound if absent); reads no data."""

    def exists(self, key: str) -> bool:
        """Whether a complete object is stored under ``key``."""
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix`` (a plain string prefix, as in S3)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abstractmethod
    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=24)) -> str:
        """A URL that fetches ``key`` without credentials (S3: presigned GET; local: a ``file://`` URL)."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """The full URI of ``key`` (``s3://bucket/...`` or ``file:///...``)."""


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if not _META_KEY.fullmatch(k) or k == "sha256":
            raise ValueError(f"metadata key {k!r} must match [a-z0-9][a-z0-9-]* and not be 'sha256'")
        if not isinstance(v, str) or not v.isascii() or any(c in v for c in "\r\n"):
            raise ValueError(f"metadata value for {k!r} must be a single-line ASCII string, got {v!r}")
        out[k] = v
    return out


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class _VerifyingReader(io.RawIOBase):
    """Reads a stream, hashing as it goes; at end of stream checks size and sha256."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        *,
        key: str,
        where: str,
        sha256: str | None,
        size: int | None,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        if sha256 is None:
            raise IntegrityError(key, None, "", where)
        self._read = read
        self._key, self._where, self._expected, self._size = key, where, sha256, size
        self._hash = hashlib.sha256()
        self._seen = 0
        self._on_close = on_close
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        if size == 0:
            return b""
        data = self._read(size)
        if not data:
            self._finish()
            return b""
        self._hash.update(data)
        self._seen += len(data)
        return data

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        actual = self._hash.hexdigest()
        if actual != self._expected or (self._size is not None and self._seen != self._size):
            raise IntegrityError(self._key, self._expected, actual, self._where)

    def close(self) -> None:
        if not self.closed:
            try:
                self._on_close()
            finally:
                super().close()


# local folder ------------------------------------------------------------------------------------------

_READ_OPS = frozenset({"read", "stat", "look up", "delete"})


class LocalStore(ObjectStore):
    """Objects as files under ``root``; each with a sidecar ``.<name>.meta.json`` (sha256, size, metadata).

    Writers of one key take an exclusive ``flock`` on ``.<name>.lock`` while they move the data file and its
    sidecar into place, and readers a shared one while they read the sidecar and open the data file, so a
    reader always gets a data file with its own digest and concurrent writers always leave a matching pair
    (the last writer's). Only the two renames happen under the lock; the data is written before it.
    A writer killed between its two renames (no I/O happens there) leaves the new bytes with the previous
    digest: reads raise :class:`IntegrityError` until the key is written again.

    Every path is checked to stay inside ``root`` after symlinks are resolved (:class:`InvalidKey`
    otherwise), and file-system errors of the store's own files are translated in one place,
    :meth:`_os_errors`. Errors of the caller's files (``put_file``'s source, ``get_file``'s destination)
    are raised as they are.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.fsync = fsync  # False only for throwaway stores: skips the flush that makes writes crash-safe

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # plumbing

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*validate_key(key).split("/"))
        for candidate in (path, self._meta_path(path)):
            real = os.path.realpath(candidate)
            if real != str(self.root) and not real.startswith(str(self.root).rstrip("/") + "/"):
                raise InvalidKey(
                    f"key {key!r} resolves to {real}, outside the store root {self.root} (through a "
                    "symlink); the store never follows links out of its folder. Remove the link or point "
                    "ADRENDER_STORE at the real folder"
                )
        return path

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta.json")

    @staticmethod
    def _lock_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.lock")

    @contextlib.contextmanager
    def _os_errors(self, op: str, key: str) -> Iterator[None]:
        """Translate file-system errors of ``op`` on ``key`` into the store's error hierarchy."""
        try:
            yield
        except StoreError:
            raise
        except PermissionError as exc:
            raise StoreConfigError(
                f"permission denied to {op} {key!r} in {self.root} ({exc.filename}); check the owner and mode "
                "of the store folder, or whether it is mounted read-only"
            ) from exc
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            if op in _READ_OPS:
                raise ObjectNotFound(key, str(self.root)) from exc
            raise StoreError(
                f"cannot {op} {key!r} in {self.root}: {exc.strerror} ({exc.filename}); a key cannot be both "
                "an object and a folder of other keys"
            ) from exc
        except OSError as exc:
            raise StoreError(
                f"cannot {op} {key!r} in {self.root}: {exc.strerror or exc} ({exc.filename})"
            ) from exc

    @contextlib.contextmanager
    def _locked(self, path: Path, *, exclusive: bool) -> Iterator[None]:
        """Hold ``flock`` on the key's lock file: exclusive to replace the pair, shared to read it.

        Readers create nothing: without a lock file (a key never written, or written by an older version
        of this store) they read unlocked. A lock file removed by :meth:`delete` while we waited for it is
        opened again.
        """
        lock_path = self._lock_path(path)
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY, 0o666)
            except FileNotFoundError:
                if exclusive:
                    raise
                yield
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                try:
                    current = os.stat(lock_path).st_ino
                except FileNotFoundError:
                    current = None
                if current == os.fstat(fd).st_ino:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)

    def _read_meta(self, key: str, path: Path) -> dict[str, Any]:
        try:
            with self._meta_path(path).open("rb") as f:
                raw = f.read()
            if not path.is_file():
                raise FileNotFoundError(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key, str(self.root)) from None
        try:
            meta = json.loads(raw.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise IntegrityError(
                key, None, "", str(self.root), reason=f"its sidecar {self._meta_path(path).name} is not JSON"
            ) from exc
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256", ""), str):
            raise IntegrityError(
                key, None, "", str(self.root), reason=f"its sidecar {self._meta_path(path).name} is malformed"
            )
        return meta

    def _write_file(self, target: Path, chunks: Iterable[bytes], key: str) -> tuple[Path, str, int]:
        """Write ``chunks`` to a temporary file next to ``target``; return (temp path, sha256, size).

        Errors raised by ``chunks`` itself (the caller's source) pass through untranslated.
        """
        with self._os_errors("write", key):
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    h.update(chunk)
                    size += len(chunk)
                    with self._os_errors("write", key):
                        f.write(chunk)
                with self._os_errors("write", key):
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp), h.hexdigest(), size

    def _fsync_dir(self, folder: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # writes

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        meta = _check_metadata(metadata)
        path = self._path(key)
        with self._os_errors("write", key):
            path.parent.mkdir(parents=True, exist_ok=True)
        data_tmp, digest, size = self._write_file(path, chunks, key)
        sidecar = json.dumps({"sha256": digest, "size": size, "metadata": meta}, sort_keys=True).encode()
        try:
            meta_tmp, _, _ = self._write_file(self._meta_path(path), [sidecar], key)
        except BaseException:
            data_tmp.unlink(missing_ok=True)
            raise
        try:
            with self._os_errors("write", key), self._locked(path, exclusive=True):
                # data first, then its sidecar: a new key becomes visible when the sidecar lands
                os.replace(data_tmp, path)
                os.replace(meta_tmp, self._meta_path(path))
                self._fsync_dir(path.parent)
        except BaseException:
            data_tmp.unlink(missing_ok=True)
            meta_tmp.unlink(missing_ok=True)
            raise
        return ObjectInfo(key=key, size=size, sha256=digest, metadata=meta)

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
                    if progress is not None:
                        progress(len(chunk))

        return self.put_stream(key, chunks(), metadata=metadata)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._os_errors("delete", key):
            if not path.parent.is_dir():
                return
            with self._locked(path, exclusive=True):
                # data first: without it the object is gone at once, whatever happens to the sidecar
                path.unlink(missing_ok=True)
                self._meta_path(path).unlink(missing_ok=True)
                self._lock_path(path).unlink(missing_ok=True)
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()  # only empty folders go
            except OSError:
                break
            parent = parent.parent

    # reads

    def _open_pair(self, key: str, path: Path) -> tuple[dict[str, Any], IO[bytes]]:
        """The sidecar and an open data file that belong together (read under the shared lock)."""
        with self._os_errors("read", key), self._locked(path, exclusive=False):
            meta = self._read_meta(key, path)
            return meta, path.open("rb")

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[IO[bytes]]:
        meta, f = self._open_pair(key, self._path(key))
        with self._reader(key, meta, f) as reader:
            yield reader  # type: ignore[misc]

    def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self._path(key)
        meta, f = self._open_pair(key, src)
        try:
            info = self._info(key, meta, os.fstat(f.fileno()))
        except BaseException:
            f.close()
            raise
        with self._reader(key, meta, f) as reader:
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := reader.read(CHUNK):
                        out.write(chunk)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return info

    @contextlib.contextmanager
    def _reader(self, key: str, meta: Mapping[str, Any], f: IO[bytes]) -> Iterator[_VerifyingReader]:
        """A verifying reader over an already opened data file ``f`` and its sidecar ``meta``."""

        def read(n: int) -> bytes:
            with self._os_errors("read", key):
                return f.read(n)

        try:
            reader = _VerifyingReader(
                read,
                key=key,
                where=str(self.root),
                sha256=meta.get("sha256"),
                size=meta.get("size"),
                on_close=f.close,
            )
        except BaseException:
            f.close()
            raise
        with reader:
            yield reader

    def _info(self, key: str, meta: Mapping[str, Any], st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            sha256=meta.get("sha256"),
            metadata=dict(meta.get("metadata") or {}),
            modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
        )

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        meta, f = self._open_pair(key, path)
        with f:
            return self._info(key, meta, os.fstat(f.fileno()))

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``: its data file and its sidecar are both there.

        The sidecar is not parsed: a damaged object exists (and :meth:`list` lists it), and reading it
        raises :class:`IntegrityError`, as on S3 where a HEAD does not check the bytes either.
        """
        path = self._path(key)
        try:
            with self._os_errors("look up", key):
                return path.is_file() and self._meta_path(path).is_file()
        except ObjectNotFound:
            return False

    def list(self, prefix: str = "") -> list[str]:
        _validate_prefix(prefix)
        # walk only the folder the prefix names, not the whole store
        folder = self._path(prefix.rpartition("/")[0]) if "/" in prefix else self.root

        def failed(exc: OSError) -> None:
            if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                raise exc

        keys = []
        with self._os_errors("list", prefix):
            for dirpath, dirnames, filenames in os.walk(folder, onerror=failed):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                rel = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith("."):
                        continue
                    key = name if rel == "." else f"{rel}/{name}"
                    if key.startswith(prefix) and (Path(dirpath) / f".{name}.meta.json").is_file():
                        keys.append(key)
        return sorted(keys)

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=24)) -> str:
        self.stat(key)
        return self._path(key).as_uri()

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


# S3 ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for S3 calls: ``attempts`` tries, delays ``base * 2**i`` capped at ``max_delay``.

    Each delay is jittered down by up to a quarter so that many pods do not retry in lock step.
    """

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"RetryPolicy needs attempts >= 1 and 0 <= base_delay <= max_delay, got {self}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        raw = min(self.max_delay, self.base_delay * 2.0**attempt)
        return raw * (1 - 0.25 * random.random())


_RETRYABLE_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
}
_CREDENTIAL_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}


class S3Store(ObjectStore):
    """Objects in ``bucket`` under ``prefix`` on any S3 endpoint, through the ``minio`` client.

    Uploads larger than ``part_size`` use multipart uploads with parts of ``part_size`` bytes
    (``parallel_parts`` in flight), driven here rather than by ``Minio.put_object`` so that a failed
    upload is always aborted (its upload id is known) and progress is reported per part. Streams of unknown length are spooled to a temporary
    file first: S3 metadata (the sha256) has to be sent when the upload starts.
    Build one with :meth:`connect` or :func:`open_store`; nothing touches the network until a call.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str,
        part_size: int = DEFAULT_PART_SIZE,
        retry: RetryPolicy = RetryPolicy(),
        parallel_parts: int = 3,
    ) -> None:
        if parallel_parts < 1:
            raise ValueError(f"parallel_parts must be >= 1, got {parallel_parts}")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(
                f"part_size {part_size} is outside the S3 limits of {MIN_PART_SIZE} (5 MiB) to "
                f"{MAX_PART_SIZE} (5 GiB) bytes"
            )
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.part_size = part_size
        self.retry = retry
        self.parallel_parts = parallel_parts
        # multipart uploads whose abort failed while the server was away: (object name, upload id)
        self._orphans: list[tuple[str, str]] = []
        self._orphans_lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        secure: bool = True,
        part_size: int = DEFAULT_PART_SIZE,
        retry: RetryPolicy = RetryPolicy(),
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        parallel_parts: int = 3,
    ) -> S3Store:
        """Build a store for ``endpoint`` (``host:port``). Retries are done here, not inside urllib3."""
        import certifi
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            secure=secure,
            http_client=http,
        )
        scheme = "https" if secure else "http"
        return cls(
            client,
            bucket,
            prefix,
            endpoint=f"{scheme}://{endpoint}",
            part_size=part_size,
            retry=retry,
            parallel_parts=parallel_parts,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint!r}, {self.uri('')!r})"

    # plumbing

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @property
    def _where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"

    def _translate(self, exc: BaseException, op: str, key: str) -> StoreError | None:
        """Map a minio/urllib3/socket error to the store hierarchy; None for errors that are not ours."""
        import urllib3
        from minio.error import InvalidResponseError, S3Error, ServerError

        what = f"{op} {key!r}" if key else op
        if isinstance(exc, S3Error):
            status = exc.response.status if exc.response is not None else 0
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return ObjectNotFound(key, self._where)
            if exc.code == "NoSuchBucket":
                return StoreConfigError(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint}; create it "
                    "(S3Store.ensure_bucket()) or fix ADRENDER_STORE"
                )
            if exc.code in _CREDENTIAL_CODES:
                return StoreConfigError(
                    f"{self.endpoint} refused {what} ({exc.code}); check ADRENDER_S3_ACCESS_KEY / "
                    "ADRENDER_S3_SECRET_KEY and the bucket policy"
                )
            if status >= 500 or exc.code in _RETRYABLE_CODES:
                return StoreUnavailable(f"{self.endpoint} answered {status} {exc.code} to {what}")
            return StoreError(f"{self.endpoint} rejected {what}: {exc.code}: {exc.message}")
        if isinstance(exc, ServerError):
            return StoreUnavailable(f"{self.endpoint} answered {exc.status_code} to {what}: {exc}")
        if isinstance(exc, InvalidResponseError):
            code = getattr(exc, "_code", 0) or 0
            if code >= 500:
                return StoreUnavailable(f"{self.endpoint} answered {code} to {what}")
            if code in (401, 403):
                return StoreConfigError(
                    f"{self.endpoint} refused {what} (HTTP {code}); check ADRENDER_S3_ACCESS_KEY / "
                    "ADRENDER_S3_SECRET_KEY and the bucket policy"
                )
            return StoreError(f"{self.endpoint} gave an unreadable answer to {what}: {exc}")
        if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
            return StoreUnavailable(f"cannot reach S3 endpoint {self.endpoint} for {what}: {exc}")
        return None

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with retries on StoreUnavailable-class errors; translate everything else once.

        ``fn`` is retried whole: a download cut off mid-stream (the verifying reader raises
        :class:`StoreUnavailable`) starts again from the first byte, an upload from its first part.
        """
        started = time.monotonic()
        for attempt in range(self.retry.attempts):
            try:
                return fn()
            except StoreUnavailable as exc:  # translated inside fn, e.g. a connection lost while reading
                err: StoreError = exc
                cause: BaseException = exc
            except StoreError:
                raise
            except Exception as exc:
                translated = self._translate(exc, op, key)
                if translated is None:
                    raise
                if not isinstance(translated, StoreUnavailable):
                    raise translated from exc
                err, cause = translated, exc
            if attempt + 1 == self.retry.attempts:
                elapsed = time.monotonic() - started
                raise StoreUnavailable(
                    f"S3 endpoint {self.endpoint} unavailable: {op} {key!r} failed {self.retry.attempts} "
                    f"times over {elapsed:.1f} s; last error: {err}. Check that the server is up and "
                    "ADRENDER_S3_ENDPOINT / ADRENDER_S3_SECURE point at it"
                ) from cause
            delay = self.retry.delay(attempt)
            log.warning(
                "%s (attempt %d/%d); retrying in %.1f s", err, attempt + 1, self.retry.attempts, delay
            )
            time.sleep(delay)
        raise AssertionError("unreachable")

    # writes

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet."""

        def run() -> None:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)

        self._call("create bucket", self.bucket, run)

    def _upload(
        self,
        key: str,
        source: Callable[[], contextlib.AbstractContextManager[IO[bytes]]],
        size: int,
        digest: str,
        metadata: dict[str, str],
        progress: Progress | None,
    ) -> ObjectInfo:
        name = self._name(key)
        headers = {"Content-Type": "application/octet-stream", SHA256_META: digest}
        headers.update({f"x-amz-meta-{k}": v for k, v in metadata.items()})

        def attempt() -> str:
            with source() as f:
                if size <= self.part_size:
                    data = f.read()
                    # one PUT: left to itself, minio splits anything over 5 MiB into a multipart upload
                    result = self.client.put_object(
                        self.bucket,
                        name,
                        io.BytesIO(data),
                        len(data),
                        metadata=headers,
                        part_size=max(len(data), MIN_PART_SIZE),
                    )
                    if progress is not None:
                        progress(len(data))
                    return str(result.etag)
                return self._multipart(name, f, size, headers, progress)

        try:
            etag = self._call("put", key, attempt)
        except BaseException:
            self._warn_orphans()
            raise
        self._abort_orphans()
        return ObjectInfo(key=key, size=size, sha256=digest, metadata=metadata, etag=etag)

    def _multipart(
        self, name: str, f: IO[bytes], size: int, headers: dict[str, str], progress: Progress | None
    ) -> str:
        from minio.datatypes import Part

        upload_id = self.client._create_multipart_upload(self.bucket, name, dict(headers))
        try:
            etags: dict[int, str] = {}

            def collect(done: Iterable[Future[tuple[int, str, int]]]) -> None:
                for future in done:
                    number, etag, sent = future.result()
                    etags[number] = etag
                    if progress is not None:
                        progress(sent)

            # parts go up `parallel_parts` at a time: memory stays at that many parts, the link stays busy
            with ThreadPoolExecutor(max_workers=self.parallel_parts, thread_name_prefix="s3-part") as pool:
                pending: set[Future[tuple[int, str, int]]] = set()
                for number in range(1, math.ceil(size / self.part_size) + 1):
                    data = f.read(self.part_size)
                    if not data:
                        raise StoreError(f"source of {name!r} ended before its announced {size} bytes")
                    pending.add(pool.submit(self._upload_part, name, upload_id, number, data))
                    if len(pending) >= self.parallel_parts:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        collect(done)
                collect(pending)
            parts = [Part(number, etags[number]) for number in sorted(etags)]
            if f.read(1):
                raise StoreError(f"source of {name!r} is longer than its announced {size} bytes")
            result = self.client._complete_multipart_upload(self.bucket, name, upload_id, parts)
            return str(result.etag)
        except BaseException:
            if not self._abort(name, upload_id):
                with self._orphans_lock:
                    self._orphans.append((name, upload_id))
            raise

    def _upload_part(self, name: str, upload_id: str, number: int, data: bytes) -> tuple[int, str, int]:
        return number, self.client._upload_part(self.bucket, name, data, None, upload_id, number), len(data)

    def _abort(self, name: str, upload_id: str) -> bool:
        """Abort one multipart upload; True when it is gone (aborted now, or unknown to the server)."""
        from minio.error import S3Error

        try:
            self.client._abort_multipart_upload(self.bucket, name, upload_id)
        except S3Error as exc:
            return exc.code in ("NoSuchUpload", "NoSuchBucket")
        except Exception:  # noqa: BLE001 - server still away: try again after the next success
            return False
        return True

    def _abort_orphans(self) -> None:
        """Abort uploads whose abort failed earlier (the server was down); called after a success."""
        with self._orphans_lock:
            orphans, self._orphans = self._orphans, []
        left = [(name, upload_id) for name, upload_id in orphans if not self._abort(name, upload_id)]
        if left:
            with self._orphans_lock:
                self._orphans.extend(left)

    def _warn_orphans(self) -> None:
        with self._orphans_lock:
            orphans = list(self._orphans)
        for name, upload_id in orphans:
            log.warning(
                "multipart upload %s of %r on %s could not be aborted yet; this store aborts it after its "
                "next successful write, else the bucket's AbortIncompleteMultipartUpload lifecycle rule must",
                upload_id,
                name,
                self.endpoint,
            )

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        meta = _check_metadata(metadata)
        self._name(key)
        source_path = Path(path)
        digest, size = _hash_file(source_path)
        return self._upload(key, lambda: source_path.open("rb"), size, digest, meta, progress)

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        meta = _check_metadata(metadata)
        self._name(key)
        h = hashlib.sha256()
        size = 0
        with tempfile.SpooledTemporaryFile(max_size=self.part_size) as spool:
            for chunk in chunks:  # a failing source stops here, before anything reaches the server
                h.update(chunk)
                size += len(chunk)
                spool.write(chunk)

            @contextlib.contextmanager
            def rewound() -> Iterator[IO[bytes]]:
                spool.seek(0)
                yield spool

            return self._upload(key, rewound, size, h.hexdigest(), meta, None)

    # reads

    def _get(self, key: str) -> Any:
        return self._call("get", key, lambda: self.client.get_object(self.bucket, self._name(key)))

    def _reader(self, key: str, response: BaseHTTPResponse) -> _VerifyingReader:
        digest = response.headers.get(SHA256_META)
        length = response.headers.get("Content-Length")

        def read(n: int) -> bytes:
            try:
                return response.read(n)
            except Exception as exc:
                err = self._translate(exc, "read", key)
                if err is None:
                    raise
                raise err from exc

        def close() -> None:
            response.close()
            response.release_conn()

        try:
            return _VerifyingReader(
                read,
                key=key,
                where=self._where,
                sha256=digest,
                size=int(length) if length is not None else None,
                on_close=close,
            )
        except BaseException:
            close()
            raise

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[IO[bytes]]:
        with self._reader(key, self._get(key)) as reader:
            yield reader  # type: ignore[misc]

    def get_bytes(self, key: str) -> bytes:
        def run() -> bytes:
            with self._reader(key, self.client.get_object(self.bucket, self._name(key))) as reader:
                return reader.read()

        return self._call("get", key, run)

    def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)

        def run() -> ObjectInfo:
            response = self.client.get_object(self.bucket, self._name(key))
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
            try:
                with self._reader(key, response) as reader, os.fdopen(fd, "wb") as out:
                    while chunk := reader.read(CHUNK):
                        out.write(chunk)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return self._info(key, response.headers)

        return self._call("get", key, run)

    def _info(self, key: str, headers: Mapping[str, str]) -> ObjectInfo:
        meta = {
            k[len("x-amz-meta-") :].lower(): v
            for k, v in headers.items()
            if k.lower().startswith("x-amz-meta-") and k.lower() != SHA256_META
        }
        modified = headers.get("Last-Modified")
        return ObjectInfo(
            key=key,
            size=int(headers.get("Content-Length", 0)),
            sha256=headers.get(SHA256_META),
            metadata=meta,
            etag=(headers.get("ETag") or "").strip('"') or None,
            modified=_parse_http_date(modified) if modified else None,
        )

    def stat(self, key: str) -> ObjectInfo:
        obj = self._call("stat", key, lambda: self.client.stat_object(self.bucket, self._name(key)))
        meta = {
            k.lower()[len("x-amz-meta-") :]: v
            for k, v in (obj.metadata or {}).items()
            if k.lower().startswith("x-amz-meta-") and k.lower() != SHA256_META
        }
        digest = (obj.metadata or {}).get(SHA256_META)
        return ObjectInfo(
            key=key,
            size=int(obj.size or 0),
            sha256=digest,
            metadata=meta,
            etag=obj.etag,
            modified=obj.last_modified,
        )

    def list(self, prefix: str = "") -> list[str]:
        _validate_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0

        def run() -> list[str]:
            objects = self.client.list_objects(self.bucket, prefix=full or None, recursive=True)
            return sorted(o.object_name[cut:] for o in objects if not o.is_dir)

        return self._call("list", prefix, run)

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.remove_object(self.bucket, self._name(key)))

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=24)) -> str:
        self.stat(key)
        return str(self.client.presigned_get_object(self.bucket, self._name(key), expires=expires))

    def uri(self, key: str) -> str:
        if key == "":
            return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"s3://{self.bucket}/{self._name(key)}"


def _parse_http_date(value: str) -> datetime | None:
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


# opening -----------------------------------------------------------------------------------------------


def open_store(uri: str | None = None, settings: RuntimeSettings | None = None) -> ObjectStore:
    """Open the store at ``uri`` (default ``settings.store``): ``file:///path`` or ``s3://bucket/prefix``.

    ``settings`` defaults to :meth:`RuntimeSettings.from_env`; S3 endpoint, credentials, region and TLS come
    from it. A local store's folder is created on first write.
    """
    settings = settings if settings is not None else RuntimeSettings.from_env()
    try:
        uri = normalise_store_uri(uri or settings.store)
    except SettingsError as exc:
        raise StoreConfigError(str(exc)) from exc
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file":
        return LocalStore(urllib.parse.unquote(parts.path))
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise StoreConfigError(f"bucket name {bucket!r} in {uri!r} is not a valid S3 bucket name")
    try:
        if prefix:
            validate_key(prefix)
    except InvalidKey as exc:
        raise StoreConfigError(f"prefix of {uri!r}: {exc}") from exc
    return S3Store.connect(
        settings.s3_endpoint,
        bucket,
        prefix,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        region=settings.s3_region,
        secure=settings.s3_secure,
    )
