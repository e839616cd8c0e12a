"""The files streamseg reads and writes, by suffix, and what FFmpeg calls the containers it writes: by a
file's suffix, and by a stream URL's scheme."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CONTAINERS", "IMAGE_SUFFIXES", "STREAM_FORMATS", "names_folder"]

# The containers a video output can be, by suffix, with the name of FFmpeg's muxer for each.
CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm"}
# What a published stream (output.stream) carries, by its URL's scheme: RTSP publishes RTP, RTMP takes FLV.
STREAM_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts",
                  "tcp": "mpegts"}
# Still images, read and written with OpenCV (one frame each).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def names_folder(path: str) -> bool:
    """Whether an output path names a folder (``-o OUTDIR/``): with a trailing slash, or an existing folder
    whose name is not a video file's (writing ``out.mp4`` over a folder of that name is an error to say)."""
    return path.endswith(("/", os.sep)) or (os.path.isdir(path) and Path(path).suffix.lower() not in CONTAINERS)
