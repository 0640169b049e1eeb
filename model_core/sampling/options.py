"""Sampling options and the per-mode defaults of the releases (HunyuanVideo T2V, HunyuanCustom, Avatar)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum


class SamplingMode(str, Enum):
    """The released checkpoints, each with its own defaults."""

    T2V = "t2v"
    IMAGE = "image"
    AUDIO = "audio"
    EDITING = "editing"
    AVATAR = "avatar"


@dataclass(frozen=True)
class SamplingOptions:
    """How one render unit is sampled.

    Real CFG runs when cfg_scale > 1 (batch [uncond, cond]); embedded guidance feeds guidance_in of the
    distilled T2V checkpoint; ip_cfg_scale > 0 adds HunyuanCustom's identity branch (batch
    [uncond, text, identity]). `avatar` runs HunyuanVideo-Avatar's sampling (`model_core.sampling.avatar`):
    its two-phase CFG schedule with face-mask scales, its DeepCache step list and the sliding window over long
    audio. `skip_uncond_from` is a speed lever: from that step on only the conditional branch is evaluated
    (see docs/FIDELITY.md for its quality risk).
    """

    num_steps: int
    shift: float
    cfg_scale: float = 1.0
    embedded_guidance: float | None = None
    # The release forms guidance*1000 in bf16 (6.0 -> 6016.0); False gives the exact product.
    embedded_guidance_release_rounding: bool = True
    ip_cfg_scale: float = 0.0
    # Applies only at 30 steps, as in the release.
    deepcache: bool = False
    # Runs the CFG branches on two halves of the ranks instead of one batch.
    cfg_parallel: bool = False
    reverse: bool = True
    seed: int = 1024
    avatar: bool = False
    # None: every step runs CFG (the release); k: steps k.. evaluate the conditional branch alone
    skip_uncond_from: int | None = None

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if self.cfg_scale < 1.0:
            raise ValueError(f"cfg_scale must be >= 1.0 (1.0 turns real CFG off), got {self.cfg_scale}")
        if self.ip_cfg_scale < 0:
            raise ValueError(
                f"ip_cfg_scale must be >= 0 (0 turns identity guidance off), got {self.ip_cfg_scale}"
            )
        if self.ip_cfg_scale > 0 and self.cfg_scale <= 1.0:
            raise ValueError("ip_cfg_scale > 0 needs real CFG: set cfg_scale > 1 (the release uses 7.5)")
        if self.avatar and self.ip_cfg_scale > 0:
            raise ValueError(
                "ip_cfg_scale is HunyuanCustom's identity guidance; Avatar has none: set it to 0"
            )
        if self.avatar and self.embedded_guidance is not None:
            raise ValueError("the Avatar checkpoint has no guidance embedding: set embedded_guidance to None")
        if self.skip_uncond_from is not None:
            if not 0 <= self.skip_uncond_from <= self.num_steps:
                raise ValueError(
                    f"skip_uncond_from must be in 0..num_steps ({self.num_steps}) or None, "
                    f"got {self.skip_uncond_from}"
                )
            if self.cfg_parallel:
                raise ValueError(
                    "skip_uncond_from leaves the unconditional half of cfg_parallel idle: turn one of them off"
                )

    @property
    def uses_cfg(self) -> bool:
        """Real CFG runs (cfg_scale > 1): the batch holds an unconditional branch."""
        return self.cfg_scale > 1.0

    @property
    def uses_identity_cfg(self) -> bool:
        """HunyuanCustom's identity guidance runs (ip_cfg_scale > 0): a third branch."""
        return self.ip_cfg_scale > 0

    @property
    def num_branches(self) -> int:
        """Model evaluations per step: 1, 2 ([uncond, cond]) or 3 ([uncond, text, identity])."""
        return 3 if self.uses_identity_cfg else (2 if self.uses_cfg else 1)

    def branches_at(self, step: int) -> int:
        """Model evaluations at `step`: `num_branches`, or 1 from `skip_uncond_from` on."""
        if self.skip_uncond_from is not None and step >= self.skip_uncond_from:
            return 1
        return self.num_branches

    def with_(self, **changes: object) -> SamplingOptions:
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            valid = ", ".join(f.name for f in fields(self))
            raise ValueError(f"unknown sampling option(s) {', '.join(unknown)}; valid options: {valid}")
        return replace(self, **changes)  # type: ignore[arg-type]

    def digest(self) -> str:
        """A short hash of every field that changes the result; a checkpoint is only resumed with the same one."""
        values = asdict(self)
        values.pop("cfg_parallel")  # CFG-parallel gives the same latents as batched CFG
        for name in ("avatar", "skip_uncond_from"):  # later fields: left out at their default, so the
            if values[name] == _FIELD_DEFAULTS[name]:  # checkpoints of earlier runs still resume
                values.pop(name)
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


_FIELD_DEFAULTS = {f.name: f.default for f in fields(SamplingOptions)}

MODE_DEFAULTS: dict[SamplingMode, SamplingOptions] = {
    # HunyuanVideo README: 50 steps, embedded guidance 6.0, shift 7, no real CFG.
    SamplingMode.T2V: SamplingOptions(num_steps=50, shift=7.0, cfg_scale=1.0, embedded_guidance=6.0),
    # HunyuanCustom scripts: 30 steps, cfg 7.5, shift 13, DeepCache on, seed 1024.
    SamplingMode.IMAGE: SamplingOptions(num_steps=30, shift=13.0, cfg_scale=7.5, deepcache=True),
    SamplingMode.AUDIO: SamplingOptions(num_steps=30, shift=13.0, cfg_scale=7.5, deepcache=True),
    # Editing: 50 steps, shift 5; DeepCache is requested but the release applies it only at 30 steps.
    SamplingMode.EDITING: SamplingOptions(num_steps=50, shift=5.0, cfg_scale=7.5, deepcache=True),
    # HunyuanVideo-Avatar scripts: 50 steps, cfg 7.5 (the first phase's start), shift 5, its own DeepCache list.
    SamplingMode.AVATAR: SamplingOptions(num_steps=50, shift=5.0, cfg_scale=7.5, deepcache=True, avatar=True),
}


def default_options(mode: SamplingMode | str, **overrides: object) -> SamplingOptions:
    """The release defaults of `mode` ('t2v', 'image', 'audio', 'editing', 'avatar'), with optional overrides."""
    try:
        key = SamplingMode(mode)
    except ValueError:
        valid = ", ".join(m.value for m in SamplingMode)
        raise ValueError(f"unknown sampling mode {mode!r}; expected one of: {valid}") from None
    return MODE_DEFAULTS[key].with_(**overrides) if overrides else MODE_DEFAULTS[key]
