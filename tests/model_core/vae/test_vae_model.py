"""Keys and shapes against the official list, config.json parsing, loading plain and `vae.`-prefixed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from vae_testing import TINY, random_tiny_vae

from model_core.checkpoints import CheckpointMismatchError, UnsafeCheckpointError
from model_core.vae import (
    VAE_PRESETS,
    CausalVAE3D,
    VAEConfig,
    load_vae,
    save_vae,
    vae_config_from_dict,
    vae_preset,
)

KEYS_FILE = Path(__file__).parent / "keys" / "vae_official.txt"
# vae/config.json of the HunyuanVideo release (Tencent/HunyuanVideo), official names
OFFICIAL_CONFIG = {
    "_class_name": "AutoencoderKLCausal3D",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlockCausal3D"] * 4,
    "up_block_types": ["UpDecoderBlockCausal3D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 256,
    "sample_tsize": 64,
    "scaling_factor": 0.476986,
    "time_compression_ratio": 4,
    "mid_block_add_attention": True,
}


def _official_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in KEYS_FILE.read_text().splitlines():
        name, shape = line.split("\t")
        keys[name] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return keys


def test_production_keys_and_shapes_match_the_official_list() -> None:
    with torch.device("meta"):
        vae = CausalVAE3D(vae_config_from_dict(OFFICIAL_CONFIG))
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    official = _official_keys()
    assert len(official) == 248
    assert sorted(set(ours) - set(official)) == [] and sorted(set(official) - set(ours)) == []
    assert ours == official
    assert sum(v.numel() for v in vae.state_dict().values()) == 246_478_803  # 246.5M
    assert vae.config == VAE_PRESETS["hunyuan-vae"]


def test_tiny_preset_has_the_same_key_names() -> None:
    tiny = set(CausalVAE3D(TINY).state_dict())
    # absent: the extra resnet of each block (layers_per_block=1) and shortcuts where tiny keeps the width
    assert tiny <= set(_official_keys())
    missing = set(_official_keys()) - tiny
    assert all(
        (k.startswith("encoder.down") and ".resnets.1." in k) or ".resnets.2." in k or ".conv_shortcut." in k
        for k in missing
    )


def test_round_trip_shapes_and_scaling() -> None:
    vae = random_tiny_vae()
    x = torch.rand(1, 3, 9, 16, 24) * 2 - 1
    with torch.no_grad():
        dist = vae.encode(x)
        assert dist.mode().shape == (1, 16, 3, 2, 3)
        assert vae.decode(dist.mode()).shape == (1, 3, 9, 16, 24)
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        assert torch.equal(dist.sample(g1), dist.sample(g2))
        assert not torch.equal(dist.sample(g1), dist.mode())
    z = torch.randn(2, 16, 1, 2, 2)
    assert torch.allclose(vae.scale(z), z * 0.476986)
    assert torch.allclose(vae.unscale(vae.scale(z)), z)


def test_causal_conv_never_sees_later_frames() -> None:
    """Convolutions pad the past only (GroupNorm still spans all frames, as in the official model)."""
    from model_core.vae.layers import CausalConv3d

    torch.manual_seed(0)
    conv = CausalConv3d(3, 4, 3)
    x = torch.randn(1, 3, 6, 5, 5)
    y = x.clone()
    y[:, :, 3:] = torch.randn_like(y[:, :, 3:])
    with torch.no_grad():
        a, b = conv(x), conv(y)
    assert a.shape == x.shape[:1] + (4,) + x.shape[2:]
    assert torch.equal(a[:, :, :3], b[:, :, :3])
    assert not torch.allclose(a[:, :, 3], b[:, :, 3])


def test_save_and_load_plain_folder(tmp_path: Path) -> None:
    vae = random_tiny_vae(seed=4)
    save_vae(vae, tmp_path)
    loaded = load_vae(tmp_path)
    assert loaded.config == vae.config
    for k, v in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_hunyuancustom_prefixed_pt_with_official_config(tmp_path: Path) -> None:
    vae = random_tiny_vae(seed=5)
    cfg = dict(OFFICIAL_CONFIG, block_out_channels=[8, 8, 16, 16], layers_per_block=1, norm_num_groups=4)
    cfg["mid_block_causal_attn"] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    torch.save({f"vae.{k}": v for k, v in vae.state_dict().items()}, tmp_path / "pytorch_model.pt")
    loaded = load_vae(tmp_path)
    assert loaded.config.mid_block_causal_attn is False
    for k, v in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # the flag changes the mid-block attention: the non-causal model lets frame 2 influence frame 0
    z = torch.randn(1, 16, 3, 2, 2)
    with torch.no_grad():
        causal = vae.decode(z)
        noncausal = loaded.decode(z)
    assert not torch.allclose(causal[:, :, 0], noncausal[:, :, 0], atol=1e-4)
    assert load_vae(tmp_path, causal_attention=True).config.mid_block_causal_attn is True


@pytest.mark.parametrize(
    "layout",
    ["bare", "prefixed", "prefixed_in_state_dict"],  # HunyuanVideo; HunyuanCustom flat; HunyuanCustom wrapped
)
def test_released_pt_layouts_load(tmp_path: Path, layout: str) -> None:
    """HunyuanVideo's `pytorch_model.pt` holds bare keys; HunyuanCustom's holds `vae.`-prefixed ones, possibly
    under `state_dict` next to other models' keys (HunyuanCustom's release), which are dropped."""
    vae = random_tiny_vae(seed=6)
    cfg = dict(OFFICIAL_CONFIG, block_out_channels=[8, 8, 16, 16], layers_per_block=1, norm_num_groups=4)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    state = vae.state_dict()
    if layout != "bare":
        state = {f"vae.{k}": v for k, v in state.items()}
        state["text_encoder.weight"] = torch.zeros(2)  # another model's key in the same file
    torch.save(
        {"state_dict": state} if layout == "prefixed_in_state_dict" else state, tmp_path / "pytorch_model.pt"
    )
    loaded = load_vae(tmp_path)
    assert set(loaded.state_dict()) == set(vae.state_dict())
    for k, v in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_causal_flag_defaults_to_true_when_absent() -> None:
    assert vae_config_from_dict(OFFICIAL_CONFIG).mid_block_causal_attn is True
    assert (
        vae_config_from_dict({**OFFICIAL_CONFIG, "mid_block_causal_attn": False}).mid_block_causal_attn
        is False
    )


def test_mismatched_checkpoint_lists_keys_and_the_fitting_preset(tmp_path: Path) -> None:
    save_vae(random_tiny_vae(), tmp_path)
    with pytest.raises(CheckpointMismatchError, match="tiny-hunyuan-vae") as info:
        load_vae(tmp_path, config=VAE_PRESETS["hunyuan-vae"])
    assert info.value.diff.missing and info.value.diff.wrong_shape


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    torch.save(
        {"state_dict": random_tiny_vae().state_dict(), "cfg": VAEConfig()}, tmp_path / "pytorch_model.pt"
    )
    with pytest.raises(UnsafeCheckpointError):
        load_vae(tmp_path)


def test_config_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="norm_num_groups"):
        VAEConfig(block_out_channels=(8, 8, 12, 16), norm_num_groups=8)
    with pytest.raises(ValueError, match="act_fn"):
        vae_config_from_dict({**OFFICIAL_CONFIG, "act_fn": "gelu"})
    with pytest.raises(ValueError, match="down_block_types"):
        vae_config_from_dict({**OFFICIAL_CONFIG, "down_block_types": ["DownBlock2D"] * 4})
    with pytest.raises(KeyError, match="known"):
        vae_preset("nope")


def test_missing_config_json_names_the_fix(tmp_path: Path) -> None:
    save_vae(random_tiny_vae(), tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="pass config="):
        load_vae(tmp_path)
    assert load_vae(tmp_path, config=TINY).config == TINY
