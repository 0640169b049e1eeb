"""Identity-image and edit-video preprocessing: hand-computed pixels, OpenCV-equivalent morphology, ffmpeg
frames, the 32-channel condition with the real tiny VAE."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from model_core.io import MediaDecodeError, probe_video, read_image, read_video_frames
from model_core.vision import (
    VAE_SCALING_FACTOR,
    EditVideo,
    EditVideoError,
    binarize_mask,
    edit_pixels,
    edit_video_condition,
    ellipse_kernel,
    expand_mask,
    identity_latents,
    identity_pixels,
    llava_pixels,
    load_edit_video,
    official_tiling,
    pad_to_size,
    resize_bilinear,
    resolve_tiling,
    rgb_to_gray,
    white_identity_latents,
)


def write_video(path: Path, frames: np.ndarray, codec: str = "ffv1") -> Path:
    """Encode RGB uint8 [F, H, W, 3] with ffmpeg (ffv1 in mkv is lossless; libx264 for an mp4)."""
    _f, h, w, _ = frames.shape
    args = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
            "-r", "25", "-i", "pipe:", "-c:v", codec]  # fmt: skip
    if codec == "ffv1":
        args += ["-pix_fmt", "bgr0"]
    else:
        args += ["-pix_fmt", "yuv420p"]
    subprocess.run([*args, str(path)], input=frames.tobytes(), check=True)
    return path


# --- pixels ------------------------------------------------------------------------------------------------------


def test_bilinear_resize_half_pixel_centres() -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    img[:, 1] = 100
    out = resize_bilinear(img, 2, 4)
    # source x = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> 0, 25, 75, 100 (edges clamp)
    assert out[0, :, 0].tolist() == [0, 25, 75, 100]


def test_pad_to_size_keeps_aspect_and_centres_white() -> None:
    img = np.zeros((20, 10, 3), np.uint8)
    img[...] = (10, 200, 30)
    out = pad_to_size(img, 32, 32)  # height limits: 32 x int(10 / 20 * 32) = 32 x 16, left pad (32 - 16) // 2
    assert out.shape == (32, 32, 3)
    assert (out[:, :8] == 255).all() and (out[:, 24:] == 255).all()
    assert (out[:, 8:24] == (10, 200, 30)).all()

    wide = pad_to_size(np.zeros((3, 7, 3), np.uint8), 16, 16)  # width limits: int(3 / 7 * 16) = 6 rows, top 5
    dark_rows = np.where((wide == 0).all(axis=(1, 2)))[0].tolist()
    assert dark_rows == list(range(5, 11))


def test_llava_pixels_clip_normalisation() -> None:
    img = np.zeros((2, 4, 3), np.uint8)  # width limits: 336 x 168, rows 84..251
    px = llava_pixels(img)
    assert px.shape == (3, 336, 336)
    white = [(1 - 0.48145466) / 0.26862954, (1 - 0.4578275) / 0.26130258, (1 - 0.4082107) / 0.27577711]
    black = [-0.48145466 / 0.26862954, -0.4578275 / 0.26130258, -0.4082107 / 0.27577711]
    for c in range(3):
        assert px[c, 0, 0].item() == pytest.approx(white[c], abs=1e-5)
        assert px[c, 83, 100].item() == pytest.approx(white[c], abs=1e-5)
        assert px[c, 84, 100].item() == pytest.approx(black[c], abs=1e-5)
        assert px[c, 251, 100].item() == pytest.approx(black[c], abs=1e-5)
        assert px[c, 252, 100].item() == pytest.approx(white[c], abs=1e-5)


def test_identity_pixels_range_and_shape() -> None:
    img = np.full((10, 20, 3), 51, np.uint8)
    x = identity_pixels(img, 16, 32)
    assert x.shape == (1, 3, 1, 16, 32)
    assert x[0, 0, 0, 0, 0].item() == pytest.approx(51 / 127.5 - 1)  # fits exactly: no padding
    x2 = identity_pixels(img, 32, 32)  # 16 rows of image, 8 white rows above and below
    assert x2[0, :, 0, 0].eq(1.0).all() and x2[0, :, 0, 8].sub(51 / 127.5 - 1).abs().max() < 1e-6


# --- morphology --------------------------------------------------------------------------------------------------


def test_ellipse_kernels_match_opencv() -> None:
    assert ellipse_kernel(5).int().tolist() == [
        [0, 0, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [0, 0, 1, 0, 0],
    ]
    assert ellipse_kernel(3).int().tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert ellipse_kernel(1).int().tolist() == [[1]]


def test_dilate_single_pixel_three_iterations() -> None:
    mask = torch.zeros(1, 15, 15, dtype=torch.bool)
    mask[0, 7, 7] = True
    out = expand_mask(mask, 3, iterations=3)  # cross kernel 3 times: a diamond of radius 3
    yy, xx = torch.meshgrid(torch.arange(15), torch.arange(15), indexing="ij")
    assert torch.equal(out[0], (yy - 7).abs() + (xx - 7).abs() <= 3)
    once = expand_mask(mask, 5, iterations=1)
    assert torch.equal(once[0, 5:10, 5:10], ellipse_kernel(5))
    assert once.sum() == ellipse_kernel(5).sum()


def test_erode_shrinks_and_keeps_image_border() -> None:
    mask = torch.zeros(1, 12, 12, dtype=torch.bool)
    mask[0, 2:10, 2:10] = True
    out = expand_mask(mask, -3, iterations=3)  # cross kernel: 3 pixels off each side, corners cut
    yy, xx = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    d_edge = torch.minimum(torch.minimum(yy - 2, 9 - yy), torch.minimum(xx - 2, 9 - xx))
    assert out[0][d_edge >= 3].all() and not out[0][d_edge < 3].any()
    full = torch.ones(1, 6, 6, dtype=torch.bool)
    assert expand_mask(full, -5).all()  # outside the image never erodes
    assert torch.equal(expand_mask(mask, 0), mask)


def test_threshold_gray_at_127_5() -> None:
    frames = np.zeros((1, 1, 4, 3), np.uint8)
    frames[0, 0] = [[127, 127, 127], [128, 128, 128], [255, 0, 0], [0, 255, 0]]
    assert rgb_to_gray(frames)[0, 0].tolist() == [127, 128, 29, 150]
    assert binarize_mask(frames)[0, 0].tolist() == [False, True, False, True]


def test_coloured_mask_gray_as_release_bgr2gray_on_rgb() -> None:
    """The release applies cv2.COLOR_BGR2GRAY to RGB frames: gray = (1868 R + 9617 G + 4899 B + 8192) >> 14."""
    frames = np.array([[[[255, 0, 0], [0, 0, 255], [200, 100, 150], [100, 100, 200]]]], np.uint8)
    # red:   255 * 1868 = 476340;                       (476340 + 8192) >> 14 = 29
    # blue:  255 * 4899 = 1249245;                      (1249245 + 8192) >> 14 = 76
    # (200, 100, 150): 373600 + 961700 + 734850 = 2070150; (+ 8192) >> 14 = 126 -> kept (BT.601 on RGB: 136)
    # (100, 100, 200): 186800 + 961700 + 979800 = 2128300; (+ 8192) >> 14 = 130 -> masked (BT.601 on RGB: 111)
    assert rgb_to_gray(frames)[0, 0].tolist() == [29, 76, 126, 130]
    assert binarize_mask(frames)[0, 0].tolist() == [False, False, False, True]
    with pytest.raises(EditVideoError, match="RGB uint8"):
        rgb_to_gray(frames.astype(np.float32))


def test_edit_pixels_masked_frame_and_mask_video() -> None:
    frames = np.full((1, 2, 2, 3), 255, np.uint8)
    frames[0, 0, 0] = (0, 127, 255)
    mask = torch.tensor([[[False, True], [True, False]]])
    masked, mask_video = edit_pixels(frames, mask)
    assert masked.shape == mask_video.shape == (1, 3, 1, 2, 2)
    assert masked[0, :, 0, 0, 0].tolist() == pytest.approx([-1.0, 127 / 127.5 - 1, 1.0])
    assert masked[0, :, 0, 0, 1].tolist() == [-1.0, -1.0, -1.0]  # masked region is black
    assert masked[0, :, 0, 1, 1].tolist() == [1.0, 1.0, 1.0]
    assert mask_video[0, :, 0].tolist() == [[[-1.0, 1.0], [1.0, -1.0]]] * 3


# --- ffmpeg frames and the job checks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edit_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    d = tmp_path_factory.mktemp("edit")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    masks = np.zeros((5, 32, 48, 3), np.uint8)
    masks[:, 10:20, 12:30] = 255
    masks[:, 0, 0] = 100  # below the threshold
    return write_video(d / "src.mkv", frames), write_video(d / "mask.mkv", masks), frames, masks


def test_read_frames_lossless(edit_files) -> None:
    src, _, frames, _ = edit_files
    info = probe_video(src)
    assert (info.width, info.height, info.n_frames) == (48, 32, 5)
    assert info.fps == pytest.approx(25.0)
    assert np.array_equal(read_video_frames(src), frames)
    assert np.array_equal(read_image(src), frames[0])


def test_load_edit_video_builds_expanded_mask(edit_files) -> None:
    src, mask_path, _frames, masks = edit_files
    edit = load_edit_video(src, mask_path, expand_scale=3, expected_frames=5, expected_size=(32, 48))
    assert edit.n_frames == 5 and edit.size == (32, 48)
    raw = torch.from_numpy(masks[..., 0] > 127.5)
    assert torch.equal(edit.mask, expand_mask(raw, 3))
    assert edit.mask.sum() > raw.sum()
    assert not edit.mask[:, 0, 0].any()
    shrunk = load_edit_video(src, mask_path, expand_scale=-3)
    assert shrunk.mask.sum() < raw.sum()


def test_edit_video_job_mismatches(edit_files, tmp_path: Path) -> None:
    src, mask_path, frames, masks = edit_files
    with pytest.raises(EditVideoError, match="asks for 9 frames but the edit video has 5"):
        load_edit_video(src, mask_path, expected_frames=9)
    with pytest.raises(EditVideoError, match="asks for 64x48"):
        load_edit_video(src, mask_path, expected_size=(64, 48))
    short_mask = write_video(tmp_path / "m4.mkv", masks[:4])
    with pytest.raises(EditVideoError, match="mask video has 4 frames"):
        load_edit_video(src, short_mask)
    six = write_video(tmp_path / "six.mkv", np.concatenate([frames, frames[:1]]))
    with pytest.raises(EditVideoError, match="4k\\+1"):
        load_edit_video(six, write_video(tmp_path / "m6.mkv", np.concatenate([masks, masks[:1]])))
    odd = write_video(tmp_path / "odd.mkv", frames[:, :, :40])
    with pytest.raises(EditVideoError, match="48"):
        load_edit_video(odd, mask_path)
    with pytest.raises(MediaDecodeError, match="no such file"):
        load_edit_video(tmp_path / "nope.mp4", mask_path)


def test_conform_resizes_and_trims_to_the_job(edit_files) -> None:
    src, mask_path, frames, _masks = edit_files
    edit = load_edit_video(
        src, mask_path, expand_scale=0, expected_frames=1, expected_size=(16, 32), conform=True
    )
    assert edit.frames.shape == (1, 16, 32, 3)
    assert np.array_equal(edit.frames[0], resize_bilinear(frames[0], 16, 32))
    # the 10x18 box at rows 10..19, cols 12..29 halves and scales by 2/3: rows 5..9, cols 8..19
    assert edit.mask[0, 5:10, 8:20].all() and edit.mask.sum() == 5 * 12
    with pytest.raises(EditVideoError, match="asks for 9 frames"):
        load_edit_video(src, mask_path, expected_frames=9, conform=True)


def test_mp4_edit_video_reads_at_its_size(tmp_path: Path) -> None:
    frames = np.full((9, 32, 32, 3), 90, np.uint8)
    src = write_video(tmp_path / "src.mp4", frames, codec="libx264")
    mask = write_video(tmp_path / "mask.mp4", np.zeros_like(frames), codec="libx264")
    edit = load_edit_video(src, mask, expected_frames=9)
    assert edit.frames.shape == (9, 32, 32, 3)
    assert np.abs(edit.frames.astype(int) - 90).max() <= 3
    assert not edit.mask.any()


# --- with the real tiny VAE ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vae():
    from model_core.vae import CausalVAE3D, vae_preset

    torch.manual_seed(0)
    return CausalVAE3D(vae_preset("tiny-hunyuan-vae")).eval()


def test_edit_condition_with_tiny_vae(edit_files, tiny_vae) -> None:
    src, mask_path, _, _ = edit_files
    edit = load_edit_video(src, mask_path, expand_scale=3)
    with torch.no_grad():
        cond = edit_video_condition(tiny_vae, edit, torch.Generator().manual_seed(1))
        masked, mask_video = edit_pixels(edit.frames, edit.mask)
        g = torch.Generator().manual_seed(1)
        video_dist, mask_dist = tiny_vae.encode(masked), tiny_vae.encode(mask_video)
        # masked video first, then the mask, both drawn from the one generator in that order, both scaled
        expected_video = (
            video_dist.mean + video_dist.std * torch.randn(video_dist.mean.shape, generator=g)
        ) * 0.476986
        expected_mask = (
            mask_dist.mean + mask_dist.std * torch.randn(mask_dist.mean.shape, generator=g)
        ) * 0.476986
    assert cond.shape == (1, 32, 2, 4, 6)  # 5 frames -> 2 latent frames, 32x48 -> 4x6
    torch.testing.assert_close(cond[:, :16], expected_video)
    torch.testing.assert_close(cond[:, 16:], expected_mask)
    assert not torch.allclose(cond[:, :16], video_dist.mode() * VAE_SCALING_FACTOR)  # a sample, not the mode


def test_identity_latents_are_scaled_samples(tiny_vae) -> None:
    img = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    with torch.no_grad():
        a = identity_latents(tiny_vae, img, 32, 48, torch.Generator().manual_seed(3))
        c = identity_latents(tiny_vae, img, 32, 48, torch.Generator().manual_seed(4))
        dist = tiny_vae.encode(identity_pixels(img, 32, 48))
        noise = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(3))
    assert a.shape == (1, 16, 1, 4, 6)
    torch.testing.assert_close(a, (dist.mean + dist.std * noise) * 0.476986)
    assert not torch.equal(a, c)


class CountingVAE:
    """The tiny VAE, counting its single-pass encoder calls (one per tile)."""

    def __init__(self, vae) -> None:
        self.vae, self.config, self.calls = vae, vae.config, 0
        original = vae.encode_moments

        def counted(x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return original(x)

        self.counted = counted

    def parameters(self):
        return self.vae.parameters()

    def encode(self, x: torch.Tensor, tiling=None):
        self.vae.encode_moments = self.counted
        try:
            return self.vae.encode(x, tiling=tiling)
        finally:
            del self.vae.encode_moments


def test_identity_latents_are_tiled_as_released(tiny_vae) -> None:
    from model_core.vae import TilingConfig

    img = np.random.default_rng(2).integers(0, 256, (40, 300, 3), dtype=np.uint8)
    vae = CountingVAE(tiny_vae)
    with torch.no_grad():
        tiled = identity_latents(vae, img, 32, 288, torch.Generator().manual_seed(5))  # 288 > 256 px: 2 tiles
        assert vae.calls == 2
        explicit = tiny_vae.encode(identity_pixels(img, 32, 288), tiling=TilingConfig())
        noise = torch.randn(explicit.mean.shape, generator=torch.Generator().manual_seed(5))
        vae.calls = 0
        one_pass = identity_latents(vae, img, 32, 288, torch.Generator().manual_seed(5), tiling=None)
        assert vae.calls == 1
        vae.calls = 0
        identity_latents(vae, img, 32, 48)  # within one tile: tiling leaves it whole
        assert vae.calls == 1
    assert tiled.shape == one_pass.shape == (1, 16, 1, 4, 36)
    torch.testing.assert_close(tiled, (explicit.mean + explicit.std * noise) * VAE_SCALING_FACTOR)
    assert not torch.allclose(tiled, one_pass)  # the tiled path really ran (tiles see less context)


def test_white_identity_latents_encode_ones(tiny_vae) -> None:
    with torch.no_grad():
        white = white_identity_latents(tiny_vae, 32, 48, torch.Generator().manual_seed(6))
        dist = tiny_vae.encode(torch.ones(1, 3, 1, 32, 48))
        noise = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(white, (dist.mean + dist.std * noise) * VAE_SCALING_FACTOR)


def test_edit_condition_is_tiled_as_released(tiny_vae) -> None:
    from model_core.vae import TilingConfig

    frames = np.random.default_rng(4).integers(0, 256, (1, 32, 272, 3), dtype=np.uint8)
    mask = torch.zeros(1, 32, 272, dtype=torch.bool)
    mask[:, 8:20, 100:200] = True
    edit = EditVideo(frames=frames, mask=mask)
    vae = CountingVAE(tiny_vae)
    with torch.no_grad():
        cond = edit_video_condition(vae, edit, torch.Generator().manual_seed(0))
        assert vae.calls == 4  # 2 tiles across 272 px, for the masked video and for the mask
        masked, mask_video = edit_pixels(frames, mask)
        g = torch.Generator().manual_seed(0)
        parts = []
        for px in (masked, mask_video):
            d = tiny_vae.encode(px, tiling=TilingConfig())
            parts.append((d.mean + d.std * torch.randn(d.mean.shape, generator=g)) * VAE_SCALING_FACTOR)
        vae.calls = 0
        one_pass = edit_video_condition(vae, edit, torch.Generator().manual_seed(0), tiling=None)
        assert vae.calls == 2
    assert cond.shape == (1, 32, 1, 4, 34)
    torch.testing.assert_close(cond, torch.cat(parts, dim=1))
    assert not torch.allclose(cond, one_pass)


def test_tiling_choice_is_checked(tiny_vae) -> None:
    from model_core.vae import TilingConfig, VAEConfig

    assert official_tiling(tiny_vae) == TilingConfig.from_vae_config(tiny_vae.config) == TilingConfig()
    small = VAEConfig(block_out_channels=(8, 8, 16, 16), norm_num_groups=4, sample_size=128, sample_tsize=32)

    class WithConfig:
        config = small

    assert official_tiling(WithConfig()) == TilingConfig(tile_sample_size=128, tile_sample_frames=32)
    assert official_tiling(object()) == TilingConfig()
    assert resolve_tiling(tiny_vae, None) is None
    with pytest.raises(ValueError, match="'official'"):
        resolve_tiling(tiny_vae, "tiled")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TilingConfig"):
        resolve_tiling(tiny_vae, 256)  # type: ignore[arg-type]


def test_read_png_and_jpeg(tmp_path: Path) -> None:
    img = np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for name in ("face.png", "face.jpg"):
        args = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "40x24"]
        subprocess.run(
            [*args, "-i", "pipe:", "-frames:v", "1", str(tmp_path / name)], input=img.tobytes(), check=True
        )
    assert np.array_equal(read_image(tmp_path / "face.png"), img)  # lossless
    jpg = read_image(tmp_path / "face.jpg")
    assert jpg.shape == (24, 40, 3) and jpg.dtype == np.uint8
    not_image = tmp_path / "x.png"
    not_image.write_bytes(b"\x00garbage")
    with pytest.raises(MediaDecodeError):
        read_image(not_image)
