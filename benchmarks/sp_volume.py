"""Ulysses communication volume per rank at production size (computed, not measured).

    python -m benchmarks.sp_volume            # print the tables
    python -m benchmarks.sp_volume --write    # and replace the "Sequence parallelism" section of docs/BENCHMARKS.md

The arithmetic is `model_core.parallel.volume.forward_volume`; the multi-rank tests check it against the
bytes the collectives really carry at tiny size.
"""

from __future__ import annotations

import argparse

from benchmarks._common import format_bytes, markdown_table, write_benchmarks_section
from model_core.configs import PRESETS, dit_preset
from model_core.parallel.volume import CommVolume, forward_volume, release_audio_gather_volume
from model_core.sampling import StepKind, default_options, step_kinds

DEGREES = (2, 4, 8)
# 720x1280x129: latent 33x90x160, tokens 33*45*80 = 118,800 (+3,600 identity tokens for HunyuanCustom)
VIDEO_TOKENS_720P = 33 * 45 * 80
IDENTITY_TOKENS_720P = 45 * 80
VELOCITY_BYTES_720P = 16 * 33 * 90 * 160 * 2  # one branch's bf16 output, exchanged under CFG-parallel
# Avatar at 704x704x129: latent 33x88x88, 44*44 tokens per frame, one reference frame in front
AVATAR_TOKENS_704 = 44 * 44 * (33 + 1)
ASSUMED_GBPS = 150.0  # an assumption for the estimate only, not a measurement


def _run_volume(per_full: CommVolume, per_reuse: CommVolume, steps: int, deepcache: bool) -> CommVolume:
    opts = default_options("image", num_steps=steps, deepcache=deepcache)
    kinds = step_kinds(opts)
    reuse = sum(k is StepKind.REUSE for k in kinds)
    return per_full * (len(kinds) - reuse) + per_reuse * reuse


def volume_rows() -> tuple[list[list[str]], list[list[str]]]:
    """(HunyuanCustom rows, T2V rows) of the tables."""
    custom = PRESETS["hunyuancustom-720p"]
    tokens = VIDEO_TOKENS_720P + IDENTITY_TOKENS_720P
    custom_rows = []
    for degree in DEGREES:
        for cfg_parallel in (False, True):
            sp_degree = degree // 2 if cfg_parallel else degree
            batch = 1 if cfg_parallel else 2
            kw = {"image_tokens": tokens, "text_tokens": 831, "batch": batch, "degree": sp_degree}
            full = forward_volume(custom, **kw)
            reuse = forward_volume(custom, **kw, attention_layers=1)
            if cfg_parallel:  # the pair exchanges its branch's velocity every step (all-gather of 2)
                pair = CommVolume(0, VELOCITY_BYTES_720P)
                full, reuse = full + pair, reuse + pair
            run50 = _run_volume(full, reuse, 50, deepcache=False)
            run30 = _run_volume(full, reuse, 30, deepcache=True)
            custom_rows.append([
                str(degree),
                f"CFG-parallel, 2 x SP {sp_degree}" if cfg_parallel else f"SP {degree}, CFG batch 2",
                f"{-(-tokens // sp_degree):,}",
                format_bytes(full.all_to_all),
                format_bytes(full.all_gather),
                format_bytes(run50.total),
                format_bytes(run30.total),
            ])  # fmt: skip
    t2v = PRESETS["hunyuanvideo-t2v-720p"]
    t2v_rows = []
    for degree in DEGREES:
        full = forward_volume(t2v, image_tokens=VIDEO_TOKENS_720P, text_tokens=256, batch=1, degree=degree)
        t2v_rows.append([
            str(degree),
            f"{-(-VIDEO_TOKENS_720P // degree):,}",
            format_bytes(full.all_to_all),
            format_bytes(full.all_gather),
            format_bytes((full * 50).total),
        ])  # fmt: skip
    return custom_rows, t2v_rows


def avatar_rows() -> list[list[str]]:
    """Avatar's forward under SP and the adapter gathers of the release that the frame-split adapters save."""
    avatar = dit_preset("hunyuanvideo-avatar-704p")
    kinds = step_kinds(default_options("avatar"))
    reuse = sum(k is StepKind.REUSE for k in kinds)
    rows = []
    for degree in DEGREES:
        kw = {"image_tokens": AVATAR_TOKENS_704, "text_tokens": 831, "batch": 2, "degree": degree}
        full = forward_volume(avatar, **kw)
        run = full * (len(kinds) - reuse) + forward_volume(avatar, **kw, attention_layers=1) * reuse
        saved = release_audio_gather_volume(avatar, image_tokens=AVATAR_TOKENS_704, batch=2, degree=degree)
        rows.append([
            str(degree),
            f"{-(-AVATAR_TOKENS_704 // degree):,}",
            format_bytes(full.total),
            format_bytes(saved.total),
            format_bytes(run.total),
            format_bytes((saved * (len(kinds) - reuse)).total),
        ])  # fmt: skip
    return rows


def section() -> str:
    custom_rows, t2v_rows = volume_rows()
    sp8 = forward_volume(PRESETS["hunyuancustom-720p"], image_tokens=VIDEO_TOKENS_720P + IDENTITY_TOKENS_720P,
                         text_tokens=831, batch=2, degree=8)  # fmt: skip
    t8 = sp8.total / (ASSUMED_GBPS * 1e9)
    custom = markdown_table(
        ["GPUs", "layout", "image tokens per rank", "all-to-all per forward", "all-gather per forward",
         "50 steps", "30 steps + DeepCache"],
        custom_rows,
    )  # fmt: skip
    t2v = markdown_table(
        ["GPUs", "image tokens per rank", "all-to-all per forward", "all-gather per forward", "50 steps"],
        t2v_rows,
    )
    avatar = markdown_table(
        ["GPUs", "image tokens per rank", "per forward", "release's adapter gathers (saved)",
         "50 steps + DeepCache", "saved over 50 steps"],
        avatar_rows(),
    )  # fmt: skip
    return f"""Computed (not measured): bytes each rank sends, bf16, at 720x1280x129
(`python -m benchmarks.sp_volume --write`, 2026-11-21, 2 vCPU CPU, no GPU). The formula is
`model_core.parallel.volume.forward_volume`; the 2-rank gloo test checks it byte for byte against what the
collectives carry at tiny size. Per attention layer (20 double + 40 single) a rank sends 4 all-to-alls of its
image shard (q, k, v in, output back; it keeps 1/P of each) and all-gathers the text output's head slices;
once per forward it all-gathers the final layer's 64 patch features per token. Audio and RoPE need none.

HunyuanCustom (`hunyuancustom-720p`): 122,400 image tokens (3,600 identity + 118,800 video), 831 text tokens,
real CFG (batch [uncond, cond]). The 30-step run has 22 full steps and 8 DeepCache steps (one attention layer).
Under CFG-parallel each half runs one branch with half the degree and the pair exchanges its velocity
(15.2 MB bf16) every step. It sends less than batched CFG at every degree (each rank holds twice the tokens
of one branch instead of the same share of two), and it lets 16 ranks serve the 24 heads as 2 x SP 8.

{custom}

HunyuanVideo T2V (`hunyuanvideo-t2v-720p`): 118,800 image tokens, 256 text tokens, embedded guidance
(batch 1):

{t2v}

HunyuanVideo-Avatar (`hunyuanvideo-avatar-704p`) at 704x704x129 (one window): 65,824 image tokens (1,936
reference + 63,888 video), 831 text tokens, CFG batch 2, its 50-step DeepCache list (30 full steps, 20 that
rerun one attention layer). The release all-gathers the 3072-wide image tokens on every rank before each of its
ten audio adapters; adrender runs them on the frame-split shard, so that traffic (the fourth column, on full
steps only) is not sent at all. A spot past 129 frames sends this per window and step.

{avatar}

The machine had no GPU, so no interconnect time was measured. At an assumed {ASSUMED_GBPS:.0f} GB/s of
all-to-all bandwidth per GPU (NVLink class), 8 ranks (SP 8, CFG batch 2) would spend about {t8:.2f} s per forward
communicating, against the published 6.75 s per T2V step on 8 H100 (HunyuanVideo README, xDiT table: 337.58 s / 50 steps,
batch 1); to be measured on a GPU node.
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help="write the section into docs/BENCHMARKS.md")
    args = parser.parse_args()
    body = section()
    print(body)
    if args.write:
        write_benchmarks_section("Sequence parallelism", body)


if __name__ == "__main__":
    main()
