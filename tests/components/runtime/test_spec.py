"""Campaign spec: the shipped example, resolution of defaults, seeds, YAML and JSON loading."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
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
    assert len(units) == sum(len(j.seeds) * len(j.sizes) for j in campaign.jobs) == 9
    assert campaign.territory == ["US", "CA"]
    assert len({u.unit_id for u in units}) == len(units)
    assert campaign.schedule == "0 6 * * 1"  # 5-field cron; `adrender schedule` translates it for KFP
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
    # HunyuanCustom's scripts: 30 steps / cfg 7.5 / shift 13 (image, audio); 50 / 7.5 / 5 (editing)
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


def test_foley_on_an_audio_job_is_allowed_and_pins_its_encoders(tmp_path: Path) -> None:
    # the bed is mixed under the voice and ducked while it speaks (v2a_foley), so asking for it is allowed
    data = minimal(
        subjects=[{"word": "woman", "image": "s3://ads-assets/w.jpg"}],
        audio={"uri": "s3://ads-assets/voice.wav"},
        foley=True,
    )
    campaign = load_campaign(write(tmp_path, data))
    job = campaign.jobs[0]
    assert job.mode is Mode.AUDIO and job.foley.enabled
    roles = campaign.models_for(job)
    assert roles["foley"] == "hunyuanvideo-foley@production"
    assert roles["foley_image_encoder"] == "siglip2-base-patch16-512@production"
    assert roles["foley_text_encoder"] == "larger-clap-general@production"


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


# the README's campaign ----------------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_campaign() -> str:
    section = README.read_text().split("## A campaign", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "README's 'A campaign' section lost its YAML example"
    return str(blocks[0])


def test_readme_campaign_is_valid(tmp_path: Path) -> None:
    file = tmp_path / "campaign.yaml"
    file.write_text(readme_campaign())
    campaign = load_campaign(file)
    assert campaign.warnings == ()
    assert len(campaign.render_units()) >= 1
    for job in campaign.jobs:
        assert campaign.models_for(job)["dit"] == "hunyuancustom-dit@production"


def test_one_dit_reference_for_a_one_mode_campaign(tmp_path: Path) -> None:
    data = {**minimal(subjects=[{"word": "woman", "image": "w.png"}]), "models": {"dit": "my-dit@staging"}}
    campaign = load_campaign(write(tmp_path, data))
    assert campaign.models_for(campaign.jobs[0])["dit"] == "my-dit@staging"
    assert campaign.models.dit.t2v == "hunyuanvideo-t2v-dit@production"  # other modes keep their default
    t2v = load_campaign(write(tmp_path, {**minimal(), "models": {"dit": "my-t2v@staging"}}, "t2v.yaml"))
    assert t2v.models_for(t2v.jobs[0])["dit"] == "my-t2v@staging"


# subject words in any script ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "word"),
    [
        ("一位女士手持洗发水，对着镜头微笑。", "女士"),
        ("女性がシャンプーを持って微笑む。", "女性"),
        ("여자가 샴푸를 들고 웃는다.", "여자"),  # the particle 가 is attached to the noun
        ("Женщина держит шампунь и улыбается.", "женщина"),  # case-insensitive
        ("Eine Frau mit Straßenhut lächelt.", "STRASSENHUT"),  # full case folding
        ("A red panda eats bamboo.", "red panda"),
    ],
)
def test_subject_words_in_any_script(tmp_path: Path, prompt: str, word: str) -> None:
    data = minimal(prompt=prompt, subjects=[{"word": word, "image": "s.png"}])
    job = load_campaign(write(tmp_path, data)).jobs[0]
    assert job.subjects[0].word == word and job.mode is Mode.IMAGE


# YAML -----------------------------------------------------------------------------------------------------------


def test_yaml_merge_keys(tmp_path: Path) -> None:
    file = tmp_path / "merge.yaml"
    file.write_text(
        "id: spring\n"
        "defaults: &fast {steps: 20, frames: 65}\n"
        "jobs:\n"
        "  - &base\n"
        "    id: a\n"
        "    prompt: A woman smiles.\n"
        "    subjects: [{word: woman, image: w.png}]\n"
        "    steps: 40\n"
        "  - <<: [*fast, *base]\n"  # of several merged mappings the first wins
        "    id: b\n"
        "  - <<: *base\n"
        "    id: c\n"
        "    steps: 30\n"  # the job's own key wins over the merged one
    )
    a, b, c = load_campaign(file).jobs
    assert [j.id for j in (a, b, c)] == ["a", "b", "c"]
    assert (a.steps, b.steps, c.steps) == (40, 20, 30)
    assert b.frames == 65 and c.subjects[0].word == "woman"


def test_numbers_are_strict_but_ints_are_numbers(tmp_path: Path) -> None:
    job = load_campaign(write(tmp_path, minimal(cfg_scale=7, steps=30))).jobs[0]
    assert job.cfg_scale == 7.0 and isinstance(job.cfg_scale, float)


# sampling settings: model_core's defaults and rules -------------------------------------------------------------


def test_sampling_options_are_what_the_sampler_uses() -> None:
    campaign = load_campaign(EXAMPLE)
    for job in campaign.jobs:
        options = job.sampling_options(1234)
        release = MODE_DEFAULTS[SamplingMode(job.mode.value)]
        assert options == release.with_(seed=1234)  # the example leaves every sampling setting at its default
        assert (options.num_steps, options.shift, options.cfg_scale) == (
            job.steps,
            job.flow_shift,
            job.cfg_scale,
        )
        assert options.embedded_guidance == job.embedded_guidance
    image, _, editing, t2v = campaign.jobs
    assert image.sampling_options(0).deepcache and editing.sampling_options(0).deepcache
    assert not t2v.sampling_options(0).deepcache


def test_job_settings_reach_the_sampling_options(tmp_path: Path) -> None:
    job = load_campaign(
        write(tmp_path, minimal(steps=20, cfg_scale=1.0, flow_shift=9.0, embedded_guidance=4.5))
    ).jobs[0]
    options = job.sampling_options(7)
    assert (options.num_steps, options.cfg_scale, options.shift, options.embedded_guidance, options.seed) == (
        20,
        1.0,
        9.0,
        4.5,
        7,
    )


def test_importing_the_spec_does_not_import_torch() -> None:
    code = "import sys, components.runtime.spec\nprint('torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


# warnings ------------------------------------------------------------------------------------------------------


def test_negative_prompt_at_cfg_1_is_a_warning(tmp_path: Path) -> None:
    data = minimal(subjects=[{"word": "woman", "image": "w.png"}], cfg_scale=1.0, negative_prompt="blurry")
    file = write(tmp_path, data)
    campaign = load_campaign(file)
    (warning,) = campaign.warnings
    assert (warning.file, warning.path, warning.severity) == (str(file), "jobs[0].negative_prompt", "warning")
    assert "is ignored: at cfg_scale 1.0" in warning.message and "remove negative_prompt" in warning.message


def test_no_default_negative_prompt_without_cfg(tmp_path: Path) -> None:
    # an image job at cfg 1.0 does not get the default negative prompt it could not use, and no warning
    data = minimal(subjects=[{"word": "woman", "image": "w.png"}], cfg_scale=1.0)
    campaign = load_campaign(write(tmp_path, data))
    assert campaign.jobs[0].negative_prompt == "" and campaign.warnings == ()
    assert load_campaign(EXAMPLE).warnings == ()


def test_a_size_the_released_models_do_not_render_is_a_warning(tmp_path: Path) -> None:
    # plan refuses it for a released DiT; the tiny test models of the demo render it
    campaign = load_campaign(write(tmp_path, minimal(size="128x128")))
    (warning,) = campaign.warnings
    assert (warning.path, warning.severity) == ("jobs[0].sizes", "warning")
    assert "128x128 is not a size the released checkpoints render" in warning.message
    assert "720x1280" in warning.message


def test_identity_threshold_without_a_face_threshold_is_a_warning(tmp_path: Path) -> None:
    # min_identity_similarity bounds DINO-Sim only; a campaign that sets it alone leaves Face-Sim unjudged
    data = {**minimal(subjects=[{"word": "woman", "image": "w.png"}]), "qc": {"min_identity_similarity": 0.5}}
    campaign = load_campaign(write(tmp_path, data))
    (warning,) = campaign.warnings
    assert (warning.path, warning.severity) == ("qc.min_identity_similarity", "warning")
    assert "bounds DINO-Sim only" in warning.message and "qc.min_face_similarity" in warning.message
    data["qc"] = {"min_identity_similarity": 0.5, "min_face_similarity": 0.6}
    campaign = load_campaign(write(tmp_path, data))
    assert campaign.warnings == ()
    assert (campaign.qc.min_identity_similarity, campaign.qc.min_face_similarity) == (0.5, 0.6)
    assert load_campaign(write(tmp_path, minimal())).qc.min_face_similarity is None  # unset by default


# sizes and render units --------------------------------------------------------------------------------------------


def test_several_sizes_per_job(tmp_path: Path) -> None:
    data = minimal(sizes=["720x1280", "1280x720", "720x720"], variants=2)
    campaign = load_campaign(write(tmp_path, data))
    job = campaign.jobs[0]
    assert [str(s) for s in job.sizes] == ["720x1280", "1280x720", "720x720"]
    assert job.size == job.sizes[0]
    units = campaign.render_units()
    assert [u.unit_id for u in units] == [
        "j1-720x1280-v00",
        "j1-720x1280-v01",
        "j1-1280x720-v00",
        "j1-1280x720-v01",
        "j1-720x720-v00",
        "j1-720x720-v01",
    ]
    assert [(u.height, u.width) for u in units[::2]] == [(720, 1280), (1280, 720), (720, 720)]
    assert {u.seed for u in units if u.index == 0} == {job.seeds[0]}  # a variant has one seed in every size
    from components.runtime.store import validate_key

    for unit in units:
        validate_key(unit.unit_id)


def test_size_is_one_size_and_defaults_give_sizes(tmp_path: Path) -> None:
    data = {
        "id": "c1",
        "defaults": {"sizes": ["720x1280", "1280x720"]},
        "jobs": [
            {"id": "a", "prompt": "A dog runs."},
            {
                "id": "b",
                "prompt": "A dog runs.",
                "size": "544x960",
            },  # the job's own size replaces the default ones
        ],
    }
    campaign = load_campaign(write(tmp_path, data))
    a, b = campaign.jobs
    assert [str(s) for s in a.sizes] == ["720x1280", "1280x720"] and [str(s) for s in b.sizes] == ["544x960"]
    assert [u.unit_id for u in campaign.render_units()] == ["a-720x1280-v00", "a-1280x720-v00", "b-v00"]
    again = Campaign.model_validate(campaign.model_dump())
    assert again == campaign


def test_ten_thousand_units_load_fast(tmp_path: Path) -> None:
    jobs = [
        {
            "id": f"job-{i}",
            "prompt": f"A woman holds bottle {i}.",
            "subjects": [{"word": "woman", "image": "w.png"}],
        }
        for i in range(10_000)
    ]
    file = write(tmp_path, {"id": "big", "jobs": jobs})
    load_campaign(write(tmp_path, minimal(), "warm.yaml"))  # imports done outside the timing
    started = time.perf_counter()
    campaign = load_campaign(file)
    elapsed = time.perf_counter() - started
    assert len(campaign.render_units()) == 10_000
    assert elapsed < 15, f"{elapsed:.1f} s"  # about 1.5 s on one idle core; generous for a shared machine


# territory -----------------------------------------------------------------------------------------------------


def test_territory_is_normalised(tmp_path: Path) -> None:
    file = write(tmp_path, {**minimal(), "territory": ["us", " de ", "EU", "uk", "US"]})
    campaign = load_campaign(file)
    assert campaign.territory == ["US", "DE", "EU", "GB"]
    codes = campaign.territory_codes
    assert codes is not None and {"US", "DE", "FR", "GB"} <= codes and len(codes) == 29
    (warning,) = campaign.warnings
    assert warning.path == "territory[3]" and "read as 'GB'" in warning.message
    assert load_campaign(write(tmp_path, minimal(), "none.yaml")).territory_codes is None
