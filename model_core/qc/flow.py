"""Dense optical flow (pyramidal Lucas-Kanade in torch) and VBench's dynamic degree.

Dynamic degree (VBench): take frames at about 8 fps, estimate the optical flow between consecutive taken
frames, score each pair with the mean of its largest 5% flow magnitudes (pixels), and call the video dynamic
when at least ``round(4 * n / 16)`` of the scores (``n`` taken frames) exceed ``6 * min(H, W) / 256`` pixels.
A campaign's dynamic degree is the share of dynamic videos (HunyuanCustom's own: 0.71).

Flow. VBench and HunyuanCustom use RAFT. adrender has no RAFT weights in its registry, so the flow here is
dense pyramidal Lucas-Kanade (``FLOW_NAME``): per pixel, least squares on the brightness-constancy equation
over a Gaussian-weighted window, refined coarse to fine with warping and a median filter per level. It needs
no weights. Calibration on synthetic translation of a smooth random texture (``tests/model_core/qc/
test_flow.py``, and docs/QC.md), on frames whose shorter side is 192 to 256 px (every video of 192 px or more
is measured at that size): the mean flow is exact to 1% from 0.5 to 16 px a frame; the score (top-5%
magnitude) reads 1 to 5 px within 12% (most pairs within 3%), the range where the threshold (4.5 to 6 px there) decides; 0.5 px
reads about 0.6 (the top 5% of the noise), and 6 to 16 px up to 50% high (isolated wrong vectors), never
low, so a pair scored near the threshold may be one moving slightly slower than it. Smaller frames have fewer pyramid levels: at 96-128 px, 6 px
reads up to 50% high. It reads zero flow on texture-free regions where RAFT would
infer motion from context, so its dynamic degree is conservative. Flow runs on frames scaled so their shorter side is at
most ``max_side`` pixels (256) and is scaled back, so magnitudes stay in the video's own pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model_core.qc.frames import sample_by_rate

__all__ = ["FLOW_NAME", "DynamicDegree", "dynamic_degree", "lucas_kanade_flow", "top_magnitude"]

FLOW_NAME = "pyramidal-lucas-kanade"
TARGET_FPS = 8.0  # VBench samples frames at 8 fps for the dynamic degree
TOP_FRACTION = 0.05  # the mean of the largest 5% flow magnitudes scores a pair
# flow is not scored within 1/12 of the shorter side from the edges, where content enters or leaves the frame
BORDER_DIVISOR = 12


def _gray(pixels: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` in [0, 1] -> luma ``[N, 1, H, W]`` in [0, 255] (BT.601 weights)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels * w).sum(1, keepdim=True) * 255.0


def _gaussian(radius: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable blur of ``[N, C, H, W]`` with replicated borders."""
    r = kernel.numel() // 2
    c = x.shape[1]
    kx = kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), ky, groups=c)


def _warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` ``[N, 1, H, W]`` at ``x + flow`` (flow ``[N, 2, H, W]`` in pixels, (u, v) = (x, y))."""
    _, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=image.dtype, device=image.device),
        torch.arange(w, dtype=image.dtype, device=image.device),
        indexing="ij",
    )
    gx = (xs + flow[:, 0]) / max(w - 1, 1) * 2 - 1
    gy = (ys + flow[:, 1]) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)  # [N, H, W, 2]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def lucas_kanade_flow(
    prev: torch.Tensor,
    nxt: torch.Tensor,
    *,
    levels: int | None = None,
    iterations: int = 3,
    window_sigma: float = 2.0,
    ridge: float = 1e-2,
) -> torch.Tensor:
    """Flow ``[N, 2, H, W]`` (pixels; channel 0 is x, 1 is y) that maps ``prev`` onto ``nxt``:
    ``nxt(x + flow(x)) ~ prev(x)``. Inputs ``[N, 3, H, W]`` in [0, 1].

    ``levels``: pyramid levels (default: halve until the shorter side is under 16 px); ``iterations``: warps
    per level; ``window_sigma``: the Gaussian window of the least squares; ``ridge``: Tikhonov term that keeps
    texture-free pixels at zero flow.
    """
    a, b = _gray(prev.float()), _gray(nxt.float())
    if levels is None:
        levels = 1
        while min(a.shape[-2:]) >> levels >= 8:
            levels += 1
    pre = _gaussian(2, 1.0, a.device)
    window = _gaussian(max(1, round(2 * window_sigma)), window_sigma, a.device)
    pyramid = [(a, b)]
    for _ in range(levels - 1):
        a, b = (F.avg_pool2d(_blur(t, pre), 2, ceil_mode=True) for t in pyramid[-1])
        pyramid.append((a, b))
    flow = torch.zeros(a.shape[0], 2, *pyramid[-1][0].shape[-2:], device=a.device)
    for level, (a, b) in reversed(list(enumerate(pyramid))):
        if flow.shape[-2:] != a.shape[-2:]:
            flow = F.interpolate(flow, size=a.shape[-2:], mode="bilinear", align_corners=True) * 2.0
        for _ in range(iterations):
            warped = _warp(b, flow)
            mean = (a + warped) / 2
            ix = (
                F.pad(mean, (1, 1, 0, 0), mode="replicate")[..., 2:]
                - F.pad(mean, (1, 1, 0, 0), mode="replicate")[..., :-2]
            ) / 2
            iy = (
                F.pad(mean, (0, 0, 1, 1), mode="replicate")[..., 2:, :]
                - F.pad(mean, (0, 0, 1, 1), mode="replicate")[..., :-2, :]
            ) / 2
            it = warped - a
            sxx, syy, sxy = _blur(ix * ix, window), _blur(iy * iy, window), _blur(ix * iy, window)
            sxt, syt = _blur(ix * it, window), _blur(iy * it, window)
            sxx, syy = sxx + ridge, syy + ridge
            det = sxx * syy - sxy * sxy
            du = (-syy * sxt + sxy * syt) / det
            dv = (sxy * sxt - sxx * syt) / det
            # an update beyond a pixel at one level is outside the linearisation: take at most one pixel
            flow = flow + torch.cat([du, dv], dim=1).clamp(-1.0, 1.0)
        # a median filter after each level removes the isolated wrong vectors least squares leaves where
        # the window sees no structure or an occlusion ("Secrets of Optical Flow Estimation", Sun et al. 2010)
        flow = _median(flow, 5 if level else 3)
    return flow


def _median(flow: torch.Tensor, size: int) -> torch.Tensor:
    """Median filter of ``[N, C, H, W]`` over ``size`` x ``size`` neighbourhoods (replicated borders)."""
    n, c, h, w = flow.shape
    r = size // 2
    patches = F.unfold(F.pad(flow, (r, r, r, r), mode="replicate"), size)  # [N, C*size*size, H*W]
    return patches.view(n, c, size * size, h * w).median(dim=2).values.view(n, c, h, w)


def top_magnitude(flow: torch.Tensor, fraction: float = TOP_FRACTION, *, border: int = 0) -> torch.Tensor:
    """VBench's score of each flow ``[N, 2, H, W]``: the mean of its largest ``fraction`` magnitudes ``[N]``,
    leaving out ``border`` pixels on each side."""
    if border:
        flow = flow[..., border:-border, border:-border]
    mag = flow.pow(2).sum(1).sqrt().flatten(1)
    k = max(1, int(mag.shape[1] * fraction))
    return mag.topk(k, dim=1).values.mean(1)


@dataclass(frozen=True)
class DynamicDegree:
    """VBench's dynamic-degree decision for one video, with what it was decided on."""

    dynamic: bool
    scores: tuple[float, ...]  # top-5% flow magnitude of each pair of taken frames, in the video's pixels
    threshold: float  # 6 * min(H, W) / 256 pixels
    required: int  # scores above the threshold needed to call the video dynamic
    frames_used: int
    flow: str = FLOW_NAME


@torch.no_grad()
def dynamic_degree(
    pixels: torch.Tensor, fps: float, *, max_side: int = 256, target_fps: float = TARGET_FPS
) -> DynamicDegree:
    """VBench's dynamic degree of a video ``[N, 3, H, W]`` in [0, 1] at ``fps`` (see the module docstring).

    Departures from VBench, both for this flow: the scores leave out a border of 1/12 of the shorter side
    (content entering the frame has no match, and least squares invents large vectors there); and VBench
    requires ``round(4 * n / 16)`` scores above the threshold, which is 0 under 3 taken frames (every short
    clip would be dynamic), so here at least one is required.
    """
    height, width = pixels.shape[-2:]
    idx = sample_by_rate(pixels.shape[0], fps, target_fps)
    taken = pixels[idx].float()
    scale = min(1.0, max_side / min(height, width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        taken = F.interpolate(taken, size=size, mode="bilinear", align_corners=False, antialias=True)
    threshold = 6.0 * min(height, width) / 256.0
    required = max(1, round(4 * len(idx) / 16.0))
    if len(idx) < 2:
        return DynamicDegree(False, (), threshold, required, len(idx))
    flow = lucas_kanade_flow(taken[:-1], taken[1:]) / scale
    border = round(min(taken.shape[-2:]) / BORDER_DIVISOR)
    scores = tuple(float(s) for s in top_magnitude(flow, border=border))
    dynamic = sum(s > threshold for s in scores) >= required
    return DynamicDegree(dynamic, scores, threshold, required, len(idx))
