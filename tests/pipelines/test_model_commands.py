"""`adrender models ...` against a real MLflow registry on a sqlite file (the embedded default)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipelines.cli import main


@pytest.fixture()
def registry_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'reg' / 'mlflow.db'}")
    monkeypatch.setenv("ADRENDER_MODEL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "reg").mkdir()
    return tmp_path


def _checkpoint(folder: Path, payload: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"preset": "tiny-hunyuan-vae"}')
    (folder / "model.safetensors").write_bytes(payload)
    return folder


def test_register_alias_resolve_fetch(registry_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v1 = _checkpoint(registry_env / "v1", b"one" * 1000)
    v2 = _checkpoint(registry_env / "v2", b"two" * 1000)
    assert main(["models", "register", "vae", str(v1), "--preset", "tiny-hunyuan-vae", "--alias", "production"]) == 0
    assert "registered vae/1" in capsys.readouterr().out
    assert main(["models", "register", "vae", str(v2), "--preset", "tiny-hunyuan-vae"]) == 0
    capsys.readouterr()

    assert main(["models", "resolve", "vae@production"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["version"] == 1
    assert resolved["files"]["model.safetensors"] == hashlib.sha256(b"one" * 1000).hexdigest()

    assert main(["models", "alias", "vae", "production", "2"]) == 0
    capsys.readouterr()
    assert main(["models", "fetch", "vae@production", "--verify"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "model.safetensors").read_bytes() == b"two" * 1000

    assert main(["models", "list"]) == 0
    assert "vae: versions 1, 2; aliases production->2" in capsys.readouterr().out


def test_unknown_alias_is_one_clear_line(registry_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _ = _checkpoint(registry_env / "v1", b"x")
    assert main(["models", "register", "vae", str(registry_env / "v1"), "--preset", "tiny-hunyuan-vae"]) == 0
    capsys.readouterr()
    assert main(["models", "resolve", "vae@staging"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("adrender models resolve: ")
    assert "staging" in err and "Traceback" not in err
    assert main(["models", "resolve", "not a ref"]) == 1
