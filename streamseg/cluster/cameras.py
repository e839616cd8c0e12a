"""The driver's side of cameras on a Ray cluster: the cameras spread over the workers, a dead worker's
cameras moved to the survivors, every camera's statistics printed with its worker."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..config import Config
from ..exceptions import ConfigError, StreamsegError
from ..sinks.web import WebPreviewSink
from ..sources.base import source_names
from ..urls import redact
from .connect import connected, for_workers
from .workers import Worker, Workers

__all__ = ["CameraPool", "check_cameras", "watch_on_cluster"]

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often the driver looks at its workers (and asks for the page's pictures)
PAGE_FPS = 5.0  # the driver's page: each camera's newest picture, this many times a second
STOP_WAIT_S = 30.0  # how long the workers get to finish their recordings once told to stop


@dataclass(eq=False)
class _Worker(Worker):
    watches: dict[Any, tuple[str, ...]] = field(default_factory=dict)  # watch() call -> its cameras


def check_cameras(config: Config) -> None:
    """Refuse the outputs that a camera moving to another worker would overwrite or cut in two.

    Raises:
        ConfigError: naming the key.
    """
    out = config.output
    if (out.video or out.masks) and not out.segment_time:
        raise ConfigError("output.segment_time: cameras on a cluster record in segments (--segment-time SECONDS), "
                          "so that a camera moved to another worker goes on in a new file")
    for key in ("tracks", "labels", "coco"):
        if getattr(out, key):
            raise ConfigError(f"output.{key}: not written for cameras on a cluster (each worker would write its own)")
    if out.show:
        raise ConfigError("output.show: the workers have no screen; use --stream to watch cameras on a cluster")
    from ..runtime.pipeline import Pipeline

    Pipeline(config).check_outputs()  # what a worker would refuse, refused before any starts


class CameraPool:
    """Cameras on Ray workers (:class:`~streamseg.cluster.worker.SegmentWorker` actors), spread evenly; each
    worker batches its share on its device as one process does.

    When a worker dies (its process killed, its node lost), its cameras go to the workers left, the fewest
    cameras first, within about a second, for what is left of the run; and Ray is asked for a worker in its
    place, which takes cameras the next time one dies. The cameras' recordings go on in a new segment file.
    """

    def __init__(self, ray: ModuleType, config: Config, on_stats: Callable[[list[dict]], None],
                 page: WebPreviewSink | None = None) -> None:
        self._ray = ray
        self._config = config
        self._on_stats = on_stats
        self._page = page  # the driver's page, fed each camera's newest picture and every camera's stats
        self._asked: dict[Any, _Worker] = {}  # pictures() calls under way
        self._stats_at = 0.0  # when the page was last given the stats
        self._workers = Workers(ray, config, _Worker)

    def run(self, cameras: Sequence[str]) -> list[dict]:
        """Watch every camera for ``config.duration`` (or until a KeyboardInterrupt, which stops the workers
        and waits for their recordings to be finished); every camera's last statistics."""
        self._cameras = tuple(cameras)
        self._names = source_names(cameras)  # how the workers name them
        duration = self._config.duration
        self._workers.start(min(self._workers.fit, len(cameras)))
        self._workers.wait_ready()
        self._deadline = time.monotonic() + duration if duration else None
        ready = self._workers.ready()
        for k, w in enumerate(ready):
            self._give(w, cameras[k::len(ready)])
        final: list[dict] = []
        shown = time.monotonic()
        try:
            while any(w.watches for w in self._workers.all):
                refs = [ref for w in self._workers.all for ref in w.watches]
                done, _ = self._ray.wait(refs, num_returns=1, timeout=POLL_S)
                for ref in done:
                    final += self._ended(ref)
                for w in [w for w in self._workers.all if not w.ready]:
                    self._workers.check(w)
                if self._page is not None:
                    self._feed_page()
                if time.monotonic() - shown >= (self._config.live.stats_interval_s or 10.0):
                    shown = time.monotonic()
                    self._on_stats(self.stats())
        except KeyboardInterrupt:
            final += self._stop_all()
            raise
        return final

    def stats(self) -> list[dict]:
        """Every camera's statistics now, each with the worker that watches it."""
        asked = [w.actor.stats.remote() for w in self._workers.all if w.watches]
        answered, _ = self._ray.wait(asked, num_returns=len(asked), timeout=2.0) if asked else ([], [])
        found = []
        for ref in answered:
            try:
                found += self._ray.get(ref)
            except self._ray.exceptions.RayError:
                pass  # died meanwhile: its cameras move when its watch says so
        return sorted(found, key=lambda s: self._names.index(s["source"]) if s["source"] in self._names else 0)

    def _feed_page(self) -> None:
        """Hand the page the pictures asked for last time, and ask again (nothing here waits)."""
        answered, _ = self._ray.wait(list(self._asked), num_returns=len(self._asked), timeout=0) if self._asked \
            else ([], [])
        for ref in answered:
            self._asked.pop(ref)
            try:
                pictures = self._ray.get(ref)
            except self._ray.exceptions.RayError:
                continue
            for name, picture in pictures.items():
                if name in self._page.frames:
                    self._page.frames[name].publish(picture)
        waiting = set(map(id, self._asked.values()))
        for w in self._workers.all:
            if w.watches and id(w) not in waiting:
                self._asked[w.actor.pictures.remote()] = w
        if time.monotonic() - self._stats_at >= 1.0:
            self._stats_at = time.monotonic()
            self._page.publish_stats(self.stats())

    def close(self) -> None:
        self._workers.close()

    def _give(self, w: _Worker, cameras: Sequence[str]) -> None:
        if not cameras:
            return
        remaining = None if self._deadline is None else max(self._deadline - time.monotonic(), 0.1)
        fps = PAGE_FPS if self._page is not None else 0.0
        w.watches[w.actor.watch.remote(list(cameras), list(self._cameras), remaining, fps)] = tuple(cameras)

    def _ended(self, ref: Any) -> list[dict]:
        w = next(w for w in self._workers.all if ref in w.watches)
        cameras = w.watches.pop(ref)
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayActorError:
            pass
        except self._ray.exceptions.RayTaskError as exc:  # the pipeline failed, as it would in one process
            self._stop_all()
            if isinstance(exc.cause, StreamsegError):
                raise exc.cause from None
            raise StreamsegError(f"{', '.join(map(redact, cameras))} on {w.name}: {exc}".splitlines()[0]) from None
        # Its worker died: everything it watched moves.
        lost = [*cameras, *(c for group in w.watches.values() for c in group)]
        self._workers.replace(w)
        if self._deadline is not None and time.monotonic() >= self._deadline - 0.5:
            return []
        alive = self._workers.ready()
        if not alive:
            self._workers.wait_ready()
            alive = self._workers.ready()
        log.warning("worker %s died: %s move to %s", w.name, ", ".join(map(redact, lost)), ", ".join(x.name for x in alive))
        load = {id(x): sum(len(g) for g in x.watches.values()) for x in alive}
        moved: dict[int, list[str]] = {}
        for camera in lost:
            target = min(alive, key=lambda x: load[id(x)])
            load[id(target)] += 1
            moved.setdefault(id(target), []).append(camera)
        for x in alive:
            self._give(x, moved.get(id(x), []))
        return []

    def _stop_all(self) -> list[dict]:
        for w in self._workers.all:
            if w.watches:
                w.actor.stop.remote()
        refs = [ref for w in self._workers.all for ref in w.watches]
        done, _ = self._ray.wait(refs, num_returns=len(refs), timeout=STOP_WAIT_S) if refs else ([], [])
        final = []
        for ref in done:
            try:
                final += self._ray.get(ref)
            except self._ray.exceptions.RayError:
                pass
        return final


def watch_on_cluster(config: Config, on_stats: Callable[[list[dict]], None] = lambda stats: None,
                     on_page: Callable[[WebPreviewSink], None] = lambda page: None) -> list[dict]:
    """Watch ``config.sources`` (cameras, streams) on the Ray cluster at ``config.cluster.address``; every
    camera's last statistics, each with its worker. With ``output.serve``, the page is served here, by the
    driver, for every camera wherever it runs (``on_page`` is told once it listens).

    Raises:
        ConfigError: Ray is not installed, no cluster answers, or an output cannot be written this way.
        ModelError: the model cannot be loaded on a worker.
        StreamsegError: a worker's pipeline failed, as it would have in one process.
    """
    check_cameras(config)
    page = None
    if config.output.serve:  # one page on the driver for every camera; the workers serve none
        page = WebPreviewSink(config.output.serve, source_names(config.sources), max_fps=PAGE_FPS,
                              token=config.output.serve_token)
        config = dataclasses.replace(config, output=dataclasses.replace(config.output, serve=None))
    config = for_workers(config)
    with connected(config.cluster.address or "local") as ray:
        pool = CameraPool(ray, config, on_stats, page)
        try:
            if page is not None:
                page.open()
                on_page(page)
            return pool.run(config.sources)
        finally:
            pool.close()
            if page is not None:
                page.close()
