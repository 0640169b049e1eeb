"""Face-Sim's face path: five-landmark alignment to the ArcFace template, and the mean cosine over frames.

Alignment follows InsightFace's ``norm_crop`` (deepinsight/insightface, ``python-package/insightface/utils/
face_align.py``): the similarity transform (rotation, uniform scale, translation) that maps the detector's five
landmarks onto the 112 x 112 ArcFace template in the least-squares sense (Umeyama, "Least-squares estimation of
transformation parameters between two point patterns", TPAMI 1991), then a bilinear warp with pixel centres at
integer coordinates and black outside the image (``cv2.warpAffine`` with ``borderValue=0``).

Face-Sim of a video (HunyuanCustom §5.1): the reference face is the largest face of the subject image; in each
sampled frame the largest face is aligned and embedded; the score is the mean cosine over the frames with a face.
Frames without a face are counted and reported (``FaceSim.frames_without_face``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from model_core.qc.arcface import FaceSim, IResNet, face_similarity

if TYPE_CHECKING:
    from model_core.vision.face_detect import FaceBox, FaceDetector

__all__ = [
    "ARCFACE_TEMPLATE",
    "align_face",
    "face_embeddings",
    "similarity_transform",
    "video_face_sim",
    "warp_affine",
]

# the five landmarks of a 112 x 112 ArcFace input: eyes, nose tip, mouth corners (InsightFace's ``arcface_dst``)
ARCFACE_TEMPLATE: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


def similarity_transform(src: torch.Tensor | np.ndarray, dst: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The least-squares similarity transform ``[2, 3]`` (float64) taking points ``src [K, 2]`` onto ``dst``.

    Umeyama's closed form: centre both sets, SVD of the cross-covariance, a sign fix so that the rotation is
    proper (no reflection), scale = trace(D S) / var(src).
    """
    s = torch.as_tensor(np.asarray(src, dtype=np.float64))
    d = torch.as_tensor(np.asarray(dst, dtype=np.float64))
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or s.shape[0] < 2:
        raise ValueError(
            f"need two matching point sets [K >= 2, 2], got {tuple(s.shape)} and {tuple(d.shape)}"
        )
    mu_s, mu_d = s.mean(0), d.mean(0)
    sc, dc = s - mu_s, d - mu_d
    var_s = (sc**2).sum() / len(s)
    cov = dc.T @ sc / len(s)  # [2, 2]
    u, sv, vh = torch.linalg.svd(cov)
    sign = torch.ones(2, dtype=torch.float64)
    if torch.det(u) * torch.det(vh) < 0:
        sign[1] = -1.0
    rotation = u @ torch.diag(sign) @ vh
    scale = (sv * sign).sum() / var_s if var_s > 0 else torch.tensor(0.0, dtype=torch.float64)
    translation = mu_d - scale * rotation @ mu_s
    return torch.cat((scale * rotation, translation[:, None]), dim=1)


def warp_affine(image: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``image [C, H, W]`` (float) warped by ``matrix [2, 3]`` (input pixel -> output pixel) to ``size (h, w)``.

    Each output pixel (x, y) samples the input at ``inverse(matrix) @ (x, y, 1)`` bilinearly, pixel centres at
    integer coordinates; samples outside the image are 0.
    """
    _, h_in, w_in = image.shape
    m = torch.cat((matrix.double(), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)))
    inv = torch.linalg.inv(m)[:2]  # output pixel -> input pixel
    h, w = size
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    src = torch.stack((xs, ys, torch.ones_like(xs)), dim=-1) @ inv.T  # [h, w, 2] input (x, y)
    # align_corners=True puts -1 and 1 on the centres of the first and last pixels: integer pixel coordinates
    gx = 2 * src[..., 0] / max(w_in - 1, 1) - 1
    gy = 2 * src[..., 1] / max(h_in - 1, 1) - 1
    grid = torch.stack((gx, gy), dim=-1)[None].to(image.dtype if image.is_floating_point() else torch.float32)
    x = image[None].to(grid.dtype)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=True)[0]


def align_face(
    image: torch.Tensor, landmarks: Sequence[tuple[float, float]], size: int = 112
) -> torch.Tensor:
    """The ArcFace crop ``[3, size, size]`` of a face: ``image [3, H, W]`` (float in [0, 1]) warped so that its
    five ``landmarks`` land on the template (scaled to ``size``)."""
    if len(landmarks) != 5:
        raise ValueError(f"face alignment needs 5 landmarks, got {len(landmarks)}")
    template = np.asarray(ARCFACE_TEMPLATE) * (size / 112.0)
    matrix = similarity_transform(np.asarray(landmarks, dtype=np.float64), template)
    return warp_affine(image.float(), matrix, (size, size))


def _pixels(frame: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[3, H, W]`` from an RGB frame (numpy ``H x W x 3`` or a tensor ``[3, H, W]``)."""
    if isinstance(frame, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    return frame


def face_embeddings(
    embedder: IResNet,
    frames: Sequence[np.ndarray | torch.Tensor],
    faces: Sequence[FaceBox | None],
    *,
    batch_size: int = 32,
) -> list[torch.Tensor | None]:
    """Unit-norm ArcFace embeddings of each frame's face (aligned to its landmarks), ``batch_size`` crops per
    forward; None where a frame has no face."""
    size = embedder.config.input_size
    crops = [
        align_face(_pixels(f).float() / 255.0, face.landmarks, size)
        for f, face in zip(frames, faces, strict=True)
        if face is not None
    ]
    embeddings: list[torch.Tensor] = []
    for start in range(0, len(crops), batch_size):
        embeddings.extend(embedder.embed(torch.stack(crops[start : start + batch_size])))
    found = iter(embeddings)
    return [None if face is None else next(found) for face in faces]


def video_face_sim(
    detector: FaceDetector,
    embedder: IResNet,
    reference: np.ndarray | torch.Tensor,
    frames: Sequence[np.ndarray | torch.Tensor],
    *,
    batch_size: int = 32,
) -> tuple[FaceSim | None, FaceBox | None, list[FaceBox | None]]:
    """Face-Sim of ``frames`` against the largest face of ``reference`` (RGB uint8 images).

    Returns the score (None when the reference has no face), the reference face, and the largest face of each
    frame (None where there is none).
    """
    ref_face = detector.largest(_pixels(reference))
    faces = [detector.largest(_pixels(f)) for f in frames]
    if ref_face is None:
        return None, None, faces
    (ref_emb,) = face_embeddings(embedder, [reference], [ref_face])
    assert ref_emb is not None
    per_frame = face_embeddings(embedder, frames, faces, batch_size=batch_size)
    return face_similarity(ref_emb, per_frame), ref_face, faces
