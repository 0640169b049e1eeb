"""Manifests and the key layout of the render path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from components.runtime.manifest import content_key
from components.runtime.store import InvalidKey, canonical_json


def test_content_key_layout_and_digest() -> None:
    payload = {"steps": 30, "cfg": 7.5, "models": {"dit": "hunyuancustom-dit/3"}, "image": Path("s/face.png")}
    key = content_key("renders/2026", "spring", "job1-v0", "vae_encode", payload, "latents.safetensors")
    expected_json = '{"cfg":7.5,"image":"s/face.png","models":{"dit":"hunyuancustom-dit/3"},"steps":30}'
    assert canonical_json(payload) == expected_json
    digest = hashlib.sha256(expected_json.encode()).hexdigest()[:16]
    assert key == f"renders/2026/spring/job1-v0/vae_encode/{digest}/latents.safetensors"


def test_content_key_is_stable_across_spellings_and_changes_with_values() -> None:
    def key(payload: dict) -> str:
        return content_key("p", "c", "u", "s", payload, "n")

    base = {"b": [1, 2.0, "x"], "a": {"z": 6.0, "y": -0.0}, "path": "dir/f.png"}
    same = {"path": Path("dir/f.png"), "a": {"y": 0, "z": 6}, "b": (1, 2, "x")}
    assert key(base) == key(same)
    assert key(base) != key({**base, "b": [2, 1, "x"]})  # list order matters
    assert key(base) != key({**base, "a": {"z": 6.5, "y": 0}})
    assert key({"f": 0.1}) != key({"f": 0.1000001})
    with pytest.raises(ValueError, match="NaN"):
        key({"f": float("nan")})
    with pytest.raises(TypeError, match="payload.obj"):
        key({"obj": object()})
    with pytest.raises(InvalidKey, match="campaign"):
        content_key("p", "../etc", "u", "s", {}, "n")
    with pytest.raises(InvalidKey, match="unit"):
        content_key("p", "c", "a/b", "s", {}, "n")
    with pytest.raises(InvalidKey):
        content_key("p/../q", "c", "u", "s", {}, "n")


# configuration ----------------------------------------------------------------------------------------
