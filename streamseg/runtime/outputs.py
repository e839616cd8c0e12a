"""The output fan-out: each result is written by all of its outputs side by side, each output in a thread
of its own, and handed on to the caller, in order, once every one of them has written it.

The token protocol, one per output:

- in through ``inbox``: results in order, then one :class:`~.channels.EndOfStream`;
- out through ``answers``: exactly one :class:`Answer` per result, in the same order (``written`` with the
  seconds it took, ``skipped`` once the run is failing or aborting, or ``failed`` with the error), then,
  after the end, perhaps a ``failed`` answer from closing, and always one ``closed`` answer last.

A failed output makes every output skip what is left (``drop``) and the run fail with that error.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..sinks.base import Sink
from ..types import FrameResult
from .channels import EndOfStream, Failure, get, put

__all__ = ["Answer", "Outputs"]


@dataclass(frozen=True)
class Answer:
    """An output's answer for one result, or for its end (``closed``)."""

    kind: str  # "written", "skipped", "failed" or "closed"
    seconds: float = 0.0
    failure: Failure | None = None


_SKIPPED = Answer("skipped")
_CLOSED = Answer("closed")


@dataclass(eq=False)
class _Output:
    sink: Sink
    inbox: queue.Queue
    answers: queue.Queue = field(default_factory=queue.Queue)


@dataclass
class _Pending:
    """A result handed to its outputs, and those that have not yet answered for it."""

    result: FrameResult
    waiting: list[_Output]


class Outputs:
    """Owns one thread and two queues per sink; up to ``depth`` results are being written at once.

    Args:
        by_source: each source's own sinks.
        shared: sinks that take every source's results.
        depth: results in flight (each output's inbox holds as many).
        abort: set to end at once: outputs skip what is left and close.
        start_thread: starts a thread for a target and its arguments, named for it, and returns it (the
            run's thread policy).
    """

    def __init__(self, by_source: dict[str, list[Sink]], shared: list[Sink], *, depth: int,
                 abort: threading.Event, start_thread: Callable[..., threading.Thread]) -> None:
        self.depth = depth
        self._abort = abort
        self._drop = threading.Event()  # an output failed: the others stop writing and close
        self._start_thread = start_thread
        self._by_source = {name: [self._output(sink) for sink in group] for name, group in by_source.items()}
        self._shared = [self._output(sink) for sink in shared]
        self._pending: collections.deque[_Pending] = collections.deque()
        self._threads: list[threading.Thread] = []

    def _output(self, sink: Sink) -> _Output:
        return _Output(sink, queue.Queue(maxsize=self.depth))

    @property
    def _all(self) -> list[_Output]:
        return [*self._shared, *(out for group in self._by_source.values() for out in group)]

    def start(self) -> None:
        """Start every output's thread."""
        for owner, group in [*self._by_source.items(), ("all", self._shared)]:
            for out in group:
                self._threads.append(self._start_thread(f"sink:{owner}:{out.sink.stage}", self._write_all, out))

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.depth

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def send(self, result: FrameResult) -> None:
        """Hand ``result`` to its source's outputs and the shared ones."""
        targets = [*self._by_source.get(result.source, ()), *self._shared]
        for out in targets:
            put(out.inbox, result, self._abort)
        self._pending.append(_Pending(result, targets))

    def written(self, *, wait: bool) -> Iterator[FrameResult | Failure]:
        """The oldest results that every output has written, in order, each with its outputs' seconds added
        to its stats; waiting for the first of them with ``wait``. A Failure (an output's error) ends it."""
        while self._pending:
            entry = self._pending[0]
            while entry.waiting:  # each output answers in order, so its next answer is this result's
                out = entry.waiting[0]
                try:
                    answer = get(out.answers, self._abort) if wait else out.answers.get_nowait()
                except queue.Empty:
                    return
                if answer is None:  # aborted
                    return
                if answer.failure is not None:
                    yield answer.failure
                    return
                if answer.kind == "written":
                    stage = out.sink.stage
                    entry.result.stats[stage] = entry.result.stats.get(stage, 0.0) + answer.seconds
                entry.waiting.pop(0)
            self._pending.popleft()
            yield entry.result
            wait = False

    def finish(self, failure: Failure | None) -> Failure | None:
        """End every output, in the order they were made, and wait for each to close: a file's last frames
        are in before the caller hears the end. With ``failure``, the outputs skip what is pending. Returns
        the run's failure: ``failure``, else the first an output had."""
        if failure is not None:
            self._drop.set()
        outputs = self._all
        for out in outputs:
            put(out.inbox, EndOfStream(), self._abort)
        for out in outputs:
            while (answer := get(out.answers, self._abort)) is not None and answer is not _CLOSED:
                if answer.failure is not None and failure is None:
                    failure = answer.failure
                    self._drop.set()
        return failure

    def join(self, deadline: float) -> list[threading.Thread]:
        """Join the outputs' threads until the monotonic ``deadline``; those still alive."""
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        return [thread for thread in self._threads if thread.is_alive()]

    def _write_all(self, out: _Output) -> None:
        """One output's thread: writes its results in order, answering each, and closes the output at the
        end, answering ``closed`` last, failed or not (``finish`` waits for it)."""
        failed = False
        try:
            while True:
                item = get(out.inbox, self._abort)
                if item is None or isinstance(item, EndOfStream):
                    break
                answer: Any = _SKIPPED
                if not (failed or self._drop.is_set() or self._abort.is_set()):
                    clock = time.perf_counter()
                    try:
                        out.sink.write(item)
                        answer = Answer("written", seconds=time.perf_counter() - clock)
                    except BaseException as exc:  # noqa: BLE001 - carried to the caller
                        failed = True
                        answer = Answer("failed", failure=Failure.capture(exc, "sinks"))
                out.answers.put(answer)
        finally:
            try:
                out.sink.close()
            except BaseException as exc:  # noqa: BLE001 - carried to the caller
                out.answers.put(Answer("failed", failure=Failure.capture(exc, "sinks")))
            out.answers.put(_CLOSED)
