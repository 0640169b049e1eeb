"""The Foley MMDiT: released key layouts, and each numerical trap of the release against a reference forward."""

from __future__ import annotations

import pytest
import torch
from foley_testing import nearest_index, read_key_list, reference_forward, shapes

from model_core.audio.foley.config import FOLEY_PRESETS, foley_preset, swiglu_hidden
from model_core.audio.foley.model import (
    FoleyDiT,
    deinterleave_audio_visual,
    interleave_audio_visual,
    split_training_only,
)

KEY_LISTS = {"hunyuanvideo-foley-xl": "foley_xl.txt", "hunyuanvideo-foley-xxl": "foley_xxl.txt"}
PARAMS = {"hunyuanvideo-foley-xl": 2_912_962_688, "hunyuanvideo-foley-xxl": 5_134_014_848}


@pytest.mark.parametrize("preset", sorted(KEY_LISTS))
def test_released_presets_have_the_checkpoint_keys_and_shapes(preset: str) -> None:
    with torch.device("meta"):
        model = FoleyDiT(FOLEY_PRESETS[preset])
    assert shapes(model) == read_key_list(KEY_LISTS[preset])
    assert sum(p.numel() for p in model.parameters()) == PARAMS[preset]


def test_conv_mlp_widths_round_two_thirds_up() -> None:
    assert FOLEY_PRESETS["hunyuanvideo-foley-xxl"].conv_mlp_hidden == 4096
    assert FOLEY_PRESETS["hunyuanvideo-foley-xl"].conv_mlp_hidden == 3840
    assert swiglu_hidden(300, 256) == 256
    with pytest.raises(KeyError, match="tiny-hunyuanvideo-foley"):
        foley_preset("foley")


def test_training_only_repa_keys_are_dropped_by_name_and_listed() -> None:
    model = FoleyDiT(FOLEY_PRESETS["tiny-hunyuanvideo-foley"])
    state = dict(model.state_dict())
    extra = {"repa_projector.0.weight": torch.zeros(2), "audio_ssl_encoder.blocks.0.bias": torch.zeros(2)}
    kept, dropped = split_training_only({**state, **extra})
    assert dropped == sorted(extra)
    assert kept.keys() == state.keys()
    # anything else the model does not know still fails a strict load
    kept["triple_blocks.0.unknown.weight"] = torch.zeros(2)
    with pytest.raises(RuntimeError, match="unknown"):
        model.load_state_dict(kept, strict=True)


def _tiny(seed: int = 0) -> FoleyDiT:
    torch.manual_seed(seed)
    model = FoleyDiT(FOLEY_PRESETS["tiny-hunyuanvideo-foley"]).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.15)
    return model


def _inputs(batch: int = 2, length: int = 41, n_visual: int = 7, n_text: int = 5, segments: int = 2):
    g = torch.Generator().manual_seed(1)
    d = torch.float64
    cfg = FOLEY_PRESETS["tiny-hunyuanvideo-foley"]
    return {
        "x": torch.randn(batch, cfg.latent_dim, length, generator=g, dtype=d),
        "t": torch.tensor([1000.0, 370.0][:batch], dtype=d),
        "clip": torch.randn(batch, n_visual, cfg.clip_dim, generator=g, dtype=d),
        "text": torch.randn(batch, n_text, cfg.text_dim, generator=g, dtype=d),
        "sync": torch.randn(batch, segments * 8, cfg.sync_dim, generator=g, dtype=d),
    }


def _run(model: FoleyDiT, inp: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(inp["x"], inp["t"], inp["clip"], inp["text"], inp["sync"])


def _reference(model: FoleyDiT, inp: dict[str, torch.Tensor], **trap: object) -> torch.Tensor:
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    with torch.no_grad():
        return reference_forward(
            sd, model.config.num_heads, inp["x"], inp["t"], inp["clip"], inp["text"], inp["sync"], **trap
        )


def test_forward_matches_the_reference_computation() -> None:
    model, inp = _tiny(), _inputs()
    out = _run(model, inp)
    assert out.shape == inp["x"].shape
    torch.testing.assert_close(out, _reference(model, inp), rtol=1e-9, atol=1e-9)


# Each trap of the release, switched on in the reference: the model must differ from every one of them,
# so a model that fell into one would fail the comparison above.
TRAPS = {
    "legacy nearest instead of nearest-exact": {"exact_resize": False},
    "(K H D) qkv split in the single blocks": {"single_split": "KHD"},
    "single-block LayerNorm eps 1e-6": {"single_ln_eps": 1e-6},
    "final-layer modulation applied": {"final_modulation": True},
    "no RoPE in the text cross-attention": {"cross_rope": False},
    "sync features added in every triple block": {"sync_every_block": True},
    "single blocks modulated by the time vector alone": {"per_token_vec": False},
}


@pytest.mark.parametrize("trap", sorted(TRAPS))
def test_each_trap_changes_the_result(trap: str) -> None:
    model, inp = _tiny(), _inputs()
    out = _run(model, inp)
    wrong = _reference(model, inp, **TRAPS[trap])  # type: ignore[arg-type]
    assert (out - wrong).abs().max() > 1e-7, trap


def test_single_block_qk_rms_eps_is_float32_machine_epsilon() -> None:
    # small q/k (mean square ~1e-7) make the eps visible; 1e-6 (the triple blocks' value) must not match
    model, inp = _tiny(), _inputs()
    with torch.no_grad():
        for block in model.single_blocks:
            block.linear_qkv.weight.mul_(2e-3)
            block.linear_qkv.bias.mul_(2e-3)
    out = _run(model, inp)
    torch.testing.assert_close(out, _reference(model, inp), rtol=1e-9, atol=1e-9)
    assert (out - _reference(model, inp, single_rms_eps=1e-6)).abs().max() > 1e-7


def test_padded_text_tokens_are_attended() -> None:
    model, inp = _tiny(), _inputs()
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[:, 3:] = False  # a shorter prompt padded to 5 tokens
    masked = _reference(model, inp, text_mask=mask)
    assert (_run(model, inp) - masked).abs().max() > 1e-7
    changed = dict(inp, text=inp["text"].clone())
    changed["text"][:, 3:] += 1.0
    assert (_run(model, changed) - _run(model, inp)).abs().max() > 1e-7


def test_final_layer_ignores_its_modulation_weights() -> None:
    model, inp = _tiny(), _inputs()
    before = _run(model, inp)
    with torch.no_grad():
        model.final_layer.adaLN_modulation[1].weight.normal_(0.0, 1.0)
        model.final_layer.adaLN_modulation[1].bias.normal_(0.0, 1.0)
    torch.testing.assert_close(_run(model, inp), before, rtol=0, atol=0)


def test_interleave_resizes_with_nearest_exact_audio_first() -> None:
    audio = torch.arange(10.0).reshape(1, 10, 1, 1)
    visual = 100 + torch.arange(3.0).reshape(1, 3, 1, 1)
    mixed = interleave_audio_visual(audio, visual)
    expected = []
    for i, j in enumerate(nearest_index(3, 10, exact=True)):
        expected += [float(i), 100.0 + j]
    assert mixed.flatten().tolist() == expected
    assert nearest_index(3, 10, exact=True) != nearest_index(3, 10, exact=False)
    back_audio, back_visual = deinterleave_audio_visual(mixed, 3)
    assert back_audio.flatten().tolist() == list(range(10))
    up, down = nearest_index(3, 10, exact=True), nearest_index(10, 3, exact=True)
    assert back_visual.flatten().tolist() == [100.0 + up[m] for m in down]


def test_bf16_forward_is_close_to_float32() -> None:
    torch.manual_seed(0)
    model = FoleyDiT(FOLEY_PRESETS["tiny-hunyuanvideo-foley"]).eval()
    inp = {k: v.float() for k, v in _inputs().items()}
    ref = _run(model, inp)
    low = _run(model.to(torch.bfloat16), inp)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05
