"""The HunyuanVideo-Avatar DiT: release keys, strict loading (fp8 pair included), the audio adapters against an
independent computation, and the sequence-parallel forward against one process."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from model_core.checkpoints import CheckpointMismatchError, load_model
from model_core.configs import PRESETS, dit_preset
from model_core.dit import HunyuanDiT
from model_core.dit.fp8 import fp8_linear_names, fp8_map_path_for, quantize_state_dict_fp8
from model_core.parallel import SPGroup
from model_core.parallel.launch import run_local_world
from model_core.parallel.volume import forward_volume, release_audio_gather_volume

PRESET = "hunyuanvideo-avatar-704p"
TINY = "tiny-hunyuanvideo-avatar-704p"
# the key list of the released mp_rank_00_model_states.pt (Tencent-Hunyuan/HunyuanVideo-Avatar, weights/ckpts/
# hunyuan-video-t2v-720p/transformers/), in its order
KEYS = Path(__file__).resolve().parent / "keys" / "hunyuanvideo_avatar.txt"
FRAMES, HEIGHT, WIDTH = 4, 4, 6  # latents: a 4 x 2 x 3 token grid, 6 identity tokens


def read_key_list(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    keys = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split("\t")
            keys.append((name, tuple(int(d) for d in shape.strip("()").split(",") if d.strip())))
    return keys


def meta_keys(preset: str) -> list[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):
        model = HunyuanDiT(dit_preset(preset))
    return [(name, tuple(t.shape)) for name, t in model.state_dict().items()]


def tiny_model(seed: int = 0) -> HunyuanDiT:
    """Random weights everywhere (the adapters' to_out starts at zero and would hide the audio path)."""
    model = HunyuanDiT(dit_preset(TINY))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * r)
            else:
                p.copy_(0.1 * r if p.ndim == 1 else r / p[0].numel() ** 0.5)
    return model.eval()


def tiny_inputs(batch: int = 2, seed: int = 1) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    cfg = dit_preset(TINY)
    a = cfg.audio
    assert a is not None
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, 7, dtype=torch.long)
    mask[0, :5], mask[1, :3] = 1, 1
    x = torch.randn(batch, cfg.in_channels, FRAMES, HEIGHT, WIDTH, generator=gen)
    args = (
        x,
        torch.rand(batch, generator=gen) * 1000,
        torch.randn(batch, 7, cfg.text_states_dim, generator=gen),
        mask,
        torch.randn(batch, cfg.text_pooled_dim, generator=gen),
    )
    video_frames = (FRAMES - 1) * a.frames_per_latent + 1
    extras = {
        "ref_latents": torch.randn(x.shape, generator=gen),
        "audio_states": torch.randn(
            batch, video_frames, a.window, a.whisper_layers, a.whisper_dim, generator=gen
        ),
        # a pixel-space box mask over the 13 video frames of 32 x 48 pixels
        "face_mask": (torch.rand(batch, 1, video_frames, 32, 48, generator=gen) > 0.4).float(),
        "motion_exp": torch.full((batch, 4), 30.0),
        "motion_pose": torch.full((batch, 4), 25.0),
        "fps": torch.full((batch,), 25.0),
    }
    return args, extras


def test_avatar_preset_has_the_release_keys_in_order() -> None:
    expected = read_key_list(KEYS)
    got = meta_keys(PRESET)
    assert got == expected, (sorted(set(got) - set(expected))[:10], sorted(set(expected) - set(got))[:10])
    assert len(got) == 946
    assert sum(torch.Size(s).numel() for _, s in got) == 12_991_493_184


def test_tiny_avatar_has_the_same_key_names_up_to_block_indices() -> None:
    def pattern(keys: list[tuple[str, tuple[int, ...]]]) -> set[str]:
        return {re.sub(r"\.\d+\.", ".N.", k) for k, _ in keys}

    assert pattern(meta_keys(TINY)) == pattern(read_key_list(KEYS))


def test_avatar_presets_are_kept_apart_from_the_pipeline_presets() -> None:
    assert PRESET not in PRESETS and TINY not in PRESETS
    cfg = dit_preset(PRESET)
    assert cfg.audio is not None and cfg.audio.insert_after == (1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
    assert not cfg.guidance_embed and not cfg.identity_image


def test_load_model_is_strict(tmp_path: Path) -> None:
    model = tiny_model()
    ckpt = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": model.state_dict()}, ckpt)
    loaded = load_model(TINY, ckpt, dtype=torch.float32)
    for (name, want), (_, got) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(got, want), name

    # a checkpoint without one adapter weight (the release's strict=False would start it at random)
    partial = {k: v for k, v in model.state_dict().items() if k != "audio_adapter_blocks.1.to_out.weight"}
    torch.save({"module": partial}, ckpt)
    with pytest.raises(CheckpointMismatchError, match="audio_adapter_blocks.1.to_out.weight"):
        load_model(TINY, ckpt, dtype=torch.float32)

    # a HunyuanCustom audio checkpoint is not an Avatar one
    custom = HunyuanDiT(PRESETS["tiny-hunyuancustom-audio-720p"])
    torch.save({"module": custom.state_dict()}, ckpt)
    with pytest.raises(CheckpointMismatchError):
        load_model(TINY, ckpt, dtype=torch.float32)


def test_fp8_pair_loads(tmp_path: Path) -> None:
    model = tiny_model()
    names = fp8_linear_names(model)
    assert names and all(n.startswith(("double_blocks.", "single_blocks.")) for n in names)
    state, scales = quantize_state_dict_fp8(model.state_dict(), names)
    ckpt = tmp_path / "mp_rank_00_model_states_fp8.pt"
    torch.save({"module": state}, ckpt)
    torch.save({"module": scales}, fp8_map_path_for(ckpt))
    loaded = load_model(TINY, ckpt, dtype=torch.float32)
    args, extras = tiny_inputs()
    with torch.no_grad():
        want, got = model(*args, **extras), loaded(*args, **extras)
    assert (got - want).norm() / want.norm() < 0.1  # e4m3 weights: close, not equal


def _audio_per_latent_frame(model: HunyuanDiT, audio_states: torch.Tensor) -> torch.Tensor:
    """[B, T, 16, C]: latent frame f takes video frames 4f-3 .. 4f, frames before 0 clamped to frame 0."""
    tokens = model.audio_proj(audio_states)  # [B, F, 4, C]
    index = torch.tensor([[max(0, 4 * f - 3 + j) for j in range(4)] for f in range(FRAMES)])
    return tokens[:, index].flatten(2, 3)


def _token_mask(face_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H_tok, W_tok] nearest samples of the mask: source index floor(i * in / out) per axis."""
    _, _, t_in, h_in, w_in = face_mask.shape
    t_tok, h_tok, w_tok = FRAMES, HEIGHT // 2, WIDTH // 2
    ti = torch.arange(t_tok) * t_in // t_tok
    hi = torch.arange(h_tok) * h_in // h_tok
    wi = torch.arange(w_tok) * w_in // w_tok
    return face_mask[:, 0][:, ti][:, :, hi][:, :, :, wi]


def _reference_adapter(
    adapter: torch.nn.Module, img: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor, ref_tokens: int
) -> torch.Tensor:
    """The adapter's addition to `img`, written out per sample and latent frame; zero on the identity tokens."""
    delta = torch.zeros_like(img)
    per_frame = mask.shape[2] * mask.shape[3]
    for b in range(img.shape[0]):
        for f in range(FRAMES):
            rows = slice(ref_tokens + f * per_frame, ref_tokens + (f + 1) * per_frame)
            q = adapter.to_q(
                F.layer_norm(img[b, rows], (img.shape[-1],), adapter.norm2.weight, adapter.norm2.bias, 1e-5)
            )
            kv = adapter.to_kv(
                F.layer_norm(audio[b, f], (audio.shape[-1],), adapter.norm1.weight, adapter.norm1.bias, 1e-5)
            )
            k, v = kv[:, : q.shape[-1]], kv[:, q.shape[-1] :]
            attn = torch.softmax(q @ k.T / q.shape[-1] ** 0.5, dim=-1)
            delta[b, rows] = adapter.to_out(attn @ v) * mask[b, f].reshape(-1, 1)
    return delta


def test_tiny_avatar_forward_matches_an_independent_adapter() -> None:
    model = tiny_model()
    args, extras = tiny_inputs()
    cfg = model.config
    assert cfg.audio is not None
    with torch.no_grad():
        out = model(*args, **extras)

        state = model.embed(*args, **extras)
        ref_tokens = (HEIGHT // 2) * (WIDTH // 2)
        assert state.grid.ref_tokens == ref_tokens
        # 'timecat': the identity tokens sit at t = -1 on the unshifted (h, w) grid
        hh, ww = torch.meshgrid(torch.arange(HEIGHT // 2), torch.arange(WIDTH // 2), indexing="ij")
        assert torch.equal(state.positions[:ref_tokens, 0], torch.full((ref_tokens,), -1))
        assert torch.equal(state.positions[:ref_tokens, 1:], torch.stack([hh, ww], -1).reshape(-1, 2))

        audio = _audio_per_latent_frame(model, extras["audio_states"])
        mask = _token_mask(extras["face_mask"])
        img, txt = state.img, state.txt
        for index, block in enumerate(model.double_blocks):
            img, txt = block(img, txt, state.vec, state.rope_cos, state.rope_sin, model.joint_attention,
                             state.txt_valid_len)  # fmt: skip
            if index in cfg.audio.insert_after:
                adapter = model.audio_adapter_blocks[cfg.audio.insert_after.index(index)]
                img = img + _reference_adapter(adapter, img, audio, mask, ref_tokens)
        want = model.final(model.run_single_blocks(dataclasses.replace(state, img=img, txt=txt)))
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)

        # the face mask and the audio matter; without audio the adapters are skipped
        no_face = model(*args, **{**extras, "face_mask": torch.zeros_like(extras["face_mask"])})
        no_audio = model(*args, **{k: v for k, v in extras.items() if k != "audio_states"})
        torch.testing.assert_close(no_face, no_audio)
        assert (out - no_audio).abs().max() > 1e-3


def test_avatar_inputs_are_checked() -> None:
    model = tiny_model()
    args, extras = tiny_inputs()
    with pytest.raises(ValueError, match="motion_exp"):
        model(*args, **{k: v for k, v in extras.items() if k != "motion_exp"})
    with pytest.raises(ValueError, match="ref_latents"):
        model(*args, **{**extras, "ref_latents": extras["ref_latents"][:, :, :1]})
    with pytest.raises(ValueError, match="face_mask"):
        model(*args, **{**extras, "face_mask": extras["face_mask"][:, 0]})
    custom = HunyuanDiT(PRESETS["tiny-hunyuancustom-720p"])
    with pytest.raises(ValueError, match="no face mask"):
        custom(*args, ref_latents=extras["ref_latents"][:, :, :1], face_mask=extras["face_mask"])


def _sp_world(rank: int, world: int) -> float:
    torch.manual_seed(0)
    model = tiny_model()
    args, extras = tiny_inputs()
    with torch.no_grad():
        one = model(*args, **extras)
        split = model(*args, **extras, sp=SPGroup.from_group(dist.group.WORLD))
    return float((split - one).abs().max())


def test_sequence_parallel_avatar_equals_one_process() -> None:
    """30 image tokens over 2 ranks: the shard boundary cuts latent frame 1, so the adapter runs on its parts."""
    assert all(err < 1e-5 for err in run_local_world(_sp_world, 2))


def test_frame_split_adapters_save_the_release_gathers_at_704p() -> None:
    """704 x 704 px x 129 frames: 44 x 44 tokens x 33 latent frames + one identity frame, 8 ranks, batch 1, bf16."""
    cfg = dit_preset(PRESET)
    tokens = 44 * 44 * (33 + 1)
    saved = release_audio_gather_volume(cfg, image_tokens=tokens, batch=1, degree=8)
    assert saved.all_gather == 10 * 7 * (tokens // 8) * 3072 * 2  # ten adapters, 7 peers, the 3072-wide shard
    assert round(saved.total / 1e9, 2) == 3.54  # GB sent per rank per forward, none of it needed here
    full = forward_volume(cfg, image_tokens=tokens, text_tokens=256, batch=1, degree=8)
    assert 0.3 < saved.total / full.total < 0.35  # a third more than the Ulysses traffic of the forward
