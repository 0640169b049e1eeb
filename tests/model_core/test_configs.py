"""DiT presets: the registry, the invariants a config enforces, and the tiny twins."""

from __future__ import annotations

import dataclasses

import pytest

from model_core.configs import PRESETS, AudioConditionConfig, DiTConfig, dit_preset

PRODUCTION = [
    "hunyuanvideo-t2v-720p",
    "hunyuancustom-720p",
    "hunyuancustom-audio-720p",
    "hunyuancustom-editing-720p",
]


@pytest.mark.parametrize("name", PRODUCTION)
def test_production_preset_matches_the_release(name: str) -> None:
    cfg = PRESETS[name]
    assert (cfg.hidden_size, cfg.num_heads, cfg.depth_double, cfg.depth_single) == (3072, 24, 20, 40)
    assert cfg.rope_axes_dim == (16, 56, 56) and cfg.rope_theta == 256.0
    assert (cfg.text_states_dim, cfg.text_pooled_dim, cfg.mlp_hidden) == (4096, 768, 12288)
    assert cfg.guidance_embed == (name == "hunyuanvideo-t2v-720p")
    assert cfg.identity_image == name.startswith("hunyuancustom")
    assert (cfg.audio is not None) == ("audio" in name)
    assert cfg.video_condition == ("editing" in name)


def test_audio_preset_inserts_after_the_odd_double_blocks() -> None:
    audio = PRESETS["hunyuancustom-audio-720p"].audio
    assert audio is not None
    assert audio.insert_after == (1, 3, 5, 7, 9, 11)
    assert audio.in_features == 10 * 5 * 384  # AudioProjNet2 proj1 input: 19200


@pytest.mark.parametrize("name", PRODUCTION)
def test_tiny_twin_takes_the_same_code_paths(name: str) -> None:
    big, tiny = PRESETS[name], PRESETS[f"tiny-{name}"]
    flags = ("guidance_embed", "identity_image", "video_condition", "patch_size", "in_channels", "rope_theta")
    assert {f: getattr(tiny, f) for f in flags} == {f: getattr(big, f) for f in flags}
    assert (tiny.audio is None) == (big.audio is None)
    assert sum(tiny.rope_axes_dim) == tiny.head_dim
    # Ulysses degrees 2 and 4 must divide the heads of the tiny models
    assert tiny.num_heads % 4 == 0
    assert tiny.hidden_size * tiny.depth_double < big.hidden_size  # a few MB, not 13B


def test_preset_names_are_the_documented_ones() -> None:
    assert set(PRESETS) == set(PRODUCTION) | {f"tiny-{n}" for n in PRODUCTION}


def test_unknown_preset_error_lists_the_known_names() -> None:
    with pytest.raises(KeyError, match="hunyuancustom-720p"):
        dit_preset("hunyuancustom-1080p")
    assert dit_preset("tiny-hunyuancustom-720p") is PRESETS["tiny-hunyuancustom-720p"]


def test_config_rejects_heads_that_do_not_divide_hidden() -> None:
    with pytest.raises(ValueError, match="hidden_size 100 must be divisible by num_heads 3"):
        DiTConfig(hidden_size=100, num_heads=3, depth_double=1, depth_single=1)


def test_config_rejects_rope_split_not_summing_to_head_dim() -> None:
    with pytest.raises(ValueError, match=r"rope_axes_dim \(4, 6, 4\) must sum to the head dim 16"):
        DiTConfig(hidden_size=64, num_heads=4, depth_double=1, depth_single=1, rope_axes_dim=(4, 6, 4))
    with pytest.raises(ValueError, match="even"):
        DiTConfig(hidden_size=64, num_heads=4, depth_double=1, depth_single=1, rope_axes_dim=(3, 7, 6))


def test_config_rejects_audio_blocks_beyond_the_depth() -> None:
    with pytest.raises(ValueError, match=r"double blocks \[2\] outside 0..1"):
        dataclasses.replace(
            PRESETS["tiny-hunyuancustom-720p"], audio=AudioConditionConfig(insert_after=(1, 2))
        )


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["tiny-hunyuancustom-720p"].hidden_size = 1  # type: ignore[misc]


def test_model_presets_span_the_families_without_name_clashes() -> None:
    from model_core.configs import (
        AVATAR_PRESETS,
        ENCODER_PRESETS,
        FOLEY_RELEASES,
        MODEL_PRESETS,
        VAE_PRESETS,
        VAEConfig,
        model_preset,
    )

    families = [PRESETS, AVATAR_PRESETS, VAE_PRESETS, ENCODER_PRESETS, FOLEY_RELEASES]
    assert set(MODEL_PRESETS) == set().union(*families)
    assert len(MODEL_PRESETS) == sum(len(f) for f in families)  # one name, one model
    assert isinstance(model_preset("tiny-hunyuan-vae"), VAEConfig)
    assert model_preset("tiny-hunyuancustom-720p") is PRESETS["tiny-hunyuancustom-720p"]
    with pytest.raises(KeyError, match="unknown model preset 'hunyuan-vea'.*hunyuan-vae"):
        model_preset("hunyuan-vea")
