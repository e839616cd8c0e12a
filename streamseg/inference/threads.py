"""How many CPU threads the forward pass gets when the model runs on the CPU."""

from __future__ import annotations

import logging
import statistics
import time

import torch

__all__ = ["ThreadTuner", "set_torch_threads"]

log = logging.getLogger(__name__)


def set_torch_threads(count: int) -> None:
    """Give the calling thread ``count`` torch CPU threads, whatever other threads set.

    torch keeps one process-wide count, which each thread copies into its own OpenMP setting at its
    first parallel op; reading the count first makes that copy happen now, not after another thread
    changed it.
    """
    torch.get_num_threads()
    torch.set_num_threads(count)


class ThreadTuner:
    """Chooses between every core and one core for the forward pass, by measuring the pipeline.

    With every core the forward pass is fastest alone, but its workers wait for each other whenever
    post-processing, decoding or encoding take one of those cores; with one core it never waits but
    computes slower. Which wins depends on the model, the video and the outputs (2 cores: a model
    whose forward pass dominates runs 45% faster on both, the small sample model 15% faster on one).
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
