"""Per-source run statistics: fps in and out, drops, capture-to-result latency, state.

Kept by the sink thread from what reaches it through the queues (results, their drop counts, and
source status events), so no other thread touches them. Readers get immutable snapshots.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..sources.live import TROUBLE, SourceStatus
from ..types import FrameResult
from ..urls import redact_text

__all__ = ["SourceStats", "StatsBoard"]

WINDOW_S = 5.0  # rates are measured over the last few seconds


@dataclass
class SourceStats:
    """Counters of one source."""

    name: str
    live: bool
    state: str = "connecting"
    detail: str = ""
    trouble: str = ""  # why a live source last gave no frames, until it is live again
    frames_out: int = 0
    dropped: int = 0
    started: float = field(default_factory=time.monotonic)
    _latency: deque = field(default_factory=lambda: deque(maxlen=2000), repr=False)
    _arrivals: deque = field(default_factory=lambda: deque(maxlen=4000), repr=False)  # (t, frames in)

    def add(self, result: FrameResult, now: float) -> None:
        self.frames_out += 1
        self.dropped += result.frame.dropped
        self._latency.append(now - result.frame.captured)
        self._arrivals.append((now, 1 + result.frame.dropped))

    def snapshot(self, now: float) -> dict:
        recent = [(t, n) for t, n in self._arrivals if now - t <= WINDOW_S]
        span = min(WINDOW_S, max(now - self.started, 1e-6))
        lat = np.array(self._latency) * 1000 if self._latency else np.zeros(1)
        return {
            "source": self.name,
            "live": self.live,
            "state": self.state if self.live else ("ended" if self.state == "ended" else "running"),
            "detail": redact_text(self.detail),  # a library's message may name the URL
            "trouble": redact_text(self.trouble),
            "frames": self.frames_out,
            "dropped": self.dropped,
            "fps_in": sum(n for _, n in recent) / span,
            "fps_out": len(recent) / span,
            "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)),
        }


class StatsBoard:
    """All sources' stats; updated by one thread."""

    def __init__(self, sources: dict[str, bool]) -> None:
        self.sources = {name: SourceStats(name, live) for name, live in sources.items()}
        self.any_live = any(sources.values())

    def add(self, result: FrameResult) -> None:
        stats = self.sources.get(result.source)
        if stats is not None:
            stats.add(result, time.monotonic())

    def status(self, event: SourceStatus) -> None:
        stats = self.sources.get(event.source)
        if stats is not None:
            stats.state, stats.detail = event.state, event.detail
            if event.state in TROUBLE:
                stats.trouble = event.reason
            elif event.state == "live":
                stats.trouble = ""

    def finish(self) -> None:
        """The run is over: every source that did not fail has ended."""
        for stats in self.sources.values():
            if stats.state != "failed":
                stats.state = "ended"

    def snapshot(self) -> list[dict]:
        now = time.monotonic()
        return [s.snapshot(now) for s in self.sources.values()]

    @staticmethod
    def format(snapshot: list[dict]) -> str:
        lines = []
        for s in snapshot:
            lines.append(
                f"{s['source']}: {s['state']}{' (' + s['trouble'] + ')' if s.get('trouble') else ''}, "
                f"{s['frames']} frames, in {s['fps_in']:.1f} fps, "
                f"out {s['fps_out']:.1f} fps, dropped {s['dropped']}, "
                f"latency p50 {s['latency_p50_ms']:.0f} ms p99 {s['latency_p99_ms']:.0f} ms"
            )
        return "\n".join(lines)
