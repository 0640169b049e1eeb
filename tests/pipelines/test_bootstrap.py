"""`adrender models bootstrap-tiny` against a real MLflow registry on a sqlite file (the embedded default)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from components.runtime.registry import Registry, RegistryError, ResolvedModel
from components.runtime.spec import Mode, ModelRefs
from model_core.audio.foley.synchformer import UNUSED_SYNCHFORMER_PREFIXES
from model_core.configs import ENCODER_PRESETS
from model_core.io.ffmpeg_decode import decode_audio, read_image, read_video_frames
from model_core.tiny_models import TINY_MODELS
from pipelines.bootstrap import TINY_SOURCE, bootstrap_tiny
from pipelines.cli import main

# MLflow's own sqlalchemy models trigger this deprecation; nothing adrender can change.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, list[ResolvedModel]]:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("bootstrap")
    registry = Registry(f"sqlite:///{root / 'mlflow.db'}", root / "cache")
    return registry, bootstrap_tiny(registry, work_dir=root / "work")


def test_the_tiny_names_are_the_campaign_defaults() -> None:
    defaults = ModelRefs()
    refs = [ref for mode in Mode for ref in defaults.for_mode(mode, foley=True).values()]
    names = {ref.split("@")[0] for ref in refs}
    # the QC models are not campaign references: qc_metrics resolves them by name
    qc = {
        n
        for n, p in TINY_MODELS.items()
        if p in ENCODER_PRESETS and ENCODER_PRESETS[p].family.startswith("qc-")
    }
    # the face detector is both: Avatar jobs name it for the presenter's face box
    assert names | qc == set(TINY_MODELS) and names & qc == {"face-detector"}
    assert all(ref.endswith("@production") for ref in refs)


def test_bootstrap_twice_registers_nothing_new(bootstrapped: tuple[Registry, list[ResolvedModel]]) -> None:
    registry, first = bootstrapped
    assert [(r.name, r.version, r.preset) for r in first] == [(n, 1, p) for n, p in TINY_MODELS.items()]
    assert all(r.source == TINY_SOURCE for r in first)
    seen: list[tuple[str, bool]] = []
    again = bootstrap_tiny(registry, progress=lambda r, registered: seen.append((r.name, registered)))
    assert again == first
    assert seen == [(name, False) for name in TINY_MODELS]
    assert {m.name: m.versions for m in registry.list_models()} == {name: (1,) for name in TINY_MODELS}


def test_every_model_resolves_fetches_and_loads(bootstrapped: tuple[Registry, list[ResolvedModel]]) -> None:
    from transformers import AutoModel, AutoTokenizer, ClapTextModelWithProjection

    from components.runtime.registry import check_checkpoint
    from model_core.audio import WhisperAudioEncoder
    from model_core.audio.foley.encoders import ClapTextEncoder, SiglipImageEncoder
    from model_core.audio.foley.release import load_release
    from model_core.checkpoints import load_model
    from model_core.configs import FOLEY_RELEASES, PRESETS, dit_preset
    from model_core.text import ClipPooledEncoder, LlavaTextEncoder
    from model_core.vae import load_vae

    registry, _ = bootstrapped
    for name, preset in TINY_MODELS.items():
        resolved = registry.resolve(f"{name}@production")
        folder = registry.fetch(resolved, full_verify=True)
        if preset in PRESETS or preset == "tiny-hunyuanvideo-avatar-704p":
            dit = load_model(preset, folder, dtype=torch.float32)
            assert dit.config == dit_preset(preset)
        elif preset == "tiny-hunyuan-vae":
            assert load_vae(folder).config.latent_channels == 16
        elif preset == "tiny-llava":
            llava = LlavaTextEncoder.from_pretrained(folder, with_vision=True, dtype=torch.float32)
            assert llava.supports_images and llava.encode(["一位女士微笑"]).states.shape == (1, 256, 32)
        elif preset == "tiny-clip":
            clip = ClipPooledEncoder.from_pretrained(folder, dtype=torch.float32)
            assert clip.encode(["a woman smiles"]).shape == (1, 16)
        elif preset == "tiny-whisper":
            whisper = WhisperAudioEncoder.from_pretrained(folder)
            assert whisper.hidden_states(torch.zeros(16000).numpy()).shape == (1, 1500, 5, 16)
        elif preset == "tiny-hunyuanvideo-foley":
            models = load_release(folder, FOLEY_RELEASES[preset])
            # as in the released file, the Synchformer's audio branch and offset head are there and unused by Foley
            assert models.dropped and all(k.startswith(UNUSED_SYNCHFORMER_PREFIXES) for k in models.dropped)
            assert models.dac.hop_length == 960 and models.dac.sample_rate == 48000
        elif preset == "tiny-siglip2":
            siglip = SiglipImageEncoder(AutoModel.from_pretrained(folder))
            assert siglip(torch.zeros(3, 3, 32, 32)).shape == (3, 32)
        elif preset == "tiny-clap":
            clap = ClapTextEncoder(
                ClapTextModelWithProjection.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
            )
            negative, prompt = clap.encode("a bottle clinks")
            assert negative.shape == prompt.shape and prompt.shape[-1] == 32
        else:
            check_checkpoint(folder, preset)


def test_an_alias_on_a_released_checkpoint_is_not_moved_without_force(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "cache")
    released = tmp_path / "released-whisper"
    released.mkdir()
    (released / "config.json").write_text('{"model_type": "whisper"}')
    registry.register("whisper-tiny", released, "whisper-tiny", source="release", aliases=["production"])
    with pytest.raises(
        RegistryError, match=r"whisper-tiny@production -> whisper-tiny/1 \(whisper-tiny\).*--force"
    ):
        bootstrap_tiny(registry)
    assert [m.name for m in registry.list_models()] == ["whisper-tiny"]  # nothing registered
    moved = bootstrap_tiny(registry, force=True)
    assert registry.resolve("whisper-tiny@production") == moved[list(TINY_MODELS).index("whisper-tiny")]
    assert registry.resolve("whisper-tiny@production").version == 2


def test_command_line_prints_each_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ADRENDER_MODEL_CACHE", str(tmp_path / "cache"))
    assert main(["models", "bootstrap-tiny", "--alias", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "render noise" in out
    assert "registered hunyuancustom-dit@tiny -> hunyuancustom-dit/1  preset tiny-hunyuancustom-720p" in out
    assert main(["models", "bootstrap-tiny", "--alias", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.count("unchanged ") == len(TINY_MODELS) and "registered " not in out
    assert main(["models", "bootstrap-tiny", "--alias", "latest"]) == 1
    assert "alias 'latest' is invalid" in capsys.readouterr().err


def test_demo_media_are_deterministic_and_fit_the_demo_campaign(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "examples" / "demo"
    digests = []
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run(
            [sys.executable, str(demo / "make_media.py"), str(out)], check=True, capture_output=True
        )
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1]
    media = tmp_path / "a"

    campaign = yaml.safe_load((demo / "campaign.yaml").read_text())
    referenced = set()
    for job in campaign["jobs"]:
        referenced |= {s["image"] for s in job.get("subjects", [])}
        referenced |= {job["audio"]["uri"]} if "audio" in job else set()
        referenced |= {job["edit"]["video"], job["edit"]["mask"]} if "edit" in job else set()
    assert {Path(r).name for r in referenced} == set(digests[0])
    assert {Path(r).parent.as_posix() for r in referenced} == {"assets"}

    for still in ("woman.png", "man.png", "bottle.png"):
        image = read_image(media / still)
        assert image.shape == (256, 256, 3) and image.std() > 20
    voice = decode_audio(media / "voiceover.wav", 16000)
    assert voice.shape == (int(5.2 * 16000),)
    frame_rms = np.sqrt((voice[: 129 * 640].reshape(129, 640) ** 2).mean(axis=1))
    assert frame_rms.max() > 0.1 and (frame_rms < 0.01).any()  # syllables and pauses, not a steady tone
    video, mask = read_video_frames(media / "shelf.mp4"), read_video_frames(media / "shelf_mask.mp4")
    assert video.shape == mask.shape == (129, 64, 64, 3)
    assert np.abs(video[0].astype(int) - video[-1].astype(int)).mean() > 2  # it moves
    white = mask.mean(axis=-1) > 127
    assert 0.05 < white.mean() < 0.5 and ((mask.mean(axis=-1) < 20) | white).mean() > 0.97
