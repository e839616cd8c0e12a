"""What FFmpeg calls the containers streamseg writes: by a file's suffix, and by a stream URL's scheme."""

from __future__ import annotations

__all__ = ["CONTAINERS", "STREAM_FORMATS"]

# The containers a video output can be, by suffix, with the name of FFmpeg's muxer for each.
CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm"}
# What a published stream (output.stream) carries, by its URL's scheme: RTSP publishes RTP, RTMP takes FLV.
STREAM_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts",
                  "tcp": "mpegts"}
