"""fp8 (e4m3) weights for the Linears of the double and single blocks, as the official ``*_fp8.pt`` stores them.

Layout (Tencent/HunyuanVideo ckpts/README.md): ``mp_rank_00_model_states_fp8.pt`` holds the usual state dict in which the weight of
every ``nn.Linear`` under ``double_blocks`` / ``single_blocks`` is ``torch.float8_e4m3fn``; the companion
``mp_rank_00_model_states_fp8_map.pt`` maps each such module name (``double_blocks.0.img_attn_qkv``) to its
scale. HunyuanVideo stores the map as a flat dict, HunyuanCustom wraps it as ``{"module": map}``;
:func:`read_fp8_map` accepts both.

Numerics of :class:`FP8Linear`: the weight is dequantised on every call as ``w_fp8.to(x.dtype) * scale`` in the
input's dtype, then an ordinary matmul runs (no fp8 GEMM), as the official code does. e4m3 keeps 3 mantissa
bits, so a stored weight differs from the bf16/fp32 original by at most 2**-4 of its magnitude (normal range)
or 2**-10 * scale (subnormal range, |w| < 2**-6 * scale); multiplying by the scale in bf16 adds at most 2**-9
more. The gain is memory: one byte per weight instead of two (about 10 GB less for the 13B model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "E4M3_MAX",
    "FP8_DTYPE",
    "FP8Linear",
    "FP8MapError",
    "convert_to_fp8_linears",
    "dequantize_fp8",
    "fp8_linear_names",
    "fp8_map_path_for",
    "quantize_fp8",
    "quantize_state_dict_fp8",
    "read_fp8_map",
]

FP8_DTYPE = torch.float8_e4m3fn
E4M3_MAX = 448.0  # largest finite float8_e4m3fn
# The official conversion touches every Linear whose qualified name contains one of these.
FP8_MODULE_PATTERNS: tuple[str, ...] = ("double_blocks", "single_blocks")


class FP8MapError(ValueError):
    """The fp8 scale map does not fit the model (a Linear without a scale, or a malformed map file)."""


class FP8Linear(nn.Module):
    """A Linear whose weight is stored in float8_e4m3fn and dequantised with ``fp8_scale`` in forward.

    ``weight`` and ``bias`` are state-dict entries (same names as ``nn.Linear``, so the ``*_fp8.pt`` file loads
    strictly); ``fp8_scale`` is a non-persistent fp32 buffer that comes from the map file, not the checkpoint.
    """

    fp8_scale: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scale: Tensor,
        *,
        bias: bool = True,
        device: torch.device | str | None = None,
        bias_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, device=device, dtype=FP8_DTYPE), requires_grad=False
        )
        self.bias = (
            nn.Parameter(torch.empty(out_features, device=device, dtype=bias_dtype), requires_grad=False)
            if bias
            else None
        )
        self.register_buffer("fp8_scale", _as_scale(scale, out_features), persistent=False)

    def dequantized_weight(self, dtype: torch.dtype) -> Tensor:
        """The weight as ``dtype``: ``w_fp8.to(dtype) * scale``."""
        return self.weight.to(dtype) * self.fp8_scale.to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``: sizes, bias and the fp8 format."""
        has_bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={has_bias}, fp8=e4m3"


def _as_scale(scale: Tensor | float, out_features: int) -> Tensor:
    """A per-tensor scale as a 0-d fp32 tensor; a per-row scale as ``[out, 1]``, to broadcast over the weight."""
    s = torch.as_tensor(scale).detach().to(torch.float32)
    if s.numel() == 1:
        return s.reshape(())
    if s.numel() == out_features:
        return s.reshape(out_features, 1)
    raise FP8MapError(
        f"fp8 scale has shape {tuple(s.shape)}; expected a scalar or {out_features} per-row values"
    )


def fp8_linear_names(model: nn.Module) -> list[str]:
    """Qualified names of the ``nn.Linear`` modules the official fp8 files quantise (double/single blocks)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, FP8Linear)) and any(p in name for p in FP8_MODULE_PATTERNS)
    ]


def fp8_map_path_for(checkpoint: str | Path) -> Path:
    """The official companion map of an fp8 checkpoint: ``x_fp8.pt`` -> ``x_fp8_map.pt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + "_map" + checkpoint.suffix)


def read_fp8_map(path: str | Path) -> dict[str, Tensor]:
    """Read an fp8 scale map, flat (HunyuanVideo) or wrapped as ``{"module": map}`` (HunyuanCustom).

    Values become fp32 tensors. Only ``torch.load(weights_only=True)`` is used, or safetensors for a
    ``*_fp8_map.safetensors`` file (flat, beside an ``*_fp8.safetensors`` checkpoint).
    """
    from model_core.checkpoints import CheckpointNotFoundError, _safetensors_load, _torch_load_safely

    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"fp8 scale map {path} does not exist (it sits beside the *_fp8.pt file)"
        )
    obj = _safetensors_load(path, "cpu") if path.suffix == ".safetensors" else _torch_load_safely(path, "cpu")
    if isinstance(obj, Mapping) and isinstance(obj.get("module"), Mapping):
        obj = obj["module"]
    if not isinstance(obj, Mapping):
        raise FP8MapError(f"{path} holds a {type(obj).__name__}; expected a dict of module name -> scale")
    scales: dict[str, Tensor] = {}
    for name, value in obj.items():
        if not isinstance(value, (Tensor, float, int)):
            raise FP8MapError(
                f"{path}: scale of {name!r} is a {type(value).__name__}; expected a tensor or number"
            )
        scales[str(name)] = torch.as_tensor(value).to(torch.float32)
    return scales


def _normalise_map_keys(fp8_map: Mapping[str, Tensor | float]) -> dict[str, Tensor | float]:
    # accept weight keys ("x.weight") as well as module names ("x"): both name the same Linear
    return {(k.removesuffix(".weight")): v for k, v in fp8_map.items()}


def convert_to_fp8_linears(
    model: nn.Module, fp8_map: Mapping[str, Tensor | float], *, bias_dtype: torch.dtype | None = None
) -> list[str]:
    """Replace, in place, every Linear of the double/single blocks by an :class:`FP8Linear` with its scale.

    Works on a model built on the meta device (call it before loading the ``*_fp8.pt`` state dict). Returns the
    converted module names. Every such Linear must have a scale: a missing one is an :class:`FP8MapError`
    naming the modules, because loading e4m3 weights without their scale gives silently wrong outputs.
    Map entries for other modules are ignored.
    """
    scales = _normalise_map_keys(fp8_map)
    names = fp8_linear_names(model)
    missing = [n for n in names if n not in scales]
    if missing:
        shown = ", ".join(missing[:10])
        raise FP8MapError(
            f"the fp8 scale map has no scale for {len(missing)} of {len(names)} Linears in the double/single "
            f"blocks (first: {shown}). Pass the *_fp8_map.pt file that belongs to this *_fp8.pt checkpoint."
        )
    for name in names:
        linear = model.get_submodule(name)
        if isinstance(linear, FP8Linear):
            continue
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{name} is a {type(linear).__name__}; only an nn.Linear becomes FP8Linear")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        replacement = FP8Linear(
            linear.in_features,
            linear.out_features,
            _as_scale(scales[name], linear.out_features),
            bias=linear.bias is not None,
            device=linear.weight.device,
            bias_dtype=bias_dtype or (linear.bias.dtype if linear.bias is not None else None),
        )
        setattr(parent, child, replacement)
    return names


def quantize_fp8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-tensor e4m3 quantisation: ``scale = amax / 448``, ``q = round_e4m3(w / scale)``.

    Returns ``(q as float8_e4m3fn, scale as a 0-d fp32 tensor)``; ``dequantize_fp8(q, scale)`` approximates
    ``weight`` within the bounds in the module docstring.
    """
    w = weight.detach().to(torch.float32)
    amax = w.abs().max().clamp(min=torch.finfo(torch.float32).tiny)
    scale = amax / E4M3_MAX
    q = (w / scale).clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE)
    return q, scale


def dequantize_fp8(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``q.to(dtype) * scale``: the weight :class:`FP8Linear` uses."""
    return q.to(dtype) * scale.to(dtype)


def quantize_state_dict_fp8(
    state_dict: Mapping[str, Tensor], linear_names: Iterable[str]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Make the official fp8 pair from a float state dict: (state dict with e4m3 weights, flat scale map).

    ``linear_names`` are module names (:func:`fp8_linear_names`); their ``.weight`` entries are quantised,
    everything else is kept as is.
    """
    out = dict(state_dict)
    scales: dict[str, Tensor] = {}
    for name in linear_names:
        key = f"{name}.weight"
        if key not in out:
            raise KeyError(f"state dict has no {key!r} to quantise")
        out[key], scales[name] = quantize_fp8(out[key])
    return out, scales
