"""Invalid campaigns: each mistake is rejected with its own message naming the file, the field path and the fix."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.runtime.spec import CampaignError, CampaignIssue, load_campaign

Data = dict[str, Any]


def base() -> Data:
    """A valid campaign with an image job (jobs[0]) and a text-to-video job (jobs[1])."""
    return {
        "id": "spring",
        "jobs": [
            {
                "id": "intro",
                "prompt": "A woman holds a bottle and smiles.",
                "subjects": [{"word": "woman", "image": "assets/woman.png"}],
            },
            {"id": "meadow", "prompt": "Wild flowers in the morning sun.", "negative_prompt": ""},
        ],
    }


def job(**fields: Any) -> Callable[[Data], None]:
    def mutate(data: Data) -> None:
        data["jobs"][0].update(fields)

    return mutate


def top(**fields: Any) -> Callable[[Data], None]:
    def mutate(data: Data) -> None:
        data.update(fields)

    return mutate


def drop_subjects_and(**fields: Any) -> Callable[[Data], None]:
    def mutate(data: Data) -> None:
        del data["jobs"][0]["subjects"]
        data["jobs"][0].update(fields)

    return mutate


def duplicate_ids(data: Data) -> None:
    data["jobs"][1]["id"] = "intro"


def no_prompt(data: Data) -> None:
    del data["jobs"][0]["prompt"]


AUDIO = {"uri": "assets/voice.wav"}
EDIT = {"video": "assets/src.mp4", "mask": "assets/mask.mp4"}

# (case id, mutation, field path, text the message must contain)
CASES: list[tuple[str, Callable[[Data], None], str, str]] = [
    (
        "unknown-job-field",
        job(framez=129),
        "jobs[0].framez",
        "unknown field 'framez'; did you mean 'frames'?",
    ),
    ("unknown-top-field", top(output="x"), "output", "did you mean 'output_prefix'?"),
    ("frames-not-4k+1", job(frames=100), "jobs[0].frames", "frames must be 4k+1 between 5 and 129"),
    ("frames-fix-suggests-neighbours", job(frames=100), "jobs[0].frames", "e.g. 97 or 101"),
    ("frames-too-many", job(frames=133), "jobs[0].frames", "got 133; frames must be 4k+1 between 5 and 129"),
    ("size-not-16", job(size="720x1270"), "jobs[0].size", "height and width must be multiples of 16"),
    (
        "size-too-large",
        job(size="2048x1280"),
        "jobs[0].size",
        "2048x1280: each side must be 32 to 1280 pixels; use one of",
    ),
    ("size-malformed", job(size="720*1280"), "jobs[0].size", "must be 'HEIGHTxWIDTH', e.g. '720x1280'"),
    (
        "subject-word-absent",
        job(subjects=[{"word": "man", "image": "m.png"}]),
        "jobs[0].subjects[0].word",
        "subject word 'man' does not occur in the prompt",
    ),
    (
        "subject-word-partial",
        job(subjects=[{"word": "wom", "image": "m.png"}]),
        "jobs[0].subjects[0].word",
        "'wom' does not occur in the prompt",
    ),
    ("duplicate-job-id", duplicate_ids, "jobs[1].id", "duplicate job id 'intro' (also jobs[0])"),
    ("id-dotdot", job(id="../etc"), "jobs[0].id", "id '../etc' is unsafe in a storage key or path"),
    ("id-slash", job(id="a/b"), "jobs[0].id", "e.g. 'a-b'"),
    ("id-space", top(id="spring sale"), "id", "unsafe in a storage key or path; use 1-63 lowercase letters"),
    ("id-uppercase", job(id="Intro"), "jobs[0].id", "e.g. 'intro'"),
    (
        "audio-and-edit",
        job(audio=AUDIO, edit=EDIT, foley=False),
        "jobs[0].edit",
        "either audio-driven or editing, not both",
    ),
    (
        "audio-without-subject",
        drop_subjects_and(audio=AUDIO, foley=False),
        "jobs[0].audio",
        "audio-driven jobs animate a subject",
    ),
    (
        "edit-without-subject",
        drop_subjects_and(edit=EDIT),
        "jobs[0].edit",
        "editing replaces the masked region",
    ),
    ("empty-prompt", job(prompt=""), "jobs[0].prompt", "must not be empty or blank"),
    ("blank-prompt", job(prompt="   "), "jobs[0].prompt", "must not be empty or blank"),
    ("missing-prompt", no_prompt, "jobs[0].prompt", "required field is missing; add prompt: ..."),
    # sampling settings are checked by the sampler's own SamplingOptions, named as the spec names them
    (
        "steps-zero",
        job(steps=0),
        "jobs[0].steps",
        "steps must be >= 1, got 0 (30 is the HunyuanCustom default",
    ),
    ("steps-absurd", job(steps=1000), "jobs[0].steps", "must be <= 200"),
    ("steps-not-a-number", job(steps="many"), "jobs[0].steps", "got 'many'; must be a whole number"),
    (
        "cfg-below-1",
        job(cfg_scale=0.5, negative_prompt="blurry"),
        "jobs[0].cfg_scale",
        "cfg_scale must be >= 1.0 (1.0 turns real CFG off), got 0.5",
    ),
    (
        "cfg-below-1-t2v",
        lambda d: d["jobs"][1].update(cfg_scale=0.5),
        "jobs[1].cfg_scale",
        "cfg_scale must be >= 1.0",
    ),
    ("negative-shift", job(flow_shift=-2), "jobs[0].flow_shift", "flow_shift must be > 0, got -2"),
    (
        "guidance-outside-t2v",
        job(embedded_guidance=6.0),
        "jobs[0].embedded_guidance",
        "the image-mode checkpoint has no guidance embedding",
    ),
    (
        "loudness-out-of-range",
        job(delivery={"loudness_lufs": -50}),
        "jobs[0].delivery.loudness_lufs",
        "must be >= -40.0 (-23 for EBU R128",
    ),
    (
        "peak-below-target",
        job(delivery={"loudness_lufs": -6, "true_peak_dbtp": -8}),
        "jobs[0].delivery.true_peak_dbtp",
        "the ceiling must be above the target",
    ),
    (
        "uri-scheme",
        job(subjects=[{"word": "woman", "image": "https://cdn.example.com/w.png"}]),
        "jobs[0].subjects[0].image",
        "URI scheme 'https://' is not supported",
    ),
    (
        "uri-absolute-path",
        job(subjects=[{"word": "woman", "image": "/data/w.png"}]),
        "jobs[0].subjects[0].image",
        "write it as 'file:///data/w.png'",
    ),
    (
        "uri-wrong-kind",
        job(subjects=[{"word": "woman", "image": "assets/woman.mp4"}]),
        "jobs[0].subjects[0].image",
        "does not look like an image file",
    ),
    (
        "uri-s3-dotdot",
        job(subjects=[{"word": "woman", "image": "s3://ads/a/../w.png"}]),
        "jobs[0].subjects[0].image",
        "'..' is not allowed inside an S3 key",
    ),
    (
        "mask-not-video",
        job(edit={"video": "a.mp4", "mask": "m.png"}),
        "jobs[0].edit.mask",
        "does not look like a video file",
    ),
    ("seeds-repeated", job(seeds=[5, 5]), "jobs[0].seeds", "seed(s) [5] repeated"),
    ("seeds-vs-variants", job(seeds=[1, 2], variants=3), "jobs[0].seeds", "2 seeds but variants is 3"),
    ("variants-absurd", job(variants=100), "jobs[0].variants", "must be <= 16 (1 to 16 videos per job)"),
    ("schedule-6-fields", top(schedule="0 0 6 * * 1"), "schedule", "has 6 fields; write a 5-field crontab"),
    ("schedule-bad-minute", top(schedule="61 6 * * *"), "schedule", "schedule field minute '61' is invalid"),
    (
        "model-ref",
        top(models={"vae": "hunyuan-vae"}),
        "models.vae",
        "is neither 'name@alias' (e.g. 'hunyuancustom-dit@production') nor 'name/version'",
    ),
    (
        "model-ref-reserved-alias",
        top(models={"dit": {"image": "hunyuancustom-dit@latest"}}),
        "models.dit.image",
        "'latest' and 'v<number>' are reserved by MLflow",
    ),
    ("no-jobs", top(jobs=[]), "jobs", "must have at least 1 item(s)"),
    ("output-prefix", top(output_prefix="../up"), "output_prefix", "lowercase key segments separated by '/'"),
    # numbers are strict: no booleans, no quoted numbers
    (
        "steps-yes",
        job(steps=True),
        "jobs[0].steps",
        "got true (YAML reads yes/no/on/off/true/false as a switch)",
    ),
    (
        "steps-quoted",
        job(steps="30"),
        "jobs[0].steps",
        "got the text '30'; must be a whole number: write it without quotes",
    ),
    ("cfg-quoted", job(cfg_scale="7.5"), "jobs[0].cfg_scale", "must be a number: write it without quotes"),
    ("seed-bool", job(seeds=[True]), "jobs[0].seeds[0]", "must be a whole number"),
    (
        "foley-offload-unknown",
        job(foley={"offload": "all"}),
        "jobs[0].foley.offload",
        "got 'all'; must be one of 'encoders', 'sequential' or 'none' (encoders is the default",
    ),
    ("foley-switch-number", job(foley={"enabled": 1}), "jobs[0].foley.enabled", "must be true or false"),
    ("steps-float", job(steps=30.5), "jobs[0].steps", "got 30.5; must be a whole number"),
    # asset paths stay inside the campaign's folder
    (
        "path-escapes",
        job(subjects=[{"word": "woman", "image": "../../../../etc/shadow.png"}]),
        "jobs[0].subjects[0].image",
        "leads outside the campaign's folder",
    ),
    (
        "path-backslash",
        job(subjects=[{"word": "woman", "image": "assets\\woman.png"}]),
        "jobs[0].subjects[0].image",
        "contains a backslash; use / as separator, e.g. 'assets/example.png'",
    ),
    (
        "s3-backslash",
        job(subjects=[{"word": "woman", "image": "s3://ads/a\\w.png"}]),
        "jobs[0].subjects[0].image",
        "use / as separator",
    ),
    # subject words
    (
        "subject-word-symbols",
        job(subjects=[{"word": "wo#man", "image": "w.png"}]),
        "jobs[0].subjects[0].word",
        "letters of any script, spaces, ' or -",
    ),
    (
        "subject-word-cjk-absent",
        job(prompt="一位女士微笑。", subjects=[{"word": "男士", "image": "w.png"}]),
        "jobs[0].subjects[0].word",
        "subject word '男士' does not occur in the prompt",
    ),
    # sizes
    (
        "size-and-sizes",
        job(size="720x1280", sizes=["1280x720"]),
        "jobs[0].sizes",
        "give size (one size) or sizes",
    ),
    (
        "sizes-duplicate",
        job(sizes=["720x1280", "1280x720", "720x1280"]),
        "jobs[0].sizes[2]",
        "720x1280 is listed twice (also [0]); list each size once",
    ),
    (
        "sizes-bad-one",
        job(sizes=["720x1280", "720x1272"]),
        "jobs[0].sizes[1]",
        "720x1272: height and width must be multiples of 16",
    ),
    ("sizes-empty", job(sizes=[]), "jobs[0].sizes", "must have at least 1 item(s) (e.g. sizes: [720x1280"),
    ("sizes-not-a-list", job(sizes="720x1280"), "jobs[0].sizes", "must be a list"),
    (
        "defaults-size-and-sizes",
        top(defaults={"size": "720x1280", "sizes": ["720x1280"]}),
        "defaults.sizes",
        "give size (one size) or sizes",
    ),
    (
        "unit-id-collision",
        lambda d: (
            d["jobs"][1].update(id="intro-720x1280") or d["jobs"][0].update(sizes=["720x1280", "1280x720"])
        ),
        "jobs[1].id",
        "gives the same unit ids as size 720x1280 of jobs[0]",
    ),
    # models.dit as one reference
    (
        "one-dit-for-two-modes",
        top(models={"dit": "my-dit@staging"}),
        "models.dit",
        "one reference 'my-dit@staging' for jobs of several modes (image, t2v)",
    ),
    # territory
    ("territory-unknown", top(territory=["US", "XX"]), "territory[1]", "unknown territory 'XX'"),
    (
        "territory-fix",
        top(territory=["USA"]),
        "territory[0]",
        "use two-letter ISO 3166-1 alpha-2 country codes",
    ),
    ("territory-empty", top(territory=[]), "territory", "list at least one territory"),
    ("territory-not-a-list", top(territory="US"), "territory", "must be a list"),
    # QC thresholds: DINO-Sim and Face-Sim each have their own field, with HunyuanCustom's average as the hint
    (
        "qc-face-similarity-range",
        top(qc={"min_face_similarity": 1.5}),
        "qc.min_face_similarity",
        "got 1.5; must be <= 1.0 (bounds Face-Sim; HunyuanCustom's average is 0.627",
    ),
    (
        "qc-identity-similarity-range",
        top(qc={"min_identity_similarity": -0.1}),
        "qc.min_identity_similarity",
        "must be >= 0.0 (bounds DINO-Sim; HunyuanCustom's average is 0.593",
    ),
    (
        "qc-desync-range",
        top(qc={"max_desync_seconds": 2.5}),
        "qc.max_desync_seconds",
        "got 2.5; must be <= 2.0 (bounds DeSync in seconds (0-2, Synchformer's range)",
    ),
    (
        "qc-face-field-typo",
        top(qc={"min_face_sim": 0.6}),
        "qc.min_face_sim",
        "did you mean 'min_face_similarity'?",
    ),
    # the sampler's rules apply to campaign defaults too, reported once
    ("defaults-cfg", top(defaults={"cfg_scale": 0.5}), "defaults.cfg_scale", "cfg_scale must be >= 1.0"),
]


@pytest.mark.parametrize(("mutate", "path", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_is_reported(tmp_path: Path, mutate: Callable[[Data], None], path: str, text: str) -> None:
    data = base()
    mutate(data)
    file = tmp_path / "campaign.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    issues = caught.value.issues
    matching = [i for i in issues if i.path == path and text in i.message]
    assert matching, f"no issue at {path!r} containing {text!r}; got:\n" + "\n".join(map(str, issues))
    assert all(i.file == str(file) for i in issues)
    # one mistake, one issue: no echo of the same problem under other fields
    assert len(issues) == 1, "\n".join(map(str, issues))
    assert str(matching[0]).startswith(f"{file}: {path}: ")


def test_base_is_valid(tmp_path: Path) -> None:
    file = tmp_path / "campaign.yaml"
    file.write_text(yaml.safe_dump(base()))
    assert len(load_campaign(file).jobs) == 2


def test_all_errors_of_a_file_are_reported_together(tmp_path: Path) -> None:
    data = base()
    data["id"] = "Bad Id"
    data["schedule"] = "every monday"
    data["jobs"][0].update(frames=100, steps=0, subjects=[{"word": "man", "image": "x.txt"}])
    data["jobs"][1].update(id="intro", size="100x100", colour="red")
    file = tmp_path / "many.json"
    file.write_text(json.dumps(data))
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    paths = {i.path for i in caught.value.issues}
    assert paths >= {
        "id",
        "schedule",
        "jobs[0].frames",
        "jobs[0].steps",
        "jobs[0].subjects[0].word",
        "jobs[0].subjects[0].image",
        "jobs[1].id",
        "jobs[1].size",
        "jobs[1].colour",
    }
    text = str(caught.value)
    assert text.splitlines()[0] == f"{len(caught.value.issues)} problem(s) in {file}"


def test_a_wrong_default_is_reported_once(tmp_path: Path) -> None:
    data = base()
    data["defaults"] = {"frames": 100, "steps": 40}
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    assert [i.path for i in caught.value.issues] == ["defaults.frames"]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    file = tmp_path / "dup.yaml"
    file.write_text("id: spring\nid: summer\njobs: []\n")
    with pytest.raises(CampaignError, match=r"dup\.yaml: line 2: invalid YAML: duplicate key 'id'"):
        load_campaign(file)


def test_duplicate_json_key(tmp_path: Path) -> None:
    file = tmp_path / "dup.json"
    file.write_text('{"id": "a", "id": "b", "jobs": []}')
    with pytest.raises(CampaignError, match=r"dup\.json: duplicate key 'id'"):
        load_campaign(file)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("id: spring\njobs:\n  - id: a\n    prompt: [unclosed\n")
    with pytest.raises(CampaignError, match=r"broken\.yaml: line \d+: invalid YAML"):
        load_campaign(file)


def test_not_a_mapping(tmp_path: Path) -> None:
    file = tmp_path / "list.yaml"
    file.write_text("- id: a\n")
    with pytest.raises(CampaignError, match=r"list\.yaml: the file must hold a mapping with id: and jobs:"):
        load_campaign(file)


def test_issue_format() -> None:
    issue = CampaignIssue("c.yaml", "jobs[2].frames", "got 100; frames must be 4k+1")
    assert str(issue) == "c.yaml: jobs[2].frames: got 100; frames must be 4k+1"


def test_cases_are_distinct() -> None:
    assert len(CASES) >= 14
    assert len({c[0] for c in CASES}) == len(CASES)
    assert copy.deepcopy(base()) == base()  # mutations never leak between cases


def test_cfg_the_sampler_refuses_is_refused_by_validate(tmp_path: Path) -> None:
    # validate and the sampler share one set of rules: what loads, samples
    data = base()
    data["jobs"][1]["cfg_scale"] = 0.5
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    from model_core.sampling.options import SamplingOptions

    with pytest.raises(ValueError) as refused:
        SamplingOptions(num_steps=50, shift=7.0, cfg_scale=0.5)
    (issue,) = caught.value.issues
    assert issue.path == "jobs[1].cfg_scale" and str(refused.value) in issue.message


def test_too_many_render_units(tmp_path: Path) -> None:
    data = base()
    data["jobs"] = [
        {"id": f"j{i}", "prompt": "Flowers.", "sizes": ["720x1280", "1280x720"], "variants": 5}
        for i in range(1001)
    ]
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    (issue,) = caught.value.issues
    assert issue.path == "jobs" and issue.message.startswith("10010 render units (jobs x sizes x variants)")
    assert "at most 10000: split it into several campaigns" in issue.message


def test_symlink_out_of_the_campaign_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "campaign"
    folder.mkdir()
    (folder / "assets").symlink_to(outside)
    data = base()
    data["jobs"][0]["subjects"][0]["image"] = "assets/woman.png"
    file = folder / "c.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    (issue,) = caught.value.issues
    assert issue.path == "jobs[0].subjects[0].image"
    assert "'assets/woman.png' leads through a symbolic link outside the campaign's folder" in issue.message
    assert "keep assets in that folder" in issue.message


def yaml_issue(tmp_path: Path, text: str, name: str = "c.yaml") -> CampaignIssue:
    file = tmp_path / name
    file.write_text(text)
    started = time.perf_counter()
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    assert time.perf_counter() - started < 10
    (issue,) = caught.value.issues
    assert issue.file == str(file)
    return issue


def test_complex_yaml_key(tmp_path: Path) -> None:
    issue = yaml_issue(tmp_path, "id: spring\n? [a, b]\n: 1\njobs: []\n")
    assert issue.message.startswith("line 2: invalid YAML: a mapping key must be a plain name")


def test_deep_nesting(tmp_path: Path) -> None:
    issue = yaml_issue(tmp_path, "id: spring\njobs: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert "nested more than 32 levels deep" in issue.message and issue.message.startswith("line 2: ")
    block = "id: spring\njobs:\n" + "".join("  " * i + "- \n" for i in range(1, 40))
    assert "nested more than 32 levels deep" in yaml_issue(tmp_path, block, "block.yaml").message
    deep_json = '{"id": "spring", "jobs": ' + "[" * 20_000 + "]" * 20_000 + "}"
    assert "nested more than 32 levels deep" in yaml_issue(tmp_path, deep_json, "c.json").message


def test_billion_laughs(tmp_path: Path) -> None:
    lines = ["id: spring", 'description: &a0 "lol"']
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    lines += ["jobs: *a9"]
    issue = yaml_issue(tmp_path, "\n".join(lines) + "\n")
    assert "expands to more than 2,000,000 values through YAML aliases" in issue.message
    # a bomb below the limit reaches validation; its value is never shown in full
    small = ["id: spring", 'description: &a0 "lol"']
    small += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 5)]
    small += ["jobs: *a4"]
    file = tmp_path / "small.yaml"
    file.write_text("\n".join(small) + "\n")
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    assert all(len(i.message) < 400 for i in caught.value.issues)
    assert len(str(caught.value)) < 20_000


def test_recursive_alias(tmp_path: Path) -> None:
    issue = yaml_issue(tmp_path, "id: spring\njobs: &loop [*loop]\n")
    assert "the alias *loop is inside the value it names" in issue.message


def test_alias_chain_too_deep(tmp_path: Path) -> None:
    lines = ["id: spring", "description: &a0 x"] + [f"x{i}: &a{i} [*a{i - 1}]" for i in range(1, 40)]
    issue = yaml_issue(tmp_path, "\n".join([*lines, "jobs: *a39"]) + "\n")
    assert "through YAML aliases, nested more than 32 levels deep" in issue.message


def test_huge_values_are_shortened_in_messages(tmp_path: Path) -> None:
    data = base()
    data["jobs"][0]["steps"] = list(range(100_000))
    data["jobs"][0]["id"] = "X" * 5000
    data["jobs"][0]["subjects"][0]["image"] = "/" + "a" * 5000 + ".png"
    data["jobs"][0]["frames"] = 10**200
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    by_path = {i.path: i.message for i in caught.value.issues}
    assert by_path["jobs[0].steps"].startswith("got [0, 1, 2, 3, ...]; must be a whole number")
    assert len(by_path["jobs[0].id"]) < 300
    assert by_path["jobs[0].subjects[0].image"].startswith("absolute path '/aaaa")
    assert len(by_path["jobs[0].subjects[0].image"]) < 300 and len(by_path["jobs[0].frames"]) < 300


def test_merge_key_needs_a_mapping(tmp_path: Path) -> None:
    issue = yaml_issue(tmp_path, "id: spring\njobs:\n  - <<: [1, 2]\n    id: a\n")
    assert "invalid YAML: '<<' merges a mapping (<<: *base) or a list of them" in issue.message
