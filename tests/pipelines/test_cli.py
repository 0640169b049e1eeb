"""The `adrender` command line: validate's output and exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

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
    # the example's media are not shipped: --no-media checks the file alone
    assert main(["validate", "--no-media", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"OK {EXAMPLE}: 4 jobs, 9 render units"


def test_validate_verbose_shows_resolved_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--no-media", "-v", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "meadow-mood: mode=t2v size=544x960 frames=129 steps=50 cfg=1.0 shift=7.0" in out
    assert "dit=hunyuancustom-editing-dit@production" in out


def test_validate_errors_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main(["validate", "--no-media", str(EXAMPLE), str(bad)]) == 1  # one bad file fails the run
    captured = capsys.readouterr()
    assert f"OK {EXAMPLE}" in captured.out
    lines = captured.err.splitlines()
    assert lines[0] == f"FAIL {bad}: 2 problem(s)"
    assert any(
        line.strip().startswith(f"{bad}: jobs[0].frames: got 100; frames must be 4k+1") for line in lines
    )
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
    ok = subprocess.run(
        [*cmd, "validate", "--no-media", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("OK "), ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    failed = subprocess.run(
        [*cmd, "validate", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert failed.returncode == 1 and "jobs[0].frames" in failed.stderr


def write_campaign(folder: Path, **job: object) -> Path:
    data = {
        "id": "spring",
        "jobs": [
            {
                "id": "intro",
                "prompt": "A woman smiles.",
                "subjects": [{"word": "woman", "image": "woman.png"}],
                **job,
            }
        ],
    }
    file = folder / "campaign.yaml"
    file.write_text(yaml.safe_dump(data))
    return file


def test_validate_checks_media(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write_campaign(tmp_path, audio={"uri": "voice.wav"}, foley=False)
    assert main(["validate", str(file)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"FAIL {file}: 2 problem(s)"
    assert (
        f"  {file}: jobs[0].subjects[0].image: identity image woman.png: no such file; check the path"
        in err[1]
    )
    assert f"  {file}: jobs[0].audio.uri: driving audio voice.wav: no such file" in err[2]
    # --no-media checks the file alone
    assert main(["validate", "--no-media", str(file)]) == 0
    assert capsys.readouterr().out.strip() == f"OK {file}: 1 jobs, 1 render units"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_validate_prints_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from components.runtime.media import write_video

    write_video(tmp_path / "woman.png.mp4", [np.full((96, 96, 3), 128, np.uint8)], 25)
    (tmp_path / "woman.png.mp4").rename(tmp_path / "woman.png")  # ffmpeg reads a still from any container
    file = write_campaign(tmp_path, cfg_scale=1.0, negative_prompt="blurry", sizes=["720x1280", "1280x720"])
    assert main(["validate", "-v", str(file)]) == 0
    captured = capsys.readouterr()
    assert f"WARNING {file}: jobs[0].negative_prompt: is ignored: at cfg_scale 1.0" in captured.err
    assert captured.out.splitlines()[0] == f"OK {file}: 1 jobs, 2 render units"
    assert "intro: mode=image size=720x1280,1280x720 frames=129" in captured.out
