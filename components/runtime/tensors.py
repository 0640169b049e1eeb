"""Tensor artifacts: safetensors files carrying a JSON header of what they hold.

A tensor artifact is a plain safetensors file whose metadata entry ``"adrender"`` is JSON::

    {"format": 1, "step": "vae_encode",
     "tensors": {"latents": {"shape": [1, 16, 33, 90, 160], "dtype": "bfloat16", "meaning": "..."}},
     "model_versions": {"hunyuan-vae": "3"}, "extra": {...}}

The header is checked against the tensors on load (names, shapes, dtypes), so a file that was cut short
or edited by hand is refused rather than fed to a model. Nothing is ever unpickled: pickle and
``torch.save`` files are recognised by their first bytes and refused with a message saying how to convert.

Errors: :class:`TensorFormatError` (a ``ValueError``) names the source and what is wrong.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from components.runtime.store import ObjectInfo, ObjectStore

__all__ = [
    "TensorFormatError",
    "TensorMeta",
    "TensorSpec",
    "dump_tensors",
    "get_tensors",
    "load_tensors",
    "put_tensors",
    "save_tensors",
]

HEADER_KEY = "adrender"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit


class TensorFormatError(ValueError):
    """A tensor artifact cannot be read or written; the message names the source and the problem."""


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and meaning of one stored tensor."""

    shape: tuple[int, ...]
    dtype: str  # torch dtype name without "torch.", e.g. "bfloat16"
    meaning: str = ""


@dataclass(frozen=True)
class TensorMeta:
    """What a tensor artifact holds and where it came from.

    ``meaning`` maps tensor names to a description (``"video latents [B, C, T, H, W]"``); ``tensors`` is
    filled by :func:`dump_tensors` / :func:`load_tensors` from the tensors themselves and need not be given.
    ``extra`` is free-form JSON (seeds, step index, sizes...).
    """

    step: str
    meaning: Mapping[str, str] = field(default_factory=dict)
    model_versions: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    tensors: Mapping[str, TensorSpec] = field(default_factory=dict)

    def to_json(self) -> str:
        """The header text stored under the safetensors metadata key ``"adrender"``."""
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "step": self.step,
                "tensors": {
                    name: {"shape": list(spec.shape), "dtype": spec.dtype, "meaning": spec.meaning}
                    for name, spec in self.tensors.items()
                },
                "model_versions": dict(self.model_versions),
                "extra": dict(self.extra),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> TensorMeta:
        """Parse a header written by :meth:`to_json`; :class:`TensorFormatError` names ``source`` if malformed."""
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT_VERSION:
                raise TensorFormatError(
                    f"{source}: tensor header format {raw.get('format')!r}; this adrender reads format "
                    f"{FORMAT_VERSION}"
                )
            specs = {
                name: TensorSpec(
                    tuple(int(d) for d in s["shape"]), str(s["dtype"]), str(s.get("meaning", ""))
                )
                for name, s in raw["tensors"].items()
            }
            return cls(
                step=str(raw["step"]),
                meaning={n: s.meaning for n, s in specs.items() if s.meaning},
                model_versions={str(k): str(v) for k, v in raw.get("model_versions", {}).items()},
                extra=dict(raw.get("extra", {})),
                tensors=specs,
            )
        except TensorFormatError:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TensorFormatError(f"{source}: the adrender tensor header is malformed ({exc})") from exc


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _prepare(
    tensors: Mapping[str, torch.Tensor], meta: TensorMeta
) -> tuple[dict[str, torch.Tensor], TensorMeta]:
    if not tensors:
        raise TensorFormatError("no tensors given; a tensor artifact holds at least one tensor")
    unknown = set(meta.meaning) - set(tensors)
    if unknown:
        raise TensorFormatError(
            f"meaning given for {sorted(unknown)}, which are not among the tensors {sorted(tensors)}"
        )
    out: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TensorFormatError(f"tensor {name!r} is a {type(tensor).__name__}, expected torch.Tensor")
        t = tensor.detach().to("cpu").contiguous()
        # safetensors refuses tensors sharing memory (views of one buffer): give each its own
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen_storage or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen_storage.add(t.untyped_storage().data_ptr())
        out[name] = t
    specs = {
        name: TensorSpec(tuple(t.shape), _dtype_name(t.dtype), meta.meaning.get(name, ""))
        for name, t in out.items()
    }
    return out, replace(meta, tensors=specs)


def dump_tensors(tensors: Mapping[str, torch.Tensor], meta: TensorMeta) -> bytes:
    """Serialise ``tensors`` (moved to CPU) with ``meta`` as safetensors bytes."""
    prepared, full = _prepare(tensors, meta)
    return bytes(_st_save(prepared, metadata={HEADER_KEY: full.to_json()}))


def save_tensors(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], meta: TensorMeta
) -> TensorMeta:
    """Write a tensor artifact to ``path`` atomically; return the meta with ``tensors`` filled."""
    prepared, full = _prepare(tensors, meta)
    data = _st_save(prepared, metadata={HEADER_KEY: full.to_json()})
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return full


def _looks_like_safetensors(data: bytes) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object."""
    if len(data) < 9:
        return False
    (size,) = struct.unpack("<Q", data[:8])
    return size <= _MAX_HEADER and 8 + size <= len(data) and data[8:9] == b"{"


def _read_header(data: bytes, source: str) -> dict[str, Any]:
    # a pickle starts with 0x80 and a torch.save zip with PK, but so may a safetensors header length
    # (e.g. 128 + 256k bytes): only a file that is not safetensors-shaped is called a pickle
    if (data[:1] == b"\x80" or data[:4] == b"PK\x03\x04") and not _looks_like_safetensors(data):
        raise TensorFormatError(
            f"{source} is a pickle / torch.save file; adrender never unpickles. Convert it once, where you "
            "trust it, with safetensors.torch.save_file(torch.load(path, weights_only=True), 'out.safetensors')"
        )
    if len(data) < 8:
        raise TensorFormatError(f"{source} is {len(data)} bytes; too short for a safetensors file")
    (size,) = struct.unpack("<Q", data[:8])
    if size > _MAX_HEADER or 8 + size > len(data) or data[8:9] != b"{":
        raise TensorFormatError(
            f"{source} is not a safetensors file (or is truncated): header length {size}, file {len(data)} bytes"
        )
    try:
        header = json.loads(data[8 : 8 + size])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TensorFormatError(f"{source}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise TensorFormatError(f"{source}: safetensors header is not a JSON object")
    return header


def load_tensors(
    source: str | os.PathLike[str] | bytes, *, name: str | None = None
) -> tuple[dict[str, torch.Tensor], TensorMeta]:
    """Read a tensor artifact from a path or bytes; return (tensors on CPU, meta).

    Raises :class:`TensorFormatError` for pickle files, truncated or corrupted files, a missing adrender
    header, or tensors that do not match their header. ``name`` labels the source in messages.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "tensor bytes"
    else:
        label = name or str(source)
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise TensorFormatError(f"{label}: no such file") from None
    header = _read_header(data, label)
    metadata = header.get("__metadata__") or {}
    if HEADER_KEY not in metadata:
        raise TensorFormatError(
            f"{label} is a safetensors file without an adrender header; write it with save_tensors()"
        )
    meta = TensorMeta.from_json(metadata[HEADER_KEY], label)
    try:
        tensors = _st_load(data)
    except SafetensorError as exc:
        raise TensorFormatError(f"{label} is corrupted: {exc}") from exc
    if set(tensors) != set(meta.tensors):
        raise TensorFormatError(
            f"{label}: header lists tensors {sorted(meta.tensors)} but the file holds {sorted(tensors)}"
        )
    for tname, tensor in tensors.items():
        spec = meta.tensors[tname]
        if tuple(tensor.shape) != spec.shape or _dtype_name(tensor.dtype) != spec.dtype:
            raise TensorFormatError(
                f"{label}: tensor {tname!r} is {_dtype_name(tensor.dtype)} {tuple(tensor.shape)} but the header "
                f"says {spec.dtype} {spec.shape}"
            )
    return tensors, meta


def put_tensors(
    store: ObjectStore, key: str, tensors: Mapping[str, torch.Tensor], meta: TensorMeta
) -> ObjectInfo:
    """Store a tensor artifact under ``key`` (atomic, with its sha256, like every store write)."""
    return store.put_bytes(key, dump_tensors(tensors, meta), metadata={"format": "safetensors"})


def get_tensors(store: ObjectStore, key: str) -> tuple[dict[str, torch.Tensor], TensorMeta]:
    """Read and verify the tensor artifact under ``key``; see :func:`load_tensors`."""
    return load_tensors(store.get_bytes(key), name=store.uri(key))
