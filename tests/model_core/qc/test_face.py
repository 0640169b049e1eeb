"""Face-Sim's face path: the Umeyama similarity against a linear least-squares solve, the warp against a per-pixel
loop, and Face-Sim of a reference face pasted into frames with a scripted detector that reports the pasted face."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from model_core.qc.face import ARCFACE_TEMPLATE, align_face, similarity_transform, video_face_sim, warp_affine
from model_core.tiny_models import tiny_arcface
from model_core.vision.face_detect import FaceDetector, detector_size


def _apply(matrix: torch.Tensor | np.ndarray, points: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    return points @ m[:, :2].T + m[:, 2]


def test_similarity_recovers_a_known_transform() -> None:
    src = np.asarray(ARCFACE_TEMPLATE)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m.numpy(), np.hstack((scale * rot, shift[:, None])), atol=1e-9)


def test_similarity_is_the_least_squares_fit() -> None:
    # the similarity x' = a x - b y + tx, y' = b x + a y + ty is linear in (a, b, tx, ty): solve it with lstsq
    rng = np.random.default_rng(0)
    for _ in range(5):
        src = rng.uniform(0, 200, (5, 2))
        dst = rng.uniform(0, 112, (5, 2))
        rows = []
        for x, y in src:
            rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        a, b, tx, ty = np.linalg.lstsq(np.array(rows), dst.reshape(-1), rcond=None)[0]
        expected = np.array([[a, -b, tx], [b, a, ty]])
        np.testing.assert_allclose(similarity_transform(src, dst).numpy(), expected, atol=1e-8)


def test_similarity_never_reflects() -> None:
    src = np.asarray(ARCFACE_TEMPLATE)
    mirrored = src * np.array([-1.0, 1.0])  # the best fit with a reflection would be exact
    m = similarity_transform(src, mirrored).numpy()
    assert np.linalg.det(m[:, :2]) >= 0


def test_warp_matches_a_per_pixel_loop() -> None:
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1, (3, 20, 30))
    m = np.array([[0.8, -0.3, 4.0], [0.3, 0.8, -2.0]])
    out = warp_affine(torch.from_numpy(img).float(), torch.from_numpy(m), (12, 16)).double().numpy()
    inv = np.linalg.inv(np.vstack((m, [0, 0, 1])))
    ref = np.zeros((3, 12, 16))
    for v in range(12):
        for u in range(16):
            x, y, _ = inv @ np.array([u, v, 1.0])
            x0, y0 = math.floor(x), math.floor(y)
            for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
                yy, xx = y0 + dy, x0 + dx
                w = (1 - abs(x - xx)) * (1 - abs(y - yy))
                if 0 <= yy < 20 and 0 <= xx < 30:
                    ref[:, v, u] += w * img[:, yy, xx]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_align_puts_the_landmarks_on_the_template() -> None:
    # five bright dots at a rotated, scaled layout; after alignment each dot sits at its template position
    angle, scale = -0.4, 2.2
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    landmarks = np.asarray(ARCFACE_TEMPLATE) @ (scale * rot).T + np.array([60.0, 150.0])
    img = torch.zeros(3, 400, 400)
    for x, y in np.round(landmarks).astype(int):
        img[:, y - 3 : y + 4, x - 3 : x + 4] = 1.0
    crop = align_face(img, [tuple(p) for p in landmarks])
    assert crop.shape == (3, 112, 112)
    for tx, ty in ARCFACE_TEMPLATE:
        assert crop[0, round(ty), round(tx)] > 0.9
    assert crop[0, 10, 10] == 0 and crop[0, 56, 20] == 0


# ---------------------------------------------------------------------------------------------------------
# Face-Sim with a scripted detector


class PastedFace(nn.Module):
    """Reports one face: the reference's candidate on images of the reference's detector width, the frames'
    candidate on the others, none on a black image."""

    def __init__(self, ref_w1: int, ref: torch.Tensor, frame: torch.Tensor) -> None:
        super().__init__()
        self.ref_w1 = ref_w1
        self.ref = nn.Parameter(ref.reshape(1, 1, 16).float(), requires_grad=False)
        self.frame = nn.Parameter(frame.reshape(1, 1, 16).float(), requires_grad=False)

    def forward(self, img: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        if float(img.max()) < 0.01:
            return torch.zeros(1, 1, 16)
        if img.shape[3] == self.ref_w1:
            return self.ref
        return self.frame


def _candidate(
    box: tuple[float, float, float, float], marks: np.ndarray, sx: float, sy: float
) -> torch.Tensor:
    """A candidate in detector pixels (image pixels times (sx, sy)) for a box x1, y1, x2, y2 and landmarks."""
    x1, y1, x2, y2 = box
    scaled = (marks * np.array([sx, sy])).reshape(-1)
    return torch.tensor(
        [(x1 + x2) / 2 * sx, (y1 + y2) / 2 * sy, (x2 - x1) * sx, (y2 - y1) * sy, 0.99, *scaled, 0.99]
    )


def test_face_sim_of_a_pasted_reference_face_is_the_self_similarity() -> None:
    rng = np.random.default_rng(2)
    patch = rng.integers(30, 256, (64, 56, 3), dtype=np.uint8)
    marks = np.asarray(ARCFACE_TEMPLATE) * 0.5 + np.array([0.0, 4.0])  # landmarks inside the patch
    ref_img = np.zeros((120, 100, 3), np.uint8)
    ref_img[20:84, 30:86] = patch
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[16:80, 50:106] = patch
    frames = [frame, frame.copy(), np.zeros_like(frame), frame.copy(), np.zeros_like(frame)]

    (rh1, rw1), (fh1, fw1) = detector_size(120, 100), detector_size(96, 128)
    assert rw1 != fw1  # the scripted detector tells the reference from the frames by the detector width
    ref_cand = _candidate((30, 20, 86, 84), marks + [30, 20], rw1 / 100, rh1 / 120)
    frame_cand = _candidate((50, 16, 106, 80), marks + [50, 16], fw1 / 128, fh1 / 96)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(PastedFace(rw1, ref_cand, frame_cand))
    detector = FaceDetector(module)
    embedder = tiny_arcface(0)

    result, ref_face, faces = video_face_sim(detector, embedder, ref_img, frames, batch_size=2)
    assert result is not None and ref_face is not None
    assert ref_face.box == pytest.approx((30, 20, 86, 84), abs=1e-3)
    assert [f is None for f in faces] == [False, False, True, False, True]
    assert result.frames_without_face == 2
    assert [s is None for s in result.per_frame] == [False, False, True, False, True]

    ref_crop = align_face(
        torch.from_numpy(ref_img).permute(2, 0, 1).float() / 255, [tuple(p) for p in marks + [30, 20]]
    )
    e = embedder.embed(ref_crop[None])[0]
    self_similarity = float(e @ e)
    assert result.score == pytest.approx(self_similarity, abs=1e-4)
    # the frame crop is the reference crop: the alignment undid the move and the change of image size
    first = faces[0]
    assert first is not None
    frame_crop = align_face(torch.from_numpy(frame).permute(2, 0, 1).float() / 255, first.landmarks)
    assert torch.allclose(frame_crop, ref_crop, atol=1e-3)


def test_face_sim_without_a_reference_face() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(PastedFace(0, torch.zeros(16), torch.zeros(16)))
    result, ref_face, faces = video_face_sim(
        FaceDetector(module),
        tiny_arcface(0),
        np.zeros((64, 64, 3), np.uint8),
        [np.zeros((64, 64, 3), np.uint8)],
    )
    assert result is None and ref_face is None and faces == [None]
