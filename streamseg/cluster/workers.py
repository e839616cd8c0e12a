"""The driver's handle on its Ray workers: started, watched while they load their model, replaced when one
dies, stopped. The pools (:mod:`.files`, :mod:`.cameras`) decide what the workers do."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..config import Config
from ..exceptions import ModelError, StreamsegError
from .connect import worker_class

__all__ = ["Worker", "Workers"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Worker:
    """One worker as the driver sees it; a pool keeps what it gave the worker in a subclass's fields."""

    actor: Any
    name: str = "starting"
    loaded: Any = None  # the ObjectRef of its load() call until it answers
    ready_at: float = 0.0  # when it answered

    @property
    def ready(self) -> bool:
        return self.loaded is None


class Workers:
    """The job's workers (:class:`~streamseg.cluster.worker.SegmentWorker` actors), each recorded as a
    ``record`` (a :class:`Worker`)."""

    def __init__(self, ray: ModuleType, config: Config, record: type[Worker] = Worker) -> None:
        self._ray = ray
        self._config = config
        self._record = record
        self.fit, self._class = worker_class(ray, config)
        self.all: list[Any] = []

    def start(self, count: int) -> None:
        """Ask Ray for ``count`` workers (each starts loading its model at once)."""
        self.all = [self._new() for _ in range(count)]

    def ready(self) -> list[Any]:
        return [w for w in self.all if w.ready]

    def check(self, w: Worker, wait: float = 0.0) -> None:
        """Take a worker's answer to its load() call where it has come (within ``wait`` seconds): it is
        ready, or it died loading and another is asked for in its place.

        Raises:
            ModelError: the model cannot be loaded (no worker will load it).
        """
        done, _ = self._ray.wait([w.loaded], timeout=wait)
        if not done:
            return
        try:
            name, problem = self._ray.get(w.loaded)
        except self._ray.exceptions.RayActorError:  # died while loading (its node lost, out of memory)
            log.warning("a worker died while starting; starting another")
            self.replace(w)
            return
        if problem:
            raise ModelError(problem)
        w.name, w.loaded, w.ready_at = name, None, time.monotonic()
        log.info("worker %s ready", name)

    def wait_ready(self) -> None:
        """Wait until every worker is ready, or ``cluster.start_timeout_s``; refuse to go on with none.

        Raises:
            ModelError: the model cannot be loaded.
            StreamsegError: no worker started in time.
        """
        deadline = time.monotonic() + self._config.cluster.start_timeout_s
        while any(not w.ready for w in self.all) and time.monotonic() < deadline:
            for w in [w for w in self.all if not w.ready]:
                self.check(w, wait=0.2)
        if not self.ready():
            raise StreamsegError(self.no_room())

    def replace(self, w: Worker) -> None:
        """Stop a worker (dead already, or to be) and ask Ray for another in its place."""
        self._ray.kill(w.actor, no_restart=True)
        self.all[self.all.index(w)] = self._new()

    def no_room(self) -> str:
        return (f"no worker started in {self._config.cluster.start_timeout_s:.0f} s: the cluster has no room "
                f"for one ({self._config.cluster.worker_cpus} CPUs each)")

    def close(self) -> None:
        """Stop every worker, those still waiting for room too."""
        for w in self.all:
            self._ray.kill(w.actor, no_restart=True)
        self.all = []

    def _new(self) -> Any:
        actor = self._class.remote(self._config, self._config.cluster.worker_cpus)
        return self._record(actor, loaded=actor.load.remote())
