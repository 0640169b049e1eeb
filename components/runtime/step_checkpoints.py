"""Sampling checkpoints in the store: ``<unit folder>/ckpt-NNNN.safetensors`` beside a unit's output.

``dit_sample`` and ``v2a_foley`` both sample through ``model_core.sampling``'s Euler loop, which hands out a
``StepCheckpoint`` every K steps. The step writes each one next to the unit's output key, a rerun of the step
(a retried KFP task, a restarted pod, the same command again) resumes from the newest readable one, and the
checkpoints are deleted once the unit's output is stored.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

from components.runtime.store import IntegrityError, ObjectNotFound

if TYPE_CHECKING:
    from components.runtime.step import StepContext
    from model_core.sampling import StepCheckpoint

__all__ = ["CHECKPOINT_NAME", "delete_checkpoints", "latest_checkpoint", "write_checkpoint"]

CHECKPOINT_NAME = re.compile(r"ckpt-(\d{4})\.safetensors$")

log = logging.getLogger("adrender.checkpoints")


def latest_checkpoint(ctx: StepContext, folder: str) -> tuple[StepCheckpoint | None, str | None]:
    """The newest readable checkpoint under ``folder`` and its key (a damaged one is logged and the one before
    used); ``(None, None)`` when there is none."""
    from model_core.sampling import StepCheckpoint

    found = sorted(
        ((int(m.group(1)), k) for k in ctx.store.list(folder) if (m := CHECKPOINT_NAME.search(k))),
        reverse=True,
    )
    for step, key in found:
        path = ctx.scratch("ckpt") / f"resume-{os.getpid()}.safetensors"
        try:
            ctx.store.get_file(key, path)
            return StepCheckpoint.load(path), key
        except (IntegrityError, ObjectNotFound, ValueError, OSError) as exc:
            log.warning(
                "step checkpoint %s (step %d) is unusable (%s); trying the one before", key, step, exc
            )
    return None, None


def write_checkpoint(ctx: StepContext, folder: str, ckpt: StepCheckpoint) -> str:
    """Store ``ckpt`` as ``<folder>/ckpt-<step>.safetensors``; returns its key."""
    path = ctx.scratch("ckpt") / f"write-{os.getpid()}.safetensors"
    ckpt.save(path)
    key = f"{folder}/ckpt-{ckpt.step_index:04d}.safetensors"
    ctx.store.put_file(key, path)
    return key


def delete_checkpoints(ctx: StepContext, folder: str) -> None:
    """Delete the checkpoints under ``folder``: the unit's output is stored, they are spent."""
    for key in ctx.store.list(folder):
        if CHECKPOINT_NAME.search(key):
            ctx.store.delete(key)
