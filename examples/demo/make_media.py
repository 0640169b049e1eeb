"""Generate the demo campaign's media: two portraits, a product still, a voice-like track, a video, its mask.

    python examples/demo/make_media.py [OUT_DIR]        (default: examples/demo/assets)

Writes woman.png, man.png, bottle.png (256x256 stills), voiceover.wav (16 kHz mono, 5.2 s of a voice-like
signal), shelf.mp4 and shelf_mask.mp4 (64x64, 25 fps, 129 frames: the longest a job may ask for). The pictures
are drawn shapes, not photographs: the tiny demo models render noise whatever they are given, and the released
models need real photos. Needs numpy and the ffmpeg binary only; the same run always writes the same files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

STILL = 256  # pixels, square
VIDEO_SIZE = 64  # pixels, square: the demo renders at 64x64
FPS = 25
FRAMES = 129  # the most frames a job may ask for (5.16 s)
SAMPLE_RATE = 16_000
VOICE_SECONDS = 5.2  # covers 129 frames at 25 fps

# vowel formants (Hz) of an adult voice: /a/, /e/, /i/, /o/, /u/
FORMANTS = np.array(
    [(730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240)]
)


# drawing ----------------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): (y, x), each [size, size]."""
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, c, indexing="ij")


def _paint(img: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int]) -> None:
    img[mask] = rgb


def _ellipse(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _backdrop(size: int, top: tuple[int, int, int], bottom: tuple[int, int, int], seed: int) -> np.ndarray:
    """A vertical gradient with a little grain, float [size, size, 3]."""
    y, _ = _grid(size)
    t = y[..., None]
    img = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return img + np.random.default_rng(seed).normal(0.0, 3.0, img.shape)


def person(long_hair: bool, shirt: tuple[int, int, int], hair: tuple[int, int, int], seed: int) -> np.ndarray:
    """A head-and-shoulders figure facing the camera, uint8 [STILL, STILL, 3]."""
    y, x = _grid(STILL)
    img = _backdrop(STILL, (214, 226, 238), (168, 184, 204), seed)
    skin = (224, 182, 150)
    if long_hair:  # hair behind the head, down to the shoulders
        _paint(img, _ellipse(y, x, 0.45, 0.5, 0.3, 0.21), hair)
    body = (y > 0.7) & (np.abs(x - 0.5) < 0.18 + (y - 0.7) * 0.9)
    _paint(img, body, shirt)
    _paint(img, (y > 0.58) & (y < 0.74) & (np.abs(x - 0.5) < 0.06), skin)  # neck
    _paint(img, _ellipse(y, x, 0.42, 0.5, 0.2, 0.15), skin)  # face
    _paint(img, _ellipse(y, x, 0.27, 0.5, 0.09, 0.16) & (y < 0.3), hair)  # hair on top
    for cx in (0.44, 0.56):
        _paint(img, _ellipse(y, x, 0.4, cx, 0.018, 0.026), (250, 250, 250))  # eye whites
        _paint(img, _ellipse(y, x, 0.4, cx, 0.012, 0.012), (60, 40, 30))  # irises
    _paint(img, _ellipse(y, x, 0.5, 0.5, 0.012, 0.015), (200, 150, 120))  # nose
    _paint(img, _ellipse(y, x, 0.545, 0.5, 0.014, 0.05) & (y > 0.545), (170, 70, 80))  # smile
    return np.clip(img, 0, 255).astype(np.uint8)


def bottle(seed: int) -> np.ndarray:
    """A green shampoo bottle with a white cap and a label, on a light backdrop, uint8 [STILL, STILL, 3]."""
    y, x = _grid(STILL)
    img = _backdrop(STILL, (246, 246, 242), (222, 222, 216), seed)
    body = (y > 0.3) & (y < 0.88) & (np.abs(x - 0.5) < 0.16)
    shoulder = _ellipse(y, x, 0.3, 0.5, 0.08, 0.16)
    neck = (y > 0.17) & (y < 0.3) & (np.abs(x - 0.5) < 0.05)
    green = np.array((40, 150, 80), float)
    shade = 1.0 - 0.45 * np.abs(x - 0.47) / 0.16  # a highlight left of centre: a round bottle
    for part in (body, shoulder, neck):
        img[part] = green * shade[part][:, None]
    _paint(img, (y > 0.09) & (y < 0.18) & (np.abs(x - 0.5) < 0.065), (245, 245, 245))  # cap
    _paint(img, (y > 0.5) & (y < 0.72) & (np.abs(x - 0.5) < 0.13), (250, 244, 225))  # label
    _paint(img, (y > 0.57) & (y < 0.6) & (np.abs(x - 0.5) < 0.09), (40, 110, 60))  # label text lines
    _paint(img, (y > 0.63) & (y < 0.65) & (np.abs(x - 0.5) < 0.06), (120, 120, 120))
    return np.clip(img, 0, 255).astype(np.uint8)


def shelf_video() -> tuple[np.ndarray, np.ndarray]:
    """A marble shelf with towels, a sliding shadow and a light sweep; and the mask of where the product goes.

    Returns frames uint8 [FRAMES, S, S, 3] and mask frames uint8 [FRAMES, S, S, 3] (white box on black).
    """
    s = VIDEO_SIZE
    y, x = _grid(s)
    base = _backdrop(s, (236, 228, 214), (200, 190, 176), seed=3)
    _paint(base, (y > 0.62) & (y < 0.7), (235, 235, 238))  # marble shelf edge
    _paint(base, (y >= 0.7), (150, 130, 110))  # cabinet below
    _paint(base, (y > 0.42) & (y < 0.62) & (x > 0.06) & (x < 0.3), (120, 170, 200))  # folded towels
    _paint(base, (y > 0.5) & (y < 0.62) & (x > 0.08) & (x < 0.28), (230, 230, 240))
    frames = np.empty((FRAMES, s, s, 3), np.uint8)
    for f in range(FRAMES):
        t = f / (FRAMES - 1)
        img = base.copy()
        sweep = np.exp(-(((x - (-0.2 + 1.4 * t)) / 0.15) ** 2))[..., None]  # light moving left to right
        img = img + 40 * sweep
        leaf = _ellipse(
            y, x, 0.2 + 0.05 * np.sin(2 * np.pi * 2 * t), 0.85 - 0.3 * t, 0.07, 0.04
        )  # a plant leaf
        img[leaf] = (60, 130, 60)
        frames[f] = np.clip(img, 0, 255).astype(np.uint8)
    box = (
        (y > 0.3) & (y < 0.66) & (x > 0.42) & (x < 0.7)
    )  # the product goes on the shelf, right of the towels
    mask = np.zeros((FRAMES, s, s, 3), np.uint8)
    mask[:, box] = 255
    return frames, mask


# sound ------------------------------------------------------------------------------------------------------


def voice() -> np.ndarray:
    """A voice-like track: a gliding 110-180 Hz glottal tone through vowel formants, about four syllables a
    second in words separated by short pauses, with breathy noise at syllable onsets. int16 [S]."""
    rng = np.random.default_rng(7)
    n = int(VOICE_SECONDS * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    # syllables: (start, length, vowel); a word of 2-4 syllables, then a pause
    syllables = []
    start = 0.15
    while start < VOICE_SECONDS - 0.3:
        for _ in range(rng.integers(2, 5)):
            length = rng.uniform(0.16, 0.28)
            if start + length > VOICE_SECONDS - 0.1:
                break
            syllables.append((start, length, int(rng.integers(0, len(FORMANTS)))))
            start += length + rng.uniform(0.02, 0.05)
        start += rng.uniform(0.15, 0.35)
    # pitch: a falling phrase contour with slow wobble
    f0 = 150 - 30 * (t / VOICE_SECONDS) + 12 * np.sin(2 * np.pi * 0.7 * t) + 3 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    # formants per sample: each syllable's vowel, held across the gap after it
    formants = np.repeat(FORMANTS[:1].astype(float), n, axis=0)
    envelope = np.zeros(n)
    for s0, length, vowel in syllables:
        i0, i1 = int(s0 * SAMPLE_RATE), int((s0 + length) * SAMPLE_RATE)
        formants[i0:] = FORMANTS[vowel]
        u = np.linspace(0, 1, i1 - i0)
        envelope[i0:i1] = np.sin(np.pi * u) ** 0.6  # rise and fall of one syllable
    signal = np.zeros(n)
    for k in range(1, 30):  # harmonics of the glottal tone, shaped by the formant resonances
        fk = k * f0
        gain = sum(
            1.0 / (1.0 + ((fk - formants[:, j]) / (60.0 + 40.0 * j)) ** 2) * (0.8**j) for j in range(3)
        )
        signal += gain * np.sin(k * phase) / k**0.7
    signal *= envelope
    # breath and consonant noise at each syllable onset
    noise = rng.normal(0.0, 1.0, n)
    onsets = np.zeros(n)
    for s0, _, _ in syllables:
        i0 = int(s0 * SAMPLE_RATE)
        onsets[i0 : i0 + 800] = np.linspace(1.0, 0.0, len(onsets[i0 : i0 + 800]))
    signal += 0.15 * noise * onsets + 0.002 * noise
    signal *= 0.7 / np.max(np.abs(signal))  # peak at -3 dBFS
    return (signal * 32767).astype(np.int16)


# writing ----------------------------------------------------------------------------------------------------


def _ffmpeg(args: list[str], data: bytes) -> None:
    binary = shutil.which("ffmpeg")
    if binary is None:
        sys.exit("ffmpeg is not installed: apt-get install ffmpeg (or `make deps`)")
    cmd = [binary, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    subprocess.run(cmd, input=data, check=True)


def write_png(path: Path, image: np.ndarray) -> None:
    h, w, _ = image.shape
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-i", "-"]
    _ffmpeg([*raw, "-frames:v", "1", "-fflags", "+bitexact", str(path)], image.tobytes())


def write_mp4(path: Path, frames: np.ndarray) -> None:
    _, h, w, _ = frames.shape
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "-"]
    # one encoder thread and bit-exact muxing: the same frames always give the same file
    encode = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12", "-threads", "1"]
    exact = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1"]
    _ffmpeg([*raw, *encode, *exact, "-movflags", "+faststart", str(path)], frames.tobytes())


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "assets"
    out.mkdir(parents=True, exist_ok=True)
    write_png(out / "woman.png", person(long_hair=True, shirt=(200, 60, 70), hair=(90, 55, 35), seed=1))
    write_png(out / "man.png", person(long_hair=False, shirt=(60, 90, 160), hair=(40, 30, 25), seed=2))
    write_png(out / "bottle.png", bottle(seed=4))
    write_wav(out / "voiceover.wav", voice())
    frames, mask = shelf_video()
    write_mp4(out / "shelf.mp4", frames)
    write_mp4(out / "shelf_mask.mp4", mask)
    for name in ("woman.png", "man.png", "bottle.png", "voiceover.wav", "shelf.mp4", "shelf_mask.mp4"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
