"""Where results go: one :class:`Sink` per output, made by :func:`~.build.build_sinks` from the config."""

from .base import Sink
from .jsonl import JsonlSink
from .video import VideoSink

__all__ = ["JsonlSink", "Sink", "VideoSink"]
