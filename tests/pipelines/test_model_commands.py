"""`adrender models ...` against a real MLflow registry: a sqlite file (the embedded default) and a real
``mlflow server`` (the session fixture of tests/conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from model_core.parallel.launch import free_port
from pipelines.cli import main

if TYPE_CHECKING:
    from conftest import MlflowServer  # tests/conftest.py

WEIGHTS = "diffusion_pytorch_model.safetensors"

# MLflow's own sqlalchemy models trigger this deprecation; nothing adrender can change.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


@pytest.fixture()
def registry_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'reg' / 'mlflow.db'}")
    monkeypatch.setenv("ADRENDER_MODEL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "reg").mkdir()
    return tmp_path


def _checkpoint(folder: Path, seed: int) -> Path:
    """A tiny VAE in the released layout (config.json + safetensors weights), distinct per seed."""
    import torch

    from model_core.vae import CausalVAE3D
    from model_core.vae.config import VAE_PRESETS
    from model_core.vae.loading import save_vae

    torch.manual_seed(seed)
    return save_vae(CausalVAE3D(VAE_PRESETS["tiny-hunyuan-vae"]), folder)


def _dit_checkpoint(folder: Path) -> Path:
    import torch

    from model_core.configs import PRESETS
    from model_core.dit import HunyuanDiT

    folder.mkdir(parents=True)
    model = HunyuanDiT(PRESETS["tiny-hunyuancustom-720p"])
    torch.save({"module": model.state_dict()}, folder / "mp_rank_00_model_states.pt")
    return folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_register_alias_resolve_fetch(registry_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v1 = _checkpoint(registry_env / "v1", seed=1)
    v2 = _checkpoint(registry_env / "v2", seed=2)
    assert (
        main(["models", "register", "vae", str(v1), "--preset", "tiny-hunyuan-vae", "--alias", "production"])
        == 0
    )
    out, err = capsys.readouterr()
    assert "registered vae/1" in out
    assert f"contacting model registry sqlite:///{registry_env / 'reg' / 'mlflow.db'}" in err
    assert main(["models", "register", "vae", str(v2), "--preset", "tiny-hunyuan-vae"]) == 0
    capsys.readouterr()

    assert main(["models", "resolve", "vae@production"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["version"] == 1
    assert resolved["files"][WEIGHTS] == _sha(v1 / WEIGHTS)
    assert resolved["excluded_territories"] == []

    assert main(["models", "alias", "vae", "production", "2"]) == 0
    capsys.readouterr()
    assert main(["models", "fetch", "vae@production"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / WEIGHTS).read_bytes() == (v2 / WEIGHTS).read_bytes()

    assert main(["models", "list"]) == 0
    assert "vae: versions 1, 2; aliases production->2" in capsys.readouterr().out


def test_fetch_verifies_by_default_and_quick_only_checks_sizes(
    registry_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = _checkpoint(registry_env / "v1", seed=1)
    assert main(["models", "register", "vae", str(v1), "--preset", "tiny-hunyuan-vae"]) == 0
    capsys.readouterr()
    assert main(["models", "fetch", "vae/1"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    weights = folder / WEIGHTS
    good = weights.read_bytes()

    def corrupt() -> bytes:
        # one flipped byte, in place: same size, same inode, and the old mtime put back
        before = weights.stat()
        with weights.open("r+b") as f:
            f.seek(len(good) // 2)
            f.write(bytes([good[len(good) // 2] ^ 0xFF]))
        os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert weights.stat().st_size == len(good)
        return weights.read_bytes()

    bad = corrupt()
    assert main(["models", "fetch", "vae/1", "--quick"]) == 0  # sizes only: not noticed
    assert Path(capsys.readouterr().out.strip()) == folder and weights.read_bytes() == bad
    assert main(["models", "fetch", "vae/1"]) == 0  # the default re-hashes: downloaded again
    assert Path(capsys.readouterr().out.strip()) == folder and weights.read_bytes() == good
    corrupt()
    assert main(["models", "fetch", "vae/1", "--verify"]) == 0  # the old flag still works: it is the default
    assert weights.read_bytes() == good


def test_register_refuses_an_unknown_preset_or_files_that_do_not_fit(
    registry_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vae = _checkpoint(registry_env / "vae", seed=1)
    dit = _dit_checkpoint(registry_env / "dit")
    assert (
        main(["models", "register", "vae", str(vae), "--preset", "tiny-hunyuan-vae", "--alias", "production"])
        == 0
    )
    capsys.readouterr()

    assert (
        main(["models", "register", "vae", str(vae), "--preset", "no-such-preset", "--alias", "production"])
        == 1
    )
    err = capsys.readouterr().err
    assert "adrender models register: unknown preset 'no-such-preset'" in err
    assert "the files fit preset 'tiny-hunyuan-vae' best" in err and "Traceback" not in err

    assert (
        main(["models", "register", "vae", str(dit), "--preset", "tiny-hunyuan-vae", "--alias", "production"])
        == 1
    )
    err = capsys.readouterr().err
    assert "does not fit preset 'tiny-hunyuan-vae'" in err
    assert "the files fit preset 'tiny-hunyuancustom-720p' best" in err

    # nothing was registered and the alias stayed where it was
    assert main(["models", "list"]) == 0
    assert "vae: versions 1; aliases production->1" in capsys.readouterr().out


def test_excluded_territories_are_registered_and_resolved(
    registry_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = _checkpoint(registry_env / "v1", seed=1)
    args = ["models", "register", "vae", str(v1), "--preset", "tiny-hunyuan-vae"]
    assert main([*args, "--excluded-territories", "eu,GB, KR"]) == 0
    assert "licence excludes EU,GB,KR" in capsys.readouterr().out
    assert main(["models", "resolve", "vae/1"]) == 0
    assert json.loads(capsys.readouterr().out)["excluded_territories"] == ["EU", "GB", "KR"]
    assert main([*args, "--excluded-territories", "EU,Europe"]) == 1
    assert "['EUROPE'] are not territory codes" in capsys.readouterr().err


def test_unknown_alias_is_one_clear_line(registry_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _checkpoint(registry_env / "v1", seed=1)
    assert main(["models", "register", "vae", str(registry_env / "v1"), "--preset", "tiny-hunyuan-vae"]) == 0
    capsys.readouterr()
    assert main(["models", "resolve", "vae@staging"]) == 1
    err = capsys.readouterr().err
    assert "adrender models resolve: " in err
    assert "staging" in err and "Traceback" not in err
    assert main(["models", "resolve", "not a ref"]) == 1


def test_unreachable_registry_fails_within_30_s_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ADRENDER_MODEL_CACHE", str(tmp_path / "cache"))
    started = time.monotonic()
    assert main(["models", "list"]) == 1
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"contacting model registry {uri}"
    assert len(err) == 2 and err[1].startswith(
        "adrender models list: cannot use the model registry at " + uri
    )
    assert "MLFLOW_TRACKING_URI" in err[1]


def test_commands_against_a_real_mlflow_server(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("ADRENDER_MODEL_CACHE", str(tmp_path / "cache"))
    v1 = _checkpoint(tmp_path / "v1", seed=3)
    register = [
        "models",
        "register",
        "cli-vae",
        str(v1),
        "--preset",
        "tiny-hunyuan-vae",
        "--alias",
        "production",
    ]
    assert main([*register, "--excluded-territories", "KR"]) == 0
    out, err = capsys.readouterr()
    assert "registered cli-vae/" in out and f"contacting model registry {mlflow_server.url}" in err
    assert main(["models", "resolve", "cli-vae@production"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["excluded_territories"] == ["KR"] and resolved["preset"] == "tiny-hunyuan-vae"
    assert main(["models", "fetch", "cli-vae@production"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert _sha(folder / WEIGHTS) == _sha(v1 / WEIGHTS)
