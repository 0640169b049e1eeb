"""HunyuanVideo-Foley: video-to-audio. The MMDiT, its presets, and (in their modules) the DAC-VAE, Synchformer and
the SigLIP2 / CLAP feature wrappers."""

from model_core.audio.foley.config import FOLEY_PRESETS, FoleyConfig, foley_preset
from model_core.audio.foley.model import TRAINING_ONLY_MARKERS, FoleyDiT, split_training_only

__all__ = [
    "FOLEY_PRESETS",
    "TRAINING_ONLY_MARKERS",
    "FoleyConfig",
    "FoleyDiT",
    "foley_preset",
    "split_training_only",
]
