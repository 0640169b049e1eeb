"""v2a_foley end to end on the tiny models: sound in the mp4, at the delivery loudness, the voice above the bed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import pytest

from components import plan as plan_step
from components import v2a_foley
from components.runtime.manifest import ShardManifest, StepManifest, UnitOutput, read_manifest
from components.runtime.media import loudness, probe
from components.runtime.step import StepContext
from components.runtime.step_checkpoints import write_checkpoint
from pipelines.dag import STAGES
from pipelines.local import run_stage
from tests.campaigns import ALL_MODES, write_campaign

ONE_SECOND = {"size": "64x64", "frames": 25, "steps": 3}  # 25 frames: 1 s at 25 fps, long enough to gate


def _decoded(ctx: StepContext, campaign: Path) -> list[tuple[str, str]]:
    """Plan and run every stage up to tiled_decode: (shard key, tiled_decode manifest key) per shard."""
    _, plan = plan_step.run(ctx, plan_step.PlanInputs(str(campaign)))
    before = STAGES[: [s.name for s in STAGES].index("tiled_decode") + 1]
    shards = []
    for ref in plan.shards:
        keys: dict[str, str] = {}
        for stage in before:
            keys[stage.name] = run_stage(
                ctx, stage, ref.key, {n: keys[u] for n, u in stage.inputs.items()}, 1
            )
        shards.append((ref.key, keys["tiled_decode"]))
    return shards


def _foley(ctx: StepContext, campaign: Path) -> tuple[dict[str, UnitOutput], dict[str, UnitOutput], set[str]]:
    """Run every stage up to tiled_decode, then v2a_foley, for every shard: (foley outputs, decoded outputs,
    the model versions the foley manifests name)."""
    foley: dict[str, UnitOutput] = {}
    decoded: dict[str, UnitOutput] = {}
    versions: set[str] = set()
    for shard_key, video_key in _decoded(ctx, campaign):
        out = read_manifest(ctx.store, v2a_foley.run(ctx, shard_key, {"video": video_key}), StepManifest)
        foley |= out.units
        decoded |= read_manifest(ctx.store, video_key, StepManifest).units
        versions |= set(out.model_versions)
    return foley, decoded, versions


def test_foley_soundtrack_is_aac_48k_at_the_delivery_loudness(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path
) -> None:
    image, audio, _, t2v = ALL_MODES
    jobs = [
        {**image, **ONE_SECOND, "foley": {"prompt": "water splashes, a bottle cap clicks"}},
        # audio mode with foley asked for: the bed goes under the voice
        {**audio, **ONE_SECOND, "foley": True},
        # a streaming profile, and a clip shorter than one 400 ms gating block (5 frames at 24 fps)
        {**t2v, "delivery": {"loudness_lufs": -16, "true_peak_dbtp": -1.5}},
        {**ALL_MODES[2], "foley": False},
        # audio mode, foley off (its default): the voice alone is the soundtrack
        {**audio, **ONE_SECOND, "id": "man-plain", "seeds": [7]},
    ]
    campaign = write_campaign(tmp_path, demo_media, jobs)
    ctx = make_ctx()
    units, decoded, versions = _foley(ctx, campaign)
    assert {u: o.status for u, o in units.items()} == dict.fromkeys(decoded, "ok"), units
    assert versions == {"hunyuanvideo-foley", "siglip2-base-patch16-512", "larger-clap-general"}

    root = tmp_path / "store"
    for unit, target, ceiling in (("woman-intro-v00", -23.0, -1.0), ("man-voiceover-v00", -23.0, -1.0)):
        got = units[unit]
        assert set(got.artifacts) == {"video", "foley"} and got.artifacts["foley"].key.endswith("/foley.wav")
        mp4 = root / got.artifacts["video"].key
        info = probe(mp4, count_frames=True)
        assert info.video is not None and info.audio is not None
        assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 48000, 2)
        assert info.video.frame_count == 25 and info.video.duration == pytest.approx(1.0, abs=0.01)
        # the AAC track lasts the video: within one AAC frame (1024 samples) and one video frame
        assert info.audio.duration == pytest.approx(info.video.duration, abs=1024 / 48000 + 1 / 25)
        level = loudness(mp4)  # the project's EBU R128 meter on the delivered file
        assert abs(level.integrated_lufs - target) <= 1.0, (unit, level)
        assert level.true_peak_dbtp <= ceiling, (unit, level)
        d = got.details
        assert d["foley"] == "on" and d["target_lufs"] == target and d["ceiling_dbtp"] == ceiling
        assert d["soundtrack_lufs"] == pytest.approx(level.integrated_lufs, abs=0.05)
        assert isinstance(d["bed_lufs"], float)  # QC reads the bed's loudness from here
        wav = probe(root / got.artifacts["foley"].key)
        assert wav.audio is not None and wav.audio.sample_rate == 48000

    voice = units["man-voiceover-v00"].details
    assert voice["voice_over_bed_lu"] >= 10.0, voice  # measured with the project meter in the step
    assert voice["bed_lufs"] <= voice["soundtrack_lufs"] - 10.0

    short = units["meadow-mood-v00"]
    assert short.details["target_lufs"] == -16.0 and "loudness_note" in short.details
    assert short.details["soundtrack_lufs"] == pytest.approx(-16.0, abs=1.0)  # on the clip looped to 3 s
    assert short.details["soundtrack_true_peak_dbtp"] <= -1.5
    assert probe(root / short.artifacts["video"].key).audio is not None

    plain = units["man-plain-v00"]
    assert set(plain.artifacts) == {"video"} and plain.details["soundtrack"] == "voice"
    level = loudness(root / plain.artifacts["video"].key)
    assert abs(level.integrated_lufs + 23.0) <= 1.0 and level.true_peak_dbtp <= -1.0, level
    assert "bed_lufs" not in plain.details
    assert units["man-voiceover-v00"].details["soundtrack"] == "voice + foley"

    # no foley, no voice: the decoded video itself, no copy
    off = units["bottle-swap-v00"]
    assert off.artifacts == {"video": decoded["bottle-swap-v00"].artifacts["video"]}
    assert off.details == {"foley": "off"}

    # a rerun finds every output and does no model work
    again = make_ctx()
    rerun, _, _ = _foley(again, campaign)
    assert {o.status for u, o in rerun.items() if u != "bottle-swap-v00"} == {"skipped"}
    assert "foley" not in {role for role, _ in again.model_cache}
    assert rerun["woman-intro-v00"].artifacts == units["woman-intro-v00"].artifacts


def test_foley_resumes_after_a_kill_bit_exactly_and_offloads_its_encoders(
    make_ctx: Callable[..., StepContext], demo_media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit killed after its step-10 checkpoint (an exception from the checkpoint write) resumes there on the
    rerun and delivers the bytes of an uninterrupted run; the encoders are off the compute device while the MMDiT
    and the DAC run (parked on `meta`, which keeps no weights: anything that still needed them would fail)."""
    import torch

    from model_core.audio.foley import offload
    from model_core.audio.foley.dac import DACVAE
    from model_core.audio.foley.model import FoleyDiT
    from model_core.audio.foley.synchformer import Synchformer
    from model_core.sampling import StepCheckpoint

    # the campaign asks for sequential offload; the runs below override it, except the last
    foley = {"prompt": "water splashes, a bottle cap clicks", "offload": "sequential"}
    job = {**ALL_MODES[0], **ONE_SECOND, "foley": foley}
    campaign = write_campaign(tmp_path, demo_media, [job])
    [(shard_key, video_key)] = _decoded(make_ctx(), campaign)
    shard = read_manifest(make_ctx().store, shard_key, ShardManifest)
    assert [u.foley_offload for u in shard.units] == ["sequential"]
    unit = "woman-intro-v00"
    store = tmp_path / "store"

    def step(ctx: StepContext, offload: str | None) -> UnitOutput:
        key = v2a_foley.run(ctx, shard_key, {"video": video_key}, offload=offload)
        return read_manifest(ctx.store, key, StepManifest).units[unit]

    def checkpoints() -> list[str]:
        return sorted(p.name for p in store.rglob("v2a_foley/*/ckpt-*.safetensors"))

    clean = step(make_ctx(), offload="none")  # the reference: uninterrupted, encoders resident
    assert clean.status == "ok" and clean.details["foley_resumed_from"] == 0 and checkpoints() == []
    for ref in clean.artifacts.values():
        (store / ref.key).unlink()

    # the interrupted run: encoders parked on meta, the write of the step-10 checkpoint is the last thing it does
    ctx = make_ctx()
    monkeypatch.setattr(offload, "PARK_DEVICE", torch.device("meta"))

    def write_then_die(c: StepContext, folder: str, ckpt: StepCheckpoint) -> str:
        key = write_checkpoint(c, folder, ckpt)  # the writer both sampling steps use
        if ckpt.step_index >= 10:
            raise RuntimeError("killed")
        return key

    seen: dict[str, set[str]] = {}

    def encoder_devices() -> set[str]:
        devices = set()
        for value in ctx.model_cache.values():
            models = value if isinstance(value, tuple) else (value,)
            for m in models:
                for name in ("synchformer", "vision", "model"):  # Foley's Synchformer, SigLIP2, CLAP
                    part = getattr(m, name, None)
                    if isinstance(part, torch.nn.Module):
                        devices |= {str(p.device) for p in part.parameters()}
                if hasattr(m, "dac"):
                    devices |= {str(p.device) for p in m.dac.encoder.parameters()}
        return devices

    def spy(cls: type, method: str) -> None:
        original = getattr(cls, method)

        def wrapped(self: object, *args: object, **kwargs: object) -> object:
            seen.setdefault(cls.__name__, set()).update(encoder_devices())
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, wrapped)

    spy(FoleyDiT, "forward")
    spy(DACVAE, "decode")
    monkeypatch.setattr(v2a_foley, "write_checkpoint", write_then_die)
    killed = step(ctx, offload="encoders")
    assert killed.status == "failed" and "killed" in (killed.error or "")
    assert checkpoints() == ["ckpt-0005.safetensors", "ckpt-0010.safetensors"]
    assert seen == {"FoleyDiT": {"meta"}}  # killed before the decode
    monkeypatch.undo()

    resumed = step(make_ctx(), offload="encoders")  # parked on the CPU
    assert resumed.status == "ok" and resumed.details["foley_resumed_from"] == 10
    assert resumed.artifacts == clean.artifacts  # same keys, same sha256: the same audio bits and mp4
    assert checkpoints() == []  # spent once the unit is stored

    # the campaign's sequential: the MMDiT and the DAC decoder, too, visit the device only for their phase; the
    # same bytes
    for ref in clean.artifacts.values():
        (store / ref.key).unlink()
    events: list[str] = []
    park = offload.park

    def logged_park(modules: Sequence[torch.nn.Module], device: torch.device | str) -> None:
        event = "park " + " ".join(sorted(type(m).__name__ for m in modules))
        if not events or events[-1] != event:
            events.append(event)
        park(modules, device)

    def log_call(cls: type, method: str) -> None:
        original = getattr(cls, method)

        def wrapped(self: object, *args: object, **kwargs: object) -> object:
            if not events or events[-1] != cls.__name__:
                events.append(cls.__name__)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, wrapped)

    monkeypatch.setattr(offload, "park", logged_park)
    for cls, method in ((FoleyDiT, "forward"), (DACVAE, "decode"), (Synchformer, "forward")):
        log_call(cls, method)
    assert step(make_ctx(), offload=None).artifacts == clean.artifacts
    assert events == [
        "park Conv1d FoleyDiT _Decoder",  # before the extraction
        "Synchformer",
        "park ClapTextEncoder SiglipImageEncoder Synchformer",
        "FoleyDiT",  # all 50 steps
        "park FoleyDiT",
        "DACVAE",
        "park Conv1d _Decoder",
    ], events


def test_an_unknown_offload_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"offload='all' is not one of none, encoders, sequential"):
        v2a_foley.run(cast(StepContext, object()), "shard-key", {"video": "key"}, offload="all")
