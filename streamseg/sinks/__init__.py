"""Where results go: each sink has ``write(result)`` and ``close()``."""

from .jsonl import JsonlSink
from .video import VideoSink

__all__ = ["JsonlSink", "VideoSink"]
