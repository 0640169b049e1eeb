"""The services a step needs: campaign spec, object store, model registry, telemetry, media, tensors.

Modules (each documents its configuration and its error hierarchy at the top):

- :mod:`~components.runtime.spec`: the campaign file, validated (``load_campaign``).
- :mod:`~components.runtime.settings`: the environment variables of the store and telemetry.
- :mod:`~components.runtime.store`: the artifact store, a local folder or S3 (``open_store``).
- :mod:`~components.runtime.manifest`: the manifests steps hand each other and the key layout (``content_key``).
- :mod:`~components.runtime.step`: the step contract (``StepContext``, the shared command line).
- :mod:`~components.runtime.models`: pinned registry versions loaded into model_core objects.
- :mod:`~components.runtime.assets`: referenced media, fetched and checked before GPU time.
- :mod:`~components.runtime.territory`: ISO markets and the licences' excluded territories.
- :mod:`~components.runtime.registry`: MLflow model registry and the verified checkpoint cache (``Registry``).
- :mod:`~components.runtime.telemetry`: Prometheus metrics of a step (``StepTelemetry``).
- :mod:`~components.runtime.media`: ffmpeg encode, mux, probe, loudness, black and frozen frames.
- :mod:`~components.runtime.tensors`: tensor artifacts as safetensors with a JSON header.

The names below are re-exported for convenience and load their module on first use, so that importing
the package (or only the spec) does not import torch, numpy or ffmpeg-python.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.runtime.manifest import PlanManifest, ShardManifest, StepManifest, content_key
    from components.runtime.media import MediaError, loudness, mux_audio, probe, write_video
    from components.runtime.registry import ModelRef, Registry, RegistryError, ResolvedModel
    from components.runtime.settings import RuntimeSettings, SettingsError
    from components.runtime.spec import Campaign, CampaignError, Job, load_campaign
    from components.runtime.step import StepContext
    from components.runtime.store import ObjectStore, StoreError, open_store
    from components.runtime.telemetry import StepTelemetry
    from components.runtime.tensors import TensorFormatError, TensorMeta, get_tensors, put_tensors

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Campaign": "spec",
    "CampaignError": "spec",
    "Job": "spec",
    "MediaError": "media",
    "ModelRef": "registry",
    "ObjectStore": "store",
    "Registry": "registry",
    "RegistryError": "registry",
    "ResolvedModel": "registry",
    "RuntimeSettings": "settings",
    "SettingsError": "settings",
    "StepTelemetry": "telemetry",
    "StoreError": "store",
    "TensorFormatError": "tensors",
    "TensorMeta": "tensors",
    "content_key": "manifest",
    "PlanManifest": "manifest",
    "ShardManifest": "manifest",
    "StepManifest": "manifest",
    "StepContext": "step",
    "get_tensors": "tensors",
    "load_campaign": "spec",
    "loudness": "media",
    "mux_audio": "media",
    "open_store": "store",
    "probe": "media",
    "put_tensors": "tensors",
    "write_video": "media",
}

__all__ = [
    "Campaign",
    "CampaignError",
    "Job",
    "MediaError",
    "ModelRef",
    "ObjectStore",
    "PlanManifest",
    "Registry",
    "RegistryError",
    "ResolvedModel",
    "RuntimeSettings",
    "SettingsError",
    "ShardManifest",
    "StepContext",
    "StepManifest",
    "StepTelemetry",
    "StoreError",
    "TensorFormatError",
    "TensorMeta",
    "content_key",
    "get_tensors",
    "load_campaign",
    "loudness",
    "mux_audio",
    "open_store",
    "probe",
    "put_tensors",
    "write_video",
]


def __getattr__(name: str) -> Any:
    """Load the module that defines ``name`` on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
