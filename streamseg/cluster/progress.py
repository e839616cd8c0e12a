"""The driver's progress over a cluster job: inputs done and failed, frames, fps in all and per worker, ETA."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from .worker import Working

__all__ = ["PoolView", "ProgressLines", "WorkerView"]


@dataclass(frozen=True)
class WorkerView:
    """One worker: its frames so far, the seconds since it started, the input it is on."""

    frames: int
    seconds: float
    working: Working

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class PoolView:
    """The pool at one moment: inputs in all, done and failed; per worker (by name) its frames so far and
    what it is on; the frames of the whole job; seconds since the pool started."""

    total: int
    done: int
    failed: int
    seconds: float
    workers: dict[str, WorkerView]
    frames: int
    unit: str = "inputs"  # or "parts", where long files are cut into chunks

    @property
    def fraction(self) -> float:
        """How much of the job is done, counting the inputs under way by their frames."""
        under_way = [w.working for w in self.workers.values() if w.working.input and w.working.total]
        partial = sum(min(w.frames / w.total, 1.0) for w in under_way)
        return (self.done + self.failed + partial) / self.total if self.total else 1.0

    @property
    def eta(self) -> float | None:
        fraction = self.fraction
        return self.seconds * (1 - fraction) / fraction if fraction > 0.01 else None


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLines:
    """A line on stderr every ``interval`` seconds (and the last one at the end)."""

    def __init__(self, interval: float = 10.0, stream: TextIO = sys.stderr) -> None:
        self.interval = interval
        self.stream = stream
        self._last = 0.0
        self._view: PoolView | None = None

    def __call__(self, view: PoolView) -> None:
        self._view = view
        if time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            self._say(self.format(view))

    @staticmethod
    def format(view: PoolView) -> str:
        seconds = max(view.seconds, 1e-9)
        each = ", ".join(f"{name} {worker.fps:.1f}" for name, worker in sorted(view.workers.items()))
        eta = f", ETA {_clock(view.eta)}" if view.eta is not None else ""
        return (f"cluster: {view.done + view.failed}/{view.total} {view.unit} ({view.failed} failed), {view.frames} frames, "
                f"{view.frames / seconds:.1f} fps [{each or 'no worker yet'}]{eta}")

    def _say(self, line: str) -> None:
        try:
            print(line, file=self.stream, flush=True)
        except OSError:
            pass
