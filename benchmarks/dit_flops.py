"""Analytic FLOP count of one ``HunyuanDiT`` forward, for achieved TFLOP/s and model FLOP utilisation.

Counted: every matrix product (Linear and patch Conv3d: ``2 * in * out`` per token; attention: ``QK^T`` and
``AV``, ``4 * S_q * S_k * hidden`` per segment). Not counted: norms, RoPE, softmax, activations, the residual
and modulation arithmetic; they are a few per cent and do not run on matrix units.

Attention follows the text-padding segments: per sample, [image tokens + valid text] and [padded text] are
separate attentions, so padding costs ``(L - L_valid)^2`` and not a share of the big square.

Two conventions appear in the literature; both are here:

* :func:`dit_forward_flops` (exact): each double block's image weights see only image tokens and its text
  weights only text tokens. This is the count for MFU.
* :func:`dense_convention_flops`: ``2 * parameters * tokens + attention``, as if every weight saw every token.
  It overcounts the double blocks (both streams' weights for all tokens); the design note's "about 1.35e16
  FLOP per forward at 720p x 129 frames, three quarters attention" is this convention. The exact count there
  is about 1.21e16, 87 % attention.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_core.configs import DiTConfig

__all__ = ["FlopCount", "dense_convention_flops", "dit_forward_flops", "latent_shape", "token_counts"]

# timestep / guidance sinusoid width (fixed by the released models)
FREQ_DIM = 256


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one forward, split into matmuls in layers and attention products."""

    linear: float
    attention: float

    @property
    def total(self) -> float:
        """All counted FLOPs."""
        return self.linear + self.attention

    @property
    def attention_fraction(self) -> float:
        """Share of the FLOPs in attention products (QK^T and AV)."""
        return self.attention / self.total


def latent_shape(height: int, width: int, frames: int) -> tuple[int, int, int]:
    """Latent (T, H, W) of a ``height x width x frames`` video for the 4x8x8 causal VAE."""
    if (frames - 1) % 4:
        raise ValueError(f"frames must be 4k+1 for the causal VAE, got {frames}")
    if height % 16 or width % 16:
        raise ValueError(f"height and width must be multiples of 16, got {height}x{width}")
    return (frames - 1) // 4 + 1, height // 8, width // 8


def token_counts(config: DiTConfig, latent: tuple[int, int, int], num_refs: int = 0) -> tuple[int, int]:
    """(video tokens, identity-image tokens) for a latent (T, H, W)."""
    pt, ph, pw = config.patch_size
    t, h, w = latent
    if t % pt or h % ph or w % pw:
        raise ValueError(f"latent {latent} is not divisible by the patch {config.patch_size}")
    per_frame = (h // ph) * (w // pw)
    return (t // pt) * per_frame, num_refs * per_frame


def _attention(segments: list[int], hidden: int) -> float:
    # per segment of S tokens: QK^T (2*S*S*D per head) + AV (same), summed over heads: 4*S^2*hidden
    return sum(4.0 * s * s * hidden for s in segments)


def dit_forward_flops(
    config: DiTConfig,
    latent: tuple[int, int, int],
    *,
    text_len: int,
    text_valid: int | None = None,
    num_refs: int = 0,
    audio: bool = False,
    video_condition: bool = False,
    batch: int = 1,
) -> FlopCount:
    """Exact matmul FLOPs of ``HunyuanDiT(config)`` on a latent (T, H, W) with ``text_len`` text tokens.

    Args:
        latent: the latent grid (T, H, W) before patching (:func:`latent_shape` converts video sizes).
        text_len: text tokens including padding; ``text_valid`` of them are real (default: all).
        num_refs: identity images (HunyuanCustom); their tokens run through every block.
        audio: count the audio branch (the preset must have one); video_condition: the editing branch.
    """
    c, m = config.hidden_size, config.mlp_hidden
    n_vid, n_ref = token_counts(config, latent, num_refs)
    n_img = n_vid + n_ref
    lt = text_len
    lv = text_len if text_valid is None else text_valid
    if not 0 < lv <= lt:
        raise ValueError(f"text_valid must lie in [1, text_len={lt}], got {lv}")
    patch = config.patch_size[0] * config.patch_size[1] * config.patch_size[2]
    linear = 0.0
    attention = 0.0

    # 1. vec: time_in, vector_in, guidance_in (one token per sample)
    embedders = 2 + int(config.guidance_embed)
    linear += 2.0 * ((embedders - 1) * (FREQ_DIM * c + c * c) + (config.text_pooled_dim * c + c * c))
    # 2. image tokens (identity images share img_in), editing condition on video tokens
    linear += 2.0 * n_img * config.in_channels * patch * c
    if video_condition:
        linear += 2.0 * n_vid * (2 * config.in_channels * patch * c + c * c)
    # 3. text refiner: input embedder, t and c embedders, blocks with a full masked attention over L
    d_txt = config.text_states_dim
    linear += 2.0 * (lt * d_txt * c + (FREQ_DIM * c + c * c) + (d_txt * c + c * c))
    per_refiner_token = 3 * c * c + c * c + 2 * c * m
    linear += config.refiner_depth * 2.0 * (lt * per_refiner_token + c * 2 * c)
    attention += config.refiner_depth * _attention([lt], c)
    # 4. double blocks: each stream's weights on its own tokens; modulation on vec
    per_stream_token = 3 * c * c + c * c + 2 * c * m
    segments = [n_img + lv] + ([lt - lv] if lt > lv else [])
    linear += config.depth_double * 2.0 * ((n_img + lt) * per_stream_token + 2 * c * 6 * c)
    attention += config.depth_double * _attention(segments, c)
    # 5. single blocks: linear1 (qkv + mlp in), linear2 (attn + mlp out)
    per_single_token = c * (3 * c + m) + (c + m) * c
    linear += config.depth_single * 2.0 * ((n_img + lt) * per_single_token + c * 3 * c)
    attention += config.depth_single * _attention(segments, c)
    # 6. final layer on video tokens only (identity tokens are dropped first)
    linear += 2.0 * (c * 2 * c + n_vid * c * patch * config.out_channels)
    # 7. audio: projection per video frame, then per latent frame a one-head cross-attention
    if audio:
        a = config.audio
        if a is None:
            raise ValueError("audio=True needs a preset with an audio branch")
        t_lat = n_vid // ((latent[1] // config.patch_size[1]) * (latent[2] // config.patch_size[2]))
        video_frames = (t_lat - 1) * a.frames_per_latent + 1
        linear += (
            2.0
            * video_frames
            * (
                a.in_features * a.proj_hidden
                + a.proj_hidden * a.proj_hidden
                + a.proj_hidden * a.tokens_per_frame * c
            )
        )
        audio_tokens = a.frames_per_latent * a.tokens_per_frame  # per latent frame
        x = a.cross_dim
        per_model_linear = n_vid * c * x + t_lat * audio_tokens * c * 2 * x + n_vid * x * c
        per_model_attention = 2.0 * 2 * n_vid * audio_tokens * x
        linear += len(a.insert_after) * 2.0 * per_model_linear
        attention += len(a.insert_after) * per_model_attention
    return FlopCount(linear=batch * linear, attention=batch * attention)


def dense_convention_flops(
    parameters: int, config: DiTConfig, latent: tuple[int, int, int], *, text_len: int, num_refs: int = 0
) -> FlopCount:
    """``2 * parameters * (image + text tokens)`` plus the joint attention of every block (no padding)."""
    n_vid, n_ref = token_counts(config, latent, num_refs)
    tokens = n_vid + n_ref + text_len
    blocks = config.depth_double + config.depth_single
    return FlopCount(
        linear=2.0 * parameters * tokens, attention=blocks * _attention([tokens], config.hidden_size)
    )
