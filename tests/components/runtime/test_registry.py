"""The model registry against real MLflow: a sqlite tracking URI (the embedded default) and a real
``mlflow server`` subprocess whose proxied artifacts live on the S3 test server."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from components.runtime import registry as registry_module
from components.runtime.registry import (
    DEFAULT_CACHE_DIR,
    DEFAULT_TRACKING_URI,
    MARKER_NAME,
    TAG_FILES_PARTS,
    AliasNotFound,
    CorruptCheckpoint,
    ModelNotFound,
    ModelRef,
    PresetMismatch,
    Registry,
    RegistryError,
    RegistryUnavailable,
    ResolvedModel,
    VersionNotFound,
)
from model_core.parallel.launch import free_port

if TYPE_CHECKING:
    from conftest import MlflowServer, S3Server  # tests/conftest.py

MODEL = "tiny-dit"
PRESET = "tiny-whisper"  # an encoder preset: the check reads only config.json's model_type

# MLflow's own sqlalchemy models trigger this deprecation; nothing adrender can change.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


def write_checkpoint(folder: Path, seed: int) -> dict[str, bytes]:
    """Three small files in two levels, distinct per seed; returns {relative path: content}."""
    rng = __import__("random").Random(seed)
    contents = {
        "config.json": json.dumps({"model_type": "whisper", "seed": seed}).encode(),
        "transformer/weights.bin": bytes(rng.getrandbits(8) for _ in range(4096 + seed)),
        "vae.safetensors": bytes(rng.getrandbits(8) for _ in range(1024)),
    }
    for rel, data in contents.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return contents


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MARKER_NAME
    }


# ---------------------------------------------------------------------------------------------------
# references and configuration (no MLflow)


def test_model_ref_parses_alias_and_version_forms() -> None:
    assert ModelRef.parse("hunyuancustom-dit@production") == ModelRef("hunyuancustom-dit", alias="production")
    assert ModelRef.parse("models:/hunyuan-vae/3") == ModelRef("hunyuan-vae", version=3)
    assert str(ModelRef.parse(" clip.vit_L@staging ")) == "clip.vit_L@staging"
    assert str(ModelRef("m", version=12)) == "m/12"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("hunyuancustom-dit", "neither 'name@alias'"),
        ("a@b/3", "neither 'name@alias'"),
        ("dit/three", "'three' is not a positive integer"),
        ("dit/0", "positive integer"),
        ("bad name@production", "model name 'bad name' is invalid"),
        (".hidden@production", "model name '.hidden' is invalid"),
        ("dit@latest", "'latest' and 'v<number>' are reserved"),
        ("dit@v2", "model alias 'v2' is invalid"),
        ("dit@", "model alias '' is invalid"),
    ],
)
def test_model_ref_rejects_bad_text_with_the_expected_form(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        ModelRef.parse(text)
    assert needle in str(info.value)


def test_from_env_defaults_and_overrides(tmp_path: Path) -> None:
    default = Registry.from_env({})
    assert default.tracking_uri == DEFAULT_TRACKING_URI
    assert default.cache_dir == Path(DEFAULT_CACHE_DIR)
    # sqlite: artifacts go beside the database, as a local folder URI
    assert default.artifact_location == (Path(".adrender") / "mlartifacts").resolve().as_uri()

    custom = Registry.from_env(
        {"MLFLOW_TRACKING_URI": "http://mlflow.mlops:5000", "ADRENDER_MODEL_CACHE": str(tmp_path)}
    )
    assert custom.tracking_uri == "http://mlflow.mlops:5000"
    assert custom.cache_dir == tmp_path
    assert custom.artifact_location is None  # the server decides


def test_unreachable_server_fails_fast_naming_the_uri_and_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # no MLFLOW_HTTP_* settings: MLflow's own defaults would retry for about four minutes
    uri = f"http://127.0.0.1:{free_port()}"  # bound then closed: nothing listens
    registry = Registry(uri, tmp_path / "cache")
    started = time.monotonic()
    with (
        caplog.at_level(logging.INFO, logger="components.runtime.registry"),
        pytest.raises(RegistryUnavailable) as info,
    ):
        registry.resolve(f"{MODEL}@production")
    assert time.monotonic() - started < 30
    assert uri in str(info.value)
    assert "MLFLOW_TRACKING_URI" in str(info.value) and "Start the server" in str(info.value)
    assert f"contacting model registry {uri}" in caplog.messages


def test_server_that_accepts_but_never_answers_fails_within_30_s(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:  # the kernel accepts, nobody answers
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="no answer within") as info:
            Registry(uri, tmp_path / "cache").list_models()
        assert time.monotonic() - started < 30
    assert uri in str(info.value)


def _unwritable_folder(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/proc")  # root ignores permission bits; nothing can be created in /proc
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("unwritable folder", "is not writable"),
        ("folder is a file", "cannot be created"),
        ("database is a folder", "is a folder, not a database file"),
        ("garbage database", "is not an SQLite database"),
    ],
)
def test_bad_sqlite_paths_fail_at_once_naming_the_fix(tmp_path: Path, case: str, needle: str) -> None:
    if case == "unwritable folder":
        db = _unwritable_folder(tmp_path) / "mlflow.db"
    elif case == "folder is a file":
        (tmp_path / "plain-file").write_text("x")
        db = tmp_path / "plain-file" / "mlflow.db"
    elif case == "database is a folder":
        db = tmp_path / "mlflow.db"
        db.mkdir()
    else:
        db = tmp_path / "mlflow.db"
        db.write_bytes(b"this is no database" * 10)
    uri = f"sqlite:///{db}"
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable) as info:
        Registry(uri, tmp_path / "cache").list_models()
    assert time.monotonic() - started < 30
    assert needle in str(info.value) and uri in str(info.value)
    assert "MLFLOW_TRACKING_URI" in str(info.value)


# ---------------------------------------------------------------------------------------------------
# sqlite tracking URI (the embedded default)


@dataclass(frozen=True)
class SqliteSetup:
    uri: str
    root: Path
    v1: ResolvedModel
    v2: ResolvedModel
    files_v1: dict[str, bytes]
    files_v2: dict[str, bytes]


@pytest.fixture(scope="module")
def sqlite_setup(tmp_path_factory: pytest.TempPathFactory) -> SqliteSetup:
    """One database with two versions of MODEL; ``production`` starts on version 1."""
    root = tmp_path_factory.mktemp("sqlite-registry")
    uri = f"sqlite:///{root}/mlflow.db"
    registry = Registry(uri, root / "unused-cache")
    files_v1 = write_checkpoint(root / "ckpt-v1", seed=1)
    files_v2 = write_checkpoint(root / "ckpt-v2", seed=2)
    v1 = registry.register(MODEL, root / "ckpt-v1", PRESET, source="test://v1", aliases=["production"])
    v2 = registry.register(MODEL, root / "ckpt-v2", PRESET, source="test://v2", aliases=["staging"])
    return SqliteSetup(uri, root, v1, v2, files_v1, files_v2)


@pytest.fixture
def registry(sqlite_setup: SqliteSetup, tmp_path: Path) -> Registry:
    """A client of the shared database with a fresh, empty cache."""
    return Registry(sqlite_setup.uri, tmp_path / "cache")


def test_register_records_preset_digests_sizes_and_source(sqlite_setup: SqliteSetup) -> None:
    v1, v2 = sqlite_setup.v1, sqlite_setup.v2
    assert (v1.name, v1.version, v2.version) == (MODEL, 1, 2)
    assert v1.preset == PRESET
    assert v1.source == "test://v1"
    assert v1.files == {rel: sha(data) for rel, data in sqlite_setup.files_v1.items()}
    assert v1.sizes == {rel: len(data) for rel, data in sqlite_setup.files_v1.items()}
    assert v1.total_bytes == sum(len(d) for d in sqlite_setup.files_v1.values())
    # artifacts went to the folder beside the database, not to ./mlruns
    stored = list((sqlite_setup.root / "mlartifacts").rglob("transformer/weights.bin"))
    assert len(stored) == 2


def test_resolve_by_alias_and_by_version(registry: Registry, sqlite_setup: SqliteSetup) -> None:
    by_alias = registry.resolve(f"{MODEL}@production")
    by_version = registry.resolve(ModelRef(MODEL, version=1))
    assert by_alias == by_version == sqlite_setup.v1
    assert registry.resolve(f"{MODEL}@staging") == sqlite_setup.v2
    assert by_alias.files != sqlite_setup.v2.files
    assert ResolvedModel.from_dict(json.loads(json.dumps(by_alias.as_dict()))) == by_alias
    assert str(by_alias) == f"{MODEL}/1"


def test_moving_an_alias_changes_what_it_resolves_to(sqlite_setup: SqliteSetup, tmp_path: Path) -> None:
    registry = Registry(sqlite_setup.uri, tmp_path / "cache")
    registry.set_alias(MODEL, "canary", 1)
    assert registry.resolve(f"{MODEL}@canary").version == 1
    registry.set_alias(MODEL, "canary", 2)
    moved = registry.resolve(f"{MODEL}@canary")
    assert moved.version == 2
    assert moved.files == {rel: sha(data) for rel, data in sqlite_setup.files_v2.items()}
    assert registry.resolve(f"{MODEL}/1") == sqlite_setup.v1  # pinned versions do not move
    with pytest.raises(VersionNotFound, match="versions 1-2"):
        registry.set_alias(MODEL, "canary", 7)


def test_fetch_downloads_verified_files_once(registry: Registry, sqlite_setup: SqliteSetup) -> None:
    stale = registry.cache_dir / MODEL / ".1.download-killed" / "checkpoint"  # a fetch killed mid-way
    stale.mkdir(parents=True)
    (stale / "config.json").write_bytes(b"{")
    path = registry.fetch(sqlite_setup.v1)
    assert path == registry.cache_dir / MODEL / "1"
    assert read_tree(path) == sqlite_setup.files_v1
    marker = json.loads((path / MARKER_NAME).read_text())
    assert marker["files"] == dict(sqlite_setup.v1.files)
    inode = (path / "config.json").stat().st_ino
    assert registry.fetch(sqlite_setup.v1, full_verify=True) == path
    assert (path / "config.json").stat().st_ino == inode  # served from the cache, not downloaded again
    # only the entry (and its lock) remain: no staging folders
    assert sorted(p.name for p in (registry.cache_dir / MODEL).iterdir()) == [".1.lock", "1"]


def test_unknown_model_alias_and_version_name_what_exists(registry: Registry) -> None:
    with pytest.raises(ModelNotFound) as model_err:
        registry.resolve("no-such-model@production")
    assert "model 'no-such-model' is not registered" in str(model_err.value)
    assert f"registered models: {MODEL}" in str(model_err.value)

    with pytest.raises(AliasNotFound) as alias_err:
        registry.resolve(f"{MODEL}@champion")
    text = str(alias_err.value)
    assert f"{MODEL}@champion does not exist" in text
    assert "versions 1-2" in text
    assert "production" in text and "staging" in text
    assert f"adrender models alias {MODEL} champion VERSION" in text

    with pytest.raises(VersionNotFound) as version_err:
        registry.resolve(f"{MODEL}/9")
    assert f"version {MODEL}/9 does not exist" in str(version_err.value)
    assert "versions 1-2" in str(version_err.value)
    assert all(isinstance(e.value, RegistryError) for e in (model_err, alias_err, version_err))


def test_corrupt_cache_entries_are_detected_and_downloaded_again(
    registry: Registry, sqlite_setup: SqliteSetup, caplog: pytest.LogCaptureFixture
) -> None:
    path = registry.fetch(sqlite_setup.v1)
    weights = path / "transformer" / "weights.bin"

    # a truncated file: the cheap size check catches it
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="components.runtime.registry"):
        assert registry.fetch(sqlite_setup.v1) == path
    assert read_tree(path) == sqlite_setup.files_v1
    assert any("corrupt" in r.getMessage() and "weights.bin" in r.getMessage() for r in caplog.records)

    # same size, one flipped byte: caught by the default fetch (the file changed since it was hashed)
    data = bytearray(weights.read_bytes())
    data[10] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert registry.fetch(sqlite_setup.v1) == path
    assert read_tree(path) == sqlite_setup.files_v1

    # and by a full verification
    weights.write_bytes(bytes(data))
    assert registry.fetch(sqlite_setup.v1, full_verify=True) == path
    assert read_tree(path) == sqlite_setup.files_v1

    # no marker (an interrupted or foreign entry): verified in full even without asking
    data = bytearray(weights.read_bytes())
    data[10] ^= 0xFF
    weights.write_bytes(bytes(data))
    (path / MARKER_NAME).unlink()
    assert registry.fetch(sqlite_setup.v1) == path
    assert read_tree(path) == sqlite_setup.files_v1
    assert (path / MARKER_NAME).exists()

    # a missing file
    (path / "vae.safetensors").unlink()
    assert read_tree(registry.fetch(sqlite_setup.v1)) == sqlite_setup.files_v1


def test_unchanged_cached_files_are_not_hashed_again_but_changed_ones_are(
    registry: Registry, sqlite_setup: SqliteSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "RACY_MTIME_NS", 0)  # files just written count as settled
    path = registry.fetch(sqlite_setup.v1)
    hashed: list[str] = []
    sha256 = registry_module._sha256

    def counting(file: Path) -> str:
        if file.is_relative_to(path):  # the cache check, not the verification of a new download
            hashed.append(file.relative_to(path).as_posix())
        return sha256(file)

    monkeypatch.setattr(registry_module, "_sha256", counting)
    assert registry.fetch(sqlite_setup.v1) == path
    assert hashed == []  # size, mtime, ctime and inode as recorded: a 26 GB checkpoint is not re-read

    # corrupted in place, same size, same inode, even with its old mtime put back: caught, downloaded again
    weights = path / "transformer" / "weights.bin"
    before = weights.stat()
    with weights.open("r+b") as f:
        f.seek(10)
        f.write(bytes([weights.read_bytes()[10] ^ 0xFF]))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_ino) == (before.st_size, before.st_ino)
    assert registry.fetch(sqlite_setup.v1) == path
    assert hashed == ["transformer/weights.bin"]  # only the changed file was checked
    assert read_tree(path) == sqlite_setup.files_v1  # downloaded again

    # quick: sizes only, so a same-size corruption goes unnoticed (the CLI's --quick)
    weights = path / "transformer" / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert registry.fetch(sqlite_setup.v1, quick=True) == path
    assert weights.read_bytes() == bytes(data)
    assert read_tree(registry.fetch(sqlite_setup.v1)) == sqlite_setup.files_v1
    with pytest.raises(ValueError, match="exclude each other"):
        registry.fetch(sqlite_setup.v1, full_verify=True, quick=True)


def test_damaged_stored_artifacts_raise_corrupt_checkpoint_and_leave_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "cache")
    write_checkpoint(tmp_path / "ckpt", seed=5)
    resolved = registry.register("damaged", tmp_path / "ckpt", PRESET)
    (stored,) = (tmp_path / "mlartifacts").rglob("checkpoint/vae.safetensors")
    data = bytearray(stored.read_bytes())
    data[0] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match=r"damaged/1 .*vae\.safetensors has sha256"):
        registry.fetch(resolved)
    assert not (registry.cache_dir / "damaged" / "1").exists()
    assert [p.name for p in (registry.cache_dir / "damaged").iterdir()] == [".1.lock"]


def test_excluded_territories_are_recorded_and_resolved(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "cache")
    write_checkpoint(tmp_path / "ckpt", seed=6)
    registered = registry.register(
        "licensed", tmp_path / "ckpt", PRESET, excluded_territories=["kr", "EU", " gb", "EU"]
    )
    assert registered.excluded_territories == ("EU", "GB", "KR")
    resolved = registry.resolve("licensed/1")
    assert resolved == registered and resolved.excluded_territories == ("EU", "GB", "KR")
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(registry.tracking_uri, registry.tracking_uri).get_model_version("licensed", "1").tags
    assert tags["adrender.license.excluded_territories"] == "EU,GB,KR"
    assert resolved.as_dict()["excluded_territories"] == ["EU", "GB", "KR"]
    assert ResolvedModel.from_dict(json.loads(json.dumps(resolved.as_dict()))) == resolved

    # a comma-separated string works too; no exclusions are the default, also for manifests written before
    assert registry.register(
        "licensed", tmp_path / "ckpt", PRESET, excluded_territories="US,eu"
    ).excluded_territories == (
        "EU",
        "US",
    )
    unrestricted = registry.register("licensed", tmp_path / "ckpt", PRESET)
    assert unrestricted.excluded_territories == () == registry.resolve("licensed/3").excluded_territories
    old_manifest = {k: v for k, v in unrestricted.as_dict().items() if k != "excluded_territories"}
    assert ResolvedModel.from_dict(old_manifest).excluded_territories == ()
    with pytest.raises(ValueError, match=r"\['EUROPE'\] are not territory codes"):
        registry.register("licensed", tmp_path / "ckpt", PRESET, excluded_territories=["GB", "Europe"])
    assert registry.resolve("licensed/3") == unrestricted  # nothing registered


def _tiny_dit(folder: Path, preset: str = "tiny-hunyuancustom-720p") -> Path:
    import torch

    from model_core.configs import PRESETS
    from model_core.dit import HunyuanDiT

    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"module": HunyuanDiT(PRESETS[preset]).state_dict()}, folder / "mp_rank_00_model_states.pt")
    return folder


def _tiny_vae(folder: Path) -> Path:
    import torch

    from model_core.vae import CausalVAE3D
    from model_core.vae.config import VAE_PRESETS
    from model_core.vae.loading import save_vae

    torch.manual_seed(0)
    return save_vae(CausalVAE3D(VAE_PRESETS["tiny-hunyuan-vae"]), folder)


def test_register_checks_the_preset_and_that_the_files_fit_it(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "cache")
    dit = _tiny_dit(tmp_path / "dit")
    vae = _tiny_vae(tmp_path / "vae")
    whisper = tmp_path / "whisper"
    write_checkpoint(whisper, seed=3)
    assert registry.register("dit", dit, "tiny-hunyuancustom-720p", aliases=["production"]).version == 1
    assert registry.register("vae", vae, "tiny-hunyuan-vae").version == 1

    cases = [
        (dit, "no-such-preset", "unknown preset 'no-such-preset'", "'tiny-hunyuancustom-720p' best"),
        (dit, "tiny-hunyuan-vae", "does not fit preset 'tiny-hunyuan-vae'", "'tiny-hunyuancustom-720p' best"),
        (dit, "tiny-hunyuancustom-audio-720p", "22 missing", "'tiny-hunyuancustom-720p' best"),
        (
            vae,
            "tiny-hunyuancustom-720p",
            "does not fit preset 'tiny-hunyuancustom-720p'",
            "'tiny-hunyuan-vae' best",
        ),
        (whisper, "tiny-clip", "it has model_type 'whisper'", "'whisper-tiny' or 'tiny-whisper'"),
    ]
    for folder, preset, needle, fits in cases:
        with pytest.raises(PresetMismatch) as info:
            registry.register("dit", folder, preset, aliases=["production"])
        assert needle in str(info.value), str(info.value)
        assert f"the files fit preset {fits}" in str(info.value)
    # nothing was uploaded and the alias did not move
    assert registry.resolve("dit@production").version == 1
    assert [info.versions for info in registry.list_models()] == [(1,), (1,)]
    # the check can be replaced, e.g. for a format model_core does not read yet
    seen: list[tuple[Path, str]] = []
    registry.register("dit", dit, "custom", validate=lambda folder, preset: seen.append((folder, preset)))
    assert seen == [(dit, "custom")]


def test_a_naflex_siglip2_folder_is_refused_at_registration_as_the_encoder_refuses_it(tmp_path: Path) -> None:
    import torch
    from transformers import PretrainedConfig

    from model_core.audio.foley.encoders import SiglipImageEncoder

    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "cache")
    naflex = tmp_path / "naflex"
    naflex.mkdir()
    (naflex / "config.json").write_text('{"model_type": "siglip2"}')
    (naflex / "model.safetensors").write_bytes(b"weights")

    # the message the wrapper gives when such a model reaches it at load
    class NaFlex(torch.nn.Module):
        config = PretrainedConfig()

    NaFlex.config.model_type = "siglip2"
    with pytest.raises(ValueError) as at_load:
        SiglipImageEncoder(NaFlex())
    for preset in ("siglip2-base-patch16-512", "tiny-siglip2"):
        with pytest.raises(PresetMismatch) as info:
            registry.register("foley-image", naflex, preset)
        assert str(at_load.value) in str(info.value), str(info.value)
        assert f"does not fit encoder preset {preset!r}" in str(info.value)
    assert registry.list_models() == []  # refused before any upload
    # the released layout (a full SigLIP checkpoint, model_type "siglip") registers
    (naflex / "config.json").write_text('{"model_type": "siglip"}')
    assert registry.register("foley-image", naflex, "tiny-siglip2").version == 1


def test_many_files_split_the_digest_tag_and_resolve_back(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "cache")
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "whisper"}')
    for i in range(45):  # ~130 characters of JSON per file: more than one 5000-character tag value
        (folder / f"text_encoder/model-{i:05d}-of-00045.safetensors").parent.mkdir(exist_ok=True)
        (folder / f"text_encoder/model-{i:05d}-of-00045.safetensors").write_bytes(bytes([i]) * (i + 1))
    registered = registry.register("sharded", folder, PRESET)
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(registry.tracking_uri, registry.tracking_uri).get_model_version("sharded", "1").tags
    assert int(tags[TAG_FILES_PARTS]) >= 2
    assert all(len(v) <= 5000 for v in tags.values())
    resolved = registry.resolve("sharded/1")
    assert resolved == registered
    assert len(resolved.files) == 46


def test_register_rejects_empty_folder_and_bad_names(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="holds no files"):
        registry.register("m", tmp_path / "empty", PRESET)
    with pytest.raises(RegistryError, match="is not a folder"):
        registry.register("m", tmp_path / "missing", PRESET)
    with pytest.raises(ValueError, match="model name 'a/b' is invalid"):
        registry.register("a/b", tmp_path / "empty", PRESET)


def test_fetch_waits_for_the_lock_and_names_it_on_timeout(sqlite_setup: SqliteSetup, tmp_path: Path) -> None:
    from filelock import FileLock

    registry = Registry(sqlite_setup.uri, tmp_path / "cache", lock_timeout_s=0.2)
    (tmp_path / "cache" / MODEL).mkdir(parents=True)
    with FileLock(str(tmp_path / "cache" / MODEL / ".1.lock")):  # another process is downloading
        with pytest.raises(RegistryError, match=r"waited 0\.2 s .*tiny-dit/1.*delete .*\.1\.lock"):
            registry.fetch(sqlite_setup.v1)
        assert not (tmp_path / "cache" / MODEL / "1").exists()
    assert read_tree(registry.fetch(sqlite_setup.v1)) == sqlite_setup.files_v1


def _fetch_in_child(uri: str, cache: str, resolved: ResolvedModel, barrier: object, queue: object) -> None:
    # No torch here: the registry never imports it, so there are no intra-op threads to cap.
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("components.runtime.registry")
    logger.setLevel(logging.INFO)
    logger.addHandler(Collect())
    try:
        registry = Registry(uri, cache)
        # resolve first (opens the database) so that both processes reach fetch() together
        assert registry.resolve(resolved.ref) == resolved
        barrier.wait(timeout=120)  # type: ignore[attr-defined]
        path = registry.fetch(resolved)
        queue.put((str(path), any(m.startswith("fetched") for m in records), None))  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - report to the parent instead of hanging it
        queue.put((None, False, repr(exc)))  # type: ignore[attr-defined]


def test_two_processes_fetching_one_version_share_a_single_download(
    sqlite_setup: SqliteSetup, tmp_path: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    queue = ctx.Queue()
    cache = tmp_path / "shared-cache"
    procs = [
        ctx.Process(
            target=_fetch_in_child, args=(sqlite_setup.uri, str(cache), sqlite_setup.v2, barrier, queue)
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=180) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [err for _, _, err in results] == [None, None]
    paths = {path for path, _, _ in results}
    assert paths == {str(cache / MODEL / "2")}
    assert sorted(downloaded for _, downloaded, _ in results) == [False, True]  # one downloaded, one waited
    entry = cache / MODEL / "2"
    assert read_tree(entry) == sqlite_setup.files_v2
    assert sorted(p.name for p in (cache / MODEL).iterdir()) == [".2.lock", "2"]
    check = Registry(sqlite_setup.uri, cache)
    assert check.fetch(sqlite_setup.v2, full_verify=True) == entry


def test_list_models_reports_versions_and_aliases(registry: Registry, sqlite_setup: SqliteSetup) -> None:
    infos = {info.name: info for info in registry.list_models()}
    assert infos[MODEL].versions == (1, 2)
    assert infos[MODEL].aliases["production"] == 1
    assert infos[MODEL].aliases["staging"] == 2


# ---------------------------------------------------------------------------------------------------
# a real `mlflow server` with proxied artifacts on the S3 test server


def test_server_register_alias_resolve_fetch_with_artifacts_in_s3(
    mlflow_server: MlflowServer, s3_server: S3Server, tmp_path: Path
) -> None:
    from minio import Minio

    registry = Registry(mlflow_server.url, tmp_path / "cache")
    files_v1 = write_checkpoint(tmp_path / "v1", seed=11)
    files_v2 = write_checkpoint(tmp_path / "v2", seed=12)
    v1 = registry.register("server-dit", tmp_path / "v1", PRESET, aliases=["production"])
    v2 = registry.register("server-dit", tmp_path / "v2", PRESET)
    assert (v1.version, v2.version) == (1, 2)
    assert registry.resolve("server-dit@production") == v1

    registry.set_alias("server-dit", "production", 2)
    resolved = registry.resolve("server-dit@production")
    assert resolved == v2
    path = registry.fetch(resolved)
    assert path == tmp_path / "cache" / "server-dit" / "2"
    assert read_tree(path) == files_v2
    assert read_tree(registry.fetch(registry.resolve("server-dit/1"))) == files_v1

    # the proxied artifacts really are objects in the bucket, byte for byte
    s3 = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        region=s3_server.region,
    )
    stored: dict[str, str] = {}
    for obj in s3.list_objects(mlflow_server.bucket, recursive=True):
        if "/artifacts/checkpoint/" in obj.object_name:
            answer = s3.get_object(mlflow_server.bucket, obj.object_name)
            try:
                stored[obj.object_name] = sha(answer.read())
            finally:
                answer.close()
                answer.release_conn()
    for version in (v1, v2):
        for rel, digest in version.files.items():
            matches = {stored[key] for key in stored if key.endswith(f"/artifacts/checkpoint/{rel}")}
            assert digest in matches, f"{version}: {rel} not found in s3://{mlflow_server.bucket}"


def test_server_errors_name_the_model_alias_and_versions(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    registry = Registry(mlflow_server.url, tmp_path / "cache")
    write_checkpoint(tmp_path / "ck", seed=21)
    registry.register("server-errors", tmp_path / "ck", PRESET, aliases=["staging"])
    with pytest.raises(ModelNotFound, match="model 'server-missing' is not registered"):
        registry.resolve("server-missing@production")
    with pytest.raises(AliasNotFound, match="has aliases staging; versions 1"):
        registry.resolve("server-errors@production")
    with pytest.raises(VersionNotFound, match="server-errors/4 does not exist"):
        registry.resolve("server-errors/4")
