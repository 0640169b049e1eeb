"""fp8 (e4m3) Linear weights with per-tensor scales in the official ``*_fp8.pt`` + ``*_fp8_map.pt`` layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from model_core.checkpoints import CheckpointMismatchError, load_state_dict_into, read_state_dict
from model_core.dit.fp8 import (
    FP8_DTYPE,
    FP8Linear,
    FP8MapError,
    convert_to_fp8_linears,
    dequantize_fp8,
    fp8_linear_names,
    fp8_map_path_for,
    quantize_fp8,
    quantize_state_dict_fp8,
    read_fp8_map,
)

# e4m3: 3 mantissa bits -> rounding error at most half a unit in the last place, 2**-4 of the value in the
# normal range; below the smallest normal (2**-6) the spacing is 2**-9, so the absolute error is 2**-10.
E4M3_REL = 2.0**-4
E4M3_SUBNORMAL_ABS = 2.0**-10


class _Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(3 * dim, dim, bias=False)
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(torch.tanh(self.qkv(x))) * torch.sigmoid(self.mod(x))


class _ToyDiT(nn.Module):
    """Module names as in the DiT: Linears under double_blocks/single_blocks, others outside them."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.img_in = nn.Linear(8, dim)
        self.double_blocks = nn.ModuleList([_Block(dim), _Block(dim)])
        self.single_blocks = nn.ModuleList([_Block(dim)])
        self.final_layer = nn.Linear(dim, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.img_in(x)
        for block in [*self.double_blocks, *self.single_blocks]:
            h = block(h)
        return self.final_layer(h)


def _save_official_fp8(model: nn.Module, folder: Path, *, wrapped_map: bool) -> Path:
    names = fp8_linear_names(model)
    sd, scales = quantize_state_dict_fp8(model.state_dict(), names)
    ckpt = folder / "mp_rank_00_model_states_fp8.pt"
    torch.save({"module": sd}, ckpt)
    # HunyuanVideo: flat {module name: scale}; HunyuanCustom: the same wrapped in "module"
    torch.save({"module": scales} if wrapped_map else scales, fp8_map_path_for(ckpt))
    return ckpt


def _load_fp8_toy(ckpt: Path, dtype: torch.dtype) -> _ToyDiT:
    with torch.device("meta"):
        model = _ToyDiT()
    convert_to_fp8_linears(model, read_fp8_map(fp8_map_path_for(ckpt)), bias_dtype=dtype)
    return load_state_dict_into(model, read_state_dict(ckpt), dtype=dtype, presets=())


def test_fp8_linear_names_follow_the_official_rule() -> None:
    names = fp8_linear_names(_ToyDiT())
    assert names == [
        "double_blocks.0.qkv",
        "double_blocks.0.proj",
        "double_blocks.0.mod.1",
        "double_blocks.1.qkv",
        "double_blocks.1.proj",
        "double_blocks.1.mod.1",
        "single_blocks.0.qkv",
        "single_blocks.0.proj",
        "single_blocks.0.mod.1",
    ]


def test_quantize_fp8_error_within_e4m3_rounding_bound() -> None:
    torch.manual_seed(0)
    # values over many binades, including ones that land in e4m3's subnormal range
    w = torch.randn(64, 48) * torch.logspace(-4, 0, 48)
    q, scale = quantize_fp8(w)
    assert q.dtype == FP8_DTYPE and scale.dtype == torch.float32 and scale.ndim == 0
    assert scale.item() == pytest.approx(w.abs().max().item() / 448.0, rel=1e-6)
    deq = dequantize_fp8(q, scale)
    bound = torch.maximum(E4M3_REL * w.abs(), torch.full_like(w, E4M3_SUBNORMAL_ABS * scale.item()))
    assert bool(((deq - w).abs() <= bound * (1 + 1e-5)).all())
    # the largest magnitude maps to 448 exactly, so it survives the round trip
    i = w.abs().argmax()
    assert deq.flatten()[i].item() == pytest.approx(w.flatten()[i].item(), rel=1e-6)
    # really quantised: a 3-bit mantissa cannot hold random fp32 values
    assert (deq - w).abs().max() > 0


@pytest.mark.parametrize("wrapped_map", [False, True], ids=["flat-map", "module-wrapped-map"])
def test_fp8_checkpoint_round_trip_matches_dequantised_and_float_model(
    tmp_path: Path, wrapped_map: bool
) -> None:
    torch.manual_seed(1)
    ref = _ToyDiT().eval()
    ckpt = _save_official_fp8(ref, tmp_path, wrapped_map=wrapped_map)

    stored = torch.load(ckpt, weights_only=True)["module"]
    assert stored["double_blocks.0.qkv.weight"].dtype == FP8_DTYPE
    assert stored["img_in.weight"].dtype == torch.float32  # outside the blocks: not quantised

    model = _load_fp8_toy(ckpt, torch.float32)
    for name in fp8_linear_names(model):
        layer = model.get_submodule(name)
        assert isinstance(layer, FP8Linear)
        assert layer.weight.dtype == FP8_DTYPE and not layer.weight.is_meta
    assert isinstance(model.img_in, nn.Linear) and model.img_in.weight.dtype == torch.float32

    x = torch.randn(4, 10, 8)
    with torch.no_grad():
        got = model(x)
        want = ref(x)
        # the exact semantics: a float model holding the dequantised weights gives the same output
        deq = _ToyDiT().eval()
        deq_sd = dict(ref.state_dict())
        for name in fp8_linear_names(ref):
            layer = model.get_submodule(name)
            deq_sd[f"{name}.weight"] = dequantize_fp8(layer.weight, layer.fp8_scale)
        deq.load_state_dict(deq_sd)
        torch.testing.assert_close(got, deq(x), rtol=1e-5, atol=1e-6)

    # against the float model: each weight is off by <= 2**-4 relative (about 2**-4/sqrt(3) rms for uniform
    # rounding); the 3 residual blocks do not amplify it, so it stays below 5% of the output norm
    rel = ((got - want).norm() / want.norm()).item()
    assert 0 < rel < 0.05, rel


def test_fp8_single_linear_obeys_elementwise_bound() -> None:
    torch.manual_seed(2)
    linear = nn.Linear(40, 24)
    q, scale = quantize_fp8(linear.weight)
    fp8 = FP8Linear(40, 24, scale)
    fp8.load_state_dict({"weight": q, "bias": linear.bias.detach()})
    x = torch.randn(16, 40)
    with torch.no_grad():
        err = (fp8(x) - linear(x)).abs()
        # |dW x| <= sum_j |dW_ij| |x_j| with |dW_ij| <= max(2**-4 |W_ij|, 2**-10 scale)
        w = linear.weight.abs()
        per_weight = torch.maximum(E4M3_REL * w, torch.full_like(w, E4M3_SUBNORMAL_ABS * scale.item()))
        bound = x.abs() @ per_weight.T
    assert bool((err <= bound * 1.001 + 1e-6).all())


def test_fp8_bf16_model_close_to_float_model(tmp_path: Path) -> None:
    torch.manual_seed(3)
    ref = _ToyDiT().eval()
    ckpt = _save_official_fp8(ref, tmp_path, wrapped_map=True)
    model = _load_fp8_toy(ckpt, torch.bfloat16)
    assert model.double_blocks[0].qkv.weight.dtype == FP8_DTYPE
    assert model.double_blocks[0].qkv.bias.dtype == torch.bfloat16
    assert model.img_in.weight.dtype == torch.bfloat16
    assert model.double_blocks[0].qkv.fp8_scale.dtype == torch.float32  # the scale stays fp32
    x = torch.randn(4, 10, 8)
    with torch.no_grad():
        got = model(x.bfloat16()).float()
        want = ref(x)
    # e4m3 (2**-4) dominates bf16 activations (2**-9)
    rel = ((got - want).norm() / want.norm()).item()
    assert rel < 0.05, rel


def test_missing_scale_is_a_clear_error(tmp_path: Path) -> None:
    ref = _ToyDiT()
    ckpt = _save_official_fp8(ref, tmp_path, wrapped_map=False)
    scales = read_fp8_map(fp8_map_path_for(ckpt))
    del scales["single_blocks.0.proj"]
    with torch.device("meta"):
        model = _ToyDiT()
    with pytest.raises(
        FP8MapError, match=r"no scale for 1 of 9 Linears.*single_blocks\.0\.proj.*_fp8_map\.pt"
    ):
        convert_to_fp8_linears(model, scales)


def test_map_keys_may_name_weights_and_extra_entries_are_ignored() -> None:
    ref = _ToyDiT()
    _, scales = quantize_state_dict_fp8(ref.state_dict(), fp8_linear_names(ref))
    by_weight = {f"{k}.weight": v for k, v in scales.items()} | {"img_in": torch.tensor(1.0)}
    model = _ToyDiT()
    converted = convert_to_fp8_linears(model, by_weight)
    assert len(converted) == 9
    assert isinstance(model.double_blocks[1].mod[1], FP8Linear)
    assert isinstance(model.img_in, nn.Linear) and not isinstance(model.img_in, FP8Linear)


def test_per_row_scale_and_bad_scale_shape() -> None:
    layer = FP8Linear(4, 3, torch.tensor([1.0, 2.0, 4.0]))
    assert layer.fp8_scale.shape == (3, 1)
    layer.weight.data = torch.ones(3, 4).to(FP8_DTYPE)
    assert layer.dequantized_weight(torch.float32)[:, 0].tolist() == [1.0, 2.0, 4.0]
    with pytest.raises(FP8MapError, match=r"shape \(2,\).*scalar or 3"):
        FP8Linear(4, 3, torch.tensor([1.0, 2.0]))


def test_float_weights_into_fp8_model_are_refused(tmp_path: Path) -> None:
    # an fp8 map with the bf16 checkpoint would cast weights to e4m3 without scaling: wrong outputs
    ref = _ToyDiT()
    _, scales = quantize_state_dict_fp8(ref.state_dict(), fp8_linear_names(ref))
    with torch.device("meta"):
        model = _ToyDiT()
    convert_to_fp8_linears(model, scales)
    with pytest.raises(
        CheckpointMismatchError, match=r"9 weights of fp8 Linears are torch.float32.*float8_e4m3fn"
    ):
        load_state_dict_into(model, dict(ref.state_dict()), presets=())


def test_map_file_that_is_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "x_fp8_map.pt"
    torch.save([1.0, 2.0], path)
    with pytest.raises(FP8MapError, match="list"):
        read_fp8_map(path)
