"""The YOLOv5-face detector contract: input sizes and pixels, stride grids, confidence filter, NMS and scale-back
against plain-Python re-computations, driven by scripted modules that output known candidates."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from model_core.vision.face_detect import (
    DETECTOR_FILE,
    FaceDetector,
    FaceDetectorError,
    detector_grids,
    detector_input,
    detector_size,
    load_face_detector,
    save_face_detector,
    tiny_face_detector_module,
)


@pytest.mark.parametrize(
    ("h0", "w0", "h1", "w1"),
    [
        (480, 854, 416, 768),  # r = 0.8667: int(416.0 + 31) // 32 = 13; int(740.1 + 31) // 32 = 24
        (720, 1280, 416, 768),  # r = 0.5778: int(739.6 + 31) = 770 -> 24 * 32
        (1080, 1920, 416, 768),
        (416, 416, 416, 416),
        (100, 50, 832, 416),  # upscaling: r = 8.32, int(832 + 31) = 863 -> 26 * 32
        (300, 500, 416, 704),  # int(693.3 + 31) = 724 -> 22 * 32
        (854, 480, 768, 416),
    ],
)
def test_detector_size(h0: int, w0: int, h1: int, w1: int) -> None:
    assert detector_size(h0, w0) == (h1, w1)


def _bilinear_reference(img: np.ndarray, h1: int, w1: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize with edge clamping, one output pixel at a time."""
    h0, w0, _ = img.shape
    out = np.zeros((h1, w1, 3))
    src = img.astype(np.float64)
    for y in range(h1):
        sy = min(max((y + 0.5) * h0 / h1 - 0.5, 0.0), h0 - 1)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, h0 - 1), sy - y0
        for x in range(w1):
            sx = min(max((x + 0.5) * w0 / w1 - 0.5, 0.0), w0 - 1)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, w0 - 1), sx - x0
            top = src[y0, x0] * (1 - fx) + src[y0, x1] * fx
            bottom = src[y1, x0] * (1 - fx) + src[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bottom * fy
    return out / 255.0


def test_detector_input_pixels() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 13, 3), dtype=np.uint8)  # r = 32: 640 x 416
    x = detector_input(img)
    assert x.shape == (1, 3, 640, 416) and x.dtype == torch.float32
    ref = _bilinear_reference(img, 640, 416)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    # the tensor form [3, H, W] gives the same input; an image already at the detector size is only scaled
    assert torch.equal(detector_input(torch.from_numpy(img).permute(2, 0, 1)), x)
    exact = rng.integers(0, 256, (416, 448, 3), dtype=np.uint8)
    assert torch.equal(detector_input(exact)[0], torch.from_numpy(exact).permute(2, 0, 1).float() / 255)


def test_detector_input_rejects_bad_images() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        detector_input(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        detector_input(torch.zeros(8, 8, 3, dtype=torch.uint8))


def test_grids() -> None:
    grids = detector_grids(416, 768)
    assert [tuple(g.shape) for g in grids] == [(1, 1, 52, 96, 2), (1, 1, 26, 48, 2), (1, 1, 13, 24, 2)]
    for g in grids:
        assert g.dtype == torch.float32
        ny, nx = g.shape[2:4]
        for y, x in [(0, 0), (0, nx - 1), (ny - 1, 0), (ny // 2, nx // 3)]:
            assert g[0, 0, y, x].tolist() == [float(x), float(y)]


# ---------------------------------------------------------------------------------------------------------
# post-processing against a scripted module with known candidates


class KnownCandidates(nn.Module):
    """Returns fixed candidates after checking that it was called with the contract's inputs."""

    def __init__(self, candidates: torch.Tensor, h1: int, w1: int) -> None:
        super().__init__()
        self.candidates = nn.Parameter(candidates[None].float(), requires_grad=False)
        self.h1, self.w1 = h1, w1

    def forward(self, img: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        assert img.shape[0] == 1 and img.shape[1] == 3 and img.shape[2] == self.h1 and img.shape[3] == self.w1
        assert len(grids) == 3
        assert grids[0].shape[2] == self.h1 // 8 and grids[0].shape[3] == self.w1 // 8
        assert grids[2].shape[2] == self.h1 // 32 and grids[2].shape[3] == self.w1 // 32
        assert float(grids[1][0, 0, 1, 2, 0]) == 2.0 and float(grids[1][0, 0, 1, 2, 1]) == 1.0
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        return self.candidates


def _candidate(
    cx: float, cy: float, w: float, h: float, obj: float, cls: float, seed: int = 0
) -> list[float]:
    marks = np.random.default_rng(seed).uniform(0, 400, 10).tolist()
    return [cx, cy, w, h, obj, *marks, cls]


def _reference_faces(
    cands: np.ndarray, h1: int, w1: int, h0: int, w0: int
) -> list[tuple[list[float], float]]:
    """Filter, sort, greedy NMS and scale-back written out with Python loops."""
    rows = []
    for c in cands:
        conf = c[4] * c[15]
        if conf > 0.5:
            box = [c[0] - c[2] / 2, c[1] - c[3] / 2, c[0] + c[2] / 2, c[1] + c[3] / 2]
            rows.append((box, conf, list(c[5:15])))
    rows.sort(key=lambda r: -r[1])

    def iou(a: list[float], b: list[float]) -> float:
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    kept: list[tuple[list[float], float, list[float]]] = []
    for r in rows:
        if all(iou(r[0], k[0]) <= 0.45 for k in kept):
            kept.append(r)
    sx, sy = w0 / w1, h0 / h1
    out = []
    for box, conf, marks in kept:
        scaled = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
        scaled += [m * (sx if i % 2 == 0 else sy) for i, m in enumerate(marks)]
        out.append((scaled, conf))
    return out


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # torch 2.10+ deprecates TorchScript; the release uses it
        scripted: torch.jit.ScriptModule = torch.jit.script(module)
    return scripted


def _detector(cands: list[list[float]], h1: int, w1: int) -> FaceDetector:
    return FaceDetector(_script(KnownCandidates(torch.tensor(cands), h1, w1)))


def test_filter_nms_and_scale_back_hand_made() -> None:
    h0, w0 = 480, 854  # -> 416 x 768
    cands = [
        _candidate(100, 100, 80, 100, 0.95, 0.9, 1),  # A: kept, conf 0.855
        _candidate(105, 104, 80, 100, 0.9, 0.9, 2),  # IoU with A ~0.85: suppressed
        _candidate(150, 100, 80, 100, 0.9, 0.85, 3),  # IoU with A = 30/130 = 0.23: kept
        _candidate(400, 300, 200, 200, 0.8, 0.6, 4),  # conf 0.48 <= 0.5: dropped although obj > 0.5
        _candidate(600, 200, 50, 50, 0.99, 0.2, 5),  # low class score: dropped
        _candidate(600, 300, 140, 80, 0.7, 0.8, 6),  # conf 0.56: kept, the largest box
    ]
    faces = _detector(cands, 416, 768).detect(np.zeros((h0, w0, 3), np.uint8))
    assert [round(f.score, 4) for f in faces] == [0.855, 0.765, 0.56]
    sx, sy = w0 / 768, h0 / 416
    a = faces[0]
    assert a.box == pytest.approx((60 * sx, 50 * sy, 140 * sx, 150 * sy))
    marks = cands[0][5:15]
    assert [v for xy in a.landmarks for v in xy] == pytest.approx(
        [m * (sx if i % 2 == 0 else sy) for i, m in enumerate(marks)]
    )
    largest = _detector(cands, 416, 768).largest(np.zeros((h0, w0, 3), np.uint8))
    assert largest is not None and largest.score == pytest.approx(0.56)
    assert largest.area == pytest.approx(140 * sx * 80 * sy)


def test_filter_nms_and_scale_back_random_against_reference() -> None:
    rng = np.random.default_rng(3)
    n = 300
    cands = np.zeros((n, 16))
    cands[:, 0] = rng.uniform(0, 736, n)
    cands[:, 1] = rng.uniform(0, 416, n)
    cands[:, 2:4] = rng.uniform(10, 150, (n, 2))
    cands[:, 4] = rng.uniform(0.3, 1, n)
    cands[:, 5:15] = rng.uniform(0, 700, (n, 10))
    cands[:, 15] = rng.uniform(0.3, 1, n)
    h0, w0 = 720, 1280  # -> 416 x 768
    faces = _detector(cands.tolist(), 416, 768).detect(np.zeros((h0, w0, 3), np.uint8))
    ref = _reference_faces(cands.astype(np.float32).astype(np.float64), 416, 768, h0, w0)
    assert 5 < len(faces) == len(ref) < n
    for face, (values, conf) in zip(faces, ref):
        assert face.score == pytest.approx(conf, rel=1e-5)
        got = [*face.box, *(v for xy in face.landmarks for v in xy)]
        assert got == pytest.approx(values, rel=1e-4, abs=1e-3)


def test_no_candidate_above_threshold() -> None:
    det = _detector([_candidate(100, 100, 50, 50, 0.6, 0.6)], 416, 416)
    assert det.detect(np.zeros((416, 416, 3), np.uint8)) == []
    assert det.largest(np.zeros((416, 416, 3), np.uint8)) is None


# ---------------------------------------------------------------------------------------------------------
# loading


def test_load_tiny_detector_from_file_and_folder(tmp_path: Path) -> None:
    save_face_detector(tiny_face_detector_module(0), tmp_path / DETECTOR_FILE)
    img = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    for path in (tmp_path / DETECTOR_FILE, tmp_path):
        faces = load_face_detector(path).detect(img)
        assert faces and all(f.score > 0.5 for f in faces)
    direct = FaceDetector(tiny_face_detector_module(0)).detect(img)
    assert load_face_detector(tmp_path).detect(img) == direct


def test_load_rejects_state_dict_and_text(tmp_path: Path) -> None:
    state = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), state)
    with pytest.raises(
        FaceDetectorError, match=r"weights\.pt is not a TorchScript module.*torch\.jit\.script"
    ):
        load_face_detector(state)
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    with pytest.raises(FaceDetectorError, match=r"notes\.pt is not a TorchScript module"):
        load_face_detector(text)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_face_detector(tmp_path / "missing.pt")


class OneInput(nn.Module):
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.mean().reshape(1, 1, 1).expand(1, 4, 16)


class WrongWidth(nn.Module):
    def forward(self, img: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        return torch.zeros(1, 5, 15) + img.mean()


def test_load_rejects_a_module_without_the_contract(tmp_path: Path) -> None:
    save_face_detector(_script(OneInput()), tmp_path / "one.pt")
    with pytest.raises(FaceDetectorError, match=r"one\.pt: the TorchScript module does not take \(img"):
        load_face_detector(tmp_path / "one.pt")
    save_face_detector(_script(WrongWidth()), tmp_path / "wide.pt")
    with pytest.raises(FaceDetectorError, match=r"wide\.pt: the module returned \(1, 5, 15\)"):
        load_face_detector(tmp_path / "wide.pt")


def test_tiny_detector_finds_faces_on_any_image_and_is_deterministic(tmp_path: Path) -> None:
    det = FaceDetector(tiny_face_detector_module(0))
    for img in (
        np.zeros((240, 320, 3), np.uint8),
        np.full((480, 270, 3), 255, np.uint8),
        np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8),
    ):
        face = det.largest(img)
        assert face is not None and face.score > 0.99 and face.x2 > face.x1 and face.y2 > face.y1
        # landmarks follow a face layout: eyes above the nose above the mouth, left eye left of the right eye
        (lx, ly), (rx, ry), (_, ny), (_, my1), (_, my2) = face.landmarks
        assert lx < rx and max(ly, ry) < ny < min(my1, my2)
    saved = []
    for i, seed in enumerate((0, 0, 1)):
        (tmp_path / str(i)).mkdir()  # the archive's entries are named after the file's stem
        saved.append(save_face_detector(tiny_face_detector_module(seed), tmp_path / str(i) / DETECTOR_FILE))
    assert saved[0].read_bytes() == saved[1].read_bytes() != saved[2].read_bytes()
