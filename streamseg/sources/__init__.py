"""Where frames come from: one :class:`Source` per input, made by :func:`open_source`."""

from .base import Kind, Source, SourceContext, classify
from .file import VideoInfo, probe, read_frames
from .open import open_source

__all__ = ["Kind", "Source", "SourceContext", "VideoInfo", "classify", "open_source", "probe", "read_frames"]
