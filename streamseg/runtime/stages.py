"""The stage loops after the batcher, each the body of one thread:

``infer`` (forward passes) → ``post`` (post-processing, drawing, download) → ``deliver`` (the outputs, then
the caller). Each passes :class:`~.channels.EndOfStream` on at its end, or a :class:`~.channels.Failure`
when it raised, and stops the run on a failure.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..inference.runner import ModelRunner
from ..inference.threads import ThreadTuner, set_torch_threads
from ..sinks.base import Sink
from .batcher import Batcher
from .channels import POLL_S, EndOfStream, Failure, get, put
from .outputs import Outputs
from .stats import StatsBoard

__all__ = ["RunEvents", "deliver_loop", "infer_loop", "post_loop"]

stats_log = logging.getLogger("streamseg.stats")

STATS_PUBLISH_S = 1.0  # how often sinks that want the statistics get them


@dataclass(frozen=True)
class RunEvents:
    """The events every stage watches. ``post_done`` lets the forward pass's thread outlive
    post-processing (see :func:`infer_loop`)."""

    stop: threading.Event  # a graceful end: sources stop reading, what is done is finished
    abort: threading.Event  # an end now: undelivered results are dropped
    post_done: threading.Event


def infer_loop(runner: ModelRunner, batcher: Batcher, out: queue.Queue, events: RunEvents,
               torch_threads: int | None) -> None:
    """Forward passes, one batch ahead of post-processing. On a CPU run this thread takes
    ``torch_threads`` cores, and a tuner may change that number as it measures."""
    tuner = None
    if torch_threads is not None:
        set_torch_threads(torch_threads)
        tuner = ThreadTuner(torch_threads) if torch_threads > 1 else None
    try:
        if tuner:
            tuner.tick()
        while (batch := batcher.next_batch(events.stop)) is not None:
            if not put(out, runner.forward(batch), events.abort):
                return
            if tuner and (threads := tuner.tick()) is not None:
                set_torch_threads(threads)
        put(out, EndOfStream(), events.abort)
    except BaseException as exc:  # noqa: BLE001 - carried to the caller
        put(out, Failure.capture(exc, "inference"), events.abort)
        events.stop.set()
    finally:
        # Keep this thread, and the OpenMP workers it leads, until post-processing has ended: a CPU run once
        # hung on its last batch as this thread ended, post-processing spinning in einsum beside a spinning
        # OpenMP worker (suspected, not shown: the workers winding down as the other's parallel region starts).
        while not (events.post_done.wait(POLL_S) or events.abort.is_set()):
            pass


def post_loop(runner: ModelRunner, inbox: queue.Queue, out: queue.Queue, events: RunEvents) -> None:
    """Post-processing, drawing and download of each forwarded batch, in order."""
    try:
        while True:
            item = get(inbox, events.abort)
            if item is None:
                return
            if isinstance(item, (EndOfStream, Failure)):
                put(out, item, events.abort)
                return
            for result in runner.finish(item):
                if not put(out, result, events.abort):
                    return
    except BaseException as exc:  # noqa: BLE001 - carried to the caller
        put(out, Failure.capture(exc, "post-processing"), events.abort)
        events.stop.set()
    finally:
        events.post_done.set()


@dataclass(frozen=True)
class Reporting:
    """Where the delivering thread reports the run's statistics.

    Attributes:
        board: the per-source statistics, kept by the delivering thread alone.
        statuses: live sources' changes of state, queued by their producer threads.
        watchers: sinks that want the statistics (the live page).
        interval_s: how often they are logged, where a source is live (0: never).
    """

    board: StatsBoard
    statuses: queue.Queue
    watchers: list[Sink]
    interval_s: float

    def drain(self) -> None:
        while True:
            try:
                self.board.status(self.statuses.get_nowait())
            except queue.Empty:
                return


def deliver_loop(inbox: queue.Queue, outputs: Outputs, results: queue.Queue, reporting: Reporting,
                 events: RunEvents) -> None:
    """Hands each result to its outputs, whose threads write it side by side, and on to the caller
    (``results``), in order, once all of them have; then ends the outputs and tells the caller the end:
    an EndOfStream with the final statistics, or the run's Failure."""
    board = reporting.board
    final: EndOfStream | Failure | None = None
    clock = _Every(reporting)
    try:
        while not events.abort.is_set():
            reporting.drain()
            clock.tick()
            item = None
            if not outputs.full:
                try:  # while results are being written, look for the next without waiting
                    item = inbox.get(timeout=0 if outputs.busy else POLL_S)
                except queue.Empty:
                    pass
            if isinstance(item, (EndOfStream, Failure)):
                final = item
                break
            if item is not None:
                outputs.send(item)
            # Pass on what all outputs have written: waiting for the oldest only when nothing new came in,
            # so that a result never waits behind later ones.
            if isinstance(final := _pass_on(outputs, board, results, events, wait=item is None), Failure):
                break
        while outputs.busy and not isinstance(final, Failure) and not events.abort.is_set():
            final = _pass_on(outputs, board, results, events, wait=True) or final
    except BaseException as exc:  # noqa: BLE001 - carried to the caller
        final = Failure.capture(exc, "sinks")
    if isinstance(final, Failure):
        events.stop.set()
    failure = outputs.finish(final if isinstance(final, Failure) else None)
    reporting.drain()
    if failure is None:
        board.finish()
    _tell(results, failure or EndOfStream(stats=tuple(board.snapshot())), events.abort)


def _pass_on(outputs: Outputs, board: StatsBoard, results: queue.Queue, events: RunEvents,
             *, wait: bool) -> Failure | None:
    for item in outputs.written(wait=wait):
        if isinstance(item, Failure):
            return item
        board.add(item)
        put(results, item, events.abort)
    return None


def _tell(results: queue.Queue, last: EndOfStream | Failure, abort: threading.Event) -> None:
    """Queue the run's last word for the caller, however full its queue is, unless the run is aborted."""
    while True:
        try:
            results.put(last, timeout=POLL_S)
            return
        except queue.Full:
            if abort.is_set():
                return


class _Every:
    """Logs the statistics every ``interval_s`` where a source is live, and gives them to the sinks that
    watch them every ``STATS_PUBLISH_S``."""

    def __init__(self, reporting: Reporting, now: Callable[[], float] = time.monotonic) -> None:
        self.reporting = reporting
        self.now = now
        self.next_log = now() + reporting.interval_s
        self.next_publish = 0.0

    def tick(self) -> None:
        now, r = self.now(), self.reporting
        if r.watchers and now >= self.next_publish:
            snapshot = r.board.snapshot()
            for sink in r.watchers:
                sink.publish_stats(snapshot)
            self.next_publish = now + STATS_PUBLISH_S
        if r.board.any_live and r.interval_s > 0 and now >= self.next_log:
            stats_log.info("%s", StatsBoard.format(r.board.snapshot()))
            self.next_log = now + r.interval_s
