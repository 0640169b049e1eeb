"""Face detection with a YOLOv5-face TorchScript module, as HunyuanVideo-Avatar ships it (``det_align/detface.pt``).

Calling contract of that file (Tencent-Hunyuan/HunyuanVideo-Avatar, ``hymm_sp/data_kits/face_align``):

1. the RGB image, float in [0, 1], resized bilinearly so that its short side is about 416 and both sides are
   multiples of 32: ``r = 416 / min(H0, W0)``, ``H1 = int(H0 * r + 31) // 32 * 32`` (and ``W1`` alike);
2. one grid per stride 8, 16, 32: float ``[1, 1, ny, nx, 2]`` holding each cell's (x, y) index;
3. ``module(img, grids)`` -> ``[1, N, 16]`` candidates: cx, cy, w, h (resized pixels), objectness,
   five landmarks (x, y), class score;
4. confidence = objectness x class score, kept above 0.5; greedy NMS at IoU 0.45; boxes and landmarks scaled
   back to the input image by ``W0 / W1`` and ``H0 / H1``.

:func:`tiny_face_detector_module` scripts a small random-weight network with the same contract for tests and the
tiny demo (its biases make it report faces on any image).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONF_THRESHOLD",
    "DETECTOR_FILE",
    "IOU_THRESHOLD",
    "SHORT_SIDE",
    "STRIDES",
    "FaceBox",
    "FaceDetector",
    "FaceDetectorError",
    "box_iou",
    "decode_candidates",
    "detector_grids",
    "detector_input",
    "detector_size",
    "load_face_detector",
    "nms",
    "save_face_detector",
    "tiny_face_detector_module",
]

DETECTOR_FILE = "detface.pt"  # the release's file name (det_align/detface.pt)
SHORT_SIDE = 416
STRIDES = (8, 16, 32)
CONF_THRESHOLD = 0.5
IOU_THRESHOLD = 0.45
CANDIDATE_WIDTH = 16  # cx, cy, w, h, objectness, 5 x (x, y), class score


class FaceDetectorError(ValueError):
    """A detector file that is not a TorchScript module with the YOLOv5-face calling contract."""


@dataclass(frozen=True)
class FaceBox:
    """One detected face in input-image pixels: the box, its confidence and five landmarks (x, y): left eye,
    right eye, nose tip, left and right mouth corners (the subject's left and right as the image shows them)."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


def detector_size(height: int, width: int, short_side: int = SHORT_SIDE) -> tuple[int, int]:
    """The detector's input size ``(H1, W1)`` for an image of ``height x width``."""
    r = short_side / min(height, width)
    return int(height * r + 31) // 32 * 32, int(width * r + 31) // 32 * 32


def _as_chw(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 ``[3, H, W]`` from a uint8 tensor ``[3, H, W]`` or a numpy ``H x W x 3`` RGB array."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"face detection takes an RGB uint8 array H x W x 3, got dtype {image.dtype} shape {image.shape}"
            )
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(
            f"face detection takes an RGB uint8 tensor [3, H, W], got dtype {image.dtype} "
            f"shape {tuple(image.shape)}"
        )
    return image


def detector_input(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The detector's input ``[1, 3, H1, W1]``: RGB in [0, 1], resized bilinearly (half-pixel centres)."""
    chw = _as_chw(image)
    h1, w1 = detector_size(chw.shape[1], chw.shape[2])
    x = chw[None].float() / 255.0
    if (h1, w1) == tuple(chw.shape[1:]):
        return x
    return F.interpolate(x, size=(h1, w1), mode="bilinear", align_corners=False)


def detector_grids(height: int, width: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """One grid per stride: float ``[1, 1, ny, nx, 2]`` of (x, y) cell indices, ``ny = height // stride``."""
    grids = []
    for stride in STRIDES:
        ny, nx = height // stride, width // stride
        yv, xv = torch.meshgrid(
            torch.arange(ny, device=device), torch.arange(nx, device=device), indexing="ij"
        )
        grids.append(torch.stack((xv, yv), dim=-1).float().reshape(1, 1, ny, nx, 2))
    return grids


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix ``[len(a), len(b)]`` of boxes ``x1, y1, x2, y2``."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = IOU_THRESHOLD) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, best first. A box is dropped when its IoU with
    a kept, higher-scoring box exceeds ``iou_threshold`` (torchvision.ops.nms's rule)."""
    order = torch.argsort(scores, descending=True, stable=True)
    # one IoU matrix in sorted order, then a greedy pass over its rows (candidates above the confidence
    # threshold number in the hundreds or low thousands)
    over = (box_iou(boxes[order], boxes[order]) > iou_threshold).numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def decode_candidates(
    candidates: torch.Tensor,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    *,
    conf_threshold: float = CONF_THRESHOLD,
    iou_threshold: float = IOU_THRESHOLD,
) -> list[FaceBox]:
    """Faces from the module's candidates ``[N, 16]`` at the detector's ``input_size`` ``(H1, W1)``, scaled back
    to the image's ``image_size`` ``(H0, W0)``; best first."""
    c = candidates.detach().float().cpu()
    conf = c[:, 4] * c[:, 15]
    c, conf = c[conf > conf_threshold], conf[conf > conf_threshold]
    if c.numel() == 0:
        return []
    boxes = torch.cat((c[:, 0:2] - c[:, 2:4] / 2, c[:, 0:2] + c[:, 2:4] / 2), dim=1)  # xywh -> xyxy
    keep = nms(boxes, conf, iou_threshold)
    (h1, w1), (h0, w0) = input_size, image_size
    scale = torch.tensor([w0 / w1, h0 / h1])
    boxes = boxes[keep] * scale.repeat(2)
    marks = c[keep, 5:15].reshape(-1, 5, 2) * scale
    faces = []
    for box, score, lm in zip(boxes.tolist(), conf[keep].tolist(), marks.tolist()):
        x1, y1, x2, y2 = box
        faces.append(FaceBox(x1, y1, x2, y2, score, tuple((x, y) for x, y in lm)))
    return faces


class FaceDetector:
    """A YOLOv5-face TorchScript module with its pre- and post-processing (the contract above)."""

    def __init__(
        self,
        module: torch.jit.ScriptModule | nn.Module,
        device: torch.device | str = "cpu",
        *,
        conf_threshold: float = CONF_THRESHOLD,
        iou_threshold: float = IOU_THRESHOLD,
        source: str = "the face detector",
    ) -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold
        self.source = source

    def candidates(self, x: torch.Tensor) -> torch.Tensor:
        """The module's raw candidates ``[N, 16]`` for a detector input ``[1, 3, H1, W1]``."""
        grids = detector_grids(x.shape[2], x.shape[3], self.device)
        with torch.no_grad():
            out = self.module(x.to(self.device), grids)
        if isinstance(out, (tuple, list)) and out:  # some exports return (pred, features)
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 3 or out.shape[0] != 1 or out.shape[2] != 16:
            found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise FaceDetectorError(
                f"{self.source}: the module returned {found}, not candidates [1, N, {CANDIDATE_WIDTH}] (cx, cy, "
                "w, h, objectness, 5 landmarks, class score); export a YOLOv5-face model with that output, as "
                f"HunyuanVideo-Avatar's det_align/{DETECTOR_FILE}"
            )
        return out[0]

    def detect(self, image: torch.Tensor | np.ndarray) -> list[FaceBox]:
        """Every face in an RGB uint8 image (tensor ``[3, H, W]`` or numpy ``H x W x 3``), best first."""
        chw = _as_chw(image)
        x = detector_input(chw)
        return decode_candidates(
            self.candidates(x),
            (x.shape[2], x.shape[3]),
            (chw.shape[1], chw.shape[2]),
            conf_threshold=self.conf_threshold,
            iou_threshold=self.iou_threshold,
        )

    def largest(self, image: torch.Tensor | np.ndarray) -> FaceBox | None:
        """The face with the largest box area (the first, best-scoring one on a tie), or None."""
        faces = self.detect(image)
        return max(faces, key=lambda f: f.area) if faces else None


def load_face_detector(path: str | Path, device: torch.device | str = "cpu") -> FaceDetector:
    """A :class:`FaceDetector` from a TorchScript file (or a folder holding ``detface.pt``).

    The module is run once on a blank image to check the calling contract, so a wrong file fails here, naming it.
    """
    path = Path(path)
    file = path / DETECTOR_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no face detector file; expected a TorchScript {DETECTOR_FILE}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is the release's format
            module = torch.jit.load(str(file), map_location=torch.device(device))
    except Exception as exc:  # torch.jit.load raises RuntimeError or ValueError subclasses by file kind
        raise FaceDetectorError(
            f"{file} is not a TorchScript module ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); the "
            f"face detector must be a torch.jit.script / torch.jit.trace export of a YOLOv5-face model taking "
            f"(img, grids), as HunyuanVideo-Avatar's det_align/{DETECTOR_FILE}, not a state dict"
        ) from exc
    detector = FaceDetector(module, device, source=str(file))
    try:
        detector.detect(np.zeros((SHORT_SIDE, SHORT_SIDE, 3), np.uint8))
    except FaceDetectorError:
        raise
    except Exception as exc:
        raise FaceDetectorError(
            f"{file}: the TorchScript module does not take (img [1, 3, H, W], grids for strides {STRIDES}) "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); export a YOLOv5-face "
            f"model with that forward, as HunyuanVideo-Avatar's det_align/{DETECTOR_FILE}"
        ) from exc
    return detector


# ---------------------------------------------------------------------------------------------------------
# tiny random-weight detector with the same contract


class _TinyYoloFace(nn.Module):
    """Five stride-2 convs (feature maps at strides 8, 16, 32) and one 1x1 head per stride, decoded as YOLOv5-face
    does: ``xy = (2 sigmoid - 0.5 + grid) * stride``, ``wh = (2 sigmoid)^2 * anchor``; the landmarks are a face
    layout in the box plus a small learned offset. The stride-32 head's objectness and class rows have zero weights and a +6 bias,
    so every stride-32 cell is a face at confidence sigmoid(6)^2 = 0.995 on any image; the other heads have a -8
    bias and rarely fire."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.down1 = nn.Conv2d(8, 8, 3, 2, 1)
        self.down2 = nn.Conv2d(8, 16, 3, 2, 1)  # stride 8
        self.down3 = nn.Conv2d(16, 16, 3, 2, 1)  # stride 16
        self.down4 = nn.Conv2d(16, 16, 3, 2, 1)  # stride 32
        heads = [nn.Conv2d(16, CANDIDATE_WIDTH, 1) for _ in STRIDES]
        self.strides = [float(s) for s in STRIDES]
        self.anchors = [16.0, 48.0, 128.0]  # face side per stride, in detector pixels
        # eyes, nose, mouth corners as fractions of the box (the ArcFace template / 112)
        layout = [(0.342, 0.462), (0.657, 0.460), (0.500, 0.641), (0.371, 0.825), (0.632, 0.823)]
        self.layout = nn.Parameter(torch.tensor(layout).reshape(10), requires_grad=False)
        with torch.no_grad():
            for i, head in enumerate(heads):
                confident = i == len(STRIDES) - 1
                bias = head.bias
                assert bias is not None
                for row in (4, 15):  # objectness, class score
                    if confident:
                        head.weight[row].zero_()
                    bias[row] = 6.0 if confident else -8.0
        self.heads = nn.ModuleList(heads)

    def forward(self, img: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        x = F.relu(self.down1(F.relu(self.stem(img))))
        p3 = F.relu(self.down2(x))
        p4 = F.relu(self.down3(p3))
        p5 = F.relu(self.down4(p4))
        feats = [p3, p4, p5]
        out: list[torch.Tensor] = []
        for i, head in enumerate(self.heads):
            t = head(feats[i]).permute(0, 2, 3, 1).unsqueeze(1)  # [1, 1, ny, nx, 16]
            grid, stride, anchor = grids[i], self.strides[i], self.anchors[i]
            xy = (t[..., 0:2].sigmoid() * 2 - 0.5 + grid) * stride
            wh = (t[..., 2:4].sigmoid() * 2) ** 2 * anchor
            # landmarks near a face layout inside the box, so that aligning to them is well posed
            layout = xy.repeat(1, 1, 1, 1, 5) + (self.layout - 0.5) * wh.repeat(1, 1, 1, 1, 5)
            marks = layout + t[..., 5:15] * 0.05 * anchor
            scores = torch.cat((xy, wh, t[..., 4:5].sigmoid(), marks, t[..., 15:16].sigmoid()), dim=-1)
            out.append(scores.reshape(1, -1, 16))
        return torch.cat(out, dim=1)


def save_face_detector(module: torch.jit.ScriptModule, path: str | Path) -> Path:
    """Write a scripted detector as a TorchScript file (byte-identical for identical modules)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, str(path))
    return Path(path)


def tiny_face_detector_module(seed: int = 0) -> torch.jit.ScriptModule:
    """A scripted random-weight detector with the YOLOv5-face contract that reports faces on any image."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _TinyYoloFace().eval()
    with warnings.catch_warnings():
        # torch deprecates TorchScript in favour of torch.export; the released detector is TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted: torch.jit.ScriptModule = torch.jit.script(model)
    return scripted
