"""Live outputs split into files by time, so a run of days never leaves one huge or broken file and,
with a limit, never fills the disk."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..types import FrameResult
from .base import Sink

__all__ = ["SegmentedSink"]

log = logging.getLogger(__name__)


class SegmentedSink(Sink):
    """Writes a live source into a new file every ``segment_time`` seconds of wall-clock time.

    Files are named ``<stem>-<YYYYmmdd-HHMMSS><suffix>`` by their start; each is finished (it plays, or
    its last line is whole) as soon as the next one starts. With ``keep``, only the newest ``keep`` files
    this sink wrote stay: older ones are deleted as new ones start (never any other file).

    Args:
        path: the name the segments' names are made from.
        segment_time: seconds per file.
        open_file: makes the sink for one file, given its path and the first result it will hold.
        keep: how many files to keep, or None for all.
        stage, wants_annotated, takes_yuv, wants_masks: what the sinks it is made of declare (see Sink).
    """

    def __init__(self, path: str | Path, *, segment_time: float, open_file: Callable[[Path, FrameResult], Any],
                 keep: int | None = None, stage: str, wants_annotated: bool = False,
                 takes_yuv: bool = False, wants_masks: bool = False) -> None:
        self.path = Path(path)
        self.segment_time = segment_time
        self.open_file = open_file
        self.keep = keep
        self.stage = stage
        self.wants_annotated = wants_annotated
        self.takes_yuv = takes_yuv
        self.wants_masks = wants_masks
        self.files: list[str] = []  # the files kept, oldest first
        self._current: Any = None
        self._started = 0.0
        self._opened = 0

    def write(self, result: FrameResult) -> None:
        if self._current is not None and result.time - self._started >= self.segment_time:
            self._current.close()
            self._current = None
        if self._current is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.time))
            name = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
            if str(name) in self.files:  # two segments in one second
                name = name.with_name(f"{name.stem}-{self._opened}{name.suffix}")
            self._current = self.open_file(name, result)
            self._started = result.time
            self._opened += 1
            self.files.append(str(name))
            self._prune()
        self._current.write(result)

    def _prune(self) -> None:
        while self.keep is not None and len(self.files) > self.keep:
            old = self.files.pop(0)
            try:
                os.remove(old)
            except FileNotFoundError:  # someone moved it away already
                pass
            except OSError as exc:
                log.warning("%s: cannot delete this old segment (%s)", old, exc.strerror or exc)

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
