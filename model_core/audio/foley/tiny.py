"""Tiny random-weight Foley models in the release's formats, for tests and the local demo (no downloads).

- `write_tiny_foley(folder)`: one folder as the release ships it: `hunyuanvideo_foley.pth` (the tiny MMDiT's state
  dict), `vae_128d_48k.pth` (`{"state_dict", "metadata": {"kwargs"}}` of a tiny DAC-VAE, hop 960 at 48 kHz) and
  `synchformer_state_dict.pth` (the tiny Synchformer under the released key names: video and audio branches and
  the offset head, as the released file holds them).
- `tiny_siglip2`: a full `SiglipModel` (both towers, as google/siglip2-base-patch16-512 is saved) of width 32 on
  32-pixel images; `tiny_clap`: a `ClapTextModelWithProjection` of width 32. Their widths are the tiny MMDiT's
  `clip_dim` and `text_dim`.

The same seed writes the same bytes.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from transformers import (
    ClapTextConfig,
    ClapTextModelWithProjection,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipModel,
)

from model_core.audio.foley.config import FOLEY_PRESETS
from model_core.configs import FOLEY_DAC_FILE, FOLEY_RELEASES, FOLEY_SYNCHFORMER_FILE

__all__ = ["tiny_clap", "tiny_siglip2", "write_tiny_foley"]

TINY_WIDTH = 32  # = FOLEY_PRESETS["tiny-hunyuanvideo-foley"].clip_dim and .text_dim


def _seeded(seed: int, build: type[torch.nn.Module], *args: object) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(*args).eval()


def _contiguous(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def write_tiny_foley(preset: str, folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny Foley release `preset` (a `model_core.configs.FOLEY_RELEASES` name) into `folder`; returns the folder."""
    from model_core.audio.foley.dac import DAC_PRESETS, DACVAE
    from model_core.audio.foley.model import FoleyDiT
    from model_core.audio.foley.synchformer_sync import SYNC_CLASSIFIER_PRESETS, SyncClassifier

    release = FOLEY_RELEASES[preset]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dit = _seeded(seed, FoleyDiT, FOLEY_PRESETS[release.dit])
    torch.save(_contiguous(dit), folder / release.dit_file)
    dac_config = DAC_PRESETS[release.dac]
    dac = _seeded(seed + 1, DACVAE, dac_config)
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(dac_config).items()}
    kwargs.pop("description")
    kwargs["continuous"] = True
    torch.save({"state_dict": _contiguous(dac), "metadata": {"kwargs": kwargs}}, folder / FOLEY_DAC_FILE)
    sync = _seeded(seed + 2, SyncClassifier, SYNC_CLASSIFIER_PRESETS[release.synchformer])
    torch.save(_contiguous(sync), folder / FOLEY_SYNCHFORMER_FILE)
    return folder


def tiny_siglip2(seed: int = 0) -> SiglipModel:
    """A random SigLIP with one layer per tower, width 32, 32-pixel images in 16-pixel patches."""
    vision = {
        "hidden_size": TINY_WIDTH,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 16,
    }
    text = {
        "vocab_size": 64,  # the text tower is saved with the model but never run
        "hidden_size": TINY_WIDTH,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
    model = _seeded(seed, SiglipModel, SiglipConfig(text_config=text, vision_config=vision))
    assert isinstance(model, SiglipModel)
    return model


def tiny_clap(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> ClapTextModelWithProjection:
    """A random one-layer CLAP text tower of width 32 (RoBERTa positions: 514, as the released model)."""
    config = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_WIDTH,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=16,
        max_position_embeddings=514,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = _seeded(seed, ClapTextModelWithProjection, config)
    assert isinstance(model, ClapTextModelWithProjection)
    return model
