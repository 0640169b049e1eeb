"""Synchformer's offset classifier: the whole released key list, strict loading of the whole file, the class grid,
and the global transformer against a hand-written reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from foley_testing import layer_norm, read_key_list, shapes

from model_core.audio.foley.synchformer import load_synchformer
from model_core.audio.foley.synchformer_sync import (
    SYNC_CLASSIFIER_PRESETS,
    GlobalTransformer,
    SyncClassifier,
    load_sync_classifier,
    offset_grid,
    offset_seconds,
)
from model_core.audio.foley.tiny import write_tiny_foley
from model_core.checkpoints import CheckpointMismatchError
from model_core.configs import FOLEY_SYNCHFORMER_FILE

TINY = SYNC_CLASSIFIER_PRESETS["tiny-synchformer"]


def test_classifier_has_every_released_key_and_shape() -> None:
    with torch.device("meta"):
        model = SyncClassifier(SYNC_CLASSIFIER_PRESETS["synchformer"])
    assert shapes(model) == read_key_list("synchformer.txt")
    assert sum(p.numel() for p in model.parameters()) == 237_460_245
    assert SYNC_CLASSIFIER_PRESETS["synchformer"].sequence == 198


def test_class_grid_maps_to_seconds() -> None:
    grid = offset_grid(SYNC_CLASSIFIER_PRESETS["synchformer"])
    assert grid.shape == (21,)
    torch.testing.assert_close(grid, torch.tensor([-2.0 + 0.2 * i for i in range(21)]))
    logits = torch.full((3, 21), -5.0)
    logits[0, 0] = logits[1, 10] = logits[2, 17] = 5.0
    torch.testing.assert_close(
        offset_seconds(logits, SYNC_CLASSIFIER_PRESETS["synchformer"]), torch.tensor([-2.0, 0.0, 1.4])
    )


def _head_reference(
    sd: dict[str, torch.Tensor], v: torch.Tensor, a: torch.Tensor, heads: int
) -> torch.Tensor:
    def ln(name: str, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, 1e-5) * sd[f"{name}.weight"] + sd[f"{name}.bias"]

    def lin(name: str, x: torch.Tensor) -> torch.Tensor:
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    b = v.shape[0]
    x = torch.cat([sd["OFF_tok"].expand(b, 1, -1), ln("vis_in_lnorm", v), sd["MOD_tok"].expand(b, 1, -1),
                   ln("aud_in_lnorm", a)], 1) + sd["pos_emb_cfg.pos_emb"]  # fmt: skip
    n, d = x.shape[1:]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}"
        h = ln(f"{p}.ln1", x)
        q, k, vv = (
            lin(f"{p}.attn.{w}", h).reshape(b, n, heads, -1).transpose(1, 2)
            for w in ("query", "key", "value")
        )
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(d // heads)).softmax(-1) @ vv
        x = x + lin(f"{p}.attn.proj", att.transpose(1, 2).reshape(b, n, d))
        x = x + lin(f"{p}.mlp.2", torch.nn.functional.gelu(lin(f"{p}.mlp.0", ln(f"{p}.ln2", x))))
    return lin("off_head", ln("ln_f", x)[:, 0])


def test_global_transformer_matches_a_reference() -> None:
    torch.manual_seed(0)
    config = SYNC_CLASSIFIER_PRESETS["tiny-synchformer"]
    head = GlobalTransformer(config).double().eval()
    v = torch.randn(2, 14 * 8, 32, dtype=torch.float64)
    a = torch.randn(2, 14 * 6, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(head(v, a), _head_reference(head.state_dict(), v, a, heads=2))
    with pytest.raises(ValueError, match="198 tokens"):
        head(v[:, :-8], a)


def test_whole_file_loads_strictly_and_foley_still_reads_its_video_branch(tmp_path: Path) -> None:
    write_tiny_foley("tiny-hunyuanvideo-foley", tmp_path)
    path = tmp_path / FOLEY_SYNCHFORMER_FILE
    model = load_sync_classifier(path, TINY)
    video, dropped = load_synchformer(path, TINY.video)
    assert {k.split(".")[0] for k in dropped} == {"afeat_extractor", "aproj", "vproj", "transformer"}
    for key, value in video.vfeat_extractor.state_dict().items():
        torch.testing.assert_close(model.vfeat_extractor.state_dict()[key], value)
    video_in = torch.randn(1, 14, 16, 3, 32, 32)
    spec = torch.randn(1, 14, 66, 128)
    with torch.no_grad():
        logits = model(video_in, spec)
    assert logits.shape == (1, 21) and torch.isfinite(logits).all()
    state = torch.load(path)
    del state["transformer.off_head.bias"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(CheckpointMismatchError, match="off_head"):
        load_sync_classifier(tmp_path / "cut.pth", TINY)
