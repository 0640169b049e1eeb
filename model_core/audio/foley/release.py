"""A HunyuanVideo-Foley release folder: the MMDiT, DAC-VAE and Synchformer files side by side.

`release_problems(folder, release)` checks the three files' keys and shapes without reading the weights (the
registry refuses a folder that does not fit its preset); `load_release` loads the three models strictly. The
layout is `model_core.configs.FOLEY_RELEASES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from model_core.audio.foley.config import FOLEY_PRESETS
from model_core.audio.foley.dac import DAC_PRESETS, DACVAE, dac_config_from_kwargs, load_dac
from model_core.audio.foley.model import FoleyDiT, split_training_only
from model_core.audio.foley.sampling import load_foley
from model_core.audio.foley.synchformer import (
    SYNCHFORMER_PRESETS,
    UNUSED_SYNCHFORMER_PREFIXES,
    Synchformer,
    load_synchformer,
)
from model_core.configs import FOLEY_DAC_FILE, FOLEY_SYNCHFORMER_FILE, FoleyRelease

__all__ = ["FoleyModels", "load_release", "release_problems"]


@dataclass
class FoleyModels:
    """The three networks of a release, loaded."""

    dit: FoleyDiT
    dac: DACVAE
    synchformer: Synchformer
    dropped: list[str]  # training-only and unused keys left out by name


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _read(path: Path) -> Mapping[str, object]:
    """A torch file's top-level dict, memory-mapped (shapes come without reading the tensors)."""
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(obj, Mapping):
        raise TypeError(f"{path} holds a {type(obj).__name__}, not a dict")
    return obj


def _tensor_shapes(state: object, path: Path) -> dict[str, tuple[int, ...]]:
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return {str(k): tuple(v.shape) for k, v in state.items()}


def release_problems(folder: str | Path, release: FoleyRelease) -> list[str]:
    """What keeps `folder` from loading as `release` (missing files, key and shape differences); empty if none."""
    from model_core.checkpoints import diff_keys

    folder = Path(folder)
    missing = [name for name in release.files if not (folder / name).is_file()]
    if missing:
        return [f"missing file(s) {', '.join(missing)} (a Foley release holds {', '.join(release.files)})"]
    problems: list[str] = []
    with torch.device("meta"):
        dit = FoleyDiT(FOLEY_PRESETS[release.dit])
        sync = Synchformer(SYNCHFORMER_PRESETS[release.synchformer])
    checks: list[tuple[str, dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]] = []
    try:
        raw = _read(folder / release.dit_file)
        for wrapper in ("module", "state_dict", "model"):
            if isinstance(raw.get(wrapper), Mapping):
                raw = raw[wrapper]  # type: ignore[assignment]
                break
        kept, _ = split_training_only(raw)  # type: ignore[arg-type]
        checks.append((release.dit_file, _tensor_shapes(kept, folder / release.dit_file), _shapes(dit)))
        dac_raw = _read(folder / FOLEY_DAC_FILE)
        metadata = dac_raw.get("metadata")
        kwargs = metadata.get("kwargs") if isinstance(metadata, Mapping) else None
        config = dac_config_from_kwargs(kwargs) if isinstance(kwargs, Mapping) else DAC_PRESETS[release.dac]
        with torch.device("meta"):
            dac = DACVAE(config)
        dac_state = dac_raw.get("state_dict", dac_raw)
        checks.append((FOLEY_DAC_FILE, _tensor_shapes(dac_state, folder / FOLEY_DAC_FILE), _shapes(dac)))
        sync_state = _tensor_shapes(_read(folder / FOLEY_SYNCHFORMER_FILE), folder / FOLEY_SYNCHFORMER_FILE)
        video = {k: v for k, v in sync_state.items() if not k.startswith(UNUSED_SYNCHFORMER_PREFIXES)}
        checks.append((FOLEY_SYNCHFORMER_FILE, video, _shapes(sync)))
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        return [f"unreadable checkpoint: {exc}"]
    for name, found, expected in checks:
        diff = diff_keys(found, expected)
        if not diff.ok:
            problems.append(f"{name}:\n{diff.describe()}")
    return problems


def load_release(
    folder: str | Path,
    release: FoleyRelease,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> FoleyModels:
    """The MMDiT (in `dtype`), the DAC-VAE and the Synchformer (float32: the step casts them where it runs
    them) of a release folder, each loaded strictly.

    The DAC-VAE's encoder half stays on the CPU (inference only decodes; `offload.decoder_only_on`): it is 296M of
    the release's 372M DAC parameters, 1.2 GB in float32, that would otherwise sit on the device unused.
    """
    from model_core.audio.foley.offload import decoder_only_on

    folder = Path(folder)
    dit, dropped = load_foley(
        folder / release.dit_file, FOLEY_PRESETS[release.dit], device=device, dtype=dtype
    )
    dac = load_dac(folder / FOLEY_DAC_FILE, device="cpu")
    decoder_only_on(dac, device)
    sync, unused = load_synchformer(
        folder / FOLEY_SYNCHFORMER_FILE, SYNCHFORMER_PRESETS[release.synchformer], device=device
    )
    return FoleyModels(dit=dit, dac=dac, synchformer=sync, dropped=[*dropped, *unused])
