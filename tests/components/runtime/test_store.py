"""The object store, one suite over both backends: a local folder and S3 (moto's server on loopback)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from components.runtime.settings import RuntimeSettings
from components.runtime.store import (
    IntegrityError,
    InvalidKey,
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    RetryPolicy,
    S3Store,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    open_store,
)
from model_core.parallel.launch import free_port

MiB = 1024 * 1024


def _raw_client(s3_server) -> Minio:
    return Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        region=s3_server.region,
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    s3_server = request.getfixturevalue("s3_server")
    settings = RuntimeSettings(
        store=f"s3://{s3_server.new_bucket_name()}/artifacts/v1",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_secure=False,
    )
    s3 = open_store(settings=settings)
    assert isinstance(s3, S3Store)
    s3.ensure_bucket()
    return s3


def _no_debris(store: ObjectStore) -> None:
    """Nothing but complete objects and their sidecars on disk; no multipart upload left open on S3."""
    if isinstance(store, LocalStore):
        leftovers = [p.name for p in store.root.rglob("*.tmp")] if store.root.exists() else []
        assert leftovers == []
    else:
        assert isinstance(store, S3Store)
        uploads = store.client._list_multipart_uploads(store.bucket).uploads
        assert [u.object_name for u in uploads] == []


def _big_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(4 * MiB, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


# round trips ------------------------------------------------------------------------------------------


def test_round_trip_bytes_file_and_stream(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    info = store.put_bytes("c1/u1/plan/abc/manifest.json", data, metadata={"content-kind": "manifest"})
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("c1/u1/plan/abc/manifest.json") == data

    st = store.stat("c1/u1/plan/abc/manifest.json")
    assert (st.size, st.sha256, dict(st.metadata)) == (len(data), info.sha256, {"content-kind": "manifest"})

    # a stream of chunks and a streaming read in uneven pieces
    chunks = [os.urandom(n) for n in (1, 70_000, 0, 5)]
    store.put_stream("c1/u1/x.bin", iter(chunks))
    with store.open("c1/u1/x.bin") as f:
        pieces = []
        while piece := f.read(4097):
            pieces.append(piece)
    assert b"".join(pieces) == b"".join(chunks)

    src = tmp_path / "src.bin"
    src.write_bytes(data[:1000])
    store.put_file("c1/u1/file.bin", src)
    dest = tmp_path / "out" / "copy.bin"
    got = store.get_file("c1/u1/file.bin", dest)
    assert dest.read_bytes() == data[:1000]
    assert got.sha256 == hashlib.sha256(data[:1000]).hexdigest()

    # overwrite replaces content and digest
    store.put_bytes("c1/u1/file.bin", b"second")
    assert store.get_bytes("c1/u1/file.bin") == b"second"
    assert store.stat("c1/u1/file.bin").sha256 == hashlib.sha256(b"second").hexdigest()

    empty = store.put_bytes("c1/empty", b"")
    assert store.get_bytes("c1/empty") == b"" and empty.size == 0


def test_large_object_goes_multipart(store: ObjectStore, tmp_path: Path) -> None:
    size = 60 * 1000 * 1000
    src = tmp_path / "big.bin"
    digest = _big_file(src, size)
    sent: list[int] = []
    info = store.put_file("c1/u1/dit_sample/h/latents.bin", src, progress=sent.append)
    assert sum(sent) == size
    assert info.sha256 == digest
    if isinstance(store, S3Store):
        parts = math.ceil(size / (16 * MiB))
        assert len(sent) == parts
        assert info.etag is not None and info.etag.endswith(f"-{parts}")
        assert store.stat("c1/u1/dit_sample/h/latents.bin").etag == info.etag
    dest = tmp_path / "back.bin"
    store.get_file("c1/u1/dit_sample/h/latents.bin", dest)
    assert dest.stat().st_size == size
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest
    _no_debris(store)


def test_list_by_prefix_exists_and_delete(store: ObjectStore) -> None:
    keys = ["camp/u1/plan/h1/a.json", "camp/u1/plan/h1/b.json", "camp/u2/plan/h2/a.json", "campaign2/x"]
    for key in keys:
        store.put_bytes(key, key.encode())
    assert store.list() == sorted(keys)
    assert store.list("camp/") == keys[:3]
    assert store.list("camp/u1/") == keys[:2]
    assert store.list("camp") == sorted(keys)
    assert store.list("camp/u3/") == []
    assert store.exists("camp/u2/plan/h2/a.json")
    assert not store.exists("camp/u2/plan/h2/b.json")
    assert not store.exists("camp/u2")  # a folder is not an object

    store.delete("camp/u2/plan/h2/a.json")
    store.delete("camp/u2/plan/h2/a.json")  # idempotent
    assert not store.exists("camp/u2/plan/h2/a.json")
    assert store.list("camp/") == keys[:2]
    with pytest.raises(ObjectNotFound, match="camp/u2/plan/h2/a.json"):
        store.get_bytes("camp/u2/plan/h2/a.json")
    with pytest.raises(ObjectNotFound):
        store.stat("never/written")


# atomicity --------------------------------------------------------------------------------------------


class SourceFailed(RuntimeError):
    pass


def test_interrupted_stream_leaves_nothing(store: ObjectStore) -> None:
    def source() -> Iterator[bytes]:
        yield os.urandom(6 * MiB)
        yield os.urandom(6 * MiB)
        raise SourceFailed("decoder crashed")

    with pytest.raises(SourceFailed):
        store.put_stream("c1/u1/decode/h/video.mp4", source())
    assert not store.exists("c1/u1/decode/h/video.mp4")
    assert store.list() == []
    _no_debris(store)

    # an interrupted overwrite keeps the previous complete object
    store.put_bytes("c1/u1/decode/h/video.mp4", b"complete")
    with pytest.raises(SourceFailed):
        store.put_stream("c1/u1/decode/h/video.mp4", source())
    assert store.get_bytes("c1/u1/decode/h/video.mp4") == b"complete"
    assert store.list() == ["c1/u1/decode/h/video.mp4"]
    _no_debris(store)


def test_upload_interrupted_after_first_part_leaves_nothing(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    _big_file(src, 40 * MiB)
    seen: list[int] = []

    def progress(n: int) -> None:
        seen.append(n)
        raise SourceFailed("cancelled by the caller")

    with pytest.raises(SourceFailed):
        store.put_file("c1/u1/big.bin", src, progress=progress)
    assert seen and sum(seen) < 40 * MiB  # it failed part-way
    assert not store.exists("c1/u1/big.bin")
    assert store.list() == []
    _no_debris(store)


# integrity --------------------------------------------------------------------------------------------


def _tamper(store: ObjectStore, key: str, data: bytes, s3_raw: Minio | None) -> None:
    """Replace the stored bytes behind the store's back, keeping the recorded digest."""
    if isinstance(store, LocalStore):
        (store.root / key).write_bytes(data)
    else:
        assert isinstance(store, S3Store) and s3_raw is not None
        old = store.stat(key)
        name = f"{store.prefix}/{key}"
        s3_raw.put_object(
            store.bucket,
            name,
            __import__("io").BytesIO(data),
            len(data),
            metadata={"x-amz-meta-sha256": old.sha256},
        )


def test_sha256_mismatch_is_detected(
    store: ObjectStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    raw = _raw_client(request.getfixturevalue("s3_server")) if isinstance(store, S3Store) else None
    good = b"the real latents" * 1000
    info = store.put_bytes("c1/u1/vae/h/latents.bin", good)
    bad = bytearray(good)
    bad[777] ^= 0xFF
    _tamper(store, "c1/u1/vae/h/latents.bin", bytes(bad), raw)
    actual = hashlib.sha256(bytes(bad)).hexdigest()

    with pytest.raises(IntegrityError) as excinfo:
        store.get_bytes("c1/u1/vae/h/latents.bin")
    message = str(excinfo.value)
    assert "c1/u1/vae/h/latents.bin" in message and info.sha256 in message and actual in message
    assert (excinfo.value.expected, excinfo.value.actual) == (info.sha256, actual)

    with pytest.raises(IntegrityError), store.open("c1/u1/vae/h/latents.bin") as f:
        f.read()
    dest = tmp_path / "dest.bin"
    with pytest.raises(IntegrityError):
        store.get_file("c1/u1/vae/h/latents.bin", dest)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_object_without_digest_is_refused(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    if isinstance(store, LocalStore):
        path = store.root / "c1" / "foreign.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"dropped in by hand")
        (path.parent / ".foreign.bin.meta.json").write_text(json.dumps({"size": 18}))
    else:
        assert isinstance(store, S3Store)
        raw = _raw_client(request.getfixturevalue("s3_server"))
        raw.put_object(store.bucket, f"{store.prefix}/c1/foreign.bin", __import__("io").BytesIO(b"x"), 1)
    with pytest.raises(IntegrityError, match="no recorded sha256"):
        store.get_bytes("c1/foreign.bin")


# concurrent writers of one key --------------------------------------------------------------------------

RACE_KEYS = 40
RACE_ROUNDS = 50


def _race_content(writer: int, round_: int, key: int) -> bytes:
    # a different length and content per write, so a digest from one write never fits the data of another
    return f"writer {writer} round {round_} key {key};".encode() * (1 + (writer * 7 + round_ + key) % 13)


def _race_writer(root: str, writer: int, start: object) -> None:
    store = LocalStore(root, fsync=False)
    start.wait(timeout=60)  # type: ignore[attr-defined]
    for round_ in range(RACE_ROUNDS):
        for key in range(RACE_KEYS):
            store.put_bytes(
                f"race/k{key:02d}.bin", _race_content(writer, round_, key), metadata={"w": str(writer)}
            )


def test_two_processes_overwriting_the_same_keys_leave_every_key_readable(tmp_path: Path) -> None:
    """A retried step racing the zombie pod it replaced: both write the same keys, with other bytes."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    root = tmp_path / "store"
    writers = [ctx.Process(target=_race_writer, args=(str(root), w, start)) for w in (1, 2)]
    for p in writers:
        p.start()
    reader = LocalStore(root)
    torn: list[str] = []
    try:
        start.wait(timeout=60)
        # meanwhile a reader never sees one writer's bytes with the other's digest
        while any(p.is_alive() for p in writers):
            for key in reader.list("race/"):
                try:
                    reader.get_bytes(key)
                except IntegrityError as exc:
                    torn.append(str(exc))
    finally:
        for p in writers:
            p.join(timeout=120)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in writers] == [0, 0]
    assert torn == []
    assert len(reader.list("race/")) == RACE_KEYS
    for key in range(RACE_KEYS):
        data = reader.get_bytes(f"race/k{key:02d}.bin")
        info = reader.stat(f"race/k{key:02d}.bin")
        assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size == len(data)
        writer = int(info.metadata["w"])
        assert data == _race_content(writer, RACE_ROUNDS - 1, key)  # the last write of one of the two
    _no_debris(reader)


def test_concurrent_s3_overwrites_keep_data_and_digest_together(s3_server, tmp_path: Path) -> None:
    """On S3 one PUT carries the bytes and their sha256 header: racing writers cannot mix them."""
    bucket = s3_server.new_bucket_name()
    stores = [
        S3Store.connect(
            s3_server.endpoint,
            bucket,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            secure=False,
        )
        for _ in range(2)
    ]
    stores[0].ensure_bucket()
    keys, rounds = 8, 10

    def write(writer: int) -> None:
        for round_ in range(rounds):
            for key in range(keys):
                stores[writer - 1].put_bytes(f"race/k{key}.bin", _race_content(writer, round_, key))

    threads = [threading.Thread(target=write, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in range(keys):
        data = stores[0].get_bytes(f"race/k{key}.bin")
        assert stores[0].stat(f"race/k{key}.bin").sha256 == hashlib.sha256(data).hexdigest()
        assert data in (_race_content(1, rounds - 1, key), _race_content(2, rounds - 1, key))


# local folder: what lies on disk ------------------------------------------------------------------------


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not an artifact")
    (outside / ".secret.txt.meta.json").write_text(json.dumps({"sha256": "0" * 64, "size": 15}))
    store.put_bytes("c1/ok.bin", b"inside")
    (store.root / "c1" / "link").symlink_to(outside, target_is_directory=True)
    (store.root / "c1" / "file-link").symlink_to(outside / "secret.txt")
    for key in ("c1/link/secret.txt", "c1/file-link"):
        with pytest.raises(InvalidKey, match="outside the store root"):
            store.get_bytes(key)
        with pytest.raises(InvalidKey, match="outside the store root"):
            store.exists(key)
    with pytest.raises(InvalidKey, match="outside the store root"):
        store.put_bytes("c1/link/new.bin", b"escape")
    assert not (outside / "new.bin").exists()
    with pytest.raises(InvalidKey, match="outside the store root"):
        store.delete("c1/link/secret.txt")
    assert (outside / "secret.txt").exists()
    # a link that stays inside the root is just another path
    (store.root / "alias").symlink_to(store.root / "c1", target_is_directory=True)
    assert store.get_bytes("alias/ok.bin") == b"inside"


def test_file_system_errors_become_store_errors(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes("c1/object", b"x")
    # a key under an object: the object is a file, not a folder
    with pytest.raises(ObjectNotFound):
        store.get_bytes("c1/object/below")
    assert not store.exists("c1/object/below")
    with pytest.raises(StoreError, match="c1/object/below") as excinfo:
        store.put_bytes("c1/object/below", b"y")
    assert not isinstance(excinfo.value, ObjectNotFound)
    store.delete("c1/object/below")  # nothing there: not an error
    # a prefix is not an object
    with pytest.raises(ObjectNotFound):
        store.get_bytes("c1")
    if os.geteuid() == 0:  # root ignores permission bits: play a read-only mount instead

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied", str(args[0]))

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "replace", refuse)
            with pytest.raises(StoreConfigError, match="permission denied to write 'c1/new.bin'"):
                store.put_bytes("c1/new.bin", b"z")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "scandir", refuse)
            with pytest.raises(StoreConfigError, match="permission denied to list 'c1/'"):
                store.list("c1/")
        assert list((store.root / "c1").glob("*.tmp")) == []
        return
    locked = store.root / "c1"
    locked.chmod(0o500)  # read-only folder
    try:
        with pytest.raises(StoreConfigError, match="permission"):
            store.put_bytes("c1/new.bin", b"z")
        locked.chmod(0o000)
        for call in (
            lambda: store.get_bytes("c1/object"),
            lambda: store.exists("c1/object"),
            lambda: store.list("c1/"),
            lambda: store.delete("c1/object"),
        ):
            with pytest.raises(StoreConfigError, match="permission"):
                call()
    finally:
        locked.chmod(0o755)


def test_garbage_sidecar_reads_as_corrupt_and_exists(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes("c1/x.bin", b"data")
    (store.root / "c1" / ".x.bin.meta.json").write_bytes(b"\x00garbage{")
    assert store.exists("c1/x.bin")  # an object is there; reading it says it is damaged
    assert store.list("c1/") == ["c1/x.bin"]
    with pytest.raises(IntegrityError, match="c1/x.bin"):
        store.get_bytes("c1/x.bin")
    with pytest.raises(IntegrityError):
        store.stat("c1/x.bin")
    store.put_bytes("c1/x.bin", b"again")  # writing it again repairs it
    assert store.get_bytes("c1/x.bin") == b"again"


# urls and keys ----------------------------------------------------------------------------------------


def test_presigned_url_fetches_the_bytes(store: ObjectStore) -> None:
    data = os.urandom(50_000)
    store.put_bytes("c1/deliver/ad.mp4", data)
    url = store.presigned_url("c1/deliver/ad.mp4")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == data
    assert store.uri("c1/deliver/ad.mp4").endswith("/c1/deliver/ad.mp4")
    with pytest.raises(ObjectNotFound):
        store.presigned_url("c1/deliver/missing.mp4")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs/key",
        "a//b",
        "a/../b",
        "..",
        "a/./b",
        "a/b/",
        "a/.hidden",
        "a b/c",
        "a\\b",
        "a/b\x00c",
        "x" * 300,
    ],
)
def test_unsafe_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"x")
    assert store.list() == []


# content keys -----------------------------------------------------------------------------------------


def test_open_store_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = open_store(settings=RuntimeSettings.from_env({}))
    assert isinstance(local, LocalStore) and local.root == tmp_path / ".adrender" / "store"
    assert isinstance(open_store(str(tmp_path / "x")), LocalStore)
    with pytest.raises(StoreConfigError, match="scheme"):
        open_store("gs://bucket/x", RuntimeSettings.from_env({}))
    with pytest.raises(StoreConfigError, match="bucket name"):
        open_store("s3://Bad_Bucket/x", RuntimeSettings.from_env({}))


def test_missing_bucket_is_a_config_error(s3_server) -> None:
    store = S3Store.connect(s3_server.endpoint, s3_server.new_bucket_name(), secure=False)
    with pytest.raises(StoreConfigError, match="does not exist"):
        store.put_bytes("a", b"x")


# the S3 server going away -----------------------------------------------------------------------------


class RestartableS3:
    """moto's server on a fixed port, stopped and started again like a MinIO pod being rescheduled.

    moto keeps its state in the process, so objects survive the restart as they would on MinIO's disk.
    """

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._cls = ThreadedMotoServer
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.server.stop()
            self.running = False

    def start(self) -> None:
        self.server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.running = True


@pytest.fixture
def restartable_s3() -> Iterator[RestartableS3]:
    server = RestartableS3()
    try:
        yield server
    finally:
        server.stop()


def test_s3_restart_mid_upload_retries_to_a_complete_object(
    restartable_s3: RestartableS3, tmp_path: Path
) -> None:
    store = S3Store.connect(
        f"127.0.0.1:{restartable_s3.port}",
        "restart-bucket",
        "runs",
        secure=False,
        retry=RetryPolicy(attempts=8, base_delay=0.25, max_delay=2.0),
    )
    store.ensure_bucket()
    src = tmp_path / "big.bin"
    digest = _big_file(src, 40 * MiB)
    parts_sent = []
    restarter: list[threading.Timer] = []

    def progress(n: int) -> None:
        parts_sent.append(n)
        if len(parts_sent) == 1:  # the server goes away after the first part, for about a second
            restartable_s3.stop()
            restarter.append(threading.Timer(1.0, restartable_s3.start))
            restarter[0].start()

    started = time.monotonic()
    info = store.put_file("c1/u1/latents.bin", src, progress=progress)
    restarter[0].join()
    assert time.monotonic() - started > 1.0  # it really waited for the server
    assert len(parts_sent) > 3  # the first attempt's part, then a whole second upload
    assert info.sha256 == digest and store.stat("c1/u1/latents.bin").sha256 == digest
    assert hashlib.sha256(store.get_bytes("c1/u1/latents.bin")).hexdigest() == digest
    assert store.list() == ["c1/u1/latents.bin"]
    # the interrupted first upload was aborted once the server came back: no parts linger
    assert store.client._list_multipart_uploads(store.bucket).uploads == []


def test_s3_down_gives_a_clear_error_and_no_object(restartable_s3: RestartableS3) -> None:
    store = S3Store.connect(
        f"127.0.0.1:{restartable_s3.port}",
        "down-bucket",
        secure=False,
        retry=RetryPolicy(attempts=3, base_delay=0.1, max_delay=0.2),
    )
    store.ensure_bucket()
    restartable_s3.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as excinfo:
        store.put_bytes("c1/u1/x.bin", os.urandom(1000))
    assert time.monotonic() - started < 5
    message = str(excinfo.value)
    assert f"http://127.0.0.1:{restartable_s3.port}" in message and "3 times" in message
    with pytest.raises(StoreUnavailable):
        store.get_bytes("c1/u1/x.bin")
    restartable_s3.start()
    assert not store.exists("c1/u1/x.bin")
    assert store.list() == []


def test_settings_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from components.runtime.settings import SettingsError

    monkeypatch.chdir(tmp_path)
    default = RuntimeSettings.from_env({})
    assert default.store == (tmp_path / ".adrender" / "store").as_uri()
    assert (default.s3_endpoint, default.s3_secure, default.s3_region) == (
        "s3.amazonaws.com",
        True,
        "us-east-1",
    )
    assert (default.pushgateway, default.metrics_port, default.s3_access_key) == (None, None, None)

    env = {
        "ADRENDER_STORE": "s3://renders/prod/",
        "ADRENDER_S3_ENDPOINT": "http://minio.kubeflow:9000",
        "ADRENDER_S3_SECURE": "true",  # the URL scheme wins
        "AWS_ACCESS_KEY_ID": "aws-id",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "ADRENDER_S3_SECRET_KEY": "adrender-secret",
        "ADRENDER_S3_REGION": "eu-west-1",
        "ADRENDER_PUSHGATEWAY": "pushgateway.monitoring:9091",
        "ADRENDER_METRICS_PORT": "9400",
    }
    s = RuntimeSettings.from_env(env)
    assert s.store == "s3://renders/prod"
    assert (s.s3_endpoint, s.s3_secure) == ("minio.kubeflow:9000", False)
    assert (s.s3_access_key, s.s3_secret_key, s.s3_region) == ("aws-id", "adrender-secret", "eu-west-1")
    assert (s.pushgateway, s.metrics_port) == ("pushgateway.monitoring:9091", 9400)
    # one server per pod: torchrun's other local ranks do not race rank 0 for the port
    assert RuntimeSettings.from_env({**env, "LOCAL_RANK": "0"}).metrics_port == 9400
    assert RuntimeSettings.from_env({**env, "LOCAL_RANK": "3"}).metrics_port is None
    s3 = open_store(settings=s)
    assert isinstance(s3, S3Store) and s3.uri("a/b") == "s3://renders/prod/a/b"
    assert s3.endpoint == "http://minio.kubeflow:9000"
    assert (
        RuntimeSettings.from_env({"ADRENDER_STORE": "rel/dir"}).store == (tmp_path / "rel" / "dir").as_uri()
    )

    for bad, variable in [
        ({"ADRENDER_S3_SECURE": "maybe"}, "ADRENDER_S3_SECURE"),
        ({"ADRENDER_METRICS_PORT": "ninety"}, "ADRENDER_METRICS_PORT"),
        ({"ADRENDER_STORE": "s3://"}, "ADRENDER_STORE"),
        ({"ADRENDER_STORE": "file://host/x"}, "ADRENDER_STORE"),
        ({"ADRENDER_S3_ENDPOINT": "ftp://x:21"}, "ADRENDER_S3_ENDPOINT"),
    ]:
        with pytest.raises(SettingsError, match=variable):
            RuntimeSettings.from_env(bad)


class CuttingProxy:
    """A TCP relay to the S3 server that cuts the first connection whose answer passes ``cut_after`` bytes.

    It plays a network that drops a download mid-way; the S3 server behind it is the real one.
    """

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if answers:
                    sent += len(data)
                    with self._lock:
                        cut = sent > self.cut_after and self.cuts == 0
                        self.cuts += cut
                    if cut:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def test_download_cut_mid_stream_is_retried_from_the_start(s3_server, tmp_path: Path) -> None:
    proxy = CuttingProxy(s3_server.port, cut_after=2 * MiB)
    try:
        store = S3Store.connect(
            f"127.0.0.1:{proxy.port}",
            s3_server.new_bucket_name(),
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            secure=False,
            retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1),
        )
        store.ensure_bucket()
        data = os.urandom(8 * MiB)
        info = store.put_bytes("c1/u1/video.mp4", data)  # small answers: never cut
        assert proxy.cuts == 0
        assert info.etag is not None and "-" not in info.etag  # below part_size: one PUT, not multipart
        assert store.get_bytes("c1/u1/video.mp4") == data
        assert proxy.cuts == 1  # the first download really was cut off, and the retry completed
        proxy.cuts = 0
        dest = tmp_path / "video.mp4"
        store.get_file("c1/u1/video.mp4", dest)
        assert proxy.cuts == 1 and dest.read_bytes() == data
        assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]  # no partial download left
    finally:
        proxy.close()


def test_anonymous_read_refused_names_the_credentials(s3_server) -> None:
    bucket = s3_server.new_bucket_name()
    # moto, like a private MinIO bucket, refuses anonymous reads of an object written anonymously
    anonymous = S3Store.connect(s3_server.endpoint, bucket, secure=False, retry=RetryPolicy(attempts=1))
    anonymous.ensure_bucket()
    anonymous.put_bytes("c1/x.bin", b"x")
    with pytest.raises(
        StoreConfigError, match=r"refused get 'c1/x\.bin' \(HTTP 403\).*ADRENDER_S3_ACCESS_KEY"
    ):
        anonymous.get_bytes("c1/x.bin")
