"""How the forward pass shares the CPU's cores with the pipeline's other threads when the model runs there.

The forward pass splits each op across every core with OpenMP, whose threads wait for each other at the
end of each op. Two things make them wait longer than they need to, and both are handled here:

- **A second OpenMP team.** libgomp shortens every team's spin-wait to almost nothing once the process
  holds more of its threads than there are cores, and a thread that ran one parallel op keeps its
  team (asleep) until it ends. The forward pass's workers then sleep and wake at each of their
  thousands of waits a batch, which costs it measurably. So the pipeline's other threads, and the
  caller's thread while a pipeline runs, use one torch thread (:func:`set_torch_threads`); on every
  core, post-processing's ops would also take the cores the forward pass is using.
- **Other threads taking a core.** Post-processing, decoding and encoding take a core from the team
  now and then, and the whole team waits for the thread that lost it: each millisecond of their work
  cost about a millisecond of the forward pass. Over files, where throughput is what counts,
  :func:`yield_to_forward` lowers those threads' priority: they run when the forward pass waits for
  them (the queue between the two is one batch deep), not in the middle of it. Their stage times then
  include their waits for a core. ``benchmarks/RESULTS.md`` has what a CPU run reaches of the ceiling.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import threading
import time

import torch

__all__ = ["ThreadTuner", "set_torch_threads", "yield_to_forward"]

log = logging.getLogger(__name__)

# The niceness of the threads that yield to the forward pass: the lowest priority, so they take a core
# from the forward pass's team only when it leaves one (the scheduler still gives them a small share).
YIELDING_NICE = 19


def set_torch_threads(count: int) -> None:
    """Give the calling thread ``count`` torch CPU threads, whatever other threads set.

    torch keeps one process-wide count, which each thread copies into its own OpenMP setting at its
    first parallel op; reading the count first makes that copy happen now, not after another thread
    changed it.
    """
    torch.get_num_threads()
    torch.set_num_threads(count)


def yield_to_forward() -> bool:
    """Lower the calling thread's priority to the lowest (nice 19), for the rest of its life, so that it
    runs while the forward pass waits, not in the middle of it. Linux only (where niceness is a
    thread's own, and threads it starts, FFmpeg's among them, inherit it); returns whether it did."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), YIELDING_NICE)
    except OSError as exc:  # a sandbox may forbid it: the run goes on at the normal priority
        log.debug("could not lower a thread's priority: %s", exc)
        return False
    return True


class ThreadTuner:
    """Chooses between every core and one core for the forward pass, by measuring the pipeline.

    With every core the forward pass is fastest alone, but its workers wait for each other whenever
    post-processing, decoding or encoding take one of those cores; with one core it never waits but
    computes slower. Which wins depends on the model, the video and the outputs: a model whose forward
    pass dominates does better on every core, a small one beside heavy outputs on one.
    So the infer loop calls :meth:`tick` once per batch; the tuner tries each setting for a few
    batches, now and every ``every`` batches, and keeps the one with the shorter time per batch. Under
    back-pressure that time is the whole pipeline's, not only the forward pass's.

    Args:
        most: the thread count of "every core".
        trial: batches timed per setting (one more is run first, to let the queues settle).
        every: batches between two trials.
        warmup: batches ignored at the start (allocations, first-call costs).
    """

    def __init__(self, most: int, *, trial: int = 4, every: int = 200, warmup: int = 2) -> None:
        self.most = most
        self.threads = most
        self._trial, self._every = trial, every
        # What each coming batch runs with, and whether its time counts (the first batch after a
        # switch does not: the queues are still settling).
        self._plan = [(most, False)] * warmup + self._trial_plan()
        self._times: dict[int, list[float]] = {most: [], 1: []}
        self._last: float | None = None

    def tick(self, now: float | None = None) -> int | None:
        """Call before the first batch and after each batch; returns the thread count to switch to
        for the next batch, or None to keep the current one."""
        now = time.perf_counter() if now is None else now
        if self._last is not None:
            threads, counts = self._plan.pop(0)
            if counts:
                self._times[threads].append(now - self._last)
                if threads == 1 and self._clearly_slower(now - self._last):
                    self._plan = [p for p in self._plan if p[0] != 1]  # no need to time it further
            if not self._plan:
                self._plan = [(self._choose(), False)] * self._every + self._trial_plan()
        self._last = now
        wanted = self._plan[0][0]
        if wanted == self.threads:
            return None
        self.threads = wanted
        return wanted

    def _trial_plan(self) -> list[tuple[int, bool]]:
        plan = []
        for threads in (self.most, 1):
            plan += [(threads, False)] + [(threads, True)] * self._trial
        return plan

    def _clearly_slower(self, one_core_s: float) -> bool:
        every_core = self._times[self.most]
        return bool(every_core) and one_core_s > 1.25 * statistics.median(every_core)

    def _choose(self) -> int:
        every_core = statistics.median(self._times[self.most])
        one_core = statistics.median(self._times[1])
        self._times = {self.most: [], 1: []}
        best = 1 if one_core < 0.95 * every_core else self.most  # a tie goes to the lower latency
        log.debug("forward pass on %d CPU threads: %.0f ms a batch on %d, %.0f ms on 1", best,
                  1000 * every_core, self.most, 1000 * one_core)
        return best
