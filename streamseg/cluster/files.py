"""The driver's side of a job over many videos on Ray workers: the work list, a worker per slot, retries
when a worker dies, the manifest, progress."""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..config import Config
from ..exceptions import ModelError
from ..jobs import Outcome, check_folders, finished, manifest_path, record
from .connect import connected, for_workers, worker_class
from .progress import PoolView, WorkerView
from .worker import Working

__all__ = ["DEATHS_TO_FAIL", "FilePool", "run_on_cluster"]

log = logging.getLogger(__name__)

DEATHS_TO_FAIL = 2  # an input whose worker dies this many times is marked failed (it may be what kills them)
POLL_S = 1.0  # how often the driver looks at its workers (and asks them for progress)


@dataclass
class _Worker:
    actor: Any
    name: str = "starting"
    loaded: Any = None  # the ObjectRef of its load() call until it answers
    running: Any = None  # the ObjectRef of its run() call
    video: str | None = None
    frames: int = 0  # frames of the inputs it has finished
    working: Working = field(default_factory=Working)
    ready_at: float = 0.0


class FilePool:
    """Ray workers (:class:`~streamseg.cluster.worker.SegmentWorker` actors), each given the next input as it
    finishes one.

    - A worker that dies (its process killed, its node lost) costs only the input it was running: that input
      goes back to the front of the list for another worker, and Ray is asked for a new worker in its place,
      which starts wherever there is room. An input whose worker dies :data:`DEATHS_TO_FAIL` times is failed.
    - An input's own failure (it cannot be decoded, an output cannot be written) is its outcome at once: a
      second try would fail the same way.
    - A model that cannot be loaded fails the job (:class:`ModelError`), as it does without a cluster.
    - When no worker is running and none has started for ``cluster.start_timeout_s`` (the cluster has no
      room for one), the inputs left are failed rather than waited for forever.
    """

    def __init__(self, ray: ModuleType, config: Config, on_outcome: Callable[[Outcome, str, int], None],
                 on_progress: Callable[[PoolView], None]) -> None:
        self._ray = ray
        self._config = config
        self._on_outcome = on_outcome
        self._on_progress = on_progress
        self._count, self._class = worker_class(ray, config)
        self._workers: list[_Worker] = []
        self._started = self._polled = time.monotonic()

    def run(self, inputs: Sequence[str]) -> list[Outcome]:
        """Run every input; their outcomes, in the order they ended."""
        todo, outcomes = deque(inputs), []
        deaths: Counter[str] = Counter()
        self._workers = [self._spawn() for _ in range(min(self._count, len(todo)))]
        alive_at = time.monotonic()

        def finish(outcome: Outcome, worker: str) -> None:
            outcomes.append(outcome)
            self._on_outcome(outcome, worker, deaths[outcome.input] + 1)

        while todo or any(w.running for w in self._workers):
            for w in self._workers:
                if w.loaded is None and w.running is None and todo:
                    w.video = todo.popleft()
                    w.running = w.actor.run.remote(w.video)
            pending = [r for w in self._workers for r in (w.loaded, w.running) if r is not None]
            # Whichever answers first is dealt with at once: an idle worker gets its next input without waiting.
            if not pending:  # every worker gone and waiting for room
                time.sleep(POLL_S)
            ready, _ = self._ray.wait(pending, num_returns=1, timeout=POLL_S) if pending else ([], [])
            for ref in ready:
                w = next(w for w in self._workers if ref in (w.loaded, w.running))
                if ref is w.loaded:
                    self._loaded(w)
                    continue
                video, w.running, w.video = w.video, None, None
                try:
                    outcome = self._ray.get(ref)
                except self._ray.exceptions.RayActorError:
                    deaths[video] += 1
                    log.warning("%s: its worker %s died (%d of %d)", video, w.name, deaths[video], DEATHS_TO_FAIL)
                    if deaths[video] >= DEATHS_TO_FAIL:
                        finish(Outcome(video, error=f"its worker died {deaths[video]} times"), w.name)
                    else:
                        todo.appendleft(video)
                    self._replace(w)
                    continue
                except self._ray.exceptions.RayTaskError as exc:  # not a StreamsegError: a bug, said in one line
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    outcome = Outcome(video, error=f"{type(cause).__name__}: {str(cause).splitlines()[0]}")
                w.frames += outcome.frames
                finish(outcome, w.name)
            if any(w.loaded is None for w in self._workers):
                alive_at = time.monotonic()
            elif time.monotonic() - alive_at > self._config.cluster.start_timeout_s:
                why = (f"no worker started in {self._config.cluster.start_timeout_s:.0f} s: the cluster has no room "
                       f"for one ({self._config.cluster.worker_cpus} CPUs each)")
                while todo:
                    finish(Outcome(todo.popleft(), error=why), "none")
            if time.monotonic() - self._polled >= POLL_S:
                self._polled = time.monotonic()
                self._poll_progress(len(inputs), outcomes)
        self._poll_progress(len(inputs), outcomes)
        return outcomes

    def close(self) -> None:
        """Stop every worker (those still waiting for room too)."""
        for w in self._workers:
            self._ray.kill(w.actor, no_restart=True)
        self._workers = []

    def _spawn(self) -> _Worker:
        actor = self._class.remote(self._config, self._config.cluster.worker_cpus)
        return _Worker(actor, loaded=actor.load.remote())

    def _loaded(self, w: _Worker) -> None:
        try:
            name, problem = self._ray.get(w.loaded)
        except self._ray.exceptions.RayActorError:  # died while loading (its node lost, out of memory)
            log.warning("a worker died while starting; starting another")
            self._replace(w)
            return
        if problem:
            raise ModelError(problem)
        w.name, w.loaded, w.ready_at = name, None, time.monotonic()
        log.info("worker %s ready", name)

    def _replace(self, w: _Worker) -> None:
        self._ray.kill(w.actor, no_restart=True)
        self._workers[self._workers.index(w)] = self._spawn()

    def _poll_progress(self, total: int, outcomes: list[Outcome]) -> None:
        busy = [w for w in self._workers if w.running is not None]
        asked = {w.actor.progress.remote(): w for w in busy}
        answered, _ = self._ray.wait(list(asked), num_returns=len(asked), timeout=0.5) if asked else ([], [])
        for ref in answered:
            try:
                asked[ref].working = self._ray.get(ref)
            except self._ray.exceptions.RayError:
                pass  # died meanwhile: its run() says so
        for w in self._workers:
            if w.running is None:
                w.working = Working()
        self._on_progress(PoolView(
            total=total, done=sum(o.error is None for o in outcomes), failed=sum(o.error is not None for o in outcomes),
            seconds=time.monotonic() - self._started,
            workers={w.name: WorkerView(w.frames + w.working.frames, time.monotonic() - w.ready_at, w.working)
                     for w in self._workers if w.loaded is None},
            frames=sum(o.frames for o in outcomes) + sum(w.working.frames for w in self._workers)))


def run_on_cluster(config: Config, inputs: Sequence[str], progress: Callable[[PoolView], None] = lambda view: None,
                   on_outcome: Callable[[Outcome, str], None] = lambda outcome, worker: None) -> list[Outcome]:
    """Run a job over many videos on the Ray cluster at ``config.cluster.address``: the inputs finished
    before are skipped without starting Ray; the others run on workers, each outcome recorded in the
    manifest by this driver as it ends (with the worker and the attempt). Paths are made absolute: the
    workers' working folder is not this one.

    Raises:
        ConfigError: Ray is not installed, no cluster answers, or an output is a single file.
        ModelError: the model cannot be loaded on a worker.
    """
    import os

    check_folders(config)
    config = for_workers(config)
    inputs = [os.path.abspath(video) for video in inputs]
    skipped = [Outcome(video, skipped=True) for video in inputs if finished(config, video)]
    todo = [video for video in inputs if not finished(config, video)]
    if not todo:
        return skipped

    def recorded(outcome: Outcome, worker: str, attempt: int) -> None:
        record(manifest_path(config), outcome, worker, attempt=attempt)
        on_outcome(outcome, worker)

    with connected(config.cluster.address or "local") as ray:
        pool = FilePool(ray, config, recorded, progress)
        try:
            return skipped + pool.run(todo)
        finally:
            pool.close()
