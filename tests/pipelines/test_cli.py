"""The `adrender` command line: validate's output and exit codes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "campaign.yaml"

BAD = """\
id: spring
jobs:
  - id: intro
    prompt: A woman smiles.
    frames: 100
    subjects: [{word: man, image: man.png}]
"""


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"OK {EXAMPLE}: 4 jobs, 7 render units"


def test_validate_verbose_shows_resolved_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-v", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "meadow-mood: mode=t2v size=544x960 frames=129 steps=50 cfg=1.0 shift=7.0" in out
    assert "dit=hunyuancustom-editing-dit@production" in out


def test_validate_errors_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["validate", str(EXAMPLE), str(bad)]) == 1  # one bad file fails the run
    captured = capsys.readouterr()
    assert f"OK {EXAMPLE}" in captured.out
    lines = captured.err.splitlines()
    assert lines[0] == f"FAIL {bad}: 2 problem(s)"
    assert any(line.strip().startswith(f"{bad}: jobs[0].frames: got 100; frames must be 4k+1") for line in lines)
    assert any(f"{bad}: jobs[0].subjects[0].word: subject word 'man'" in line for line in lines)


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 1
    assert "absent.yaml: no such file" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["validate"], ["frobnicate"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
    capsys.readouterr()


def test_parser_lists_validate() -> None:
    assert "validate" in build_parser().format_help()


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("adrender")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]
    ok = subprocess.run([*cmd, "validate", str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("OK "), ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    failed = subprocess.run([*cmd, "validate", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert failed.returncode == 1 and "jobs[0].frames" in failed.stderr
