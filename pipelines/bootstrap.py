"""`adrender models bootstrap-tiny`: register random tiny versions of every model a campaign needs.

Each model of `model_core.tiny_models.TINY_MODELS` (the four DiT modes, the VAE, LLaVA, CLIP, Whisper, and the
QC models CLIP ViT-B, DINOv2, ArcFace and the face detector) is written as a folder in its released format and
registered under the name the campaign spec (or the QC step) uses by default, with the alias pointed at it. Tiny
random weights render noise: they exercise the whole pipeline on a laptop, nothing more.

The same seed writes the same bytes, so bootstrapping again registers nothing: a model whose alias already
points at a version with the same preset and the same file digests is left as it is. An alias that points at
anything but tiny weights (a released checkpoint) is never moved unless `force` is given.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from components.runtime.registry import (
    AliasNotFound,
    ModelNotFound,
    ModelRef,
    Registry,
    RegistryError,
    ResolvedModel,
)

__all__ = ["TINY_SEED", "TINY_SOURCE", "bootstrap_tiny"]

TINY_SOURCE = "adrender tiny random weights"
TINY_SEED = 0

log = logging.getLogger(__name__)


def _digests(folder: Path) -> dict[str, str]:
    """{relative posix path: sha256} of every file under `folder`, as the registry records them."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digests[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _current(registry: Registry, name: str, alias: str) -> ResolvedModel | None:
    try:
        return registry.resolve(ModelRef(name, alias=alias))
    except (ModelNotFound, AliasNotFound):
        return None


def bootstrap_tiny(
    registry: Registry,
    *,
    alias: str = "production",
    work_dir: str | Path | None = None,
    force: bool = False,
    progress: Callable[[ResolvedModel, bool], None] | None = None,
) -> list[ResolvedModel]:
    """Write and register every tiny model; return the version `name@alias` points at for each, in
    `TINY_MODELS` order.

    Args:
        alias: the alias to point at the tiny versions (a campaign's references default to `@production`).
        work_dir: where the folders are written (kept); None: a temporary folder, removed afterwards.
        force: move `alias` even where it points at a version that is not tiny (a released checkpoint).
        progress: called with each model's version and whether it was registered now (False: already there).

    Raises:
        RegistryError: the registry cannot be reached, or `alias` points at a non-tiny version of some model
            and `force` is False (nothing is registered then).
    """
    from model_core.tiny_models import TINY_MODELS, write_tiny_model

    ModelRef("hunyuan-vae", alias=alias)  # a bad alias fails here, before any work
    current = {name: _current(registry, name, alias) for name in TINY_MODELS}
    released = {name: r for name, r in current.items() if r is not None and not r.preset.startswith("tiny-")}
    if released and not force:
        listing = ", ".join(f"{name}@{alias} -> {r} ({r.preset})" for name, r in released.items())
        raise RegistryError(
            f"not moving alias {alias!r} off released checkpoints: {listing}. Bootstrap under another alias "
            f"(--alias tiny, then name the models as name@tiny in the campaign), or pass --force to point "
            f"{alias!r} at tiny random weights anyway."
        )

    with tempfile.TemporaryDirectory(prefix="adrender-tiny-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        results = []
        for name, preset in TINY_MODELS.items():
            folder = write_tiny_model(preset, root / name, seed=TINY_SEED)
            found = current[name]
            if found is not None and found.preset == preset and dict(found.files) == _digests(folder):
                log.info("%s@%s is already %s (%s); not registering it again", name, alias, found, preset)
                results.append(found)
                if progress is not None:
                    progress(found, False)
                continue
            resolved = registry.register(name, folder, preset, source=TINY_SOURCE, aliases=[alias])
            results.append(resolved)
            if progress is not None:
                progress(resolved, True)
    return results
