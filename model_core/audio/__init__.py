"""Audio conditioning: Whisper features for HunyuanCustom's audio branch."""

from model_core.audio.whisper import (
    AudioConditioning,
    AudioInputError,
    PreparedAudio,
    WhisperAudioEncoder,
    frame_windows,
    load_audio,
    max_video_frames,
    prepare_audio,
)

__all__ = [
    "AudioConditioning",
    "AudioInputError",
    "PreparedAudio",
    "WhisperAudioEncoder",
    "frame_windows",
    "load_audio",
    "max_video_frames",
    "prepare_audio",
]
