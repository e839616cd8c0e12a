"""Per-frame masks as JSON lines, one record per frame, COCO RLE per segment."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import IO, Any

from ..exceptions import SinkError
from ..types import FrameResult
from .base import Sink

__all__ = ["JsonlSink", "LinesSink", "result_record"]


def result_record(result: FrameResult, *, wall_clock: bool = False) -> dict[str, Any]:
    """The JSON record of one frame.

    ``time`` is seconds from the start of the source, or Unix time for live sources (``wall_clock``).
    Where tracking ran, each segment has ``track_id``: a thing's identity across the source's frames, or
    null (stuff, and a thing whose track is not yet confirmed).
    """
    seg = result.segmentation
    segments = [
        {
            "id": i,
            "label_id": label_id,
            "label": label,
            "score": None if score is None or math.isnan(score) else score,
            "area": area,
            "bbox": list(box),
            "rle": counts,
        }
        for i, label_id, label, score, area, box, counts in zip(
            seg.ids, seg.label_ids, seg.labels, seg.scores, seg.areas, seg.boxes, seg.rles)
    ]
    if seg.track_ids is not None:
        for segment, track_id in zip(segments, seg.track_ids):
            segment["track_id"] = track_id
    frame = result.frame
    return {
        "frame": frame.index,
        "pts": frame.pts,
        "time": round(time.time() if wall_clock else frame.time, 6),
        "source": frame.item or frame.source,  # an image's path, in a job over a folder of them
        "width": frame.width,
        "height": frame.height,
        "task": seg.task,
        "segments": segments,
    }


class LinesSink(Sink):
    """A text file written a frame's lines at a time, flushed per frame so an interrupted run keeps what it
    wrote; a run in which no frame came leaves no empty file behind. Subclasses say what a frame's lines
    are (:meth:`lines`)."""

    wants_masks = True

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.records = 0  # frames written
        self._file: IO[str] | None = None

    def __enter__(self) -> LinesSink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lines(self, result: FrameResult) -> list[str]:
        raise NotImplementedError

    def open(self) -> None:
        try:
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for writing: {exc.strerror or exc}") from exc

    def write(self, result: FrameResult) -> None:
        if self._file is None:
            self.open()
        assert self._file is not None
        try:
            if lines := self.lines(result):
                self._file.write("\n".join(lines) + "\n")
                self._file.flush()
            self.records += 1
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError as exc:  # the last lines could not be written (a full disk)
            raise SinkError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc
        finally:
            self._file = None
            if self.records == 0 and os.path.isfile(self.path):  # no frame came: leave no empty file behind
                with contextlib.suppress(OSError):
                    os.unlink(self.path)


class JsonlSink(LinesSink):
    """Appends one JSON line per frame (see :func:`result_record`) to a file."""

    stage = "export"  # name of its time in FrameResult.stats

    def __init__(self, path: str | Path, *, wall_clock: bool = False) -> None:
        super().__init__(path)
        self.wall_clock = wall_clock

    def lines(self, result: FrameResult) -> list[str]:
        return [json.dumps(result_record(result, wall_clock=self.wall_clock))]
