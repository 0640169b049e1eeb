"""DeSync: the release's 5 s window and segments, the frame preprocessing, and the offset of the winning class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model_core.audio.foley.synchformer_audio import normalized_spectrogram
from model_core.audio.foley.synchformer_sync import (
    SYNC_CLASSIFIER_PRESETS,
    SyncClassifier,
    load_sync_classifier,
)
from model_core.audio.foley.tiny import write_tiny_foley
from model_core.configs import FOLEY_SYNCHFORMER_FILE
from model_core.qc.desync import desync_seconds, measure_desync, sync_frames

TINY = SYNC_CLASSIFIER_PRESETS["tiny-synchformer"]


@pytest.fixture(scope="module")
def tiny_sync(tmp_path_factory: pytest.TempPathFactory) -> SyncClassifier:
    folder: Path = write_tiny_foley("tiny-hunyuanvideo-foley", tmp_path_factory.mktemp("foley"))
    return load_sync_classifier(folder / FOLEY_SYNCHFORMER_FILE, TINY)


def _clip(seconds: float, fps: float = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (round(seconds * fps), 40, 48, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(round(seconds * 16000))).astype(np.float32)
    return frames, audio


def test_frames_are_scaled_cropped_and_normalised() -> None:
    white = np.full((2, 40, 48, 3), 255, dtype=np.uint8)
    torch.testing.assert_close(sync_frames(white, 32), torch.ones(2, 3, 32, 32))
    # a frame whose columns count up: the centre crop keeps the middle columns (short side 37, width 44)
    ramp = np.broadcast_to(np.arange(48, dtype=np.uint8)[None, None, :, None] * 5, (1, 40, 48, 3)).copy()
    out = sync_frames(ramp, 32)
    assert out.shape == (1, 3, 32, 32)
    middle = out[0, 0, 16, 14:18].mean().item()
    assert abs((middle * 0.5 + 0.5) * 255 - 5 * 23.5) < 6


def test_windows_take_the_release_segments(tiny_sync: SyncClassifier) -> None:
    frames, audio = _clip(5.4, fps=50)
    frames[:] = (np.arange(len(frames)) % 256).astype(np.uint8)[
        :, None, None, None
    ]  # each frame shows its index
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = tiny_sync.forward

    def record(video: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        seen.append((video, spec))
        return original(video, spec)

    tiny_sync.forward = record  # type: ignore[method-assign]
    try:
        measure_desync(tiny_sync, frames, audio, fps=50, starts=(0.0, 0.2))
    finally:
        del tiny_sync.forward
    video, spec = seen[0]
    assert video.shape == (2, 14, 16, 3, 32, 32) and spec.shape == (2, 14, 66, 128)
    shown = ((video[..., 0, 0, 0] * 0.5 + 0.5) * 255).round().long()  # [window, segment, frame]
    # 25 fps frame k is source frame 2k; segments start at 25 fps frame start * 25 + 2 + 8 s
    for w, start in enumerate((0, 5)):
        for s in (0, 7, 13):
            first = start + 2 + 8 * s
            assert shown[w, s].tolist() == [2 * (first + i) for i in range(16)]
    wave = torch.from_numpy(audio)
    for w, a0 in enumerate((1280, 1280 + 3200)):
        segs = torch.stack([wave[a0 + 5120 * s : a0 + 5120 * s + 10240] for s in range(14)])
        torch.testing.assert_close(spec[w], normalized_spectrogram(segs[None])[0])


def test_desync_is_the_offset_of_the_most_probable_class(tiny_sync: SyncClassifier) -> None:
    frames, audio = _clip(5.2)
    value = desync_seconds(frames, audio, tiny_sync, fps=25)
    assert np.isfinite(value) and 0.0 <= value <= 2.0
    assert abs(value / 0.2 - round(value / 0.2)) < 1e-6  # on the 0.2 s grid
    head = tiny_sync.transformer.off_head
    saved = {k: v.clone() for k, v in head.state_dict().items()}
    try:
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.bias[16] = 10.0  # class 16: +1.2 s
        result = measure_desync(tiny_sync, frames, audio, fps=25)
        assert result.seconds == pytest.approx(1.2)
        assert result.windows[0].offset == pytest.approx(1.2) and result.windows[0].probability > 0.99
        with torch.no_grad():
            head.bias[16] = 0.0
            head.bias[3] = 10.0  # class 3: -1.4 s; DeSync is its magnitude
        assert desync_seconds(frames, audio, tiny_sync, fps=25) == pytest.approx(1.4)
    finally:
        head.load_state_dict(saved)


def test_bad_inputs_name_the_fix(tiny_sync: SyncClassifier) -> None:
    frames, audio = _clip(4.0)
    with pytest.raises(ValueError, match="does not fit the 4.00 s"):
        desync_seconds(frames, audio, tiny_sync, fps=25)
    frames, audio = _clip(5.2)
    with pytest.raises(ValueError, match="decode it at 16000"):
        desync_seconds(frames, audio, tiny_sync, fps=25, sample_rate=48000)
    with pytest.raises(ValueError, match="does not fit"):
        desync_seconds(frames, audio, tiny_sync, fps=25, starts=(0.5,))
