"""``open_source``: the one place where a source spec becomes a :class:`~.base.Source`."""

from __future__ import annotations

from ..config import Config
from ..exceptions import ConfigError
from .base import Kind, Source, classify
from .file import FileSource
from .images import ImageSource
from .live import LiveSource, _is_video_on_demand
from .pipe import PipeSource

__all__ = ["open_source"]


def open_source(spec: str, name: str, config: Config) -> Source:
    """The source that ``spec`` names (a file, a pipe, a webcam, a stream, images), not yet opened.

    An HLS playlist is asked whether it has an end (up to 10 s): a finished recording is read as a file,
    every frame kept; a live one as a stream.
    """
    kind = classify(spec)
    if kind is Kind.PLAYLIST:
        kind = Kind.FILE if _is_video_on_demand(spec) else Kind.STREAM
    if kind is Kind.PIPE:
        return PipeSource(spec, name)
    if kind is Kind.IMAGES:
        return ImageSource(spec, name)
    ranged = config.start is not None or config.end is not None
    if ranged and kind is not Kind.FILE:
        raise ConfigError(f"start, end: a time range is for video files, not {spec!r}")
    if kind.live:
        return LiveSource(spec, name, config.live)
    return FileSource(spec, name, start=config.start, end=config.end)
