"""Checkpoint loading: file layouts, safety, strict key checks naming the best-fitting preset, memory."""

from __future__ import annotations

import collections
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from model_core.checkpoints import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
    best_matching_preset,
    load_model,
    load_state_dict_into,
    read_state_dict,
    resolve_checkpoint_file,
)
from model_core.configs import PRESETS
from model_core.dit import HunyuanDiT
from model_core.dit.fp8 import (
    FP8_DTYPE,
    FP8Linear,
    dequantize_fp8,
    fp8_linear_names,
    fp8_map_path_for,
    quantize_state_dict_fp8,
)

TINY = sorted(n for n in PRESETS if n.startswith("tiny-"))
REPO = Path(__file__).resolve().parents[2]


class _Unsafe:
    """A class torch.load(weights_only=True) must refuse to rebuild."""


def _tiny_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = HunyuanDiT(PRESETS[name])
    # adaLN layers may start at zero; fill everything so that a dropped or swapped tensor shows
    return {k: torch.randn_like(v) for k, v in model.state_dict().items()}


def _meta_keys(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in HunyuanDiT(PRESETS[name]).state_dict().items()}


def _tiny_inputs(name: str, seed: int = 0) -> tuple[tuple, dict]:
    cfg = PRESETS[name]
    g = torch.Generator().manual_seed(seed)
    b, t, h, w, length = 1, 2, 4, 4, 6
    x = torch.randn(b, cfg.in_channels, t, h, w, generator=g)
    text = torch.randn(b, length, cfg.text_states_dim, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    pooled = torch.randn(b, cfg.text_pooled_dim, generator=g)
    kwargs: dict = {}
    if cfg.guidance_embed:
        kwargs["guidance"] = torch.tensor([6016.0])
    if cfg.identity_image:
        kwargs["ref_latents"] = torch.randn(b, cfg.in_channels, 1, h, w, generator=g)
    if cfg.video_condition:
        kwargs["video_cond"] = torch.randn(b, 2 * cfg.in_channels, t, h, w, generator=g)
    return (x, torch.tensor([500.0]), text, mask, pooled), kwargs


# ---------------------------------------------------------------------------------------------------------
# read_state_dict: layouts and safety


def _small_state() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3), "steps": torch.tensor(7)}


@pytest.mark.parametrize("wrapper", ["module", "ema", "state_dict", "model", None])
def test_read_state_dict_unwraps_the_official_wrappers(tmp_path: Path, wrapper: str | None) -> None:
    sd = _small_state()
    path = tmp_path / "ckpt.pt"
    # DeepSpeed-style files carry plain metadata beside the weights
    torch.save({wrapper: sd, "global_steps": 12, "dp_world_size": 8} if wrapper else sd, path)
    got = read_state_dict(path)
    assert got.keys() == sd.keys()
    for k in sd:
        assert torch.equal(got[k], sd[k])


def test_read_state_dict_prefers_load_key(tmp_path: Path) -> None:
    module, ema = _small_state(), _small_state()
    path = tmp_path / "ckpt.pt"
    torch.save({"module": module, "ema": ema}, path)
    assert torch.equal(read_state_dict(path)["a.weight"], module["a.weight"])
    assert torch.equal(read_state_dict(path, load_key="ema")["a.weight"], ema["a.weight"])


def test_read_state_dict_legacy_format_and_safetensors(tmp_path: Path) -> None:
    sd = _small_state()
    legacy = tmp_path / "legacy.pth"
    torch.save({"module": sd}, legacy, _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    st = tmp_path / "x.safetensors"
    save_file(sd, st)
    for path in (legacy, st):
        got = read_state_dict(path)
        assert sorted(got) == sorted(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_read_state_dict_strips_a_prefix_only_when_present(tmp_path: Path) -> None:
    # the HunyuanCustom VAE file carries "vae."; the HunyuanVideo one does not; both must load
    prefixed = tmp_path / "custom_vae.pt"
    torch.save(
        {
            "state_dict": {
                "vae.encoder.w": torch.ones(2),
                "vae.decoder.w": torch.zeros(2),
                "loss.w": torch.ones(1),
            }
        },
        prefixed,
    )
    assert sorted(read_state_dict(prefixed, prefix="vae.")) == ["decoder.w", "encoder.w"]
    bare = tmp_path / "vae.pt"
    torch.save({"encoder.w": torch.ones(2)}, bare)
    assert list(read_state_dict(bare, prefix="vae.")) == ["encoder.w"]


def test_pickled_object_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": _small_state(), "args": _Unsafe()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert str(path) in message and "_Unsafe" in message and "safetensors" in message


def test_non_tensor_entries_are_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"a": torch.ones(1), "b": collections.OrderedDict(x=[1, 2])}, path)
    with pytest.raises(CheckpointFormatError, match=r"1 entries are not tensors: b \(OrderedDict\)"):
        read_state_dict(path)
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match="unknown checkpoint suffix '.npz'"):
        read_state_dict(tmp_path / "weights.npz")


def test_corrupt_files_are_format_errors_not_unsafe_ones(tmp_path: Path) -> None:
    """Bytes that are not a checkpoint say so; only a real pickled object is called unsafe."""
    whole = tmp_path / "whole.pt"
    torch.save({"module": {"w": torch.ones(4096)}}, whole)
    data = whole.read_bytes()
    cases = {
        "random.pt": torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0))
        .to(torch.uint8)
        .numpy()
        .tobytes(),
        "text.pt": b"hello world",
        "empty.pt": b"",
        "truncated.pt": data[: len(data) // 2],
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(
            CheckpointFormatError, match=rf"{name} is not a readable torch checkpoint \(corrupt"
        ):
            read_state_dict(tmp_path / name)
    st = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(64)}, st)
    st.write_bytes(st.read_bytes()[:-40])
    with pytest.raises(CheckpointFormatError, match="model.safetensors is not a readable safetensors file"):
        read_state_dict(st)


def test_directory_resolves_official_file_names(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "hunyuan-video-t2v-720p"
    (ckpt_dir / "transformers").mkdir(parents=True)
    official = ckpt_dir / "transformers" / "mp_rank_00_model_states.pt"
    torch.save({"module": _small_state()}, official)
    # the fp8 pair beside it must not be picked for the bf16 checkpoint
    torch.save({}, ckpt_dir / "transformers" / "mp_rank_00_model_states_fp8.pt")
    torch.save({}, ckpt_dir / "transformers" / "mp_rank_00_model_states_fp8_map.pt")
    assert resolve_checkpoint_file(ckpt_dir) == official

    ema_dir = tmp_path / "ema"
    ema_dir.mkdir()
    torch.save(_small_state(), ema_dir / "pytorch_model_ema.pt")
    torch.save(_small_state(), ema_dir / "pytorch_model_module.pt")
    assert resolve_checkpoint_file(ema_dir, load_key="ema").name == "pytorch_model_ema.pt"

    deepspeed = tmp_path / "ds"
    deepspeed.mkdir()
    torch.save({"module": _small_state()}, deepspeed / "mp_rank_03_model_states.pt")
    assert resolve_checkpoint_file(deepspeed).name == "mp_rank_03_model_states.pt"

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("weights go here")
    with pytest.raises(CheckpointNotFoundError, match=r"mp_rank_00_model_states\.pt.*found: README\.md"):
        read_state_dict(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")


# ---------------------------------------------------------------------------------------------------------
# load_model: tiny DiT round trips


@pytest.mark.parametrize("layout", ["module", "ema", "safetensors", "directory"])
@pytest.mark.parametrize("name", TINY)
def test_tiny_dit_round_trip(tmp_path: Path, name: str, layout: str) -> None:
    sd = _tiny_state(name)
    if layout == "module":
        path = tmp_path / "mp_rank_00_model_states.pt"
        torch.save({"module": sd, "global_steps": 1}, path)
    elif layout == "ema":
        path = tmp_path / "model.pt"
        torch.save({"ema": sd}, path)
    elif layout == "safetensors":
        path = tmp_path / "model.safetensors"
        save_file(sd, path)
    else:
        torch.save({"module": sd}, tmp_path / "mp_rank_00_model_states.pt")
        path = tmp_path
    model = load_model(name, path, dtype=torch.float32)
    assert isinstance(model, HunyuanDiT) and not model.training
    got = model.state_dict()
    assert got.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(got[k], v), k
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])

    bf16 = load_model(PRESETS[name], path, dtype=torch.bfloat16)  # a config works as well as a name
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert torch.equal(
        bf16.state_dict()["final_layer.linear.weight"], sd["final_layer.linear.weight"].bfloat16()
    )


def _conditioned_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights at the scale of a trained model (matrices ~ 1/sqrt(fan_in)): the outputs stay O(1).

    Unit-variance weights (:func:`_tiny_state`) blow the activations up to ~1e4, where fp32 rounding alone
    hides a wrongly loaded tensor.
    """
    torch.manual_seed(seed)
    state = {}
    for key, value in HunyuanDiT(PRESETS[name]).state_dict().items():
        if value.dim() > 1:
            state[key] = torch.randn_like(value) / math.prod(value.shape[1:]) ** 0.5
        elif ".norm" in key or key.endswith("norm.weight"):
            state[key] = 1 + 0.1 * torch.randn_like(value)
        else:
            state[key] = 0.1 * torch.randn_like(value)
    return state


def _assert_same_output(got: torch.Tensor, want: torch.Tensor) -> None:
    # Not bitwise: two fp32 forwards of the same weights may sum in another order (another CPU's kernels, a
    # memory-mapped vs an owned tensor); on an AMD EPYC they differ by ~5e-7 relative. With O(1) outputs that
    # noise is ~1e-6, ten times below the bound, and rounding any single weight matrix to bf16 moves the
    # output by 6e-5 or more (see the test below).
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-hunyuanvideo-t2v-720p", "tiny-hunyuancustom-editing-720p"])
def test_loaded_model_computes_what_the_saved_model_computed(tmp_path: Path, name: str) -> None:
    sd = _conditioned_state(name, seed=5)
    reference = HunyuanDiT(PRESETS[name]).eval()
    reference.load_state_dict(sd)
    path = tmp_path / "model.safetensors"
    save_file(sd, path)
    loaded = load_model(name, path, dtype=torch.float32)
    args, kwargs = _tiny_inputs(name)
    with torch.no_grad():
        want = reference(*args, **kwargs)
        _assert_same_output(loaded(*args, **kwargs), want)

        # the tolerance still catches a wrong weight: any one matrix a little off (bf16-rounded) fails
        matrices = [(key, p) for key, p in loaded.named_parameters() if p.dim() > 1]
        assert len(matrices) > 40
        for key, param in matrices:
            exact = param.detach().clone()
            param.copy_(exact.bfloat16().float())
            with pytest.raises(AssertionError, match="Tensor-likes are not close"):
                _assert_same_output(loaded(*args, **kwargs), want)
            param.copy_(exact)
        _assert_same_output(loaded(*args, **kwargs), want)


def test_unsafe_checkpoint_refused_by_load_model(tmp_path: Path) -> None:
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": _tiny_state("tiny-hunyuancustom-720p"), "config": _Unsafe()}, path)
    with pytest.raises(UnsafeCheckpointError, match="safetensors"):
        load_model("tiny-hunyuancustom-720p", path)


# ---------------------------------------------------------------------------------------------------------
# mismatches


def test_audio_checkpoint_into_image_preset_names_keys_and_preset(tmp_path: Path) -> None:
    path = tmp_path / "audio.pt"
    torch.save({"module": _tiny_state("tiny-hunyuancustom-audio-720p")}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_model("tiny-hunyuancustom-720p", path)
    err = info.value
    audio, image = _meta_keys("tiny-hunyuancustom-audio-720p"), _meta_keys("tiny-hunyuancustom-720p")
    extra = [k for k in audio if k not in image]
    assert extra and all(k.startswith(("audio_proj.", "audio_models.")) for k in extra)
    assert err.diff.unexpected == tuple(extra) and err.diff.missing == () and err.diff.wrong_shape == ()
    assert err.best_preset == "tiny-hunyuancustom-audio-720p"
    message = str(err)
    assert f"{len(extra)} unexpected" in message and "preset 'tiny-hunyuancustom-720p'" in message
    assert "'tiny-hunyuancustom-audio-720p' best" in message
    assert "showing first 10" in message
    shown = [line.strip() for line in message.splitlines() if line.startswith("  ")]
    assert shown == extra[:10]


def test_t2v_checkpoint_into_custom_preset_reports_guidance_keys(tmp_path: Path) -> None:
    path = tmp_path / "t2v.safetensors"
    save_file(_tiny_state("tiny-hunyuanvideo-t2v-720p"), path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_model("tiny-hunyuancustom-editing-720p", path)
    err = info.value
    assert sorted(err.diff.unexpected) == sorted(
        k for k in _meta_keys("tiny-hunyuanvideo-t2v-720p") if k.startswith("guidance_in.")
    )
    assert sorted(err.diff.missing) == [
        "bg_in.proj.bias",
        "bg_in.proj.weight",
        "bg_proj.bias",
        "bg_proj.weight",
    ]
    assert err.best_preset == "tiny-hunyuanvideo-t2v-720p"


def test_tiny_checkpoint_into_production_preset_lists_wrong_shapes(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    sd = _tiny_state("tiny-hunyuancustom-720p")
    del sd["final_layer.linear.bias"]
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_model("hunyuancustom-720p", path)
    err = info.value
    # names of the production model are a superset (more blocks); every shared key has another shape
    production = _meta_keys("hunyuancustom-720p")
    assert "final_layer.linear.bias" in err.diff.missing
    assert len(err.diff.missing) == len(production) - (len(sd))
    assert ("img_in.proj.weight", (64, 16, 1, 2, 2), (3072, 16, 1, 2, 2)) in err.diff.wrong_shape
    assert "img_in.proj.weight: (64, 16, 1, 2, 2) vs (3072, 16, 1, 2, 2)" in str(err)
    assert err.best_preset == "tiny-hunyuancustom-720p"


def test_best_matching_preset_scores_every_preset() -> None:
    for name in TINY:
        best = best_matching_preset(_meta_keys(name))
        assert best == (name, 1.0)
    assert best_matching_preset({"nothing.weight": (1,)}) is None


def test_mismatch_on_a_plain_module_skips_the_preset_search() -> None:
    model = nn.Linear(2, 3)
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_into(model, {"weight": torch.ones(3, 2)}, presets=())
    assert info.value.diff.missing == ("bias",) and info.value.best_preset is None
    assert "preset" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# fp8 through load_model


@pytest.mark.parametrize(
    "wrapped_map", [False, True], ids=["hunyuanvideo-flat-map", "hunyuancustom-module-map"]
)
def test_fp8_tiny_dit_loads_with_sibling_map(tmp_path: Path, wrapped_map: bool) -> None:
    name = "tiny-hunyuancustom-720p"
    sd = _tiny_state(name, seed=3)
    reference = HunyuanDiT(PRESETS[name]).eval()
    reference.load_state_dict(sd)
    names = fp8_linear_names(reference)
    assert names and all(n.startswith(("double_blocks.", "single_blocks.")) for n in names)
    fp8_sd, scales = quantize_state_dict_fp8(sd, names)
    ckpt = tmp_path / "mp_rank_00_model_states_fp8.pt"
    torch.save({"module": fp8_sd}, ckpt)
    torch.save({"module": scales} if wrapped_map else scales, fp8_map_path_for(ckpt))

    model = load_model(name, ckpt, dtype=torch.float32)  # the map is found beside the checkpoint
    for n in names:
        layer = model.get_submodule(n)
        assert isinstance(layer, FP8Linear) and layer.weight.dtype == FP8_DTYPE
    args, kwargs = _tiny_inputs(name)
    # exact semantics: same as a float model holding the dequantised weights
    dequantised = dict(sd)
    for n in names:
        dequantised[f"{n}.weight"] = dequantize_fp8(fp8_sd[f"{n}.weight"], scales[n])
    deq_model = HunyuanDiT(PRESETS[name]).eval()
    deq_model.load_state_dict(dequantised)
    with torch.no_grad():
        got = model(*args, **kwargs)
        torch.testing.assert_close(got, deq_model(*args, **kwargs), rtol=1e-4, atol=1e-5)
        want = reference(*args, **kwargs)
    # e4m3 keeps 3 mantissa bits (<= 2**-4 relative per weight); randn-filled weights make this tiny model
    # far more sensitive than a trained one, so allow 3x the single-rounding bound on the output norm
    rel = ((got - want).norm() / want.norm()).item()
    assert 0 < rel < 3 * 2.0**-4, rel


def test_fp8_safetensors_pair_loads(tmp_path: Path) -> None:
    """The fp8 pair converted to safetensors (``x_fp8.safetensors`` + ``x_fp8_map.safetensors``) loads too."""
    name = "tiny-hunyuanvideo-t2v-720p"
    sd = _tiny_state(name, seed=4)
    names = fp8_linear_names(HunyuanDiT(PRESETS[name]))
    fp8_sd, scales = quantize_state_dict_fp8(sd, names)
    ckpt = tmp_path / "model_fp8.safetensors"
    save_file(fp8_sd, ckpt)
    save_file(scales, fp8_map_path_for(ckpt))
    assert fp8_map_path_for(ckpt).name == "model_fp8_map.safetensors"
    model = load_model(name, ckpt, dtype=torch.bfloat16)
    layer = model.get_submodule(names[0])
    assert isinstance(layer, FP8Linear) and layer.weight.dtype == FP8_DTYPE
    assert torch.equal(layer.weight.view(torch.uint8), fp8_sd[f"{names[0]}.weight"].view(torch.uint8))
    assert layer.fp8_scale.item() == scales[names[0]].item()
    assert model.final_layer.linear.weight.dtype == torch.bfloat16


def test_fp8_checkpoint_without_map_is_a_clear_error(tmp_path: Path) -> None:
    name = "tiny-hunyuancustom-720p"
    sd = _tiny_state(name)
    fp8_sd, _ = quantize_state_dict_fp8(sd, fp8_linear_names(HunyuanDiT(PRESETS[name])))
    ckpt = tmp_path / "mp_rank_00_model_states_fp8.pt"
    torch.save({"module": fp8_sd}, ckpt)
    with pytest.raises(
        CheckpointNotFoundError, match=r"float8_e4m3fn.*mp_rank_00_model_states_fp8_map\.pt.*fp8_map="
    ):
        load_model(name, ckpt)


def test_fp8_checkpoint_into_the_wrong_preset_reports_keys_before_scales(tmp_path: Path) -> None:
    name = "tiny-hunyuancustom-720p"
    sd = _tiny_state(name)
    fp8_sd, scales = quantize_state_dict_fp8(sd, fp8_linear_names(HunyuanDiT(PRESETS[name])))
    ckpt = tmp_path / "mp_rank_00_model_states_fp8.pt"
    torch.save({"module": fp8_sd}, ckpt)
    torch.save({"module": scales}, fp8_map_path_for(ckpt))
    # the production preset has 18 more double blocks without scales; the key diff is the useful message
    with pytest.raises(CheckpointMismatchError) as info:
        load_model("hunyuancustom-720p", ckpt)
    assert info.value.best_preset == name


# ---------------------------------------------------------------------------------------------------------
# memory


def test_same_dtype_load_assigns_the_checkpoint_tensors_without_copying() -> None:
    with torch.device("meta"):
        model = HunyuanDiT(PRESETS["tiny-hunyuancustom-720p"])
    sd = _tiny_state("tiny-hunyuancustom-720p")
    pointers = {k: v.data_ptr() for k, v in sd.items()}
    load_state_dict_into(model, sd, dtype=torch.float32)
    assert sd == {}  # emptied as it went: the caller holds no second copy
    for k, v in model.state_dict().items():
        assert v.data_ptr() == pointers[k], k


_MEMORY_PROBE = """
import gc, json, sys, torch
from pathlib import Path
torch.set_num_threads(1)
from model_core.checkpoints import load_state_dict_into, read_state_dict
def status(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))
results = []
for path, dtype in zip(sys.argv[1::2], sys.argv[2::2]):
    with torch.device("meta"):
        model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(12)])
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # restart the VmHWM window
    except OSError as exc:
        print(json.dumps({"skip": f"cannot reset VmHWM here: {exc}"}))
        raise SystemExit(0)
    base = status("VmRSS")
    load_state_dict_into(model, read_state_dict(path), dtype=getattr(torch, dtype), presets=())
    total = sum(float(p.detach().float().sum()) for p in model.parameters())  # touch every weight
    results.append({"peak": status("VmHWM") - base, "meta": any(p.is_meta for p in model.parameters())})
    del model
print(json.dumps(results))
"""


def test_peak_memory_is_about_one_copy(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sd = {
        k: v.detach()
        for k, v in nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(12)]).state_dict().items()
    }
    size = sum(v.numel() * v.element_size() for v in sd.values())  # 48 MiB of fp32
    torch.save(sd, tmp_path / "stack.pt")
    save_file(sd, tmp_path / "stack.safetensors")
    cases = [
        ("stack.pt", "float32"),
        ("stack.pt", "bfloat16"),
        ("stack.safetensors", "float32"),
        ("stack.safetensors", "bfloat16"),
    ]
    args = [a for path, dtype in cases for a in (str(tmp_path / path), dtype)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    if isinstance(results, dict):
        pytest.skip(results["skip"])
    for (path, dtype), result in zip(cases, results, strict=True):
        assert result["meta"] is False
        # plain torch.load + load_state_dict into a built model holds two copies (2x); we hold one. Casting to
        # bf16 holds the bf16 result plus one fp32 tensor, since file pages are released tensor by tensor.
        target = size if dtype == "float32" else size // 2
        assert result["peak"] < target + size * 0.3, (path, dtype, result["peak"] / 2**20, size / 2**20)
