"""The producer loop (one per source) and the batcher that forms batches from every source's queue.

Files block on their bounded queue and lose no frame; live sources keep only their newest frames (see
:mod:`.channels`). The batcher shares each batch fairly among the sources that have frames.
"""

from __future__ import annotations

import collections
import logging
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterator

from ..types import Frame
from .channels import POLL_S, EndOfStream, Failure, offer_newest, put

__all__ = ["produce", "Batcher"]

log = logging.getLogger(__name__)


def produce(frames: Callable[[], Iterator[Frame]], out: queue.Queue, stop: threading.Event,
            wakeup: threading.Event, name: str, live: bool = False) -> None:
    """Producer thread body: decode frames into ``out`` until the source ends or ``stop`` is set.

    A file blocks on the bounded queue, so it never loses a frame; a live source keeps only the
    newest frames (see :func:`offer_newest`), so latency stays bounded. Always ends with
    :class:`EndOfStream`, after a :class:`Failure` if the source raised.
    """
    try:
        for frame in frames():
            if live:
                offer_newest(out, frame)
            elif not put(out, frame, stop):
                break
            wakeup.set()
    except BaseException as exc:  # noqa: BLE001 - carried to the caller
        put(out, Failure.capture(exc, f"source {name}"), stop)
    finally:
        # The end marker must arrive even when stopping, so the batcher can tell "done" from "slow".
        while True:
            try:
                out.put(EndOfStream(name), timeout=POLL_S)
                break
            except queue.Full:
                if not stop.is_set() and not live:
                    continue  # the consumer is busy: wait, a file never loses a frame
                try:
                    out.get_nowait()  # stopping: make room by dropping an undelivered frame
                except queue.Empty:
                    pass
        wakeup.set()


class Batcher:
    """Forms batches from per-source queues.

    Takes frames round-robin, at most one per source per round, so a fast source cannot starve a slow
    one and a stalled source never holds a batch back. A live source gives at most one frame (its
    newest) per batch, and a batch that holds a live frame takes at most one from each source: a file
    beside a camera, always ready, would otherwise fill the rest of every batch, and the camera, which
    loses what waits, would get a share of the model as small as one frame in ``batch_size``. A live
    source that fails for good drops out while others remain. A batch is handed over when it has
    ``batch_size`` frames, or when it holds a live frame and a frame from every source, or
    ``max_wait_s`` after its first frame arrived, or when every source has ended (a short last batch).
    A source's frames keep their order.
    """

    def __init__(self, queues: dict[str, queue.Queue], batch_size: int, max_wait_s: float,
                 wakeup: threading.Event, live: frozenset[str] = frozenset()) -> None:
        self.queues = queues
        self.live = live
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.wakeup = wakeup
        self.active = list(queues)
        self._after: str | None = None  # the last source to give a frame: the next round starts after it
        self._last: dict[str, float] = {}  # live source -> when its last frame taken was captured
        self._intervals: dict[str, collections.deque[float]] = {}  # live source -> its latest frame intervals

    def next_batch(self, stop: threading.Event) -> list[Frame] | None:
        """The next batch, or None when every source has ended or ``stop`` is set.

        Raises:
            BaseException: what a source raised, re-raised here with its original traceback.
        """
        batch: list[Frame] = []
        deadline: float | None = None
        while len(batch) < self.batch_size and self.active and not stop.is_set():
            took = self._round(batch)
            if batch and deadline is None:
                deadline = time.monotonic() + self.max_wait_s
            if self._complete(batch, deadline):
                break
            if took:
                continue
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.wakeup.wait(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic())))
            self.wakeup.clear()
        if stop.is_set() or not batch:
            return None
        return batch

    def _holds_live(self, batch: list[Frame]) -> bool:
        return any(f.source in self.live for f in batch)

    def _complete(self, batch: list[Frame], deadline: float | None) -> bool:
        """True when no source can add to the batch: it holds a live frame and each source gave one, or
        has none due before ``deadline``."""
        if deadline is None or not self._holds_live(batch):  # deadline: set once the batch has a frame
            return False
        present = {f.source for f in batch}
        return all(name in present or not self._due(name, deadline) for name in self.active)

    def _due(self, name: str, deadline: float) -> bool:
        """Whether a frame of ``name`` may come before ``deadline``: for a live source, whether its next
        frame is due by then at its pace so far, and not late by more than ``max_wait_s`` (stalled, or
        slower than it was), so that a slow camera beside a fast one does not hold each batch for
        ``max_wait_s``."""
        if name not in self._intervals:  # a file, or a camera whose pace is not known yet: as before
            return True
        interval = statistics.median(self._intervals[name])
        due = self._last[name] + interval
        return time.monotonic() - self.max_wait_s <= due <= deadline

    def _paced(self, frame: Frame) -> None:
        """Learn a live source's frame interval from the frames it delivers (and those it dropped): the
        median of the latest few, so that frames coming together (on connecting, after a network hiccup)
        do not make a slow camera look fast for long."""
        name = frame.source
        if name in self._last:
            seen = max(0.0, frame.captured - self._last[name]) / (1 + frame.dropped)
            self._intervals.setdefault(name, collections.deque(maxlen=5)).append(seen)
        self._last[name] = frame.captured

    def _round(self, batch: list[Frame]) -> bool:
        took = False
        for name in self._in_turn():
            if len(batch) >= self.batch_size:
                break
            if (name in self.live or self._holds_live(batch)) and any(f.source == name for f in batch):
                continue
            try:
                item = self.queues[name].get_nowait()
            except queue.Empty:
                continue
            if isinstance(item, EndOfStream):
                self.active.remove(name)
                continue
            if isinstance(item, Failure):
                self.active.remove(name)
                if name not in self.live or not self.active:
                    raise item.error  # a file's error, or the last camera gone: the run fails
                log.error("%s: %s; the other sources go on", name, item.error)
                continue
            if name in self.live:
                self._paced(item)
            batch.append(item)
            self._after = name
            took = True
        return took

    def _in_turn(self) -> list[str]:
        """The active sources in round-robin order, from the one after the last to give a frame: a source
        whose queue is empty when its turn comes does not move the next one's turn (a stalled camera among
        four, with batches of two, gave the one after it two thirds of the others' share)."""
        if self._after not in self.active:
            return list(self.active)
        i = self.active.index(self._after) + 1
        return self.active[i:] + self.active[:i]
