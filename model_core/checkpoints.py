"""Safe checkpoint loading: safetensors or ``torch.load(weights_only=True)``, key diffs in errors, fp8.

Errors::

    CheckpointError
     ├── CheckpointNotFoundError   (also a FileNotFoundError) no file, or a directory without a known file name
     ├── UnsafeCheckpointError     the file needs arbitrary unpickling; convert it to safetensors
     ├── CheckpointFormatError     readable, but not a flat {name: tensor} dict after unwrapping
     └── CheckpointMismatchError   keys or shapes differ from the model; lists them and the best-fitting preset

Files the official releases ship (Tencent/HunyuanVideo ckpts/README.md, Tencent-Hunyuan/HunyuanCustom README):

* ``mp_rank_00_model_states.pt``: a dict whose ``module`` (or ``ema``) entry is the state dict;
* ``mp_rank_00_model_states_fp8.pt`` + ``..._fp8_map.pt``: e4m3 Linear weights and their scales
  (see :mod:`model_core.dit.fp8`);
* VAE ``pytorch_model.pt``: maybe under ``state_dict``, keys maybe prefixed ``vae.`` (HunyuanCustom);
* our own exports and diffusers-style files: ``*.safetensors``.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from model_core.configs import DiTConfig

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "KeyDiff",
    "UnsafeCheckpointError",
    "best_matching_preset",
    "check_keys",
    "diff_keys",
    "load_model",
    "load_state_dict_into",
    "read_state_dict",
    "resolve_checkpoint_file",
]

# Keys whose value is the real state dict, tried in this order after the caller's ``load_key``
# (official loader: --load-key module, or ema; DeepSpeed/Lightning/diffusers wrappers: state_dict, model).
WRAPPER_KEYS: tuple[str, ...] = ("module", "ema", "state_dict", "model")
PICKLE_SUFFIXES: frozenset[str] = frozenset({".pt", ".pth", ".bin", ".ckpt"})
# A directory is searched for these names in order (the releases' ckpts/ layout); ``{load_key}`` is filled in.
DIRECTORY_FILE_NAMES: tuple[str, ...] = (
    "mp_rank_00_model_states.pt",
    "pytorch_model_{load_key}.pt",
    "pytorch_model.pt",
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
)
_SHOW = 10  # entries of each key list shown in a mismatch message


class CheckpointError(Exception):
    """Base class of every checkpoint-loading error."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist, or a directory holds none of the known checkpoint file names."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs arbitrary unpickling (objects other than tensors and plain containers)."""


class CheckpointFormatError(CheckpointError):
    """The file loads but does not hold a flat ``{name: tensor}`` state dict."""


@dataclass(frozen=True)
class KeyDiff:
    """How a state dict differs from a model's expected ``{key: shape}``."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    # (key, shape in the checkpoint, shape the model expects)
    wrong_shape: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or wrongly shaped."""
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self) -> str:
        """Multi-line text: counts and the first ten of each list."""
        parts = []
        for title, items in (
            ("missing (in the model, not in the checkpoint)", list(self.missing)),
            ("unexpected (in the checkpoint, not in the model)", list(self.unexpected)),
            (
                "wrong shape (checkpoint vs model)",
                [f"{k}: {tuple(got)} vs {tuple(want)}" for k, got, want in self.wrong_shape],
            ),
        ):
            if not items:
                continue
            more = f" (showing first {_SHOW})" if len(items) > _SHOW else ""
            parts.append(f"{len(items)} {title}{more}:")
            parts += [f"  {item}" for item in items[:_SHOW]]
        return "\n".join(parts)


class CheckpointMismatchError(CheckpointError):
    """Keys or shapes do not fit the model; ``diff`` says how, ``best_preset`` which preset would fit."""

    def __init__(self, message: str, diff: KeyDiff, best_preset: str | None) -> None:
        super().__init__(message)
        self.diff = diff
        self.best_preset = best_preset


# ---------------------------------------------------------------------------------------------------------
# reading files


def resolve_checkpoint_file(path: str | Path, *, load_key: str = "module") -> Path:
    """Return ``path`` if it is a file; for a directory, the official checkpoint file inside it.

    A directory is searched for :data:`DIRECTORY_FILE_NAMES`, then for a single ``*_model_states.pt``, then the
    same in a ``transformers/`` subfolder (the HF ``hunyuan-video-t2v-720p`` layout).
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist")
    for folder in (path, path / "transformers"):
        if not folder.is_dir():
            continue
        for name in DIRECTORY_FILE_NAMES:
            candidate = folder / name.format(load_key=load_key)
            if candidate.is_file():
                return candidate
        states = sorted(folder.glob("*_model_states.pt"))
        if len(states) == 1:
            return states[0]
        if len(states) > 1:
            raise CheckpointNotFoundError(
                f"{folder} holds several *_model_states.pt files ({', '.join(p.name for p in states)}); "
                "pass the file itself"
            )
    listing = ", ".join(sorted(p.name for p in path.iterdir())[:20]) or "(empty)"
    names = ", ".join(n.format(load_key=load_key) for n in DIRECTORY_FILE_NAMES)
    raise CheckpointNotFoundError(
        f"directory {path} holds no checkpoint file: looked for {names} or one *_model_states.pt "
        f"(also under transformers/); found: {listing}"
    )


def _torch_load_safely(path: Path, map_location: str | torch.device) -> object:
    # mmap keeps the tensors file-backed until they are touched; only the zip format supports it.
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        refused, detail = _weights_only_detail(str(exc))
        if not refused:
            raise CheckpointFormatError(
                f"{path} is not a readable torch checkpoint (corrupt, truncated, or not written by torch.save): "
                f"{detail}"
            ) from exc
        raise UnsafeCheckpointError(
            f"{path} needs arbitrary unpickling, which can run code, so it is refused ({detail}). "
            "Fix: load it once in a trusted "
            "environment and save the tensors with safetensors.torch.save_file(state_dict, 'model.safetensors'), "
            "or re-save a plain {name: tensor} dict with torch.save."
        ) from exc
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointFormatError(
            f"{path} is not a readable torch checkpoint (corrupt, truncated, or not written by torch.save): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _weights_only_detail(message: str) -> tuple[bool, str]:
    """(whether torch's weights-only unpickler refused an object, the line that says what).

    torch's message is long; after "WeightsUnpickler error:" it names the offending object ("Unsupported
    global: GLOBAL x.Y ..."). "Unsupported operand" there, or no such line at all ("invalid load key"), means
    bytes that are not a pickle: a corrupt file, not an unsafe one.
    """
    _, marker, rest = message.partition("WeightsUnpickler error:")
    lines = [ln.strip() for ln in (rest if marker else message).splitlines() if ln.strip()]
    detail = lines[0] if lines else message.strip()
    refused = bool(marker) and not detail.startswith("Unsupported operand")
    return refused, detail.split(" was not an allowed global")[0]


def _safetensors_load(path: Path, map_location: str | torch.device) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device=str(map_location))
    except SafetensorError as exc:
        raise CheckpointFormatError(f"{path} is not a readable safetensors file: {exc}") from exc


def _unwrap(obj: object, path: Path, load_key: str | None) -> Mapping[str, object]:
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors")
    keys = ([load_key] if load_key else []) + [k for k in WRAPPER_KEYS if k != load_key]
    found: Mapping[str, object] = obj
    # nested wrappers exist ({"state_dict": {"module": ...}}), two levels cover every known layout
    for _ in range(2):
        inner = next((found[k] for k in keys if isinstance(found.get(k), Mapping)), None)
        if not isinstance(inner, Mapping):  # None: no wrapper entry
            break
        found = inner
    return found


def read_state_dict(
    path: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    prefix: str | None = None,
    load_key: str | None = "module",
) -> dict[str, Tensor]:
    """Read a flat ``{name: tensor}`` state dict without running arbitrary pickled code.

    Args:
        path: a ``.safetensors`` file, a ``.pt/.pth/.bin/.ckpt`` file, or a directory holding one of the official
            file names (:func:`resolve_checkpoint_file`).
        map_location: where tensors land. Zip-format torch files on CPU are memory-mapped, so tensors stay
            file-backed until used.
        prefix: if some keys start with it (the HunyuanCustom VAE's ``vae.``), keep only those keys and strip
            it; if none do, the dict is returned unchanged, so prefixed and bare files both load.
        load_key: wrapper entry tried first (official ``--load-key``); ``module``, ``ema``, ``state_dict`` and
            ``model`` are tried after it.

    Raises:
        UnsafeCheckpointError: the file needs arbitrary unpickling.
        CheckpointFormatError: the content is not a dict of tensors after unwrapping.
        CheckpointNotFoundError: no such file, or no known file in the directory.
    """
    file = resolve_checkpoint_file(path, load_key=load_key or "module")
    if file.suffix == ".safetensors":
        raw: Mapping[str, object] = _safetensors_load(file, map_location)
    elif file.suffix in PICKLE_SUFFIXES:
        raw = _unwrap(_torch_load_safely(file, map_location), file, load_key)
    else:
        raise CheckpointFormatError(
            f"{file}: unknown checkpoint suffix {file.suffix!r}; expected .safetensors or one of "
            f"{sorted(PICKLE_SUFFIXES)}"
        )
    not_tensors = [k for k, v in raw.items() if not isinstance(v, Tensor)]
    if not_tensors:
        shown = ", ".join(f"{k} ({type(raw[k]).__name__})" for k in not_tensors[:_SHOW])
        raise CheckpointFormatError(
            f"{file}: {len(not_tensors)} entries are not tensors: {shown}. Expected a flat state dict, or one "
            f"wrapped under one of {WRAPPER_KEYS}"
        )
    state = {str(k): v for k, v in raw.items() if isinstance(v, Tensor)}  # every value is one, checked above
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


# ---------------------------------------------------------------------------------------------------------
# comparing keys


def _shapes(tensors: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in tensors.items()}


def diff_keys(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> KeyDiff:
    """Compare ``{key: shape}`` of a checkpoint (``found``) with what a model expects."""
    return KeyDiff(
        missing=tuple(k for k in expected if k not in found),
        unexpected=tuple(k for k in found if k not in expected),
        wrong_shape=tuple(
            (k, tuple(found[k]), tuple(shape))
            for k, shape in expected.items()
            if k in found and tuple(found[k]) != tuple(shape)
        ),
    )


@functools.cache
def _preset_shapes(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``(key, shape)`` of a DiT preset, built on the meta device (no memory, a fraction of a second)."""
    from model_core.configs import PRESETS
    from model_core.dit import HunyuanDiT

    with torch.device("meta"):
        model = HunyuanDiT(PRESETS[name])
    return tuple(_shapes(model.state_dict()).items())


def best_matching_preset(
    found: Mapping[str, tuple[int, ...]], candidates: Iterable[str] | None = None
) -> tuple[str, float] | None:
    """The DiT preset whose ``{key: shape}`` fits ``found`` best, with its score in [0, 1].

    The score is the number of keys present in both with the same shape over the number of keys in either,
    so a preset with the right names but other sizes (tiny vs production) scores low. None if no preset
    shares a single (key, shape) pair.
    """
    from model_core.configs import PRESETS, DiTConfig

    names = (
        list(candidates)
        if candidates is not None
        else [n for n, c in PRESETS.items() if isinstance(c, DiTConfig)]
    )
    best: tuple[str, float] | None = None
    for name in names:
        expected = dict(_preset_shapes(name))
        same = sum(1 for k, s in found.items() if expected.get(k) == tuple(s))
        score = same / len(expected.keys() | found.keys())
        if same and (best is None or score > best[1]):
            best = (name, score)
    return best


def check_keys(
    expected: Mapping[str, tuple[int, ...]],
    state_dict: Mapping[str, Tensor],
    *,
    what: str = "the model",
    presets: Iterable[str] | None = None,
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` has exactly the ``expected`` keys/shapes.

    The message lists missing, unexpected and wrongly shaped keys and names the best-fitting DiT preset among
    ``presets`` (None: all; empty: skip the search, for models that are not a DiT).
    """
    found = _shapes(state_dict)
    diff = diff_keys(found, expected)
    if diff.ok:
        return
    candidates = None if presets is None else list(presets)
    best = best_matching_preset(found, candidates) if candidates != [] else None
    hint = ""
    if best:
        hint = f"\nThe checkpoint fits preset {best[0]!r} best ({best[1]:.0%} of keys with matching shapes)."
    elif candidates != []:
        hint = "\nNo known DiT preset fits it."
    raise CheckpointMismatchError(
        f"checkpoint does not fit {what}:\n{diff.describe()}{hint}", diff, best[0] if best else None
    )


# ---------------------------------------------------------------------------------------------------------
# loading into a model


def load_state_dict_into(
    model: nn.Module,
    state_dict: dict[str, Tensor],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    what: str = "the model",
    presets: Iterable[str] | None = None,
) -> nn.Module:
    """Strictly load ``state_dict`` into ``model`` (usually built on the meta device) with ``assign=True``.

    Tensors are cast and moved one at a time and popped from ``state_dict`` as they go, so at no point are
    two full copies alive; a tensor already of the target device and dtype becomes the parameter itself.
    Floating tensors go to ``dtype`` (None keeps the stored dtype) except float8 weights (kept as stored, see
    :mod:`model_core.dit.fp8`).
    Non-persistent buffers are moved to ``device``. ``state_dict`` is emptied. ``presets`` are the DiT presets
    a mismatch message compares against (None: all of them; empty: none, for models that are not a DiT).

    Raises:
        CheckpointMismatchError: missing, unexpected or wrongly shaped keys, or float weights where the model
            expects fp8; the message lists them and names the best-fitting DiT preset.
    """
    device = torch.device(device)
    expected = model.state_dict()
    check_keys(_shapes(expected), state_dict, what=what, presets=presets)
    fp8 = torch.float8_e4m3fn
    not_fp8 = [k for k, v in expected.items() if v.dtype == fp8 and state_dict[k].dtype != fp8]
    if not_fp8:
        raise CheckpointMismatchError(
            f"{len(not_fp8)} weights of fp8 Linears are {state_dict[not_fp8[0]].dtype} in the checkpoint, "
            f"expected float8_e4m3fn (first: {', '.join(not_fp8[:_SHOW])}). Load the *_fp8.pt file with its map, "
            "or the bf16 checkpoint without fp8_map.",
            KeyDiff((), (), ()),
            None,
        )
    mapped = _file_backed_ranges()
    placed: dict[str, Tensor] = {}
    for key in list(state_dict):
        tensor = state_dict.pop(key)
        target = tensor.dtype
        if tensor.is_floating_point() and tensor.dtype != fp8:
            target = dtype or tensor.dtype
        placed[key] = tensor.to(device=device, dtype=target)
        if placed[key].data_ptr() != tensor.data_ptr():
            _release_file_pages(tensor, mapped)
        del tensor
    model.load_state_dict(placed, strict=True, assign=True)
    del placed
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.device != device and not buf.is_meta:
                module._buffers[name] = buf.to(device)
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise CheckpointError(
            f"after loading, {len(still_meta)} tensors of {what} are still on the meta device "
            f"(first: {', '.join(still_meta[:_SHOW])}); a non-persistent buffer must be rebuilt by the model "
            "after loading"
        )
    return model


def _file_backed_ranges() -> list[tuple[int, int]]:
    """Address ranges of this process's private file mappings (``/proc/self/maps``); empty off Linux."""
    try:
        text = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    ranges = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and fields[1].endswith("p"):
            lo, hi = (int(a, 16) for a in fields[0].split("-"))
            ranges.append((lo, hi))
    return ranges


def _release_file_pages(tensor: Tensor, ranges: list[tuple[int, int]]) -> None:
    """Drop the resident pages of a memory-mapped checkpoint tensor once it has been copied elsewhere.

    Mapped file pages stay in the resident set until the whole mapping goes, so casting a 26 GB mmap'd file
    to bf16 would otherwise peak at 1.5x its size. Only whole pages inside the tensor's bytes of a private file
    mapping are dropped; reading them again would simply re-read the file.
    """
    if tensor.device.type != "cpu" or not ranges:
        return
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    if not any(lo <= start and end <= hi for lo, hi in ranges):
        return
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi > lo:
        _libc().madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_DONTNEED)


_MADV_DONTNEED = 4  # linux/mman.h


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _resolve_config(preset: str | DiTConfig) -> tuple[DiTConfig, str]:
    from model_core.configs import PRESETS, DiTConfig, dit_preset

    if isinstance(preset, str):
        return dit_preset(preset), f"preset {preset!r}"
    if not isinstance(preset, DiTConfig):
        raise TypeError(f"preset must be a preset name or a DiTConfig, got {type(preset).__name__}")
    name = next((n for n, c in PRESETS.items() if c == preset), None)
    return preset, f"preset {name!r}" if name else "the given DiT config"


def _has_fp8(state_dict: Mapping[str, Tensor]) -> bool:
    return any(t.dtype == torch.float8_e4m3fn for t in state_dict.values())


def load_model(
    preset: str | DiTConfig,
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    fp8_map: str | Path | Mapping[str, Tensor | float] | None = None,
    load_key: str | None = "module",
) -> nn.Module:
    """Build ``HunyuanDiT`` for a preset name or ``DiTConfig`` on the meta device and load a checkpoint.

    Args:
        preset: a name in ``model_core.configs.PRESETS`` or a ``DiTConfig``.
        path: checkpoint file or directory (:func:`read_state_dict`).
        device, dtype: where the weights end up and the dtype of floating weights (fp8 weights stay e4m3).
        fp8_map: the ``*_fp8_map.pt`` path or its dict, for an ``*_fp8.pt`` checkpoint. If None and the
            checkpoint holds e4m3 weights, the official sibling ``<name>_map.pt`` is used.
        load_key: wrapper entry of the official file (``module`` by default, or ``ema``).

    Returns the model in eval mode. Raises :class:`CheckpointMismatchError` on any key or shape mismatch.
    """
    from model_core.dit import HunyuanDiT
    from model_core.dit.fp8 import convert_to_fp8_linears, fp8_map_path_for, read_fp8_map

    config, what = _resolve_config(preset)
    file = resolve_checkpoint_file(path, load_key=load_key or "module")
    with torch.device("meta"):
        model = HunyuanDiT(config)
    state = read_state_dict(file, load_key=load_key)
    # keys first: with the wrong preset, the fp8 map would otherwise fail first with a less useful message
    check_keys(_shapes(model.state_dict()), state, what=what)
    if fp8_map is None and _has_fp8(state):
        fp8_map = fp8_map_path_for(file)
        if not fp8_map.is_file():
            raise CheckpointNotFoundError(
                f"{file} holds float8_e4m3fn weights but its scale map {fp8_map.name} is not beside it; "
                "pass fp8_map=<path to the *_fp8_map.pt file>"
            )
    if fp8_map is not None:
        scales = read_fp8_map(fp8_map) if isinstance(fp8_map, (str, Path)) else fp8_map
        convert_to_fp8_linears(model, scales, bias_dtype=dtype)
    load_state_dict_into(model, state, device=device, dtype=dtype, what=what)
    return model.eval()
