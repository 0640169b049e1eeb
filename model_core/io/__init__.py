"""Minimal media decoding for the model side: audio samples, video frames and still images through ffmpeg.

`model_core` reads local files only and does not depend on the pipeline's media service; this package is the
small decoder it needs to turn a file into arrays.
"""

from model_core.io.ffmpeg_decode import (
    MediaDecodeError,
    VideoInfo,
    decode_audio,
    probe_video,
    read_image,
    read_video_frames,
)

__all__ = [
    "MediaDecodeError",
    "VideoInfo",
    "decode_audio",
    "probe_video",
    "read_image",
    "read_video_frames",
]
