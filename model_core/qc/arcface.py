"""Face-Sim: ArcFace identity embeddings (the IResNet of InsightFace's ``arcface_torch``) and their similarity.

Architecture (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019, and
the improved ResNet "IR" unit of that paper's Fig. 7): a 112 x 112 RGB face, scaled to [-1, 1];
a 3x3 conv (64) + BN + PReLU stem; four stages of pre-activation residual units
``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN`` (+ a 1x1 conv + BN shortcut where the shape
changes), each stage halving the resolution to 7 x 7; then BN, flatten, a linear layer to the 512-d embedding
and a BatchNorm1d. Stage depths (3, 4, 14, 3) make IResNet-50, (3, 13, 30, 3) IResNet-100 (the ``r100``
models InsightFace releases). Parameter names follow that release (``conv1``, ``bn1``, ``prelu``,
``layer1.0.bn1``, ..., ``layer1.0.downsample.0``, ``bn2``, ``fc``, ``features``), so its ``backbone.pth``
loads strictly.

Face-Sim (HunyuanCustom §5.1): the cosine similarity of the ArcFace embedding of the reference face and of
the face in each sampled frame, averaged over the frames with a face (the largest face in a frame).
Frames without a face are counted and reported, not silently dropped. Faces are aligned to the five-landmark
ArcFace template before embedding (``model_core.qc.face``); ``crop_faces`` (a square crop around a box) serves
the DINO-Sim head-and-shoulders region.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ARCFACE_FILE", "ArcFaceConfig", "FaceSim", "IResNet", "crop_faces", "face_similarity"]

ARCFACE_FILE = "model.safetensors"
INPUT_SIZE = 112


@dataclass(frozen=True)
class ArcFaceConfig:
    """An IResNet face embedder. ``widths``: channels of the stem's output and of the four stages."""

    layers: tuple[int, int, int, int] = (3, 13, 30, 3)  # IResNet-100
    widths: tuple[int, int, int, int, int] = (64, 64, 128, 256, 512)
    embedding_dim: int = 512
    input_size: int = INPUT_SIZE  # four stride-2 stages: 112 -> 7

    @property
    def final_size(self) -> int:
        """Side of the last feature map (7 for 112-pixel faces)."""
        return self.input_size // 16

    @classmethod
    def from_json(cls, path: str | Path) -> ArcFaceConfig:
        """Read a ``config.json`` written by :meth:`to_json` (``model_type`` "arcface-iresnet")."""
        data = json.loads(Path(path).read_text())
        if data.get("model_type") != "arcface-iresnet":
            raise ValueError(f"{path}: model_type {data.get('model_type')!r} is not 'arcface-iresnet'")
        return cls(
            layers=tuple(data["layers"]),  # type: ignore[arg-type]
            widths=tuple(data["widths"]),  # type: ignore[arg-type]
            embedding_dim=int(data["embedding_dim"]),
            input_size=int(data.get("input_size", INPUT_SIZE)),
        )

    def to_json(self, path: str | Path) -> None:
        """Write ``config.json`` with ``model_type`` "arcface-iresnet"."""
        Path(path).write_text(json.dumps({"model_type": "arcface-iresnet", **asdict(self)}, indent=2) + "\n")


class _IRUnit(nn.Module):
    """The improved residual unit: BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace's IResNet: faces ``[N, 3, 112, 112]`` scaled to [-1, 1] -> embeddings ``[N, embedding_dim]``."""

    def __init__(self, config: ArcFaceConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0], eps=1e-5)
        self.prelu = nn.PReLU(w[0])
        self.layer1, self.layer2, self.layer3, self.layer4 = (self._stage(i) for i in range(4))
        self.bn2 = nn.BatchNorm2d(w[4], eps=1e-5)
        self.dropout = nn.Dropout(0.0)  # training only; no weights
        self.fc = nn.Linear(w[4] * config.final_size**2, config.embedding_dim)
        self.features = nn.BatchNorm1d(config.embedding_dim, eps=1e-5)

    def _stage(self, i: int) -> nn.Sequential:
        """Stage ``i``: a stride-2 unit from width ``widths[i]`` to ``widths[i + 1]``, then stride-1 units."""
        w, depth = self.config.widths, self.config.layers[i]
        units = [_IRUnit(w[i], w[i + 1], 2)] + [_IRUnit(w[i + 1], w[i + 1], 1) for _ in range(depth - 1)]
        return nn.Sequential(*units)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(faces)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x).flatten(1))  # [N, C * 7 * 7]
        return self.features(self.fc(x))

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str = "cpu") -> IResNet:
        """Load ``config.json`` + ``model.safetensors`` (or the release's ``backbone.pth``) strictly, in eval mode."""
        folder = Path(folder)
        model = cls(ArcFaceConfig.from_json(folder / "config.json"))
        if (folder / ARCFACE_FILE).is_file():
            from safetensors.torch import load_file

            state = load_file(folder / ARCFACE_FILE)
        else:
            state = torch.load(folder / "backbone.pth", map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return model.eval().to(device)

    @torch.no_grad()
    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of face crops ``[N, 3, h, w]`` in [0, 1] (resized to the input size)."""
        size = self.config.input_size
        x = F.interpolate(
            faces.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        p = next(self.parameters())
        x = ((x - 0.5) / 0.5).to(p.device, p.dtype)
        return F.normalize(self(x).float(), dim=-1)


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


def crop_faces(pixels: torch.Tensor, boxes: Sequence[Box], *, margin: float = 0.1) -> torch.Tensor:
    """Square crops ``[K, 3, s, s]`` around each box of one frame ``[3, H, W]`` (``margin``: of the box side)."""
    _, h, w = pixels.shape
    out = []
    for x0, y0, x1, y1 in boxes:
        side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left, top = round(cx - side / 2), round(cy - side / 2)
        s = max(1, round(side))
        pad = max(0, -left, -top, left + s - w, top + s - h)
        padded = F.pad(pixels, (pad, pad, pad, pad))
        out.append(padded[:, top + pad : top + pad + s, left + pad : left + pad + s])
    size = max(c.shape[-1] for c in out) if out else INPUT_SIZE
    return (
        torch.stack([F.interpolate(c[None], size=(size, size), mode="bilinear")[0] for c in out])
        if out
        else torch.empty(0, 3, size, size)
    )


@dataclass(frozen=True)
class FaceSim:
    """Face-Sim of one video: the mean over frames with a face, and how many frames had none."""

    score: float | None  # None when no frame had a face
    per_frame: tuple[float | None, ...]  # None for a frame without a face
    frames_without_face: int


def face_similarity(reference: torch.Tensor, frame_embeddings: Sequence[torch.Tensor | None]) -> FaceSim:
    """Face-Sim from the unit-norm reference embedding ``[D]`` and, per frame, the embedding ``[D]`` of its
    largest face (None: no face found in that frame)."""
    ref = reference.reshape(-1)
    per = tuple(None if e is None else float(e.reshape(-1) @ ref) for e in frame_embeddings)
    found = [s for s in per if s is not None]
    return FaceSim(sum(found) / len(found) if found else None, per, sum(s is None for s in per))
