"""Stop signals during a run: the first Ctrl-C (or SIGTERM, SIGHUP) stops gracefully, the second aborts."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["STOP_SIGNALS", "StopSignals"]

log = logging.getLogger(__name__)

# Signals that end a run as Ctrl-C does, outputs finished: SIGTERM is how systemd and `docker stop`
# end a service, SIGHUP what a closed terminal (a dropped ssh session) sends.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopSignals:
    """While entered, on the main thread, the stop signals call ``stop`` the first time and ``abort`` after;
    the handlers that were there before come back on exit. A signal the process was started ignoring stays
    ignored: under nohup a hangup must not end the run. Elsewhere than on the main thread (or not
    ``enabled``), it does nothing.

    Attributes:
        first: the signal that stopped the run, or None.
        last: the latest signal.
        presses: how many came.
    """

    def __init__(self, stop: Callable[[], None], abort: Callable[[], None], *, enabled: bool = True) -> None:
        self.stop = stop
        self.abort = abort
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.first: int | None = None
        self.last = signal.SIGINT
        self.presses = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if self.enabled:
            self._previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS
                              if signal.getsignal(signum) is not signal.SIG_IGN}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    @property
    def aborted(self) -> bool:
        return self.presses > 1

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.presses += 1
        self.last = signum
        if self.presses == 1:
            self.first = signum
            log.warning("stopping: finishing the outputs (%s again to abort)",
                        "press Ctrl-C" if signum == signal.SIGINT else f"send {signal.Signals(signum).name}")
            self.stop()
        else:
            self.abort()
