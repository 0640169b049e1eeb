"""Quality metrics of generated videos, as the HunyuanCustom paper (§5.1) and VBench define them.

- ``clip``: CLIP-B-T (prompt-frame alignment) and temporal consistency with CLIP ViT-B (``ClipScorer``).
- ``dino``: DINO-Sim, the subject's similarity to its reference image with DINOv2 (``DinoScorer``).
- ``flow``: dense optical flow and VBench's dynamic degree (``dynamic_degree``).
- ``arcface``: the ArcFace IResNet face embedder and Face-Sim (``IResNet``, ``face_similarity``).
- ``face``: five-landmark alignment to the ArcFace template and Face-Sim of a video (``video_face_sim``).
- ``frames``: uint8 frames to model inputs, frame sampling.

Each module states its recipe and where it departs from the paper's; docs/QC.md gathers them with the
thresholds.
"""

from model_core.qc.arcface import ArcFaceConfig, FaceSim, IResNet, crop_faces, face_similarity
from model_core.qc.clip import ClipScorer, clip_text_score, consistency
from model_core.qc.dino import (
    DinoScorer,
    crop_box,
    crop_embeddings,
    dino_similarity,
    foreground_box,
    head_and_shoulders,
)
from model_core.qc.face import (
    ARCFACE_TEMPLATE,
    align_face,
    face_embeddings,
    similarity_transform,
    video_face_sim,
    warp_affine,
)
from model_core.qc.flow import FLOW_NAME, DynamicDegree, dynamic_degree, lucas_kanade_flow, top_magnitude
from model_core.qc.frames import as_batch, preprocess, sample_by_rate

__all__ = [
    "ARCFACE_TEMPLATE",
    "FLOW_NAME",
    "ArcFaceConfig",
    "ClipScorer",
    "DinoScorer",
    "DynamicDegree",
    "FaceSim",
    "IResNet",
    "align_face",
    "as_batch",
    "clip_text_score",
    "consistency",
    "crop_box",
    "crop_embeddings",
    "crop_faces",
    "dino_similarity",
    "dynamic_degree",
    "face_embeddings",
    "face_similarity",
    "foreground_box",
    "head_and_shoulders",
    "lucas_kanade_flow",
    "preprocess",
    "sample_by_rate",
    "similarity_transform",
    "top_magnitude",
    "video_face_sim",
    "warp_affine",
]
