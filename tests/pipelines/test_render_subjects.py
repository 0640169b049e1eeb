"""Multi-subject jobs end to end: a tiny DiT registered with `adrender models register --max-subjects 2` renders a
two-subject job through the local runner; the same job on a version registered without it is refused by plan."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from components.runtime.media import probe
from components.runtime.step import StepContext
from model_core.tiny_models import write_tiny_model
from pipelines.cli import main
from pipelines.local import RenderOptions, render
from tests.campaigns import ALL_MODES, write_campaign

if TYPE_CHECKING:
    from conftest import TinyRegistry  # tests/conftest.py

TWO_SUBJECTS = {
    **ALL_MODES[0],
    "id": "woman-and-bottle",
    "subjects": [
        {"word": "woman", "image": "assets/woman.png"},
        {"word": "bottle", "image": "assets/bottle.png"},
    ],
    "foley": False,
}


def test_two_subjects_render_only_on_a_version_registered_for_them(
    make_ctx: Callable[..., StepContext],
    demo_media: Path,
    tmp_path: Path,
    tiny_registry: TinyRegistry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_registry.uri)
    monkeypatch.setenv("ADRENDER_MODEL_CACHE", str(tmp_path / "cli-cache"))
    folder = write_tiny_model("tiny-hunyuancustom-720p", tmp_path / "dit", seed=3)
    register = ["models", "register", "--preset", "tiny-hunyuancustom-720p", "--alias", "production"]
    assert main([*register, "cli-pair-dit", str(folder), "--max-subjects", "2"]) == 0
    assert "trained for 2 subjects" in capsys.readouterr().out
    assert main([*register, "cli-single-dit", str(folder)]) == 0
    with pytest.raises(SystemExit) as usage:  # argparse's usage error
        main([*register, "cli-none-dit", str(folder), "--max-subjects", "0"])
    assert usage.value.code == 2
    assert "--max-subjects takes a whole number >= 1, got '0'" in capsys.readouterr().err

    single = write_campaign(tmp_path / "single", demo_media, [TWO_SUBJECTS], models={"dit": "cli-single-dit@production"})  # fmt: skip
    with pytest.raises(ValueError, match=r"jobs\[0\]\.subjects: 2 subjects, but cli-single-dit/1 .*max_subjects >= 2"):  # fmt: skip
        render(make_ctx(tmp_path / "single-store"), RenderOptions(single, progress=False))

    pair = write_campaign(tmp_path / "pair", demo_media, [TWO_SUBJECTS], models={"dit": "cli-pair-dit@production"})  # fmt: skip
    report = render(make_ctx(tmp_path / "pair-store"), RenderOptions(pair, progress=False))
    assert [u.status for u in report.units] == ["published"], report.units
    mp4 = tmp_path / "pair-store/deliverables/test-campaign/woman-and-bottle/woman-and-bottle-v00.mp4"
    video = probe(mp4, count_frames=True).video
    assert video is not None and (video.height, video.width, video.frame_count) == (64, 64, 5)
