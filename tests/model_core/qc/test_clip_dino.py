"""CLIP-B-T, temporal consistency and DINO-Sim at tiny random configs, against the transformers models' own
outputs and against the metrics' definitions computed here with plain loops."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from model_core.qc import (
    ClipScorer,
    DinoScorer,
    as_batch,
    clip_text_score,
    consistency,
    crop_box,
    crop_embeddings,
    dino_similarity,
    foreground_box,
    head_and_shoulders,
)
from model_core.qc.frames import CLIP_MEAN, CLIP_STD, preprocess
from model_core.tiny_models import write_tiny_model


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> ClipScorer:
    folder = write_tiny_model("tiny-clip-vit-base", tmp_path_factory.mktemp("clip"))
    return ClipScorer.from_pretrained(folder)


@pytest.fixture(scope="module")
def dino(tmp_path_factory: pytest.TempPathFactory) -> DinoScorer:
    folder = write_tiny_model("tiny-dinov2", tmp_path_factory.mktemp("dino"))
    return DinoScorer.from_pretrained(folder)


def video(n: int = 6, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    return as_batch(g.integers(0, 256, (n, h, w, 3), dtype=np.uint8))


def test_clip_embeddings_give_the_library_models_similarities(clip: ClipScorer) -> None:
    frames = video()
    prompts = ["a woman smiles at the camera", "a green bottle on a shelf"]
    img, txt = clip.image_embeddings(frames), clip.text_embeddings(prompts)
    # CLIPModel's forward: logits_per_image = exp(logit_scale) * cos(image, text)
    tokens = clip.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = clip.model(pixel_values=clip.pixel_values(frames), **tokens)
        expected = out.logits_per_image / clip.model.logit_scale.exp()
    torch.testing.assert_close(img @ txt.T, expected, atol=1e-5, rtol=1e-5)
    assert clip_text_score(img, txt[0]) == pytest.approx(float(expected[:, 0].mean()), abs=1e-5)


def test_clip_preprocessing_matches_the_pil_image_processor(clip: ClipScorer) -> None:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    y, x = np.mgrid[0:48, 0:64]
    frame = np.stack([128 + 100 * np.sin(x / 5), 128 + 100 * np.cos(y / 4), (2 * x + 3 * y) % 256], -1)
    frame = frame.astype(np.uint8)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ref = torch.as_tensor(proc(images=[Image.fromarray(frame)], return_tensors="np")["pixel_values"])
    ours = preprocess(as_batch(frame[None]), 32, CLIP_MEAN, CLIP_STD)
    assert ours.shape == ref.shape == (1, 3, 32, 32)
    # PIL's bicubic and torch's antialiased bicubic differ by a few 1/255 steps, i.e. ~0.05 after the std
    assert (ours - ref).abs().mean() < 0.05, float((ours - ref).abs().mean())


def vbench_consistency(emb: torch.Tensor) -> float:
    """VBench's loop, as its consistency dimensions compute it."""
    total, first, prev = 0.0, emb[0], emb[0]
    for f in emb[1:]:
        sim_prev = max(0.0, float(torch.dot(prev, f)))
        sim_first = max(0.0, float(torch.dot(first, f)))
        total += (sim_prev + sim_first) / 2
        prev = f
    return total / (len(emb) - 1)


def test_temporal_consistency(clip: ClipScorer) -> None:
    still = video(1).repeat(8, 1, 1, 1)
    assert consistency(clip.image_embeddings(still)) == pytest.approx(1.0, abs=1e-6)
    emb = clip.image_embeddings(video(8, seed=3))
    assert consistency(emb) == pytest.approx(vbench_consistency(emb), abs=1e-6)
    assert consistency(emb[:1]) == 1.0
    # negative cosines count as 0, not below
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert consistency(opposite) == 0.0


def test_dino_embeddings_are_the_library_models_cls(dino: DinoScorer) -> None:
    frames = video(4)
    with torch.no_grad():
        out = dino.model(pixel_values=dino.pixel_values(frames))
    cls = torch.nn.functional.normalize(out.last_hidden_state[:, 0], dim=-1)
    torch.testing.assert_close(dino.embeddings(frames), cls, atol=1e-6, rtol=1e-5)
    assert dino.crop == 32 and dino.resize == 37  # the released 256:224 ratio at the tiny model's 32 px


def test_dino_similarity(dino: DinoScorer) -> None:
    reference = video(1, seed=7)
    ref = dino.embeddings(reference)[0]
    assert dino_similarity(ref, dino.embeddings(reference.repeat(5, 1, 1, 1))) == pytest.approx(1.0, abs=1e-6)
    frames = dino.embeddings(video(5, seed=8))
    expected = sum(float(torch.dot(ref, f)) for f in frames) / 5
    assert dino_similarity(ref, frames) == pytest.approx(expected, abs=1e-6)


def test_scorers_load_from_disk_only(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ClipScorer.from_pretrained(tmp_path / "missing")


def test_head_and_shoulders_box() -> None:
    # a 20 x 30 face at (40, 50): three face widths wide, half a face height above, one and a half below
    assert head_and_shoulders((40, 50, 60, 80), 400, 400) == (20, 35, 80, 125)
    assert head_and_shoulders((0, 5, 20, 35), 60, 50) == (0, 0, 40, 60)  # clipped to the image


def test_foreground_box_of_a_white_backed_product() -> None:
    img = np.full((60, 80, 3), 255, np.uint8)
    img[10:30, 25:41] = (20, 200, 40)
    img[29, 40] = (250, 250, 240)  # one channel under the white level is foreground
    assert foreground_box(img) == (25, 10, 41, 30)
    assert foreground_box(np.full((8, 9, 3), 255, np.uint8)) == (0, 0, 9, 8)  # all white: the whole image


def test_crop_embeddings_embed_each_crop_on_its_own(dino: DinoScorer) -> None:
    rng = np.random.default_rng(3)
    crops = [
        torch.from_numpy(rng.uniform(0, 1, (3, h, w))).float() for h, w in ((40, 30), (64, 64), (20, 90))
    ]
    got = crop_embeddings(dino, crops)
    expected = torch.cat([dino.embeddings(c[None]) for c in crops])
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)
    box = (5, 2, 25, 30)
    assert crop_box(crops[0], box).shape == (3, 28, 20)
    assert torch.equal(crop_box(crops[0], box), crops[0][:, 2:30, 5:25])
