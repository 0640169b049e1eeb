"""ArcFace IResNet: the released architecture's sizes and names, a tiny random config against a functional
re-computation from its state dict, loading from disk, and Face-Sim on a reference face pasted into frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model_core.qc import ArcFaceConfig, IResNet, crop_faces, face_similarity
from model_core.tiny_models import tiny_arcface, write_tiny_model


def test_released_sizes_and_key_names() -> None:
    # InsightFace's arcface_torch: iresnet50 has 43.59 M parameters, iresnet100 65.16 M
    r50 = IResNet(ArcFaceConfig(layers=(3, 4, 14, 3)))
    assert sum(p.numel() for p in r50.parameters()) == 43_590_848
    r100 = IResNet(ArcFaceConfig())
    assert sum(p.numel() for p in r100.parameters()) == 65_156_160
    keys = r100.state_dict()
    assert {
        "conv1.weight",
        "prelu.weight",
        "layer1.0.downsample.0.weight",
        "layer4.2.bn3.running_var",
    } <= set(keys)
    assert keys["fc.weight"].shape == (512, 512 * 7 * 7) and keys["features.weight"].shape == (512,)


def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.batch_norm(
        x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"], sd[f"{name}.bias"],
        training=False, eps=1e-5,
    )  # fmt: skip


def functional_iresnet(x: torch.Tensor, sd: dict[str, torch.Tensor], layers: tuple[int, ...]) -> torch.Tensor:
    """The architecture as the ArcFace paper draws it, from the state dict alone."""
    x = F.prelu(_bn(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1"), sd["prelu.weight"])
    for stage, depth in enumerate(layers, start=1):
        for unit in range(depth):
            p = f"layer{stage}.{unit}"
            stride = 2 if unit == 0 else 1
            out = F.conv2d(_bn(x, sd, f"{p}.bn1"), sd[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(_bn(out, sd, f"{p}.bn2"), sd[f"{p}.prelu.weight"])
            out = _bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), sd, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                x = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
            x = out + x
    x = _bn(x, sd, "bn2").flatten(1)
    return _bn(F.linear(x, sd["fc.weight"], sd["fc.bias"]), sd, "features")


def test_tiny_config_against_a_functional_computation() -> None:
    model = tiny_arcface(seed=3)
    # non-trivial BatchNorm statistics, so that eval-mode normalisation is exercised
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    x = torch.randn(2, 3, 112, 112, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model(x), functional_iresnet(x, model.state_dict(), (1, 1, 1, 1)))


def test_folder_round_trip(tmp_path: Path) -> None:
    folder = write_tiny_model("tiny-arcface", tmp_path / "arcface")
    loaded = IResNet.from_pretrained(folder)
    faces = torch.rand(3, 3, 80, 80, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.embed(faces), tiny_arcface().embed(faces))
    assert loaded.embed(faces).norm(dim=-1).sub(1).abs().max() < 1e-5
    (folder / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(ValueError, match="not 'arcface-iresnet'"):
        IResNet.from_pretrained(folder)


def test_face_sim_of_a_pasted_reference_is_the_embedders_self_similarity() -> None:
    model = tiny_arcface()
    g = torch.Generator().manual_seed(5)
    face = torch.rand(3, 40, 40, generator=g)
    ref = model.embed(face[None])[0]
    frames, boxes = [], []
    for t in range(4):
        frame = torch.rand(3, 96, 128, generator=g)
        x0, y0 = 10 + 15 * t, 20 + 5 * t
        frame[:, y0 : y0 + 40, x0 : x0 + 40] = face
        frames.append(frame)
        boxes.append((x0, y0, x0 + 40, y0 + 40))
    embeddings: list[torch.Tensor | None] = [
        model.embed(crop_faces(f, [b], margin=0.0))[0] for f, b in zip(frames, boxes)
    ]
    embeddings.append(None)  # a fifth frame where the detector found no face
    result = face_similarity(ref, embeddings)
    self_sim = float(ref @ ref)
    assert result.score == pytest.approx(self_sim, abs=1e-5) and self_sim == pytest.approx(1.0, abs=1e-5)
    assert result.frames_without_face == 1 and result.per_frame[-1] is None
    assert face_similarity(ref, [None, None]).score is None


def test_crop_faces_pads_boxes_that_leave_the_frame() -> None:
    frame = torch.ones(3, 50, 60)
    crops = crop_faces(frame, [(-10.0, -10.0, 20.0, 20.0), (40.0, 30.0, 60.0, 50.0)], margin=0.0)
    assert crops.shape == (2, 3, 30, 30)
    assert float(crops[0, :, :10, :10].abs().sum()) == 0.0  # outside the frame: zeros
