"""QC seconds per unit: each stage of ``qc_metrics`` on one unit's video, with the QC models already loaded.

    python -m benchmarks.qc_unit                          # tiny models on CPU, results into docs/BENCHMARKS.md
    python -m benchmarks.qc_unit --frames 33 --size 256x448 --repeats 3 --no-docs

A synthetic unit: a textured picture moving a few pixels a frame, a face-sized patch in it, a white-backed
product image and a portrait as subject images, and a 1 kHz tone as its soundtrack, encoded once as the
deliverable mp4. Stages (the step's order): the delivery checks (ffmpeg: probe, loudness, black, freeze), the
decode of the frames, CLIP-B-T and temporal consistency, the face detector on every frame and both subject
images, Face-Sim (alignment and ArcFace), DINO-Sim (regions), the dynamic degree (flow) and the foley rule.

Reference, interleaved in the same process round by round: CLIP and DINOv2 run the way the libraries document
them (transformers' ``CLIPProcessor`` / ``AutoImageProcessor`` on PIL images, then the model), on the same
frames; the ratio is ours over theirs. The face path, the flow and the delivery checks have no library
counterpart here (no InsightFace, RAFT or EBU meter package is installed), so they get times only. Each
measurement records the CPU time other processes used meanwhile (contended above ``CONTENDED_CORES``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from benchmarks._common import (
    CONTENDED_CORES,
    CpuMeter,
    machine_description,
    markdown_table,
    write_benchmarks_section,
)

if TYPE_CHECKING:
    from model_core.vision.face_detect import FaceBox

TITLE = "QC per unit (CPU, tiny models)"


@dataclass
class _State:
    """What the stages hand on: the decoded frames and the faces found."""

    frames: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 3), np.uint8))
    pixels: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    faces: list[FaceBox | None] = field(default_factory=list)
    ref_faces: list[FaceBox | None] = field(default_factory=list)


@dataclass
class Stage:
    name: str
    seconds: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)

    def run(self, fn: Callable[[], object]) -> None:
        with CpuMeter() as meter:
            fn()
        self.seconds.append(meter.use.wall)
        self.others.append(meter.use.others_cores)

    def quiet(self) -> list[float]:
        picked = [s for s, o in zip(self.seconds, self.others) if o <= CONTENDED_CORES]
        return picked if len(picked) >= 2 else self.seconds


def _video(
    folder: Path, frames: int, height: int, width: int, fps: int
) -> tuple[Path, np.ndarray, list[np.ndarray]]:
    """The unit's mp4 (H.264 + AAC tone), its frames, and the two subject images (portrait, product)."""
    from components.runtime.media import mux_audio, write_video

    rng = np.random.default_rng(0)
    texture = (rng.uniform(0, 255, (height + 64, width + 64 + frames * 3, 3))).astype(np.uint8)
    face = rng.integers(60, 230, (height // 3, height // 4, 3), dtype=np.uint8)
    pictures = []
    for i in range(frames):
        f = texture[16 : 16 + height, i * 3 : i * 3 + width].copy()
        f[height // 4 : height // 4 + face.shape[0], width // 3 : width // 3 + face.shape[1]] = face
        pictures.append(f)
    video = np.stack(pictures)
    silent = folder / "silent.mp4"
    write_video(silent, video, fps=fps)
    sr = 48000
    t = np.arange(int(sr * frames / fps)) / sr
    tone = (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    wav = folder / "tone.wav"
    import wave

    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((tone * 32767).astype("<i2").tobytes())
    muxed = folder / "unit.mp4"
    mux_audio(silent, wav, muxed)
    portrait = np.full((256, 192, 3), 255, np.uint8)
    portrait[40 : 40 + face.shape[0], 50 : 50 + face.shape[1]] = face
    product = np.full((200, 200, 3), 255, np.uint8)
    product[50:150, 80:120] = (30, 160, 60)
    return muxed, video, [portrait, product]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--size", default="128x128", help="HEIGHTxWIDTH of the unit")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--no-docs", action="store_true", help="print only; leave docs/BENCHMARKS.md as it is"
    )
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    from PIL import Image
    from transformers import AutoTokenizer, BitImageProcessor, CLIPImageProcessor, CLIPModel, Dinov2Model

    from components.runtime.delivery import Expected, check_delivery, delivery_profile
    from components.runtime.media import read_video_frames
    from model_core.io.ffmpeg_decode import decode_audio
    from model_core.qc import (
        ClipScorer,
        DinoScorer,
        IResNet,
        as_batch,
        clip_text_score,
        consistency,
        crop_box,
        crop_embeddings,
        dynamic_degree,
        face_embeddings,
        face_similarity,
        foreground_box,
        head_and_shoulders,
    )
    from model_core.qc.soundtrack import bed_character
    from model_core.tiny_models import write_tiny_model
    from model_core.vision.face_detect import load_face_detector

    work = Path(tempfile.mkdtemp(prefix="adrender-qc-bench-"))
    folders = {
        p: write_tiny_model(p, work / p)
        for p in ("tiny-clip-vit-base", "tiny-dinov2", "tiny-arcface", "tiny-face-detector")
    }
    clip = ClipScorer.from_pretrained(folders["tiny-clip-vit-base"])
    dino = DinoScorer.from_pretrained(folders["tiny-dinov2"])
    arcface = IResNet.from_pretrained(folders["tiny-arcface"])
    detector = load_face_detector(folders["tiny-face-detector"])
    lib_clip = CLIPModel.from_pretrained(folders["tiny-clip-vit-base"]).eval()
    # the processors the released folders ship (preprocessor_config.json), at the tiny models' image sizes
    side = lib_clip.config.vision_config.image_size
    lib_clip_images = CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    lib_clip_text = AutoTokenizer.from_pretrained(folders["tiny-clip-vit-base"])
    lib_dino = Dinov2Model.from_pretrained(folders["tiny-dinov2"]).eval()
    crop = min(224, lib_dino.config.image_size)
    lib_dino_proc = BitImageProcessor(
        size={"shortest_edge": round(crop * 256 / 224)},
        crop_size={"height": crop, "width": crop},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    video, _, refs = _video(work, args.frames, height, width, args.fps)
    prompt = "A woman in a red coat holds a bottle of shampoo and smiles at the camera in a bright bathroom ."
    expected = Expected(width, height, args.fps, args.frames, audio=True)
    profile = delivery_profile("ebu-r128")

    state = _State()

    def decode() -> None:
        state.frames = np.stack(list(read_video_frames(video)))
        state.pixels = as_batch(state.frames)

    def clip_ours() -> None:
        with torch.no_grad():
            emb = clip.image_embeddings(state.pixels)
            clip_text_score(emb, clip.text_embeddings([prompt])[0])
            consistency(emb)

    def clip_library() -> None:
        images = [Image.fromarray(f) for f in state.frames]
        with torch.no_grad():
            text = lib_clip_text([prompt], return_tensors="pt", padding=True)
            out = lib_clip(**text, **lib_clip_images(images=images, return_tensors="pt"))
            img = torch.nn.functional.normalize(out.image_embeds, dim=-1)
            (img[1:] * img[:-1]).sum(-1).mean()

    def faces() -> None:
        state.faces = [detector.largest(f) for f in state.frames]
        state.ref_faces = [detector.largest(r) for r in refs]

    def face_sim() -> None:
        frame_emb = face_embeddings(arcface, list(state.frames), state.faces)
        (ref_emb,) = face_embeddings(arcface, [refs[0]], [state.ref_faces[0]])
        assert ref_emb is not None
        face_similarity(ref_emb, frame_emb)

    def chw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255

    def dino_ours() -> None:
        whole = [chw(f) for f in state.frames]
        ref_face = state.ref_faces[0]
        assert ref_face is not None
        crops = [
            crop_box(w, head_and_shoulders(f.box, height, width)) for w, f in zip(whole, state.faces) if f
        ]
        crop_embeddings(
            dino, [crop_box(chw(refs[0]), head_and_shoulders(ref_face.box, *refs[0].shape[:2])), *crops]
        )
        crop_embeddings(dino, [crop_box(chw(refs[1]), foreground_box(refs[1])), *whole])

    def dino_library() -> None:
        images = [Image.fromarray(r) for r in refs] + [Image.fromarray(f) for f in state.frames]
        with torch.no_grad():
            lib_dino(**lib_dino_proc(images=images, return_tensors="pt"))

    def flow() -> None:
        dynamic_degree(state.pixels, args.fps)

    def foley_rule() -> None:
        bed_character(decode_audio(video, 16000), 16000)

    def delivery() -> None:
        check_delivery(video, profile, expected, black_min_seconds=0.25, black_pixel_threshold=0.1,
                       freeze_min_seconds=0.5, freeze_noise=0.001)  # fmt: skip

    ours = [
        ("delivery checks (ffmpeg)", delivery),
        ("decode frames", decode),
        ("CLIP-B-T + temporal consistency", clip_ours),
        ("face detector (frames + 2 subject images)", faces),
        ("Face-Sim (align + ArcFace)", face_sim),
        ("DINO-Sim (portrait regions + product)", dino_ours),
        ("dynamic degree (flow)", flow),
        ("foley rule", foley_rule),
    ]
    refs_of = {
        "CLIP-B-T + temporal consistency": clip_library,
        "DINO-Sim (portrait regions + product)": dino_library,
    }
    stages = {name: Stage(name) for name, _ in ours}
    ref_stages = {name: Stage(name) for name in refs_of}
    with CpuMeter() as whole_run:
        for fn in (fn for _, fn in ours):  # warm-up: first calls allocate and compile kernels
            fn()
        for fn in refs_of.values():
            fn()
        for r in range(args.repeats):
            for name, fn in ours:
                pair = [(stages[name], fn)] + ([(ref_stages[name], refs_of[name])] if name in refs_of else [])
                for stage, f in pair if r % 2 == 0 else pair[::-1]:  # alternate which side runs first
                    stage.run(f)
    rows = []
    total_min = total_med = 0.0
    for name, _ in ours:
        s = stages[name]
        q = s.quiet()
        lo, med = min(q), statistics.median(q)
        total_min, total_med = total_min + lo, total_med + med
        ratio = "no library counterpart"
        if name in ref_stages:
            rq = ref_stages[name].quiet()
            ratio = f"{lo / min(rq):.2f}x / {med / statistics.median(rq):.2f}x (library {min(rq):.3f} / {statistics.median(rq):.3f} s)"
        rows.append((name, f"{lo:.3f} / {med:.3f}", f"{max(s.others):.2f}", ratio))
    rows.append(("total per unit", f"{total_min:.3f} / {total_med:.3f}", "", ""))
    load = os.getloadavg()
    header = (
        f"{datetime.now(UTC).date().isoformat()}, {machine_description(torch.device('cpu'))}, "
        f"{torch.get_num_threads()} threads. `python -m benchmarks.qc_unit --frames {args.frames} "
        f"--size {height}x{width} --repeats {args.repeats}` (`benchmarks/qc_unit.py`)."
    )
    setup = (
        f"One synthetic unit of {args.frames} frames at {height}x{width}, {args.fps} fps, with a tone soundtrack; "
        "tiny random QC models (CLIP, DINOv2, ArcFace, face detector) already loaded. Ours and the library "
        f"reference alternate round by round in one process; min / median over {args.repeats} rounds (quiet "
        "rounds only when at least two were quiet). Load average at the end: "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; other processes used {whole_run.use.others_cores:.2f} "
        f"cores on average over the {whole_run.use.wall:.0f} s run."
    )
    headers = ["stage", "min / median s", "others' cores (max)", "ours / library (min / median)"]
    body = "\n\n".join([header, setup, markdown_table(headers, rows)])
    print(body)
    if not args.no_docs:
        write_benchmarks_section(TITLE, body)


if __name__ == "__main__":
    main()
