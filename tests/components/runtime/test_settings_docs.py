"""The README's configuration table names exactly the variables the code reads, with the code's defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.runtime.step import StepContext

README = Path(__file__).resolve().parents[3] / "README.md"


class RecordingEnv(dict[str, str]):
    """An empty environment that remembers every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def _table() -> dict[str, tuple[str, str]]:
    """{variable named in the first column: (the whole row, the default column)} of the README table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in README.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
            rows[name] = (line, cells[-1])
    return rows


def test_readme_lists_every_variable_the_code_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = RecordingEnv()
    ctx = StepContext.from_env(env)  # every variable a step reads, through the one place that reads them
    settings, registry = ctx.settings, ctx.registry
    table = _table()
    # fallbacks (AWS_*) are read too; the README names them in the row of the variable they stand in for
    fallbacks = {name for name in env.asked if name.startswith("AWS_")}
    assert set(table) == env.asked - fallbacks
    for name in fallbacks:
        assert any(name in row for row, _ in table.values()), f"{name} is read but not in the README"

    def default(name: str) -> str:
        return table[name][1].strip("`")

    assert default("ADRENDER_STORE") == "./.adrender/store"
    assert settings.store == (tmp_path / default("ADRENDER_STORE")).resolve().as_uri()
    assert default("ADRENDER_S3_ENDPOINT") == settings.s3_endpoint
    assert default("ADRENDER_S3_REGION") == settings.s3_region
    assert default("ADRENDER_S3_SECURE") == str(settings.s3_secure).lower()
    assert default("MLFLOW_TRACKING_URI") == registry.tracking_uri
    assert Path(default("ADRENDER_MODEL_CACHE")) == registry.cache_dir
    for name in ("ADRENDER_S3_ACCESS_KEY", "ADRENDER_PUSHGATEWAY", "ADRENDER_METRICS_PORT"):
        assert default(name) == "unset"
    assert (settings.s3_access_key, settings.pushgateway, settings.metrics_port) == (None, None, None)
    assert table["ADRENDER_DEVICE"][1] == "`cuda` when a GPU is visible, else `cpu`" and ctx.device == "cpu"
    assert Path(default("ADRENDER_WORK_DIR")) == ctx.work_dir
    assert default("ADRENDER_REWRITE_BACKEND") == ctx.rewrite_backend == "none"


def test_readme_keeps_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(
        r"^demo: .*\n(\t.*\n)*\t\$\(BIN\)/adrender render examples/demo/campaign\.yaml$",
        makefile,
        re.MULTILINE,
    )
    assert re.search(r"^test: .*\n\t\$\(BIN\)/python -m pytest", makefile, re.MULTILINE)
    assert "make test" in (README.parent / ".ci" / "run").read_text()
