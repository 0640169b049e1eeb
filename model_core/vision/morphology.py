"""Binary mask morphology with OpenCV's semantics (elliptic structuring element, dilate/erode, iterations),
written in torch so that the model side needs no OpenCV."""

from __future__ import annotations

import math

import torch


def ellipse_kernel(size: int) -> torch.Tensor:
    """The size x size elliptic structuring element, row by row as OpenCV's MORPH_ELLIPSE draws it.

    Row i spans columns [c - dx, c + dx] with r = c = size // 2, dy = i - r and
    dx = round(c * sqrt(1 - dy^2 / r^2)) (round half to even, as OpenCV's cvRound).
    """
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    kernel = torch.zeros(size, size, dtype=torch.bool)
    r = c = size // 2
    inv_r2 = 1.0 / (r * r) if r else 0.0
    for i in range(size):
        dy = i - r
        if abs(dy) > r:
            continue
        dx = round(c * math.sqrt((r * r - dy * dy) * inv_r2))
        j1, j2 = max(c - dx, 0), min(c + dx + 1, size)
        kernel[i, j1:j2] = True
    return kernel


def _morph(mask: torch.Tensor, kernel: torch.Tensor, dilate: bool) -> torch.Tensor:
    # out[y, x] = max (dilate) / min (erode) of mask[y + i - a, x + j - a] over kernel[i, j];
    # pixels outside the image never win (OpenCV's default border for both operations)
    k = kernel.shape[0]
    a = k // 2
    fill = not dilate
    h, w = mask.shape[-2:]
    padded = torch.full((*mask.shape[:-2], h + k - 1, w + k - 1), fill, dtype=torch.bool, device=mask.device)
    padded[..., a : a + h, a : a + w] = mask
    out = torch.full_like(mask, fill)
    for i, j in kernel.nonzero().tolist():
        window = padded[..., i : i + h, j : j + w]
        out = (out | window) if dilate else (out & window)
    return out


def expand_mask(mask: torch.Tensor, expand_scale: int, iterations: int = 3) -> torch.Tensor:
    """Grow (expand_scale > 0) or shrink (< 0) a boolean mask [..., H, W] with an |expand_scale| elliptic kernel,
    `iterations` times; 0 leaves it unchanged."""
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor [..., H, W], got {mask.dtype}")
    if expand_scale == 0:
        return mask.clone()
    kernel = ellipse_kernel(abs(expand_scale)).to(mask.device)
    out = mask
    for _ in range(iterations):
        out = _morph(out, kernel, dilate=expand_scale > 0)
    return out
