"""Campaign spec: the shipped example, resolution of defaults, seeds, YAML and JSON loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.runtime.spec import (
    DEFAULT_NEGATIVE_PROMPT,
    Campaign,
    CampaignError,
    Mode,
    ModelRef,
    derive_seed,
    load_campaign,
    parse_model_ref,
)
from model_core.sampling.options import MODE_DEFAULTS, SamplingMode

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "campaign.yaml"


def minimal(**job: Any) -> dict[str, Any]:
    return {"id": "c1", "jobs": [{"id": "j1", "prompt": "A woman smiles.", **job}]}


def write(tmp_path: Path, data: dict[str, Any], name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data, sort_keys=False))
    return path


def test_example_loads_with_every_mode() -> None:
    campaign = load_campaign(EXAMPLE)
    assert campaign.id == "spring-shampoo"
    assert [j.mode for j in campaign.jobs] == [Mode.IMAGE, Mode.AUDIO, Mode.EDITING, Mode.T2V]
    units = campaign.render_units()
    assert len(units) == sum(len(j.seeds) for j in campaign.jobs) == 7
    assert len({u.unit_id for u in units}) == len(units)
    assert campaign.kfp_cron == "0 0 6 * * 1"  # KFP wants seconds first
    # relative asset paths resolve against the file's folder
    assert campaign.jobs[0].subjects[0].image == (EXAMPLE.parent / "assets" / "woman.png").as_uri()


def test_example_per_mode_models() -> None:
    campaign = load_campaign(EXAMPLE)
    image, audio, editing, t2v = campaign.jobs
    assert campaign.models_for(image)["dit"] == "hunyuancustom-dit@production"
    assert campaign.models_for(audio)["dit"] == "hunyuancustom-audio-dit@production"
    assert "audio_encoder" in campaign.models_for(audio) and "foley" not in campaign.models_for(audio)
    assert campaign.models_for(editing)["dit"] == "hunyuancustom-editing-dit@production"
    assert campaign.models_for(t2v)["foley"] == "hunyuanvideo-foley/1"


def test_mode_defaults_resolve_from_facts() -> None:
    campaign = load_campaign(EXAMPLE)
    image, audio, editing, t2v = campaign.jobs
    # HUNYUAN_FACTS.md §2.6: 30 steps / cfg 7.5 / shift 13 (image, audio); 50 / 7.5 / 5 (editing)
    assert (image.steps, image.cfg_scale, image.flow_shift, image.embedded_guidance) == (30, 7.5, 13.0, None)
    assert (audio.steps, audio.cfg_scale, audio.flow_shift) == (30, 7.5, 13.0)
    assert audio.audio is not None and audio.audio.strength == 0.8
    assert (editing.steps, editing.cfg_scale, editing.flow_shift) == (50, 7.5, 5.0)
    assert editing.edit is not None and editing.edit.mask_expand == 5
    # §1.8: T2V 50 steps, cfg 1.0 with embedded guidance 6.0, shift 7.0, fps 24
    assert (t2v.steps, t2v.cfg_scale, t2v.flow_shift, t2v.embedded_guidance) == (50, 1.0, 7.0, 6.0)
    assert t2v.delivery.fps == 24 and image.delivery.fps == 25
    assert image.negative_prompt == DEFAULT_NEGATIVE_PROMPT and t2v.negative_prompt == ""
    assert not audio.foley.enabled and image.foley.enabled  # the driving audio is the soundtrack


def test_campaign_defaults_then_mode_defaults(tmp_path: Path) -> None:
    data = {
        "id": "c1",
        "defaults": {"steps": 40, "size": "544x960", "delivery": {"loudness_lufs": -16}, "variants": 3},
        "jobs": [
            {"id": "a", "prompt": "A dog runs.", "subjects": [{"word": "dog", "image": "dog.png"}]},
            {
                "id": "b",
                "prompt": "A dog runs.",
                "subjects": [{"word": "dog", "image": "dog.png"}],
                "steps": 20,
                "delivery": {"fps": 30},
                "seeds": [7],
            },
        ],
    }
    a, b = load_campaign(write(tmp_path, data)).jobs
    assert (a.steps, b.steps) == (40, 20)  # job > defaults
    assert str(a.size) == str(b.size) == "544x960"
    assert (
        a.cfg_scale == MODE_DEFAULTS[SamplingMode.IMAGE].cfg_scale
    )  # neither job nor defaults: mode default
    assert (a.delivery.loudness_lufs, a.delivery.fps) == (-16.0, 25)
    assert (b.delivery.loudness_lufs, b.delivery.fps) == (-16.0, 30)  # nested blocks merge field by field
    assert (a.variants, len(a.seeds)) == (3, 3)
    assert (b.variants, b.seeds) == (1, [7])  # explicit seeds set the variant count


def test_seeds_are_derived_deterministically(tmp_path: Path) -> None:
    path = write(tmp_path, minimal(variants=4))
    first, second = load_campaign(path), load_campaign(path)
    seeds = first.jobs[0].seeds
    assert seeds == second.jobs[0].seeds == [derive_seed("c1", "j1", i) for i in range(4)]
    assert len(set(seeds)) == 4 and all(0 <= s < 2**32 for s in seeds)
    other = load_campaign(write(tmp_path, {**minimal(variants=4), "id": "c2"}, "other.yaml"))
    assert other.jobs[0].seeds != seeds  # a different campaign renders different videos


def test_yaml_and_json_give_the_same_campaign(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    for job in data["jobs"]:  # make the relative assets absolute so both files agree
        for s in job.get("subjects", []):
            s["image"] = (EXAMPLE.parent / s["image"]).as_uri()
    from_yaml = load_campaign(write(tmp_path, data, "c.yaml"))
    from_json = load_campaign(write(tmp_path, data, "c.json"))
    assert from_yaml == from_json


def test_round_trip_through_dump() -> None:
    campaign = load_campaign(EXAMPLE)
    again = Campaign.model_validate(campaign.model_dump())
    assert again == campaign


def test_campaign_is_frozen() -> None:
    campaign = load_campaign(EXAMPLE)
    with pytest.raises(Exception, match="frozen"):
        campaign.jobs[0].steps = 1  # type: ignore[misc]


def test_foley_shorthand_and_subject_word_case(tmp_path: Path) -> None:
    data = minimal(subjects=[{"word": "Woman", "image": "s3://ads-assets/w.jpg"}], foley=False)
    job = load_campaign(write(tmp_path, data)).jobs[0]
    assert job.foley.enabled is False
    assert job.subjects[0].image == "s3://ads-assets/w.jpg"  # S3 URIs are kept as given


def test_multi_word_subject(tmp_path: Path) -> None:
    data = minimal(prompt="A red panda eats bamboo.", subjects=[{"word": "red panda", "image": "p.png"}])
    assert load_campaign(write(tmp_path, data)).jobs[0].mode is Mode.IMAGE


def test_parse_model_ref() -> None:
    assert parse_model_ref("hunyuan-vae@production") == ModelRef("hunyuan-vae", alias="production")
    assert parse_model_ref("hunyuan-vae/12") == ModelRef("hunyuan-vae", version=12)
    assert str(parse_model_ref("hunyuan-vae/12")) == "hunyuan-vae/12"
    # the registry's parser: what a campaign accepts is what `plan` can resolve
    from components.runtime import registry

    assert ModelRef is registry.ModelRef
    for bad, needle in [
        ("hunyuan-vae", "neither 'name@alias'"),
        ("a@b/1", "neither 'name@alias'"),
        ("hunyuan-vae@", "model alias '' is invalid"),
        ("hunyuan-vae/0", "positive integer"),
        ("hunyuan-vae@latest", "reserved by MLflow"),
        ("hunyuan-vae@v2", "reserved by MLflow"),
        ("hunyuan vae@production", "model name 'hunyuan vae' is invalid"),
    ]:
        with pytest.raises(ValueError, match=needle):
            parse_model_ref(bad)


def test_model_refs_are_stored_in_canonical_form(tmp_path: Path) -> None:
    data = {
        **minimal(),
        "models": {"vae": " models:/hunyuan-vae@production ", "foley": "hunyuanvideo-foley/2"},
    }
    campaign = load_campaign(write(tmp_path, data))
    assert (campaign.models.vae, campaign.models.foley) == ("hunyuan-vae@production", "hunyuanvideo-foley/2")


def test_missing_file_is_a_campaign_error(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"nope\.yaml: no such file"):
        load_campaign(tmp_path / "nope.yaml")
