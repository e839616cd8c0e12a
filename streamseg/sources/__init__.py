"""Where frames come from: each source is a generator of :class:`streamseg.Frame`."""

from .file import VideoInfo, probe, read_frames

__all__ = ["VideoInfo", "probe", "read_frames"]
