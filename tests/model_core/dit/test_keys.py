"""Built on the meta device, each production preset has exactly the released checkpoint's keys and shapes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT

KEY_LISTS = {
    "hunyuanvideo-t2v-720p": "hunyuanvideo_t2v.txt",
    "hunyuancustom-720p": "hunyuancustom_image.txt",
    "hunyuancustom-audio-720p": "hunyuancustom_audio.txt",
    "hunyuancustom-editing-720p": "hunyuancustom_editing.txt",
}
LOCAL_KEYS = Path(__file__).resolve().parent / "keys"
SHARED_KEYS = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference" / "keys"


def read_key_list(path: Path) -> dict[str, tuple[int, ...]]:
    """`name<TAB>(d0, d1, ...)` per line -> {name: shape}."""
    keys = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, shape = line.split("\t")
            keys[name] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return keys


def model_keys(preset: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = HunyuanDiT(PRESETS[preset])
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def describe_diff(got: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> str:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    shapes = [
        f"{k}: {got[k]} != {expected[k]}" for k in sorted(set(got) & set(expected)) if got[k] != expected[k]
    ]
    return f"missing {missing[:10]}, unexpected {extra[:10]}, wrong shape {shapes[:10]}"


@pytest.mark.parametrize("preset", sorted(KEY_LISTS))
def test_production_preset_has_the_checkpoint_keys(preset: str) -> None:
    expected = read_key_list(LOCAL_KEYS / KEY_LISTS[preset])
    got = model_keys(preset)
    assert got == expected, describe_diff(got, expected)


@pytest.mark.parametrize("preset", sorted(KEY_LISTS))
def test_key_list_copies_match_the_shared_reference(preset: str) -> None:
    shared = SHARED_KEYS / KEY_LISTS[preset]
    if not shared.is_file():
        pytest.skip(
            f"shared reference key list not present at {shared.resolve()} (only in the development checkout)"
        )
    assert read_key_list(LOCAL_KEYS / KEY_LISTS[preset]) == read_key_list(shared)


@pytest.mark.parametrize("preset", sorted(KEY_LISTS))
def test_tiny_twin_has_the_same_key_names_up_to_block_indices(preset: str) -> None:
    def pattern(keys: dict[str, tuple[int, ...]]) -> set[str]:
        return {re.sub(r"\.\d+\.", ".N.", k) for k in keys}

    assert pattern(model_keys(f"tiny-{preset}")) == pattern(read_key_list(LOCAL_KEYS / KEY_LISTS[preset]))


def test_t2v_parameter_count_is_the_release_count() -> None:
    assert sum(torch.Size(s).numel() for s in model_keys("hunyuanvideo-t2v-720p").values()) == 12_821_012_544
