"""The HunyuanVideo / HunyuanCustom MM-DiT with the released checkpoints' parameter names."""

from model_core.dit.attention import (
    AttentionBackend,
    AttentionBackendUnavailable,
    JointAttention,
    SdpaJointAttention,
    check_backend_available,
    make_joint_attention,
)
from model_core.dit.rope import apply_rope, rope_cos_sin, token_positions
from model_core.dit.transformer import (
    AUTO_ATTENTION,
    DiTState,
    HunyuanDiT,
    TokenGrid,
    auto_attention_backend,
)

__all__ = [
    "AUTO_ATTENTION",
    "AttentionBackend",
    "AttentionBackendUnavailable",
    "DiTState",
    "HunyuanDiT",
    "JointAttention",
    "SdpaJointAttention",
    "TokenGrid",
    "apply_rope",
    "auto_attention_backend",
    "check_backend_available",
    "make_joint_attention",
    "rope_cos_sin",
    "token_positions",
]
