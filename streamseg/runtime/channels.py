"""Queues between stages and the two messages they carry besides frames and results.

Stages talk only through bounded queues. Besides frames and results, a queue carries two messages:
:class:`EndOfStream` (a source or stage has nothing more) and :class:`Failure` (a stage raised; the
error travels downstream to the caller, who re-raises it). Every blocking call waits with a timeout
and checks the run's stop event, so no thread can hang on a queue nobody reads.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

from ..types import Frame

__all__ = ["EndOfStream", "Failure", "put", "get", "offer_newest", "POLL_S"]

POLL_S = 0.05  # how often a blocked stage looks at the stop event



@dataclass(frozen=True)
class EndOfStream:
    """Nothing more will come from ``source`` (a source name, or "*" for a whole stage).

    The sink stage's end marker carries the final per-source statistics to the caller.
    """

    source: str = "*"
    stats: tuple = ()


@dataclass(frozen=True)
class Failure:
    """An exception raised in a stage, carried to the caller's thread."""

    error: BaseException
    stage: str
    trace: str = field(default="", repr=False)

    @classmethod
    def capture(cls, error: BaseException, stage: str) -> Failure:
        return cls(error, stage, traceback.format_exc())


def put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Block until ``item`` is queued; False (item dropped) if ``stop`` is set first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def get(q: queue.Queue, stop: threading.Event) -> Any:
    """Block until an item arrives; None if ``stop`` is set and the queue is empty."""
    while True:
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            if stop.is_set():
                return None


def offer_newest(q: queue.Queue, frame: Frame) -> None:
    """Queue ``frame``, evicting the oldest queued frames if full (live sources: freshness over completeness).

    An evicted frame's drop count, plus one for itself, moves to the frame that replaces it, so the
    consumer still learns of every drop.
    """
    carried = 0
    while True:
        try:
            q.put_nowait(dataclasses.replace(frame, dropped=frame.dropped + carried) if carried else frame)
            return
        except queue.Full:
            try:
                evicted = q.get_nowait()
            except queue.Empty:
                continue
            carried += 1 + getattr(evicted, "dropped", 0)
