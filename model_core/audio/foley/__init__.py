"""HunyuanVideo-Foley: video-to-audio. The MMDiT and its presets, sampling, the DAC-VAE (`dac`), the Synchformer
video branch (`synchformer`) and the frame sampling and SigLIP2 / CLAP wrappers (`encoders`)."""

from model_core.audio.foley.config import FOLEY_PRESETS, FoleyConfig, foley_preset
from model_core.audio.foley.model import TRAINING_ONLY_MARKERS, FoleyDiT, split_training_only
from model_core.audio.foley.sampling import FoleyConditioning, load_foley, sample_foley

__all__ = [
    "FOLEY_PRESETS",
    "TRAINING_ONLY_MARKERS",
    "FoleyConditioning",
    "FoleyConfig",
    "FoleyDiT",
    "foley_preset",
    "load_foley",
    "sample_foley",
    "split_training_only",
]
